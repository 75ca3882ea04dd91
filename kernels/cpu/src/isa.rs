//! Run-time instruction-set detection (once per process).

use std::sync::OnceLock;

/// Which kernel family runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (and F16C).
    Avx512Vnni,
}

impl Isa {
    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512Vnni => "avx512+vnni",
        }
    }
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

/// The best ISA of this CPU, capped by `KILN_CPU_ISA=scalar|avx2|avx512`.
pub fn detect() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect_best();
        let cap = match std::env::var("KILN_CPU_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") => Isa::Avx2,
            _ => Isa::Avx512Vnni,
        };
        best.min(cap)
    })
}

/// True when `isa` can run on this CPU.
pub fn supported(isa: Isa) -> bool {
    isa <= detect_best()
}

/// A description of the CPU features, for logs.
pub fn describe() -> String {
    let mut parts = vec![detect().name().to_string()];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bf16") {
            parts.push("bf16".into());
        }
    }
    parts.join("+")
}
