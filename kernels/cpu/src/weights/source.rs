//! GGUF source blocks decoded into the integers the kernels multiply.
//!
//! Each decoder follows llama.cpp's `dequantize_row_*` for its format and
//! stops before any floating-point step: it yields the unsigned code of
//! every weight, the per-sub-block scale (and minimum) bytes as the packed
//! layout stores them, and the raw f16 bits of `d` (and `m`/`dmin`).

use super::format::WeightFormat;

/// One source block in integer form.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    /// Unsigned code per weight, in column order (`block_size` used):
    /// `q + 128` for Q8_0, the table index for IQ4, `q` otherwise.
    pub codes: [u8; 256],
    /// Scale byte per sub-block (16 for 16-weight sub-blocks, 8 for 32).
    pub sub: [u8; 16],
    /// Minimum byte per 32-weight sub-block (Q4_K/Q5_K).
    pub mins: [u8; 8],
    /// f16 bits of `d`.
    pub d: u16,
    /// f16 bits of `m` (Q4_1/Q5_1) or `dmin` (Q2_K/Q4_K/Q5_K), else 0.
    pub m: u16,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Q4_0-style nibbles of 16 bytes: weight j < 16 is the low nibble of `qs[j]`,
/// weight j + 16 its high nibble.
fn nibbles(qs: &[u8], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = qs[j] & 15;
        out[j + 16] = qs[j] >> 4;
    }
}

/// Bit j of the little-endian u32 `qh` becomes bit 4 of weight j.
fn fifth_bits(qh: &[u8], out: &mut [u8]) {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, o) in out.iter_mut().enumerate().take(32) {
        *o |= (((h >> j) & 1) as u8) << 4;
    }
}

/// The 6-bit (scale, min) of sub-block `j` of a Q4_K/Q5_K block.
fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Decode one source block of `fmt` (`blk.len() == fmt.block_bytes()`).
///
/// Panics for float formats and integer groups (never called for them).
pub(crate) fn decode(fmt: WeightFormat, blk: &[u8]) -> Decoded {
    let mut o = Decoded {
        codes: [0; 256],
        sub: [0; 16],
        mins: [0; 8],
        d: 0,
        m: 0,
    };
    let c = &mut o.codes;
    match fmt {
        WeightFormat::Q4_0 | WeightFormat::IQ4_NL => {
            o.d = u16_at(blk, 0);
            nibbles(&blk[2..18], c);
        }
        WeightFormat::Q4_1 => {
            (o.d, o.m) = (u16_at(blk, 0), u16_at(blk, 2));
            nibbles(&blk[4..20], c);
        }
        WeightFormat::Q5_0 => {
            o.d = u16_at(blk, 0);
            nibbles(&blk[6..22], c);
            fifth_bits(&blk[2..6], c);
        }
        WeightFormat::Q5_1 => {
            (o.d, o.m) = (u16_at(blk, 0), u16_at(blk, 2));
            nibbles(&blk[8..24], c);
            fifth_bits(&blk[4..8], c);
        }
        WeightFormat::Q8_0 => {
            o.d = u16_at(blk, 0);
            for j in 0..32 {
                c[j] = blk[2 + j] ^ 0x80;
            }
        }
        WeightFormat::Q2_K => {
            let (scales, qs) = (&blk[0..16], &blk[16..80]);
            (o.d, o.m) = (u16_at(blk, 80), u16_at(blk, 82));
            o.sub.copy_from_slice(scales);
            // Column 128n + 32j + l is bits 2j.. of qs[32n + l].
            for col in 0..256 {
                let (n, r) = (col / 128, col % 128);
                c[col] = (qs[32 * n + r % 32] >> (2 * (r / 32))) & 3;
            }
        }
        WeightFormat::Q3_K => {
            let (hmask, qs, sc) = (&blk[0..32], &blk[32..96], &blk[96..108]);
            o.d = u16_at(blk, 108);
            for s in 0..16 {
                let low = (sc[s % 8] >> (4 * (s / 8))) & 15;
                let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
                o.sub[s] = ((low | (high << 4)) as i32 - 32) as i8 as u8;
            }
            // Column 128n + 32j + l: low bits 2j.. of qs[32n + l], high bit
            // 4n + j of hmask[l]; a clear high bit means q − 4, so the
            // unsigned code is low + 4·high with offset 4.
            for col in 0..256 {
                let (n, r) = (col / 128, col % 128);
                let (j, l) = (r / 32, r % 32);
                let low = (qs[32 * n + l] >> (2 * j)) & 3;
                let high = (hmask[l] >> (4 * n + j)) & 1;
                c[col] = low | (high << 2);
            }
        }
        WeightFormat::Q4_K | WeightFormat::Q5_K => {
            (o.d, o.m) = (u16_at(blk, 0), u16_at(blk, 2));
            let scales = &blk[4..16];
            for j in 0..8 {
                (o.sub[j], o.mins[j]) = k4_scale_min(scales, j);
            }
            let (qh, qs) = if fmt == WeightFormat::Q5_K {
                (Some(&blk[16..48]), &blk[48..176])
            } else {
                (None, &blk[16..144])
            };
            // Column 64j + l is the low nibble of qs[32j + l], column
            // 64j + 32 + l its high nibble; Q5_K's fifth bit of sub-block s,
            // weight l, is bit s of qh[l].
            for col in 0..256 {
                let (j, r) = (col / 64, col % 64);
                let byte = qs[32 * j + r % 32];
                c[col] = if r < 32 { byte & 15 } else { byte >> 4 };
                if let Some(qh) = qh {
                    c[col] |= ((qh[col % 32] >> (col / 32)) & 1) << 4;
                }
            }
        }
        WeightFormat::Q6_K => {
            let (ql, qh, scales) = (&blk[0..128], &blk[128..192], &blk[192..208]);
            o.d = u16_at(blk, 208);
            o.sub.copy_from_slice(scales);
            // Per 128-half n, column 32k + l (k < 4) takes a nibble of
            // ql[64n + 32(k % 2) + l] (low for k < 2) and bits 2k.. of qh[32n + l].
            for col in 0..256 {
                let (n, r) = (col / 128, col % 128);
                let (k, l) = (r / 32, r % 32);
                let byte = ql[64 * n + 32 * (k % 2) + l];
                let low = if k < 2 { byte & 15 } else { byte >> 4 };
                let high = (qh[32 * n + l] >> (2 * k)) & 3;
                c[col] = low | (high << 4);
            }
        }
        WeightFormat::IQ4_XS => {
            o.d = u16_at(blk, 0);
            let scales_h = u16_at(blk, 2);
            let (scales_l, qs) = (&blk[4..8], &blk[8..136]);
            for ib in 0..8 {
                let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 15;
                let high = ((scales_h >> (2 * ib)) & 3) as u8;
                o.sub[ib] = ((low | (high << 4)) as i32 - 32) as i8 as u8;
                nibbles(&qs[16 * ib..16 * ib + 16], &mut c[32 * ib..32 * ib + 32]);
            }
        }
        WeightFormat::F32
        | WeightFormat::F16
        | WeightFormat::BF16
        | WeightFormat::F8_E4M3
        | WeightFormat::Int { .. } => {
            panic!("decode: {} has no GGUF blocks", fmt.name())
        }
    }
    o
}
