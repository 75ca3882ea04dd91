//! Run-time instruction-set selection, decided once per process.
//!
//! [`detect`] returns the best kernel family this CPU runs, capped by the
//! `KILN_CPU_ISA=scalar|avx2|avx512` environment variable (for tests and
//! comparisons). Every kernel has a scalar fallback, so any x86-64 or aarch64
//! CPU works; the SIMD families need:
//! - [`Isa::Avx2`]: AVX2, FMA and F16C;
//! - [`Isa::Avx512Vnni`]: the above plus AVX-512 F/BW/VL and VNNI.

use std::sync::OnceLock;

/// A kernel family, ordered from the most portable to the fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust (also the aarch64 path).
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (and AVX2, FMA, F16C).
    Avx512Vnni,
}

impl Isa {
    /// Short name for logs: `scalar`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512",
        }
    }

    /// Every family, most portable first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];
}

/// The best family this CPU supports, ignoring `KILN_CPU_ISA`.
pub fn best() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(detect_best)
}

fn detect_best() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        if avx512 {
            return Isa::Avx512Vnni;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Parse a `KILN_CPU_ISA` value (`scalar`, `avx2`, `avx512`; case-insensitive).
pub fn parse_cap(value: &str) -> Option<Isa> {
    match value.trim().to_ascii_lowercase().as_str() {
        "scalar" => Some(Isa::Scalar),
        "avx2" => Some(Isa::Avx2),
        "avx512" | "avx512vnni" | "avx512+vnni" => Some(Isa::Avx512Vnni),
        _ => None,
    }
}

/// The family kernels use: [`best`], capped by `KILN_CPU_ISA` when it is set
/// to a known value (unknown values are ignored).
pub fn detect() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("KILN_CPU_ISA")
            .ok()
            .and_then(|v| parse_cap(&v))
            .unwrap_or(Isa::Avx512Vnni);
        best().min(cap)
    })
}

/// True when kernels of family `isa` can run on this CPU.
pub fn supported(isa: Isa) -> bool {
    isa <= best()
}

/// `isa` if this CPU runs it, otherwise the best family it does run.
pub(crate) fn clamp(isa: Isa) -> Isa {
    isa.min(best())
}

/// The selected family and notable extra features, for start-up logs,
/// e.g. `avx512+vnni+bf16` or `avx2+fma+f16c`.
pub fn describe() -> String {
    let mut parts: Vec<&str> = vec![detect().name()];
    match detect() {
        Isa::Avx512Vnni => parts.push("vnni"),
        Isa::Avx2 => parts.extend(["fma", "f16c"]),
        Isa::Scalar => {}
    }
    #[cfg(target_arch = "x86_64")]
    if detect() == Isa::Avx512Vnni && is_x86_feature_detected!("avx512bf16") {
        parts.push("bf16");
    }
    parts.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parse_and_order() {
        assert_eq!(parse_cap("AVX2"), Some(Isa::Avx2));
        assert_eq!(parse_cap(" scalar "), Some(Isa::Scalar));
        assert_eq!(parse_cap("avx512"), Some(Isa::Avx512Vnni));
        assert_eq!(parse_cap("sse"), None);
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512Vnni);
        assert!(supported(Isa::Scalar));
        assert!(supported(detect()));
        assert_eq!(clamp(Isa::Scalar), Isa::Scalar);
        assert!(describe().starts_with(detect().name()));
    }
}
