//! Reference dequantization (clear scalar code): the oracle for kernel tests
//! and the converter that writes f32 copies of GGUF models.

use half::{bf16, f16};

use super::{TensorView, WeightDType};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize raw data of `dtype` holding `elements` values into f32.
/// Returns None for non-float, non-GGUF types or a size mismatch.
pub fn dequantize(dtype: WeightDType, data: &[u8], elements: usize) -> Option<Vec<f32>> {
    if dtype.bytes_for(elements)? != data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(elements);
    match dtype {
        WeightDType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        WeightDType::F16 => out.extend(
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        WeightDType::BF16 => out.extend(
            data.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        WeightDType::Q4_0 => {
            for b in data.chunks_exact(18) {
                let d = f16_at(b, 0);
                let mut v = [0f32; 32];
                for j in 0..16 {
                    v[j] = d * ((b[2 + j] & 15) as i32 - 8) as f32;
                    v[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
                }
                out.extend_from_slice(&v);
            }
        }
        WeightDType::Q4_1 => {
            for b in data.chunks_exact(20) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let mut v = [0f32; 32];
                for j in 0..16 {
                    v[j] = d * (b[4 + j] & 15) as f32 + m;
                    v[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
                }
                out.extend_from_slice(&v);
            }
        }
        WeightDType::Q8_0 => {
            for b in data.chunks_exact(34) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        WeightDType::Q4_K => {
            for b in data.chunks_exact(144) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let s = &b[4..16];
                let qs = &b[16..144];
                let scale_min = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
                    } else {
                        (
                            ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)) as f32,
                            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for c in 0..4 {
                    let (sc0, m0) = scale_min(2 * c);
                    let (sc1, m1) = scale_min(2 * c + 1);
                    let q = &qs[32 * c..32 * c + 32];
                    out.extend(q.iter().map(|&x| d * sc0 * (x & 15) as f32 - dmin * m0));
                    out.extend(q.iter().map(|&x| d * sc1 * (x >> 4) as f32 - dmin * m1));
                }
            }
        }
        WeightDType::Q6_K => {
            for b in data.chunks_exact(210) {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                let mut v = [0f32; 256];
                for half in 0..2 {
                    let (ql, qh) = (
                        &ql[64 * half..64 * half + 64],
                        &qh[32 * half..32 * half + 32],
                    );
                    for l in 0..32 {
                        let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let base = 128 * half;
                        let is = 8 * half + l / 16;
                        v[base + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        v[base + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        v[base + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        v[base + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                out.extend_from_slice(&v);
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Dequantize a whole tensor view.
pub fn dequantize_view(view: &TensorView<'_>) -> Option<Vec<f32>> {
    dequantize(view.dtype, &view.data, view.shape.iter().product())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_and_q8_0_blocks() {
        let mut b = vec![0u8; 20];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b[4] = 0x3A; // low nibble 10 → weight 0, high nibble 3 → weight 16
        let v = dequantize(WeightDType::Q4_1, &b, 32).unwrap();
        assert_eq!(v[0], 0.5 * 10.0 - 1.0);
        assert_eq!(v[16], 0.5 * 3.0 - 1.0);
        assert_eq!(v[1], -1.0);
        let mut q = vec![0u8; 34];
        q[0..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        q[2] = (-4i8) as u8;
        q[33] = 8;
        let v = dequantize(WeightDType::Q8_0, &q, 32).unwrap();
        assert_eq!((v[0], v[31]), (-1.0, 2.0));
        let mut z = vec![0u8; 18];
        z[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        z[2] = 0xF0;
        let v = dequantize(WeightDType::Q4_0, &z, 32).unwrap();
        assert_eq!((v[0], v[16], v[1]), (-16.0, 14.0, -16.0));
        assert!(dequantize(WeightDType::Q4_0, &z, 31).is_none());
    }

    #[test]
    fn q4_k_scales_follow_the_six_bit_packing() {
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        // sub-block 0: scale 2, min 1; sub-block 4: scale from s[8] low nibble + s[0] top bits.
        b[4] = 2 | (1 << 6); // s[0]: sc0 = 2, top bits 01 → high part of sc4 = 1<<4
        b[8] = 1; // s[4]: m0 = 1
        b[12] = 3; // s[8]: sc4 low = 3, m4 low = 0
        b[16] = 0x05; // first qs byte: low nibble 5 (sub-block 0), high 0 (sub-block 1)
        let v = dequantize(WeightDType::Q4_K, &b, 256).unwrap();
        assert_eq!(v[0], 2.0 * 5.0 - 1.0);
        // sub-block 4 is the low nibbles of chunk 2 (bytes 64..96 of qs): zeros → -dmin*m4 = -(0 | (s[4]>>6)<<4) = 0
        assert_eq!(v[128], 0.0 * (3.0 + 16.0));
    }
}
