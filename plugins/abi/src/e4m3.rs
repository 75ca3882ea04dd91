//! The reference codec of `KILN_WEIGHT_FP8_E4M3` codes: the `e4m3fn`
//! variant of OCP FP8 (`torch.float8_e4m3fn`, safetensors `F8_E4M3`) —
//! sign, 4 exponent bits with bias 7, 3 mantissa bits, subnormals, no
//! infinities; `0x7F` and `0xFF` are NaN and the largest finite magnitude
//! is 448. Hosts quantize with it, backends check their widening against
//! it.

/// The largest finite magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// True for the two NaN codes.
pub fn is_e4m3_nan(code: u8) -> bool {
    code & 0x7F == 0x7F
}

/// The value of a code: `±2^(e−7)·(1 + m/8)`, or `±2^−6·m/8` when `e` is
/// 0; NaN for the NaN codes.
pub fn e4m3_value(code: u8) -> f32 {
    if is_e4m3_nan(code) {
        return f32::NAN;
    }
    let (exp, mant) = (i32::from((code >> 3) & 15), f32::from(code & 7));
    let mag = if exp == 0 {
        mant / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
    };
    if code & 0x80 != 0 { -mag } else { mag }
}

/// The nearest code to `v`, ties to even, saturating at ±448 (vLLM clamps
/// before casting, and the cast rounds to nearest even); NaN becomes 0.
pub fn e4m3_code(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
    let a = v.abs().min(E4M3_MAX);
    // Below the smallest normal, 2^-6, codes are multiples of 2^-9; 8 of
    // them is exactly code 0x08, the smallest normal.
    if a < 2f32.powi(-6) {
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let exp = ((a.to_bits() >> 23) as i32) - 127;
    // `a` in steps of 2^(exp-3): between 8 and 16 of them (the scaling is exact).
    let steps = (a * 2f32.powi(3 - exp)).round_ties_even() as u32;
    let (exp, steps) = if steps == 16 {
        (exp + 1, 8)
    } else {
        (exp, steps)
    };
    sign | (((exp + 7) as u8) << 3) | (steps - 8) as u8
}

/// Codes and per-row scales of `values` (`[rows, cols]`, row-major): each
/// row's scale is its largest magnitude over 448 (1 for an all-zero row),
/// each code the value over the scale rounded to nearest even, so that
/// `value ≈ scale · e4m3_value(code)`.
pub fn quantize_rows(values: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / cols.max(1));
    for row in values.chunks_exact(cols.max(1)) {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = if amax > 0.0 { amax / E4M3_MAX } else { 1.0 };
        codes.extend(row.iter().map(|&v| e4m3_code(v / scale)));
        scales.push(scale);
    }
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips() {
        for code in 0..=255u8 {
            if is_e4m3_nan(code) {
                assert!(e4m3_value(code).is_nan());
                continue;
            }
            assert_eq!(e4m3_code(e4m3_value(code)), code, "{code:#04x}");
        }
        assert_eq!(e4m3_value(0x7E), 448.0);
        assert_eq!(e4m3_value(0x01), 2f32.powi(-9));
    }

    #[test]
    fn rounding_is_to_nearest_even_and_saturates() {
        // 1.0625 is halfway between 1.0 (even) and 1.125: to 1.0.
        assert_eq!(e4m3_code(1.0625), 0x38);
        assert_eq!(e4m3_code(1.0626), 0x39);
        // 1.1875 is halfway between 1.125 and 1.25 (even): to 1.25.
        assert_eq!(e4m3_code(1.1875), 0x3A);
        assert_eq!(e4m3_code(1e6), 0x7E);
        assert_eq!(e4m3_code(-1e9), 0xFE);
        // Half the smallest subnormal (2^-10) rounds to even zero.
        assert_eq!(e4m3_code(2f32.powi(-10)), 0);
        // 15/16 of the smallest normal rounds up into it (0x08).
        assert_eq!(e4m3_code(2f32.powi(-6) * 0.97), 0x08);
    }

    #[test]
    fn rows_scale_their_largest_magnitude_to_448() {
        let (codes, scales) = quantize_rows(&[0.5, -2.0, 1.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(scales, vec![2.0 / 448.0, 1.0]);
        assert_eq!(codes[1], 0xFE);
        assert_eq!(&codes[3..], &[0, 0, 0]);
    }
}
