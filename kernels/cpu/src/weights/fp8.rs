//! FP8 E4M3 weight codes (the format and its reference codec are
//! `kiln_plugin_abi::e4m3`) as the kernels read them.
//!
//! The kernels widen a code to f16 with bit operations alone:
//! `((b & 0x80) << 8) | ((b & 0x7F) << 7)` is the f16 whose value is the
//! code's value divided by 256 (the exponent bias differs by 8), exactly,
//! subnormals included. The 256 is folded into each row's scale.

use half::f16;
pub use kiln_plugin_abi::e4m3::{is_e4m3_nan, quantize_rows};

/// What the f16 form of a code is short of the code's value by (`2^8`);
/// packed row scales carry it.
pub(crate) const F16_FOLD: f32 = 256.0;

/// The f16 bits of `code / 256`.
#[inline(always)]
pub(crate) fn e4m3_f16_bits(code: u8) -> u16 {
    let b = u16::from(code);
    ((b & 0x80) << 8) | ((b & 0x7F) << 7)
}

/// A code's value through its f16 form, as the kernels widen it (NaN for
/// the NaN codes).
pub fn e4m3_to_f32(code: u8) -> f32 {
    if is_e4m3_nan(code) {
        return f32::NAN;
    }
    f16::from_bits(e4m3_f16_bits(code)).to_f32() * F16_FOLD
}

#[cfg(test)]
mod tests {
    use kiln_plugin_abi::e4m3::e4m3_value;

    use super::*;

    #[test]
    fn the_f16_form_of_every_code_is_exact() {
        for code in 0..=255u8 {
            let (widened, want) = (e4m3_to_f32(code), e4m3_value(code));
            if is_e4m3_nan(code) {
                assert!(widened.is_nan());
            } else {
                assert_eq!(widened.to_bits(), want.to_bits(), "code {code:#04x}");
            }
        }
    }
}
