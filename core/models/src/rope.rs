//! Rotary position embedding tables, computed on the host once per model.
//!
//! The tables follow transformers' arithmetic (f32 inverse frequencies, f32
//! angles) so that logits compare closely with the reference; scaling
//! variants change the inverse frequencies (linear, Llama 3, YaRN, dynamic
//! NTK, LongRoPE) and, for YaRN and LongRoPE, scale cos and sin.

use crate::config::{ModelConfig, RopeScaling};

/// Cosine and sine tables, `[max_positions, rotary_dim / 2]` each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTables {
    /// Positions covered.
    pub max_positions: usize,
    /// Rotated dimensions per head.
    pub rotary_dim: usize,
    /// `[max_positions, rotary_dim / 2]` cosines.
    pub cos: Vec<f32>,
    /// `[max_positions, rotary_dim / 2]` sines.
    pub sin: Vec<f32>,
}

/// Inverse frequencies `[rotary_dim / 2]` for a base and an optional
/// scaling; `served_positions` (the served context) picks dynamic NTK's θ
/// and LongRoPE's factor set.
pub fn inverse_frequencies(
    rotary_dim: usize,
    theta: f32,
    scaling: Option<&RopeScaling>,
    served_positions: usize,
) -> Vec<f32> {
    let half = rotary_dim / 2;
    let powers = |theta: f32| -> Vec<f32> {
        (0..half)
            .map(|i| theta.powf((2 * i) as f32 / rotary_dim as f32))
            .collect()
    };
    let base: Vec<f32> = powers(theta).iter().map(|p| 1.0 / p).collect();
    match scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old_ctx = *original_max_position_embeddings as f32;
            let low_wavelen = old_ctx / low_freq_factor;
            let high_wavelen = old_ctx / high_freq_factor;
            base.iter()
                .map(|&freq| {
                    let wavelen = 2.0 * std::f32::consts::PI / freq;
                    if wavelen < high_wavelen {
                        freq
                    } else if wavelen > low_wavelen {
                        freq / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                })
                .collect()
        }
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            truncate,
            ..
        }) => {
            let (low, high) = yarn_ramp_ends(
                rotary_dim,
                theta,
                *original_max_position_embeddings,
                *beta_fast,
                *beta_slow,
                *truncate,
            );
            // transformers' f32 arithmetic, in its order.
            let span = if low == high { 0.001 } else { high - low } as f32;
            powers(theta)
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let extrapolation = 1.0 / p;
                    let interpolation = 1.0 / (factor * p);
                    let ramp = ((i as f32 - low as f32) / span).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    interpolation * (1.0 - keep) + extrapolation * keep
                })
                .collect()
        }
        Some(RopeScaling::DynamicNtk {
            factor,
            native_context,
        }) => {
            if served_positions <= *native_context {
                return base;
            }
            let (f, d) = (*factor as f64, rotary_dim as f64);
            let grown = theta as f64
                * (f * served_positions as f64 / *native_context as f64 - (f - 1.0))
                    .powf(d / (d - 2.0));
            powers(grown as f32).iter().map(|p| 1.0 / p).collect()
        }
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            ..
        }) => {
            let factors = if served_positions > *original_max_position_embeddings {
                long_factor
            } else {
                short_factor
            };
            powers(theta)
                .iter()
                .zip(factors)
                .map(|(p, f)| 1.0 / (f * p))
                .collect()
        }
    }
}

/// The dimensions (in frequency index units) where YaRN's ramp starts and
/// ends: where a frequency turns `beta_fast` and `beta_slow` times over the
/// original context (f64, as transformers computes them in Python).
fn yarn_ramp_ends(
    rotary_dim: usize,
    theta: f32,
    original: usize,
    beta_fast: f32,
    beta_slow: f32,
    truncate: bool,
) -> (f64, f64) {
    let dim = rotary_dim as f64;
    let base = theta as f64;
    let dim_of = |rotations: f32| {
        dim * (original as f64 / (rotations as f64 * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let (mut low, mut high) = (dim_of(beta_fast), dim_of(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    (low.max(0.0), high.min(dim - 1.0))
}

/// What cos and sin are multiplied by (1 except for YaRN and LongRoPE).
pub fn attention_factor(scaling: Option<&RopeScaling>) -> f32 {
    match scaling {
        Some(RopeScaling::Yarn {
            attention_factor, ..
        })
        | Some(RopeScaling::LongRope {
            attention_factor, ..
        }) => *attention_factor,
        _ => 1.0,
    }
}

/// YaRN's magnitude correction `0.1·m·ln(scale) + 1` (1 for `scale ≤ 1`).
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl RopeTables {
    /// Tables for `max_positions` positions of the model's heads (its θ,
    /// scaling and rotated dimensions).
    pub fn for_model(config: &ModelConfig, max_positions: usize) -> RopeTables {
        RopeTables::new(
            config.rotary_dim,
            config.rope_theta,
            config.rope_scaling.as_ref(),
            max_positions,
        )
    }

    /// Tables for `rotary_dim` rotated dimensions with base `theta`.
    pub fn new(
        rotary_dim: usize,
        theta: f32,
        scaling: Option<&RopeScaling>,
        max_positions: usize,
    ) -> RopeTables {
        let inv = inverse_frequencies(rotary_dim, theta, scaling, max_positions);
        let scale = attention_factor(scaling);
        let half = rotary_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &inv {
                let angle = p as f32 * f;
                // Scaled after rounding to f32, as transformers scales its f32 tables.
                cos.push((angle as f64).cos() as f32 * scale);
                sin.push((angle as f64).sin() as f32 * scale);
            }
        }
        RopeTables {
            max_positions,
            rotary_dim,
            cos,
            sin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_fall_geometrically() {
        let inv = inverse_frequencies(64, 10000.0, None, 0);
        assert_eq!(inv.len(), 32);
        assert_eq!(inv[0], 1.0);
        assert!((inv[1] - 10000f32.powf(-2.0 / 64.0)).abs() < 1e-7);
        assert!(inv.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let base = inverse_frequencies(16, 10000.0, None, 0);
        let scaled =
            inverse_frequencies(16, 10000.0, Some(&RopeScaling::Linear { factor: 4.0 }), 0);
        for (b, s) in base.iter().zip(&scaled) {
            assert!((b / 4.0 - s).abs() < 1e-9);
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let base = inverse_frequencies(128, 500000.0, None, 0);
        let scaled = inverse_frequencies(128, 500000.0, Some(&scaling), 0);
        // Highest frequency: wavelength 2π < 8192/4 → unchanged.
        assert_eq!(scaled[0], base[0]);
        // Lowest frequency: wavelength far above 8192 → divided by the factor.
        let last = base.len() - 1;
        assert!((scaled[last] - base[last] / 8.0).abs() < 1e-12);
        // In between: bounded by the two.
        for (b, s) in base.iter().zip(&scaled) {
            assert!(*s <= *b && *s >= b / 8.0 - 1e-12);
        }
    }

    #[test]
    fn dynamic_ntk_grows_theta_only_past_the_native_context() {
        let scaling = RopeScaling::DynamicNtk {
            factor: 2.0,
            native_context: 4096,
        };
        let base = inverse_frequencies(64, 10000.0, None, 0);
        assert_eq!(inverse_frequencies(64, 10000.0, Some(&scaling), 4096), base);
        // Serving 8192: θ·(2·8192/4096 − 1)^(64/62).
        let grown = (10000.0f64 * 3f64.powf(64.0 / 62.0)) as f32;
        assert_eq!(
            inverse_frequencies(64, 10000.0, Some(&scaling), 8192),
            inverse_frequencies(64, grown, None, 0)
        );
    }

    #[test]
    fn longrope_picks_its_factor_set_from_the_served_context() {
        let scaling = RopeScaling::LongRope {
            short_factor: vec![1.0, 2.0],
            long_factor: vec![4.0, 8.0],
            original_max_position_embeddings: 64,
            attention_factor: 1.5,
        };
        let base = inverse_frequencies(4, 10000.0, None, 0);
        let short = inverse_frequencies(4, 10000.0, Some(&scaling), 64);
        let long = inverse_frequencies(4, 10000.0, Some(&scaling), 65);
        assert_eq!(short, vec![base[0], base[1] / 2.0]);
        assert_eq!(long, vec![base[0] / 4.0, base[1] / 8.0]);
        let tables = RopeTables::new(4, 10000.0, Some(&scaling), 2);
        // Position 0: cos 1, sin 0, both scaled by the attention factor.
        assert_eq!((tables.cos[0], tables.sin[0]), (1.5, 0.0));
    }

    #[test]
    fn yarn_keeps_fast_and_divides_slow_frequencies() {
        let scaling = RopeScaling::Yarn {
            factor: 4.0,
            original_max_position_embeddings: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: yarn_mscale(4.0, 1.0) as f32,
            truncate: true,
        };
        let base = inverse_frequencies(64, 10000.0, None, 0);
        let scaled = inverse_frequencies(64, 10000.0, Some(&scaling), 256);
        assert_eq!(scaled[0], base[0]);
        let last = base.len() - 1;
        assert_eq!(scaled[last], 1.0 / (4.0 * (1.0 / base[last])));
        assert!((attention_factor(Some(&scaling)) - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
    }
}
