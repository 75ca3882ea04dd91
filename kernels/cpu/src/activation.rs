//! Element-wise maps on f32 activations: activation functions (optionally
//! gated by a second tensor), scaling and soft-capping.
//!
//! Each element's result depends only on that element (and its gate), with
//! additions and multiplications in a fixed order and no fused steps, so
//! every ISA gives the same bits and batch invariance holds trivially.

use crate::isa::detect;
use crate::math;
use crate::ops::multiversion;

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(x)`.
    Silu,
    /// GELU, tanh approximation (PyTorch `approximate="tanh"`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))`.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

/// `√(2/π)`, the scale inside the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `erf(x)` (Abramowitz–Stegun 7.1.26 on |x|, absolute error below 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * math::exp(-(a * a));
    if x < 0.0 { -y } else { y }
}

#[inline(always)]
fn apply(kind: Activation, x: f32) -> f32 {
    match kind {
        Activation::Silu => math::silu(x),
        Activation::GeluTanh => {
            let inner = SQRT_2_OVER_PI * (x + 0.044_715 * (x * x * x));
            0.5 * x * (1.0 + math::tanh(inner))
        }
        Activation::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::Relu => x.max(0.0),
    }
}

/// `x = act(x)`, element-wise.
pub fn activate(kind: Activation, x: &mut [f32]) {
    activate_isa(detect(), kind, x)
}

/// `x = act(x) · up`, element-wise (gated MLPs: SwiGLU, GeGLU).
pub fn activate_mul(kind: Activation, x: &mut [f32], up: &[f32]) {
    activate_mul_isa(detect(), kind, x, up)
}

/// `out = x · factor`, element-wise, in place.
pub fn scale(x: &mut [f32], factor: f32) {
    scale_isa(detect(), x, factor)
}

/// `out += x · factor`, element-wise.
pub fn scale_add(out: &mut [f32], x: &[f32], factor: f32) {
    scale_add_isa(detect(), out, x, factor)
}

/// `x = cap · tanh(x / cap)`, element-wise.
pub fn softcap(x: &mut [f32], cap: f32) {
    softcap_isa(detect(), x, cap)
}

multiversion! {
    /// [`activate`] with the kernels of `isa`.
    pub fn activate_isa(kind: Activation, x: &mut [f32]) {
        match kind {
            Activation::Silu => x.iter_mut().for_each(|v| *v = apply(Activation::Silu, *v)),
            Activation::GeluTanh => x.iter_mut().for_each(|v| *v = apply(Activation::GeluTanh, *v)),
            Activation::Gelu => x.iter_mut().for_each(|v| *v = apply(Activation::Gelu, *v)),
            Activation::Relu => x.iter_mut().for_each(|v| *v = apply(Activation::Relu, *v)),
        }
    }
}

multiversion! {
    /// [`activate_mul`] with the kernels of `isa`.
    pub fn activate_mul_isa(kind: Activation, x: &mut [f32], up: &[f32]) {
        // One loop per kind so that each vectorizes without a branch inside.
        macro_rules! gated {
            ($k:expr) => {
                for (v, &u) in x.iter_mut().zip(up) {
                    *v = apply($k, *v) * u;
                }
            };
        }
        match kind {
            Activation::Silu => gated!(Activation::Silu),
            Activation::GeluTanh => gated!(Activation::GeluTanh),
            Activation::Gelu => gated!(Activation::Gelu),
            Activation::Relu => gated!(Activation::Relu),
        }
    }
}

multiversion! {
    /// [`scale`] with the kernels of `isa`.
    pub fn scale_isa(x: &mut [f32], factor: f32) {
        for v in x.iter_mut() {
            *v *= factor;
        }
    }
}

multiversion! {
    /// [`scale_add`] with the kernels of `isa`.
    pub fn scale_add_isa(out: &mut [f32], x: &[f32], factor: f32) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o += v * factor;
        }
    }
}

multiversion! {
    /// [`softcap`] with the kernels of `isa`.
    pub fn softcap_isa(x: &mut [f32], cap: f32) {
        let inv = 1.0 / cap;
        for v in x.iter_mut() {
            *v = cap * math::tanh(*v * inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;

    fn values() -> Vec<f32> {
        (0..203).map(|i| (i as f32 - 101.0) * 0.071).collect()
    }

    fn erf64(x: f64) -> f64 {
        // Series for |x| < 3 converges quickly in f64; larger values round to ±1.
        if x.abs() > 6.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn activations_match_f64() {
        let x = values();
        for kind in [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::Gelu,
            Activation::Relu,
        ] {
            let mut got = x.clone();
            activate(kind, &mut got);
            for (&g, &v) in got.iter().zip(&x) {
                let v = v as f64;
                let want = match kind {
                    Activation::Silu => v / (1.0 + (-v).exp()),
                    Activation::GeluTanh => {
                        0.5 * v
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (v + 0.044715 * v * v * v))
                                    .tanh())
                    }
                    Activation::Gelu => 0.5 * v * (1.0 + erf64(v / 2f64.sqrt())),
                    Activation::Relu => v.max(0.0),
                };
                assert!(
                    (g as f64 - want).abs() < 2e-6 * (1.0 + want.abs()),
                    "{kind:?}({v}) = {g}, want {want}"
                );
            }
        }
    }

    #[test]
    fn gating_scaling_and_capping() {
        let x = values();
        let up: Vec<f32> = x.iter().map(|v| 1.0 - v * 0.5).collect();
        let mut gated = x.clone();
        activate_mul(Activation::GeluTanh, &mut gated, &up);
        let mut plain = x.clone();
        activate(Activation::GeluTanh, &mut plain);
        for i in 0..x.len() {
            assert_eq!(gated[i], plain[i] * up[i]);
        }
        let mut s = x.clone();
        scale(&mut s, 3.0);
        assert_eq!(s[7], x[7] * 3.0);
        let mut acc = vec![1.0f32; x.len()];
        scale_add(&mut acc, &x, 0.5);
        assert_eq!(acc[9], 1.0 + x[9] * 0.5);
        let mut c = vec![-1000.0f32, 0.0, 3.0, 1000.0];
        softcap(&mut c, 30.0);
        assert!((c[0] + 30.0).abs() < 1e-4 && c[1] == 0.0 && (c[3] - 30.0).abs() < 1e-4);
        assert!((c[2] as f64 - 30.0 * (0.1f64).tanh()).abs() < 1e-5);
    }

    #[test]
    fn every_isa_gives_the_same_bits() {
        let x = values();
        let run = |isa: Isa| {
            let mut out = Vec::new();
            for kind in [
                Activation::Silu,
                Activation::GeluTanh,
                Activation::Gelu,
                Activation::Relu,
            ] {
                let mut a = x.clone();
                activate_isa(isa, kind, &mut a);
                let mut b = x.clone();
                activate_mul_isa(isa, kind, &mut b, &a);
                out.extend(a);
                out.extend(b);
            }
            let mut c = x.clone();
            softcap_isa(isa, &mut c, 5.0);
            scale_isa(isa, &mut c, 0.3);
            scale_add_isa(isa, &mut c, &x, 1.7);
            out.extend(c);
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let base = run(Isa::Scalar);
        for isa in Isa::ALL {
            assert_eq!(run(isa), base, "{isa:?}");
        }
    }
}
