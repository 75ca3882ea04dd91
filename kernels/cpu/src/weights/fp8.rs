//! FP8 E4M3 weight codes (the `e4m3fn` variant of OCP FP8, as in
//! `torch.float8_e4m3fn` and safetensors' `F8_E4M3`): sign, 4 exponent bits
//! with bias 7, 3 mantissa bits, subnormals, no infinities; `0x7F` and
//! `0xFF` are NaN and the largest finite magnitude is 448.
//!
//! The kernels widen a code to f16 with bit operations alone:
//! `((b & 0x80) << 8) | ((b & 0x7F) << 7)` is the f16 whose value is the
//! code's value divided by 256 (the exponent bias differs by 8), exactly,
//! subnormals included. The 256 is folded into each row's scale.

use half::f16;

/// The largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// What the f16 form of a code is short of the code's value by (`2^8`);
/// packed row scales carry it.
pub(crate) const F16_FOLD: f32 = 256.0;

/// The f16 bits of `code / 256`.
#[inline(always)]
pub(crate) fn e4m3_f16_bits(code: u8) -> u16 {
    let b = u16::from(code);
    ((b & 0x80) << 8) | ((b & 0x7F) << 7)
}

/// True for the two NaN codes.
pub fn is_e4m3_nan(code: u8) -> bool {
    code & 0x7F == 0x7F
}

/// The value of a code (NaN for the NaN codes).
pub fn e4m3_to_f32(code: u8) -> f32 {
    if is_e4m3_nan(code) {
        return f32::NAN;
    }
    f16::from_bits(e4m3_f16_bits(code)).to_f32() * F16_FOLD
}

/// The nearest code to `v` (ties to even), saturating at ±448 as vLLM's
/// quantizer clamps before casting; NaN becomes 0.
pub fn f32_to_e4m3(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
    let a = v.abs().min(E4M3_MAX);
    // Below the smallest normal (2^-6) the step is 2^-9; the subnormal
    // count 8 is exactly code 0x08, the smallest normal.
    if a < 2f32.powi(-6) {
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let exp = ((a.to_bits() >> 23) as i32) - 127;
    // Steps of 2^(exp-3): a multiple between 8 and 16 of it, exactly scaled.
    let steps = (a * 2f32.powi(3 - exp)).round_ties_even() as u32;
    let (exp, steps) = if steps == 16 {
        (exp + 1, 8)
    } else {
        (exp, steps)
    };
    sign | (((exp + 7) as u8) << 3) | (steps - 8) as u8
}

/// Codes and per-row scales of `values` (`[rows, cols]`): each row's scale
/// is its largest magnitude over 448 (1 for an all-zero row), codes are
/// `value / scale` rounded to nearest even.
pub fn quantize_rows(values: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / cols.max(1));
    for row in values.chunks_exact(cols.max(1)) {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = if amax > 0.0 { amax / E4M3_MAX } else { 1.0 };
        codes.extend(row.iter().map(|&v| f32_to_e4m3(v / scale)));
        scales.push(scale);
    }
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips_and_the_f16_form_is_exact() {
        for code in 0..=255u8 {
            if is_e4m3_nan(code) {
                assert!(e4m3_to_f32(code).is_nan());
                continue;
            }
            let v = e4m3_to_f32(code);
            // The reference decode: sign · 2^(e−7) · (1 + m/8), or 2^-6 · m/8.
            let (e, m) = ((code >> 3) & 15, code & 7);
            let mag = if e == 0 {
                f32::from(m) / 8.0 * 2f32.powi(-6)
            } else {
                (1.0 + f32::from(m) / 8.0) * 2f32.powi(i32::from(e) - 7)
            };
            let want = if code & 0x80 != 0 { -mag } else { mag };
            assert_eq!(v.to_bits(), want.to_bits(), "code {code:#04x}");
            assert_eq!(f32_to_e4m3(v), code, "code {code:#04x}");
        }
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
    }

    #[test]
    fn rounding_is_to_nearest_even_and_saturates() {
        // 1.0 is 0x38 and the next code is 1.125: halfway rounds to even (1.0).
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.0626), 0x39);
        // 1.125 (odd mantissa) and 1.25: halfway goes up to the even 1.25.
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
        assert_eq!(f32_to_e4m3(1e6), 0x7E);
        assert_eq!(f32_to_e4m3(-1e6), 0xFE);
        // Half the smallest subnormal (2^-10) rounds to even zero.
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0);
        // 15/16 of the smallest normal rounds up into it (0x08).
        assert_eq!(f32_to_e4m3(2f32.powi(-6) * 0.97), 0x08);
    }

    #[test]
    fn rows_scale_their_largest_magnitude_to_448() {
        let (codes, scales) = quantize_rows(&[0.5, -2.0, 1.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(scales, vec![2.0 / 448.0, 1.0]);
        assert_eq!(codes[1], 0xFE);
        assert_eq!(&codes[3..], &[0, 0, 0]);
    }
}
