//! Reference dequantization: plain scalar code, one function per block
//! format, the oracle for kernel tests and for f32 copies of GGUF models.
//!
//! The arithmetic follows gguf-py's numpy dequantizers operation by
//! operation, in f32 (`d·q + m` for Q4_1, `(d·sc)·q − dmin·m` for the
//! K-quants), so results are bit-identical to what transformers loads.
//! Block layouts (all little-endian, f16 = IEEE half):
//!
//! | type | weights/bytes | layout |
//! |---|---|---|
//! | Q4_0 | 32/18 | `d, qs[16]`; weight j < 16 is the low nibble of `qs[j]`, j + 16 the high one; `d·(q−8)` |
//! | Q4_1 | 32/20 | `d, m, qs[16]`; same nibbles; `d·q + m` |
//! | Q5_0 | 32/22 | `d, qh u32, qs[16]`; bit j of `qh` is bit 4 of weight j; `d·(q−16)` |
//! | Q5_1 | 32/24 | `d, m, qh u32, qs[16]`; `d·q + m` |
//! | Q8_0 | 32/34 | `d, qs[32] i8`; `d·q` |
//! | Q2_K | 256/84 | `scales[16], qs[64], d, dmin`; 2-bit q, 4-bit scale and min per 16 |
//! | Q3_K | 256/110 | `hmask[32], qs[64], scales[12], d`; 3-bit q, 6-bit signed scales per 16 |
//! | Q4_K | 256/144 | `d, dmin, scales[12], qs[128]`; 6-bit scale and min per 32 |
//! | Q5_K | 256/176 | `d, dmin, scales[12], qh[32], qs[128]` |
//! | Q6_K | 256/210 | `ql[128], qh[64], scales[16] i8, d`; `d·sc·(q−32)` |
//! | IQ4_NL | 32/18 | `d, qs[16]`; Q4_0's nibbles index a 16-value table; `d·T[q]` |
//! | IQ4_XS | 256/136 | `d, scales_h u16, scales_l[4], qs[128]`; 6-bit scale `ls` per 32; `d·(ls−32)·T[q]` |

use half::{bf16, f16};

use super::{TensorView, WeightDType};

/// Types [`dequantize`] handles.
pub const SUPPORTED: [WeightDType; 16] = [
    WeightDType::F32,
    WeightDType::F16,
    WeightDType::BF16,
    WeightDType::F64,
    WeightDType::Q4_0,
    WeightDType::Q4_1,
    WeightDType::Q5_0,
    WeightDType::Q5_1,
    WeightDType::Q8_0,
    WeightDType::Q2_K,
    WeightDType::Q3_K,
    WeightDType::Q4_K,
    WeightDType::Q5_K,
    WeightDType::Q6_K,
    WeightDType::IQ4_NL,
    WeightDType::IQ4_XS,
];

/// True when [`dequantize`] handles `dtype`.
pub fn supports(dtype: WeightDType) -> bool {
    SUPPORTED.contains(&dtype)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `elements` values of `dtype` stored in `data` into f32.
/// `None` for types outside [`SUPPORTED`] or when `data` is not exactly
/// `elements` values (whole blocks).
pub fn dequantize(dtype: WeightDType, data: &[u8], elements: usize) -> Option<Vec<f32>> {
    if !supports(dtype) || dtype.bytes_for(elements)? != data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(elements);
    let block = dtype.type_size();
    let each = |out: &mut Vec<f32>, f: fn(&[u8], &mut Vec<f32>)| {
        data.chunks_exact(block).for_each(|b| f(b, out));
    };
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
        WeightDType::F64 => out.extend(data.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a) as f32
        })),
        WeightDType::Q4_0 => each(&mut out, q4_0),
        WeightDType::Q4_1 => each(&mut out, q4_1),
        WeightDType::Q5_0 => each(&mut out, q5_0),
        WeightDType::Q5_1 => each(&mut out, q5_1),
        WeightDType::Q8_0 => each(&mut out, q8_0),
        WeightDType::Q2_K => each(&mut out, q2_k),
        WeightDType::Q3_K => each(&mut out, q3_k),
        WeightDType::Q4_K => each(&mut out, q4_k),
        WeightDType::Q5_K => each(&mut out, q5_k),
        WeightDType::Q6_K => each(&mut out, q6_k),
        WeightDType::IQ4_NL => each(&mut out, iq4_nl),
        WeightDType::IQ4_XS => each(&mut out, iq4_xs),
        _ => return None,
    }
    Some(out)
}

/// Dequantize a whole tensor view (`None` as for [`dequantize`]).
pub fn dequantize_view(view: &TensorView<'_>) -> Option<Vec<f32>> {
    dequantize(view.dtype, &view.data, view.num_elements())
}

/// The 32 4-bit values of a Q4/Q5 block: low nibbles, then high nibbles.
fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = qs[j] & 15;
        q[j + 16] = qs[j] >> 4;
    }
    q
}

fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(
        nibbles(&b[2..18])
            .iter()
            .map(|&q| d * (q as i32 - 8) as f32),
    );
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    out.extend(nibbles(&b[4..20]).iter().map(|&q| d * q as f32 + m));
}

/// Five-bit values: nibbles plus bit j of `qh` as bit 4 of weight j.
fn five_bit(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = nibbles(qs);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((high >> j) & 1) as u8) << 4;
    }
    q
}

fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(
        five_bit(&b[2..6], &b[6..22])
            .iter()
            .map(|&q| d * (q as i32 - 16) as f32),
    );
}

fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    out.extend(
        five_bit(&b[4..8], &b[8..24])
            .iter()
            .map(|&q| d * q as f32 + m),
    );
}

fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
}

/// Q2_K: 16 sub-blocks of 16. Each 128-weight half reads 32 bytes of `qs`
/// four times (shifts 0, 2, 4, 6); each pass covers two sub-blocks.
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for pass in 0..4 {
            let shift = 2 * pass;
            for part in 0..2 {
                let sc = scales[8 * half + 2 * pass + part];
                let dl = d * (sc & 15) as f32;
                let ml = dmin * (sc >> 4) as f32;
                out.extend(
                    q[16 * part..16 * part + 16]
                        .iter()
                        .map(|&x| dl * ((x >> shift) & 3) as f32 - ml),
                );
            }
        }
    }
}

/// The 16 signed 6-bit Q3_K scales: low 4 bits from `sc[0..8]` (low then
/// high nibbles), top 2 bits from `sc[8..12]`, minus 32.
fn q3_k_scales(sc: &[u8]) -> [f32; 16] {
    let mut out = [0f32; 16];
    for (k, v) in out.iter_mut().enumerate() {
        let low = if k < 8 { sc[k] & 15 } else { sc[k - 8] >> 4 };
        let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
        *v = ((low | (high << 4)) as i32 - 32) as f32;
    }
    out
}

/// Q3_K: like Q2_K's layout for the low 2 bits; bit `w / 32` of
/// `hmask[w % 32]` set means +0, clear means −4.
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for pass in 0..4 {
            let bit = 4 * half + pass;
            for part in 0..2 {
                let dl = d * scales[8 * half + 2 * pass + part];
                out.extend((16 * part..16 * part + 16).map(|l| {
                    let low = ((q[l] >> (2 * pass)) & 3) as i32;
                    let sub = if (hmask[l] >> bit) & 1 == 1 { 0 } else { 4 };
                    dl * (low - sub) as f32
                }));
            }
        }
    }
}

/// Six-bit (scale, min) of sub-block `j` of a Q4_K/Q5_K block.
fn scale_min_k4(s: &[u8], j: usize) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        (
            ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)) as f32,
            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
        )
    }
}

/// Q4_K: each 64-weight chunk uses 32 bytes of `qs`: low nibbles are
/// sub-block 2c, high nibbles sub-block 2c+1.
fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (s, qs) = (&b[4..16], &b[16..144]);
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        for (sub, shift) in [(2 * c, 0), (2 * c + 1, 4)] {
            let (sc, m) = scale_min_k4(s, sub);
            let (dl, ml) = (d * sc, dmin * m);
            out.extend(q.iter().map(|&x| dl * ((x >> shift) & 15) as f32 - ml));
        }
    }
}

/// Q5_K: Q4_K plus bit `sub` of `qh[l]` as bit 4 of weight `l` of sub-block `sub`.
fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (s, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        for (sub, shift) in [(2 * c, 0), (2 * c + 1, 4)] {
            let (sc, m) = scale_min_k4(s, sub);
            let (dl, ml) = (d * sc, dmin * m);
            out.extend((0..32).map(|l| {
                let v = ((q[l] >> shift) & 15) | (((qh[l] >> sub) & 1) << 4);
                dl * v as f32 - ml
            }));
        }
    }
}

/// Q6_K: per 128-weight half, weights 0..32 take the low nibble of
/// `ql[0..32]` and qh bits 0-1, 32..64 the low nibble of `ql[32..64]` and
/// bits 2-3, 64..96 the high nibble of `ql[0..32]` and bits 4-5, 96..128 the
/// high nibble of `ql[32..64]` and bits 6-7; sub-blocks of 16 share a scale.
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    let mut v = [0f32; 256];
    for half in 0..2 {
        let (ql, qh) = (
            &ql[64 * half..64 * half + 64],
            &qh[32 * half..32 * half + 32],
        );
        for quarter in 0..4 {
            let (lo, shift) = match quarter {
                0 => (&ql[0..32], 0),
                1 => (&ql[32..64], 0),
                2 => (&ql[0..32], 4),
                _ => (&ql[32..64], 4),
            };
            for l in 0..32 {
                let q = ((lo[l] >> shift) & 15) | (((qh[l] >> (2 * quarter)) & 3) << 4);
                let w = 128 * half + 32 * quarter + l;
                let scale = (sc[w / 16] as i8) as f32;
                v[w] = d * scale * (q as i32 - 32) as f32;
            }
        }
    }
    out.extend_from_slice(&v);
}

/// The IQ4 code table (llama.cpp's `kvalues_iq4nl`).
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: Q4_0's nibble order, each nibble an index into [`IQ4_VALUES`].
fn iq4_nl(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(
        nibbles(&b[2..18])
            .iter()
            .map(|&q| d * IQ4_VALUES[q as usize] as f32),
    );
}

/// IQ4_XS: 8 sub-blocks of 32, each laid out as an IQ4_NL block's nibbles,
/// with a 6-bit scale (low 4 bits in `scales_l`, high 2 in `scales_h`).
fn iq4_xs(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let (scales_l, qs) = (&b[4..8], &b[8..136]);
    for ib in 0..8 {
        let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 15) as i32
            | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
        let dl = d * (ls - 32) as f32;
        out.extend(
            nibbles(&qs[16 * ib..16 * ib + 16])
                .iter()
                .map(|&q| dl * IQ4_VALUES[q as usize] as f32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_q4_1_and_q8_0_blocks() {
        let mut z = vec![0u8; 18];
        z[0..2].copy_from_slice(&h(2.0));
        z[2] = 0xF0; // weight 0: low nibble 0; weight 16: high nibble 15
        let v = dequantize(WeightDType::Q4_0, &z, 32).unwrap();
        assert_eq!((v[0], v[16], v[1]), (-16.0, 14.0, -16.0));

        let mut b = vec![0u8; 20];
        b[0..2].copy_from_slice(&h(0.5));
        b[2..4].copy_from_slice(&h(-1.0));
        b[4] = 0x3A;
        let v = dequantize(WeightDType::Q4_1, &b, 32).unwrap();
        assert_eq!((v[0], v[16], v[1]), (4.0, 0.5, -1.0));

        let mut q = vec![0u8; 34];
        q[0..2].copy_from_slice(&h(0.25));
        q[2] = (-4i8) as u8;
        q[33] = 8;
        let v = dequantize(WeightDType::Q8_0, &q, 32).unwrap();
        assert_eq!((v[0], v[31]), (-1.0, 2.0));
    }

    #[test]
    fn q5_blocks_take_bit_four_from_qh() {
        let mut b = vec![0u8; 22];
        b[0..2].copy_from_slice(&h(1.0));
        b[2..6].copy_from_slice(&(1u32 << 17 | 1).to_le_bytes()); // weights 0 and 17
        b[6] = 0x21; // weight 0 low nibble 1, weight 16 high nibble 2
        b[7] = 0x30; // weight 17 high nibble 3
        let v = dequantize(WeightDType::Q5_0, &b, 32).unwrap();
        assert_eq!((v[0], v[16], v[17], v[1]), (1.0, -14.0, 3.0, -16.0));

        let mut b = vec![0u8; 24];
        b[0..2].copy_from_slice(&h(0.5));
        b[2..4].copy_from_slice(&h(1.0));
        b[4..8].copy_from_slice(&(1u32 << 31).to_le_bytes()); // weight 31
        b[23] = 0xF0; // weight 31 high nibble 15
        let v = dequantize(WeightDType::Q5_1, &b, 32).unwrap();
        assert_eq!((v[31], v[0]), (0.5 * 31.0 + 1.0, 1.0));
    }

    #[test]
    fn q2_k_and_q3_k_sub_blocks() {
        let mut b = vec![0u8; 84];
        b[80..82].copy_from_slice(&h(1.0));
        b[82..84].copy_from_slice(&h(0.5));
        b[2] = 0x23; // scales[2]: sub-block 2 (half 0, shift 2, first 16) scale 3, min 2
        b[16] = 0b0000_1100; // qs[0]: value 3 at shift 2 → weight 32
        let v = dequantize(WeightDType::Q2_K, &b, 256).unwrap();
        assert_eq!(v[32], 3.0 * 3.0 - 1.0);
        assert_eq!(v[33], -1.0);
        assert_eq!(v[0], 0.0);

        let mut b = vec![0u8; 110];
        b[108..110].copy_from_slice(&h(1.0));
        // Every scale = 33 − 32 = 1: low nibbles 1, top bits (1 << 5 = 0b10 in bits 4-5) from sc[8..12].
        for s in &mut b[96..104] {
            *s = 0x11;
        }
        for s in &mut b[104..108] {
            *s = 0b1010_1010;
        }
        b[0] = 0b0000_0010; // hmask[0] bit 1 → weight 32 gets +0
        b[32] = 0b0000_1100; // qs[0]: 3 at shift 2 → weight 32
        let v = dequantize(WeightDType::Q3_K, &b, 256).unwrap();
        assert_eq!(v[32], 3.0);
        assert_eq!(v[0], -4.0, "bit clear → −4");
        assert_eq!(q3_k_scales(&b[96..108]), [1.0; 16]);
    }

    #[test]
    fn k4_k5_k6_scales_and_layout() {
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&h(1.0));
        b[2..4].copy_from_slice(&h(1.0));
        b[4] = 2 | (1 << 6); // sc0 = 2; top bits feed sc4's high part
        b[8] = 1; // m0 = 1
        b[12] = 3; // sc4 low = 3, m4 low = 0
        b[16] = 0x05; // weight 0 = 5 (sub-block 0), weight 32 = 0 (sub-block 1)
        b[16 + 64] = 0x01; // weight 128 (sub-block 4, low nibble) = 1
        let v = dequantize(WeightDType::Q4_K, &b, 256).unwrap();
        assert_eq!(v[0], 2.0 * 5.0 - 1.0);
        assert_eq!(v[128], (3.0 + 16.0) * 1.0);

        let mut b = vec![0u8; 176];
        b[0..2].copy_from_slice(&h(1.0));
        b[4] = 1; // sc0 = 1
        b[5] = 1; // sc1 = 1
        b[16] = 0b10; // qh[0] bit 1 → weight 32 (sub-block 1) gets +16
        b[48] = 0x21; // weight 0 = 1, weight 32 = 2
        let v = dequantize(WeightDType::Q5_K, &b, 256).unwrap();
        assert_eq!((v[0], v[32]), (1.0, 18.0));

        let mut b = vec![0u8; 210];
        b[208..210].copy_from_slice(&h(0.5));
        for s in &mut b[192..208] {
            *s = 2;
        }
        b[192 + 5] = (-1i8) as u8; // sub-block 5 = weights 80..96
        b[0] = 0x41; // weight 0 low nibble 1, weight 64 high nibble 4
        b[128] = 0b0011_0001; // weight 0 high bits 1, weight 64 high bits 3
        b[128 + 16] = 0b0000_1000; // weight 48 (quarter 1) high bits 2
        let v = dequantize(WeightDType::Q6_K, &b, 256).unwrap();
        assert_eq!(v[0], 0.5 * 2.0 * (17 - 32) as f32);
        assert_eq!(v[64], 0.5 * 2.0 * (52 - 32) as f32);
        assert_eq!(v[48], 0.5 * 2.0 * (32 - 32) as f32);
        assert_eq!(v[80], 16.0, "scale −1 times q − 32 = −32");
    }

    #[test]
    fn floats_and_size_mismatches() {
        let v = dequantize(WeightDType::BF16, &bf16::from_f32(1.5).to_le_bytes(), 1).unwrap();
        assert_eq!(v, vec![1.5]);
        let v = dequantize(WeightDType::F64, &(-2.0f64).to_le_bytes(), 1).unwrap();
        assert_eq!(v, vec![-2.0]);
        assert!(dequantize(WeightDType::Q4_0, &[0; 18], 31).is_none());
        assert!(dequantize(WeightDType::Q4_0, &[0; 17], 32).is_none());
        assert!(dequantize(WeightDType::I32, &[0; 4], 1).is_none());
        assert!(dequantize(WeightDType::IQ2_XXS, &[0; 66], 256).is_none());
    }

    #[test]
    fn iq4_blocks_index_the_table() {
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&h(0.5));
        b[2] = 0xf1; // weight 0 → T[1], weight 16 → T[15]
        let v = dequantize(WeightDType::IQ4_NL, &b, 32).unwrap();
        assert_eq!((v[0], v[16], v[1]), (-52.0, 56.5, -63.5));
        // IQ4_XS: sub-block 3 has ls = 0b10_0101 = 37, so its scale is d·5.
        let mut b = vec![0u8; 136];
        b[0..2].copy_from_slice(&h(0.25));
        b[2..4].copy_from_slice(&(0b10u16 << 6).to_le_bytes());
        b[4 + 1] = 0x50; // scales_l for sub-block 3 (high nibble of byte 1)
        b[8 + 16 * 3] = 0x08; // sub-block 3, weight 0 → T[8] = 1
        let v = dequantize(WeightDType::IQ4_XS, &b, 256).unwrap();
        assert_eq!(v[96], 1.25);
        assert_eq!(v[97], 0.25 * 5.0 * -127.0);
        assert_eq!(v[0], 0.25 * -32.0 * -127.0);
    }
}
