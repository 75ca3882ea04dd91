//! Rotary position embedding tables, computed on the host once per model.
//!
//! The tables follow transformers' arithmetic (f32 inverse frequencies, f32
//! angles) so that logits compare closely with the reference; scaling
//! variants (linear, Llama 3) change only the inverse frequencies.

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

/// Inverse frequencies `[rotary_dim / 2]` for a base and an optional scaling.
pub fn inverse_frequencies(
    rotary_dim: usize,
    theta: f32,
    scaling: Option<&RopeScaling>,
) -> Vec<f32> {
    let half = rotary_dim / 2;
    let base: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / rotary_dim as f32))
        .collect();
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
        let inv = inverse_frequencies(rotary_dim, theta, scaling);
        let half = rotary_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push((angle as f64).cos() as f32);
                sin.push((angle as f64).sin() as f32);
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
        let inv = inverse_frequencies(64, 10000.0, None);
        assert_eq!(inv.len(), 32);
        assert_eq!(inv[0], 1.0);
        assert!((inv[1] - 10000f32.powf(-2.0 / 64.0)).abs() < 1e-7);
        assert!(inv.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let base = inverse_frequencies(16, 10000.0, None);
        let scaled = inverse_frequencies(16, 10000.0, Some(&RopeScaling::Linear { factor: 4.0 }));
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
        let base = inverse_frequencies(128, 500000.0, None);
        let scaled = inverse_frequencies(128, 500000.0, Some(&scaling));
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
}
