//! Weight matrices in float and GGUF block formats, repacked for the kernels.
//!
//! A [`WeightMatrix`] is `[rows, cols]` = `[out_features, in_features]`,
//! built from checkpoint bytes (HF row-major; GGUF blocks of 32 along a row).
//! At construction the rows are interleaved in groups of [`GROUP_ROWS`] so a
//! SIMD lane holds one output row and no kernel needs a horizontal sum:
//!
//! - float formats: per group, `[cols][16]` elements in the source type;
//! - block formats: per group, `codes [blocks][C]` then `d [blocks][16] f16`
//!   (then `m [blocks][16] f16` for Q4_1). Within a block, 4-byte chunk `c`
//!   of lane `r` holds row `r`'s codes for columns `4c..4c+4`: for Q4 the low
//!   nibbles are columns `4c+j` and the high nibbles `16+4c+j` (the GGUF byte
//!   itself, so `C = 256`); for Q8_0 each byte is the int8 value plus 128
//!   (`C = 512`). All codes are therefore unsigned, ready for `u8 × s8` dot
//!   products, with the offset (8 for Q4_0, 128 for Q8_0) corrected exactly
//!   in integers.
//!
//! The packed size equals the source size except for padding of the last
//! group to 16 rows and of each group to a cache line.

use half::{bf16, f16};

use crate::aligned::AlignedBytes;
use crate::error::KernelError;

/// Output rows interleaved per group (one SIMD lane each).
pub const GROUP_ROWS: usize = 16;
/// Weights per quantization block.
pub const BLOCK: usize = 32;

/// Storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightFormat {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// GGUF Q4_0: blocks of 32 as `d: f16, qs[16]`; `x = d·(q − 8)`.
    Q4_0,
    /// GGUF Q4_1: blocks of 32 as `d: f16, m: f16, qs[16]`; `x = d·q + m`.
    Q4_1,
    /// GGUF Q8_0: blocks of 32 as `d: f16, qs[32] i8`; `x = d·q`.
    Q8_0,
}

impl WeightFormat {
    /// Every format.
    pub const ALL: [WeightFormat; 6] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
    ];

    /// Name as GGUF spells it.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::BF16 => "BF16",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Q8_0 => "Q8_0",
        }
    }

    /// True for the block formats.
    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0
        )
    }

    /// Weights per block (1 for float formats).
    pub fn block_size(self) -> usize {
        if self.is_quantized() { BLOCK } else { 1 }
    }

    /// Source bytes per block (per element for float formats).
    pub fn block_bytes(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 | WeightFormat::BF16 => 2,
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q8_0 => 34,
        }
    }

    /// Source bytes of one row of `cols` weights; `None` when `cols` is not a
    /// whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_size())
            .then(|| cols / self.block_size() * self.block_bytes())
    }

    /// Packed code bytes per block and 16-row group (quantized formats).
    pub(crate) fn codes_per_block(self) -> usize {
        if self == WeightFormat::Q8_0 { 512 } else { 256 }
    }

    /// Bytes per element (float formats).
    pub(crate) fn elem_bytes(self) -> usize {
        if self == WeightFormat::F32 { 4 } else { 2 }
    }
}

/// A `[rows, cols]` weight (rows = output features), repacked into 16-row groups.
#[derive(Debug, Clone)]
pub struct WeightMatrix {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    groups: usize,
    group_bytes: usize,
    data: AlignedBytes,
}

/// Byte offsets inside one packed quantized group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantLayout {
    /// Blocks per row.
    pub nb: usize,
    /// Code bytes per block.
    pub cb: usize,
    /// Offset of the `d` scales.
    pub d_off: usize,
    /// Offset of the `m` minimums (Q4_1).
    pub m_off: usize,
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
        let mut w = WeightMatrix::zeroed(format, rows, cols)?;
        for r in 0..rows {
            w.pack_row(r, &bytes[r * row_bytes..(r + 1) * row_bytes]);
        }
        Ok(w)
    }

    /// Quantize or convert f32 values `[rows, cols]` into `format` (the GGUF
    /// reference rounding for block formats), then pack.
    pub fn from_f32(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<WeightMatrix, KernelError> {
        if values.len() != rows.saturating_mul(cols) {
            return Err(KernelError::ByteLength {
                format: "F32",
                rows,
                cols,
                expected: rows.saturating_mul(cols).saturating_mul(4),
                got: values.len().saturating_mul(4),
            });
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

    fn zeroed(format: WeightFormat, rows: usize, cols: usize) -> Result<WeightMatrix, KernelError> {
        let too_large = KernelError::TooLarge { rows, cols };
        let groups = rows.div_ceil(GROUP_ROWS);
        let group_bytes = if format.is_quantized() {
            let nb = cols / BLOCK;
            let scales = if format == WeightFormat::Q4_1 { 64 } else { 32 };
            nb.checked_mul(format.codes_per_block() + scales)
        } else {
            cols.checked_mul(GROUP_ROWS * format.elem_bytes())
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
            data: AlignedBytes::zeroed(total),
        })
    }

    /// Scatter one source row into its group.
    fn pack_row(&mut self, r: usize, src: &[u8]) {
        let (fmt, lane) = (self.format, r % GROUP_ROWS);
        let layout = self.quant_layout();
        let gb = self.group_bytes;
        let group = &mut self.data.as_mut_slice()[r / GROUP_ROWS * gb..][..gb];
        if !fmt.is_quantized() {
            let es = fmt.elem_bytes();
            for (kk, e) in src.chunks_exact(es).enumerate() {
                group[(kk * GROUP_ROWS + lane) * es..][..es].copy_from_slice(e);
            }
            return;
        }
        for (b, blk) in src.chunks_exact(fmt.block_bytes()).enumerate() {
            group[layout.d_off + b * 32 + lane * 2..][..2].copy_from_slice(&blk[0..2]);
            match fmt {
                WeightFormat::Q8_0 => {
                    let codes = &mut group[b * layout.cb..][..layout.cb];
                    for c in 0..8 {
                        for j in 0..4 {
                            codes[c * 64 + lane * 4 + j] = blk[2 + 4 * c + j] ^ 0x80;
                        }
                    }
                }
                _ => {
                    let qs = if fmt == WeightFormat::Q4_1 {
                        group[layout.m_off + b * 32 + lane * 2..][..2].copy_from_slice(&blk[2..4]);
                        &blk[4..20]
                    } else {
                        &blk[2..18]
                    };
                    let codes = &mut group[b * layout.cb..][..layout.cb];
                    for c in 0..4 {
                        codes[c * 64 + lane * 4..][..4].copy_from_slice(&qs[4 * c..4 * c + 4]);
                    }
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
    }

    /// Number of 16-row groups.
    pub(crate) fn groups(&self) -> usize {
        self.groups
    }

    /// The packed bytes of group `g`.
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        &self.data.as_slice()[g * self.group_bytes..(g + 1) * self.group_bytes]
    }

    /// Offsets inside a quantized group.
    pub(crate) fn quant_layout(&self) -> QuantLayout {
        let nb = self.cols / BLOCK;
        let cb = self.format.codes_per_block();
        QuantLayout {
            nb,
            cb,
            d_off: nb * cb,
            m_off: nb * (cb + 32),
        }
    }

    /// Dequantize (or convert) row `r` into `out[..cols]` as f32.
    ///
    /// Panics if `r >= rows` or `out` is shorter than `cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows,
            "row {r} outside a matrix of {} rows",
            self.rows
        );
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
            fmt => {
                let l = self.quant_layout();
                let f16_at = |off: usize| f16::from_le_bytes([group[off], group[off + 1]]).to_f32();
                for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
                    let d = f16_at(l.d_off + b * 32 + lane * 2);
                    let codes = &group[b * l.cb..][..l.cb];
                    for c in 0..l.cb / 64 {
                        for j in 0..4 {
                            let byte = codes[c * 64 + lane * 4 + j];
                            match fmt {
                                WeightFormat::Q8_0 => {
                                    o[4 * c + j] = d * ((byte ^ 0x80) as i8) as f32;
                                }
                                WeightFormat::Q4_0 => {
                                    o[4 * c + j] = d * ((byte & 15) as f32 - 8.0);
                                    o[16 + 4 * c + j] = d * ((byte >> 4) as f32 - 8.0);
                                }
                                _ => {
                                    let m = f16_at(l.m_off + b * 32 + lane * 2);
                                    o[4 * c + j] = d * (byte & 15) as f32 + m;
                                    o[16 + 4 * c + j] = d * (byte >> 4) as f32 + m;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

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
