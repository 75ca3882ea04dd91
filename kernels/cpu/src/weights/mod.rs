//! Weight matrices in float and GGUF block formats, repacked for the kernels.
//!
//! A [`WeightMatrix`] is `[rows, cols]` = `[out_features, in_features]`,
//! built from checkpoint bytes (HF row-major; GGUF blocks along a row).
//! At construction the rows are interleaved in groups of [`GROUP_ROWS`] so a
//! SIMD lane holds one output row and no kernel needs a horizontal sum.
//!
//! Float formats: per group, `[cols][16]` elements in the source type;
//! FP8 E4M3 adds the group's 16 row scales as f32 (multiplied by 256, see
//! [`fp8`]) after its codes.
//!
//! Block formats are seen by the kernels in blocks of 32 columns (a 256-weight
//! K-quant super-block is 8 of them sharing `d`/`dmin`). Per group, in order:
//!
//! | part | size per 32-block | content |
//! |---|---|---|
//! | codes | 128, 256 or 512 B | chunk `c` (64 B) holds, per lane `r`, 4 bytes for columns `4c+j` |
//! | planes | 64 B each (0–2) | per lane a u32 whose bit `8j + c` is bit `code_bits + p` of column `4c + j` |
//! | sub-scales | 16 B per sub-block | one byte per lane ([`format::SubScale`]) |
//! | sub-minimums | 16 B | Q4_K/Q5_K: one 6-bit minimum per lane |
//! | `d` | 32 B per unit | f16 per lane; a unit is a block, or a super-block for K-quants and IQ4_XS |
//! | `m`/`dmin` | 32 B per unit | f16 per lane, for formats with a minimum |
//!
//! Code bytes: 8-bit codes are one byte per column (Q8_0 stores `q + 128`);
//! 4-bit codes put column `4c+j` in the low nibble and `16+4c+j` in the high
//! nibble of chunk `c < 4` (the GGUF Q4_0 byte itself); 2-bit codes put
//! column `4(c + 2s) + j` in bits `2s..2s+2` of chunk `c < 2`. Every code is
//! unsigned, ready for `u8 × s8` dot products, and the format's offset (8 for
//! Q4_0, 16 for Q5_0, 128 for Q8_0 and IQ4, 32 for Q6_K, 4 for Q3_K) is
//! corrected exactly in integers through the activation sums.
//!
//! The packed size equals the source size except for padding of the last
//! group to 16 rows and of each group to a cache line, and for the
//! K-quant scales, which are unpacked to a byte each (Q4_K +2.8%, Q5_K
//! +2.3%, Q3_K +3.6%, IQ4_XS +1.5%).

pub mod format;
pub mod fp8;
mod source;

use half::{bf16, f16};

pub(crate) use self::format::{IQ4_CODES, MinKind, Packing, SubScale};
pub use self::format::{IQ4_VALUES, WeightFormat};
use crate::aligned::AlignedBytes;
use crate::error::KernelError;

/// Output rows interleaved per group (one SIMD lane each).
pub const GROUP_ROWS: usize = 16;
/// Weights per kernel block (every block format is seen in blocks of 32).
pub const BLOCK: usize = 32;

/// A `[rows, cols]` weight (rows = output features), repacked into 16-row groups.
#[derive(Debug, Clone)]
pub struct WeightMatrix {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    groups: usize,
    group_bytes: usize,
    /// 32-blocks per scale unit (block formats).
    unit_blocks: usize,
    /// Packed column `i` holds input feature `perm[i]` (GPTQ act-order).
    perm: Option<Box<[u32]>>,
    data: AlignedBytes,
}

/// Byte offsets inside one packed quantized group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantLayout {
    /// 32-blocks per row.
    pub nb: usize,
    /// Code bytes per block.
    pub cb: usize,
    /// Offset of the high-bit planes (`planes` × 64 B per block).
    pub plane_off: usize,
    /// Offset of the sub-block scale bytes (`subs` × 16 B per block).
    pub sc_off: usize,
    /// Offset of the sub-block minimum bytes (16 B per block).
    pub mn_off: usize,
    /// Offset of the `d` scales (32 B per unit).
    pub d_off: usize,
    /// Offset of the `m`/`dmin` values (32 B per unit).
    pub m_off: usize,
    /// Offset of the zero-point bytes (16 B per unit).
    pub zp_off: usize,
    /// 32-blocks per unit.
    pub unit_blocks: usize,
    /// Bytes of one group's parts, before padding.
    pub end: usize,
}

impl QuantLayout {
    fn new(p: &Packing, cols: usize, unit_blocks: usize) -> Option<QuantLayout> {
        let nb = cols / BLOCK;
        let units = nb.checked_div(unit_blocks)?;
        let cb = p.code_bytes();
        let plane_off = nb.checked_mul(cb)?;
        let sc_off = plane_off.checked_add(nb.checked_mul(64 * p.planes)?)?;
        let sc_bytes = if p.sub_scale == SubScale::None {
            0
        } else {
            nb.checked_mul(16 * p.subs)?
        };
        let mn_off = sc_off.checked_add(sc_bytes)?;
        let mn_bytes = if p.min == MinKind::SubBytes {
            nb.checked_mul(16)?
        } else {
            0
        };
        let d_off = mn_off.checked_add(mn_bytes)?;
        let m_off = d_off.checked_add(units.checked_mul(32)?)?;
        let zp_off = if p.has_unit_min() {
            m_off.checked_add(units.checked_mul(32)?)?
        } else {
            m_off
        };
        let end = if p.min == MinKind::Zero {
            zp_off.checked_add(units.checked_mul(16)?)?
        } else {
            zp_off
        };
        Some(QuantLayout {
            nb,
            cb,
            plane_off,
            sc_off,
            mn_off,
            d_off,
            m_off,
            zp_off,
            unit_blocks,
            end,
        })
    }
}

impl WeightMatrix {
    /// Build from source bytes in the checkpoint layout (little-endian,
    /// `rows` rows of `format.row_bytes(cols)` bytes each).
    pub fn from_raw(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<WeightMatrix, KernelError> {
        if format.is_int_groups() {
            return Err(KernelError::NoEncoder {
                format: format.name(),
            });
        }
        if format == WeightFormat::F8_E4M3 {
            return Err(KernelError::Fp8Parts {
                what: "codes alone have no row scales (build it with from_fp8)".into(),
            });
        }
        let row_bytes = format.row_bytes(cols).ok_or(KernelError::PartialBlock {
            format: format.name(),
            block: format.block_size(),
            cols,
        })?;
        let expected = rows
            .checked_mul(row_bytes)
            .ok_or(KernelError::TooLarge { rows, cols })?;
        if bytes.len() != expected {
            return Err(KernelError::ByteLength {
                format: format.name(),
                rows,
                cols,
                expected,
                got: bytes.len(),
            });
        }
        let unit_blocks = format.packing().map_or(1, |p| p.unit_blocks);
        let mut w = WeightMatrix::zeroed(format, rows, cols, unit_blocks)?;
        for r in 0..rows {
            w.pack_row(r, &bytes[r * row_bytes..(r + 1) * row_bytes]);
        }
        Ok(w)
    }

    /// Build an integer-group matrix ([`WeightFormat::Int`]) from unpacked
    /// parts: `codes[rows, cols]` (one unsigned code per byte, below
    /// `2^bits`), 16-bit scale bits `scales[rows, cols / group]` and zero
    /// points `zeros[rows, cols / group]`, for groups of `group` consecutive
    /// columns (a multiple of 32). With `perm`, column `i` of the parts is
    /// input feature `perm[i]` (the activations are gathered to match).
    pub fn from_int(parts: IntParts<'_>) -> Result<WeightMatrix, KernelError> {
        let IntParts {
            bits,
            bf16_scales,
            rows,
            cols,
            group,
            codes,
            scales,
            zeros,
            perm,
        } = parts;
        let format = WeightFormat::Int { bits, bf16_scales };
        let bad = |what: String| KernelError::IntParts {
            format: format.name(),
            what,
        };
        if ![2, 3, 4, 8].contains(&bits) {
            return Err(bad(format!(
                "{bits}-bit codes are not supported (2, 3, 4 or 8)"
            )));
        }
        if group == 0 || !group.is_multiple_of(BLOCK) || !cols.is_multiple_of(group) {
            return Err(bad(format!(
                "group size {group} must be a multiple of 32 that divides in_features {cols}"
            )));
        }
        let n_groups = cols / group;
        let want = |name: &str, len: usize, need: usize| {
            (len == need).then_some(()).ok_or_else(|| {
                bad(format!(
                    "{name} has {len} values, [{rows}, {cols}] needs {need}"
                ))
            })
        };
        want("codes", codes.len(), rows * cols)?;
        want("scales", scales.len(), rows * n_groups)?;
        want("zeros", zeros.len(), rows * n_groups)?;
        if let Some(p) = perm {
            want("perm", p.len(), cols)?;
            let mut seen = vec![false; cols];
            for &i in p {
                if (i as usize) >= cols || std::mem::replace(&mut seen[i as usize], true) {
                    return Err(bad(format!("perm is not a permutation of 0..{cols}")));
                }
            }
        }
        if let Some(c) = codes.iter().find(|&&c| u32::from(c) >> bits != 0) {
            return Err(bad(format!("code {c} does not fit in {bits} bits")));
        }
        let mut w = WeightMatrix::zeroed(format, rows, cols, group / BLOCK)?;
        w.perm = perm.map(|p| p.into());
        let p = w.packing();
        let l = w.quant_layout();
        let gb = w.group_bytes;
        for r in 0..rows {
            let lane = r % GROUP_ROWS;
            let grp = &mut w.data.as_mut_slice()[r / GROUP_ROWS * gb..][..gb];
            for u in 0..n_groups {
                let at = l.d_off + u * 32 + lane * 2;
                grp[at..at + 2].copy_from_slice(&scales[r * n_groups + u].to_le_bytes());
                grp[l.zp_off + u * 16 + lane] = zeros[r * n_groups + u];
            }
            for b in 0..cols / BLOCK {
                let row_codes = &codes[r * cols + b * BLOCK..][..BLOCK];
                pack_block(&p, &l, grp, b, lane, row_codes);
            }
        }
        Ok(w)
    }

    /// Build an FP8 E4M3 matrix from `codes[rows, cols]` (one E4M3 code per
    /// byte) and one f32 `scales[rows]` per row: `W[r, c] = scales[r]·e4m3(codes[r, c])`.
    /// NaN codes (`0x7F`, `0xFF`) and non-finite scales are refused.
    pub fn from_fp8(
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
    ) -> Result<WeightMatrix, KernelError> {
        let bad = |what: String| KernelError::Fp8Parts { what };
        let need = rows
            .checked_mul(cols)
            .ok_or(KernelError::TooLarge { rows, cols })?;
        if codes.len() != need || scales.len() != rows {
            return Err(bad(format!(
                "[{rows}, {cols}] needs {need} codes and {rows} scales, got {} and {}",
                codes.len(),
                scales.len()
            )));
        }
        if let Some(i) = codes.iter().position(|&c| fp8::is_e4m3_nan(c)) {
            return Err(bad(format!(
                "row {}, column {} holds the NaN code {:#04x}",
                i / cols,
                i % cols,
                codes[i]
            )));
        }
        if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
            return Err(bad(format!("row {r} has the scale {}", scales[r])));
        }
        let mut w = WeightMatrix::zeroed(WeightFormat::F8_E4M3, rows, cols, 1)?;
        let scale_off = w.row_scale_offset();
        for r in 0..rows {
            w.pack_row(r, &codes[r * cols..(r + 1) * cols]);
            let gb = w.group_bytes;
            let group = &mut w.data.as_mut_slice()[r / GROUP_ROWS * gb..][..gb];
            let folded = scales[r] * fp8::F16_FOLD;
            group[scale_off + (r % GROUP_ROWS) * 4..][..4].copy_from_slice(&folded.to_le_bytes());
        }
        Ok(w)
    }

    /// Quantize or convert f32 values `[rows, cols]` into `format` (the GGUF
    /// reference rounding for block formats; for FP8 a scale of `amax/448`
    /// per row and codes rounded to nearest even), then pack. Formats without an
    /// encoder here (the K-quants, Q5 and IQ4) are refused: they come from
    /// checkpoints.
    pub fn from_f32(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<WeightMatrix, KernelError> {
        if format != WeightFormat::F8_E4M3 && !ENCODABLE.contains(&format) {
            return Err(KernelError::NoEncoder {
                format: format.name(),
            });
        }
        if values.len() != rows.saturating_mul(cols) {
            return Err(KernelError::ByteLength {
                format: "F32",
                rows,
                cols,
                expected: rows.saturating_mul(cols).saturating_mul(4),
                got: values.len().saturating_mul(4),
            });
        }
        if format == WeightFormat::F8_E4M3 {
            let (codes, mut scales) = fp8::quantize_rows(values, cols);
            // A zero-width row has no values to give it a scale.
            scales.resize(rows, 1.0);
            return WeightMatrix::from_fp8(rows, cols, &codes, &scales);
        }
        let mut raw = Vec::new();
        for row in values.chunks_exact(cols.max(1)).take(rows) {
            encode_row(format, row, &mut raw);
        }
        if cols == 0 {
            return WeightMatrix::from_raw(format, rows, cols, &[]);
        }
        WeightMatrix::from_raw(format, rows, cols, &raw)
    }

    fn zeroed(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        unit_blocks: usize,
    ) -> Result<WeightMatrix, KernelError> {
        let too_large = KernelError::TooLarge { rows, cols };
        let groups = rows.div_ceil(GROUP_ROWS);
        let group_bytes = match format.packing() {
            Some(p) => QuantLayout::new(&p, cols, unit_blocks).map(|l| l.end),
            None => cols
                .checked_mul(GROUP_ROWS * format.elem_bytes())
                .and_then(|b| b.checked_add(format.row_scale_bytes())),
        }
        .and_then(|b| b.checked_next_multiple_of(64))
        .ok_or(too_large.clone())?;
        let total = groups.checked_mul(group_bytes).ok_or(too_large)?;
        Ok(WeightMatrix {
            format,
            rows,
            cols,
            groups,
            group_bytes,
            unit_blocks,
            perm: None,
            data: AlignedBytes::zeroed(total),
        })
    }

    /// Scatter one source row into its group.
    fn pack_row(&mut self, r: usize, src: &[u8]) {
        let (fmt, lane) = (self.format, r % GROUP_ROWS);
        let gb = self.group_bytes;
        let Some(p) = fmt.packing() else {
            let group = &mut self.data.as_mut_slice()[r / GROUP_ROWS * gb..][..gb];
            let es = fmt.elem_bytes();
            for (kk, e) in src.chunks_exact(es).enumerate() {
                group[(kk * GROUP_ROWS + lane) * es..][..es].copy_from_slice(e);
            }
            return;
        };
        let l = self.quant_layout();
        let group = &mut self.data.as_mut_slice()[r / GROUP_ROWS * gb..][..gb];
        let per_unit = fmt.block_size() / BLOCK;
        for (u, blk) in src.chunks_exact(fmt.block_bytes()).enumerate() {
            let dec = source::decode(fmt, blk);
            let unit = u * per_unit / p.unit_blocks;
            group[l.d_off + unit * 32 + lane * 2..][..2].copy_from_slice(&dec.d.to_le_bytes());
            if p.has_unit_min() {
                group[l.m_off + unit * 32 + lane * 2..][..2].copy_from_slice(&dec.m.to_le_bytes());
            }
            for bi in 0..per_unit {
                let b = u * per_unit + bi;
                pack_block(
                    &p,
                    &l,
                    group,
                    b,
                    lane,
                    &dec.codes[bi * BLOCK..(bi + 1) * BLOCK],
                );
                if p.sub_scale != SubScale::None {
                    for s in 0..p.subs {
                        group[l.sc_off + (b * p.subs + s) * 16 + lane] = dec.sub[bi * p.subs + s];
                    }
                }
                if p.min == MinKind::SubBytes {
                    group[l.mn_off + b * 16 + lane] = dec.mins[bi];
                }
            }
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Storage format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes held (packed, including padding).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes the matrix occupies in its source format (what a matmul streams).
    pub fn source_bytes(&self) -> usize {
        self.rows * self.format.row_bytes(self.cols).unwrap_or(0)
            + self.format.row_scale_bytes() / GROUP_ROWS * self.rows
    }

    /// Offset inside a packed FP8 group of its 16 f32 row scales (each
    /// multiplied by [`fp8::F16_FOLD`], for the f16 form of the codes).
    pub(crate) fn row_scale_offset(&self) -> usize {
        self.cols * GROUP_ROWS
    }

    /// Number of 16-row groups.
    pub(crate) fn groups(&self) -> usize {
        self.groups
    }

    /// The packed bytes of group `g`.
    /// Bytes from one group's start to the next's.
    pub(crate) fn group_stride(&self) -> usize {
        self.group_bytes
    }

    pub(crate) fn group(&self, g: usize) -> &[u8] {
        &self.data.as_slice()[g * self.group_bytes..(g + 1) * self.group_bytes]
    }

    /// The kernels' view of the format (block formats only).
    pub(crate) fn packing(&self) -> Packing {
        self.format
            .packing()
            .expect("packing() asked of a float weight")
    }

    /// Offsets inside a quantized group.
    pub(crate) fn quant_layout(&self) -> QuantLayout {
        QuantLayout::new(&self.packing(), self.cols, self.unit_blocks)
            .expect("layout checked at construction")
    }

    /// The input permutation of an act-order matrix: packed column `i` is
    /// input feature `perm[i]`.
    pub fn perm(&self) -> Option<&[u32]> {
        self.perm.as_deref()
    }

    /// Dequantize (or convert) row `r` into `out[..cols]` as f32, with the
    /// arithmetic of llama.cpp's dequantizers (`(d·sc)·(q − offset)`, then
    /// `+ m` or `− dmin·m`).
    ///
    /// Panics if `r >= rows` or `out` is shorter than `cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows,
            "row {r} outside a matrix of {} rows",
            self.rows
        );
        if let Some(perm) = &self.perm {
            let mut packed = vec![0f32; self.cols];
            self.dequantize_packed_row(r, &mut packed);
            for (&i, v) in perm.iter().zip(packed) {
                out[i as usize] = v;
            }
            return;
        }
        self.dequantize_packed_row(r, out);
    }

    /// Row `r` in packed column order.
    fn dequantize_packed_row(&self, r: usize, out: &mut [f32]) {
        let out = &mut out[..self.cols];
        let (group, lane) = (self.group(r / GROUP_ROWS), r % GROUP_ROWS);
        let elem = |kk: usize, es: usize| &group[(kk * GROUP_ROWS + lane) * es..][..es];
        match self.format {
            WeightFormat::F32 => {
                for (kk, o) in out.iter_mut().enumerate() {
                    let e = elem(kk, 4);
                    *o = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                }
            }
            WeightFormat::F16 => {
                for (kk, o) in out.iter_mut().enumerate() {
                    let e = elem(kk, 2);
                    *o = f16::from_le_bytes([e[0], e[1]]).to_f32();
                }
            }
            WeightFormat::BF16 => {
                for (kk, o) in out.iter_mut().enumerate() {
                    let e = elem(kk, 2);
                    *o = bf16::from_le_bytes([e[0], e[1]]).to_f32();
                }
            }
            WeightFormat::F8_E4M3 => {
                let at = self.row_scale_offset() + lane * 4;
                let scale =
                    f32::from_le_bytes([group[at], group[at + 1], group[at + 2], group[at + 3]]);
                for (kk, o) in out.iter_mut().enumerate() {
                    let code = elem(kk, 1)[0];
                    *o = f16::from_bits(fp8::e4m3_f16_bits(code)).to_f32() * scale;
                }
            }
            _ => {
                let p = self.packing();
                let l = self.quant_layout();
                let sub_len = BLOCK / p.subs;
                for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
                    let codes = block_codes(&p, &l, group, b, lane);
                    for s in 0..p.subs {
                        let f = sub_factors(&p, &l, group, b, s, lane);
                        for i in s * sub_len..(s + 1) * sub_len {
                            let q = if p.lut {
                                IQ4_VALUES[codes[i] as usize] as f32
                            } else {
                                (codes[i] as i32 - p.offset) as f32
                            };
                            // llama.cpp: `d·q + m`, and `(d·sc)·q − dmin·m` with
                            // the minimum already negated.
                            o[i] = match p.min {
                                MinKind::None => f.scale * q,
                                _ => f.scale * q + f.min,
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Per-sub-block f32 factors of one lane: `scale` multiplies `q − offset`,
/// `min` is added (already negated for the K-quants). Both are exact
/// products of an f16 and a small integer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubFactors {
    pub scale: f32,
    pub min: f32,
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The parts of an integer-group weight ([`WeightMatrix::from_int`]).
#[derive(Debug, Clone, Copy)]
pub struct IntParts<'a> {
    /// Bits per code: 2, 3, 4 or 8.
    pub bits: u8,
    /// `scales` hold bf16 bits rather than f16 bits.
    pub bf16_scales: bool,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Columns per group (a multiple of 32 dividing `cols`).
    pub group: usize,
    /// `[rows, cols]` unsigned codes, one per byte.
    pub codes: &'a [u8],
    /// `[rows, cols / group]` 16-bit scale bits.
    pub scales: &'a [u16],
    /// `[rows, cols / group]` zero points.
    pub zeros: &'a [u8],
    /// Input feature of each packed column, when not the identity.
    pub perm: Option<&'a [u32]>,
}

/// The scale and minimum of sub-block `s` of block `b`, lane `lane` (the
/// definition every kernel follows).
#[inline(always)]
pub(crate) fn sub_factors(
    p: &Packing,
    l: &QuantLayout,
    group: &[u8],
    b: usize,
    s: usize,
    lane: usize,
) -> SubFactors {
    let unit = b / l.unit_blocks;
    let d_bits = [
        group[l.d_off + unit * 32 + lane * 2],
        group[l.d_off + unit * 32 + lane * 2 + 1],
    ];
    let d = if p.d_bf16 {
        bf16::from_le_bytes(d_bits).to_f32()
    } else {
        f16::from_le_bytes(d_bits).to_f32()
    };
    let sc = match p.sub_scale {
        SubScale::None => 0,
        _ => group[l.sc_off + (b * p.subs + s) * 16 + lane],
    };
    let scale = match p.sub_scale {
        SubScale::None => d,
        SubScale::U8 => d * sc as f32,
        SubScale::I8 => d * (sc as i8) as f32,
        SubScale::Q2K => d * (sc & 15) as f32,
    };
    let min = match p.min {
        MinKind::None => 0.0,
        MinKind::Add => f16_at(group, l.m_off + unit * 32 + lane * 2),
        MinKind::SubBytes => {
            -(f16_at(group, l.m_off + unit * 32 + lane * 2)
                * group[l.mn_off + b * 16 + lane] as f32)
        }
        MinKind::SubQ2K => -(f16_at(group, l.m_off + unit * 32 + lane * 2) * (sc >> 4) as f32),
        MinKind::Zero => -(d * group[l.zp_off + unit * 16 + lane] as f32),
    };
    SubFactors { scale, min }
}

/// The 32 unsigned codes (table indexes for IQ4) of block `b`, lane `lane`.
#[inline(always)]
pub(crate) fn block_codes(
    p: &Packing,
    l: &QuantLayout,
    group: &[u8],
    b: usize,
    lane: usize,
) -> [u8; 32] {
    let codes = &group[b * l.cb..][..l.cb];
    let mut out = [0u8; 32];
    for (col, o) in out.iter_mut().enumerate() {
        let (c, j) = (col / 4, col % 4);
        *o = match p.code_bits {
            8 => codes[c * 64 + lane * 4 + j],
            4 => (codes[(c % 4) * 64 + lane * 4 + j] >> (4 * (c / 4))) & 15,
            _ => (codes[(c % 2) * 64 + lane * 4 + j] >> (2 * (c / 2))) & 3,
        };
        for pl in 0..p.planes {
            let at = l.plane_off + (b * p.planes + pl) * 64 + lane * 4;
            let word = u32::from_le_bytes([group[at], group[at + 1], group[at + 2], group[at + 3]]);
            *o |= (((word >> (8 * j + c)) & 1) as u8) << (p.code_bits as usize + pl);
        }
    }
    out
}

/// Write one lane's 32 codes of block `b` into the group's code bytes and
/// high-bit planes.
fn pack_block(p: &Packing, l: &QuantLayout, group: &mut [u8], b: usize, lane: usize, codes: &[u8]) {
    pack_codes(p, codes, &mut group[b * l.cb..][..l.cb], lane);
    for pl in 0..p.planes {
        let bit = p.code_bits as usize + pl;
        let mut word = 0u32;
        for (col, &code) in codes.iter().enumerate() {
            let (c, j) = (col / 4, col % 4);
            word |= (((code >> bit) & 1) as u32) << (8 * j + c);
        }
        let at = l.plane_off + (b * p.planes + pl) * 64 + lane * 4;
        group[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }
}

/// Write one lane's 32 codes of a block into its code bytes.
fn pack_codes(p: &Packing, codes: &[u8], dst: &mut [u8], lane: usize) {
    for (col, &code) in codes.iter().enumerate() {
        let (c, j) = (col / 4, col % 4);
        match p.code_bits {
            8 => dst[c * 64 + lane * 4 + j] = code,
            4 => dst[(c % 4) * 64 + lane * 4 + j] |= (code & 15) << (4 * (c / 4)),
            _ => dst[(c % 2) * 64 + lane * 4 + j] |= (code & 3) << (2 * (c / 2)),
        }
    }
}

/// Formats [`WeightMatrix::from_f32`] can encode.
const ENCODABLE: [WeightFormat; 6] = [
    WeightFormat::F32,
    WeightFormat::F16,
    WeightFormat::BF16,
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q8_0,
];

/// Append the source encoding of one f32 row in `format` to `out`.
fn encode_row(format: WeightFormat, row: &[f32], out: &mut Vec<u8>) {
    match format {
        WeightFormat::F32 => row.iter().for_each(|v| out.extend(v.to_le_bytes())),
        WeightFormat::F16 => row
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        WeightFormat::BF16 => row
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        WeightFormat::Q8_0 => {
            for blk in row.chunks(BLOCK) {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(blk.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        WeightFormat::Q4_0 => {
            for blk in row.chunks(BLOCK) {
                // The value of largest magnitude, with its sign, maps to −8.
                let max = blk
                    .iter()
                    .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(blk[j]) | (q(blk[j + 16]) << 4)));
            }
        }
        WeightFormat::Q4_1 => {
            for blk in row.chunks(BLOCK) {
                let min = blk.iter().fold(f32::INFINITY, |a, &v| a.min(v));
                let max = blk.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(blk[j]) | (q(blk[j + 16]) << 4)));
            }
        }
        other => unreachable!(
            "{} has no encoder (from_f32 checks ENCODABLE)",
            other.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dequantize a GGUF block directly from its source bytes (the oracle).
    fn dequant_source(fmt: WeightFormat, blk: &[u8]) -> Vec<f32> {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        match fmt {
            WeightFormat::Q8_0 => blk[2..34].iter().map(|&q| d * (q as i8) as f32).collect(),
            WeightFormat::Q4_0 => {
                let qs = &blk[2..18];
                let mut v: Vec<f32> = qs.iter().map(|q| d * ((q & 15) as f32 - 8.0)).collect();
                v.extend(qs.iter().map(|q| d * ((q >> 4) as f32 - 8.0)));
                v
            }
            _ => {
                let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                let qs = &blk[4..20];
                let mut v: Vec<f32> = qs.iter().map(|q| d * (q & 15) as f32 + m).collect();
                v.extend(qs.iter().map(|q| d * (q >> 4) as f32 + m));
                v
            }
        }
    }

    fn pseudo_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn packed_rows_dequantize_to_the_source_blocks() {
        for fmt in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let (rows, cols) = (19, 96);
            let mut raw = pseudo_bytes(rows * fmt.row_bytes(cols).unwrap(), 3);
            // Keep scales finite.
            for blk in raw.chunks_exact_mut(fmt.block_bytes()) {
                blk[1] &= 0x3b;
                if fmt == WeightFormat::Q4_1 {
                    blk[3] &= 0x3b;
                }
            }
            let w = WeightMatrix::from_raw(fmt, rows, cols, &raw).unwrap();
            let mut out = vec![0f32; cols];
            let rb = fmt.row_bytes(cols).unwrap();
            for r in 0..rows {
                w.dequantize_row(r, &mut out);
                let want: Vec<f32> = raw[r * rb..(r + 1) * rb]
                    .chunks_exact(fmt.block_bytes())
                    .flat_map(|b| dequant_source(fmt, b))
                    .collect();
                assert_eq!(out, want, "{fmt:?} row {r}");
            }
        }
    }

    #[test]
    fn float_rows_round_trip() {
        let (rows, cols) = (17, 5);
        let vals: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
        for fmt in [WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16] {
            let w = WeightMatrix::from_f32(fmt, rows, cols, &vals).unwrap();
            let mut out = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut out);
                assert_eq!(out, vals[r * cols..(r + 1) * cols], "{fmt:?} row {r}");
            }
        }
    }

    #[test]
    fn quantizers_stay_within_their_rounding_error() {
        let (rows, cols) = (3, 64);
        let vals: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        for fmt in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let w = WeightMatrix::from_f32(fmt, rows, cols, &vals).unwrap();
            let mut out = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut out);
                for (b, (o, v)) in out
                    .chunks(32)
                    .zip(vals[r * cols..(r + 1) * cols].chunks(32))
                    .enumerate()
                {
                    let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
                    // Half a step, except Q4_0's clipped top level (−8d..7d): one step.
                    let tol = match fmt {
                        WeightFormat::Q8_0 => amax / 127.0 * 0.51,
                        WeightFormat::Q4_1 => amax / 7.5 * 0.51,
                        _ => amax / 8.0 * 1.01,
                    };
                    for (x, y) in o.iter().zip(v) {
                        assert!((x - y).abs() <= tol + 1e-3, "{fmt:?} r{r} b{b}: {x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn shape_errors_say_what_is_wrong() {
        let e = WeightMatrix::from_raw(WeightFormat::Q4_1, 1, 33, &[0; 20]).unwrap_err();
        assert!(matches!(e, KernelError::PartialBlock { cols: 33, .. }));
        assert!(e.to_string().contains("multiple of 32"));
        let e = WeightMatrix::from_raw(WeightFormat::F32, 2, 2, &[0; 15]).unwrap_err();
        assert!(matches!(
            e,
            KernelError::ByteLength {
                expected: 16,
                got: 15,
                ..
            }
        ));
        assert!(WeightMatrix::from_raw(WeightFormat::F32, usize::MAX, 2, &[]).is_err());
        let w = WeightMatrix::from_raw(WeightFormat::Q8_0, 0, 64, &[]).unwrap();
        assert_eq!((w.rows(), w.groups()), (0, 0));
    }
}
