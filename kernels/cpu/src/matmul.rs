//! `out[n, m] (+)= x[n, k] · Wᵀ (+ bias)` for float and GGUF-quantized weights.
//!
//! Quantized weights (Q4_0, Q4_1, Q8_0; blocks of 32 along k) meet
//! activations quantized per row to 16-bit blocks of 32 (scale + block sum)
//! and are multiplied with integer dot products: AVX-512 VNNI `vpdpwssd`,
//! AVX2 `pmaddwd`, or scalar code. 16-bit activations keep the result within
//! ~1e-5 of the f32 product (8-bit activations, as llama.cpp uses, move
//! logits by ~0.1 and flip near-tied greedy choices against the reference). Float weights (F32, F16, BF16) use f32
//! FMAs. Work is split over output columns only; every output element is
//! reduced in a fixed order that depends neither on `n` nor on the thread
//! count, so a row gives bit-identical results alone or in a batch.

use half::{bf16, f16};

use crate::isa::{Isa, detect};
use crate::pool::{ThreadPool, chunk};

/// Storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum WeightFormat {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// GGUF Q4_0: `d: f16, qs[16]`, `x = d·(q − 8)`.
    Q4_0,
    /// GGUF Q4_1: `d: f16, m: f16, qs[16]`, `x = d·q + m`.
    Q4_1,
    /// GGUF Q8_0: `d: f16, qs[32] i8`, `x = d·q`.
    Q8_0,
}

impl WeightFormat {
    /// Bytes of one row of `cols` values (None if `cols` is not a whole number of blocks).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let blocks = |b: usize| cols.is_multiple_of(32).then_some(cols / 32 * b);
        match self {
            WeightFormat::F32 => Some(cols * 4),
            WeightFormat::F16 | WeightFormat::BF16 => Some(cols * 2),
            WeightFormat::Q4_0 => blocks(18),
            WeightFormat::Q4_1 => blocks(20),
            WeightFormat::Q8_0 => blocks(34),
        }
    }

    /// True for the block formats.
    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0
        )
    }

    fn block_bytes(self) -> usize {
        match self {
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4_1 => 20,
            _ => 34,
        }
    }
}

/// A weight error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// A `[rows, cols]` weight (rows = output features). Float formats keep the
/// checkpoint layout; quantized rows are repacked as `[quants][d: f32 × blocks]
/// [m: f32 × blocks (Q4_1)]` so kernels read contiguous nibbles and f32 scales.
#[derive(Debug, Clone)]
pub struct WeightMatrix {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

/// Quant bytes per block in the packed layout (nibbles or int8 values).
fn packed_quant_bytes(fmt: WeightFormat) -> usize {
    if fmt == WeightFormat::Q8_0 { 32 } else { 16 }
}

/// Packed row size for a quantized format.
fn packed_row_bytes(fmt: WeightFormat, cols: usize) -> usize {
    let nb = cols / 32;
    let scales = if fmt == WeightFormat::Q4_1 { 8 } else { 4 };
    nb * (packed_quant_bytes(fmt) + scales)
}

/// Views of one packed quantized row.
struct PackedRow<'a> {
    qs: &'a [u8],
    d: &'a [u8],
    m: &'a [u8],
}

fn packed_row(fmt: WeightFormat, row: &[u8], nb: usize) -> PackedRow<'_> {
    let q = nb * packed_quant_bytes(fmt);
    let (qs, rest) = row.split_at(q);
    let (d, m) = rest.split_at(nb * 4);
    PackedRow { qs, d, m }
}

#[inline]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

fn repack(fmt: WeightFormat, rows: usize, cols: usize, bytes: &[u8]) -> Vec<u8> {
    let nb = cols / 32;
    let (bb, qb) = (fmt.block_bytes(), packed_quant_bytes(fmt));
    let prb = packed_row_bytes(fmt, cols);
    let mut out = vec![0u8; rows * prb];
    for r in 0..rows {
        let src = &bytes[r * nb * bb..(r + 1) * nb * bb];
        let dst = &mut out[r * prb..(r + 1) * prb];
        let (qs, rest) = dst.split_at_mut(nb * qb);
        let (d, m) = rest.split_at_mut(nb * 4);
        for b in 0..nb {
            let blk = &src[b * bb..(b + 1) * bb];
            d[b * 4..b * 4 + 4].copy_from_slice(&f16_at(blk, 0).to_le_bytes());
            let off = match fmt {
                WeightFormat::Q4_1 => {
                    m[b * 4..b * 4 + 4].copy_from_slice(&f16_at(blk, 2).to_le_bytes());
                    4
                }
                _ => 2,
            };
            qs[b * qb..(b + 1) * qb].copy_from_slice(&blk[off..off + qb]);
        }
    }
    out
}

impl WeightMatrix {
    /// Copy raw little-endian bytes in the checkpoint layout.
    pub fn from_raw(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<WeightMatrix, KernelError> {
        let row_bytes = format.row_bytes(cols).ok_or_else(|| {
            KernelError(format!(
                "{cols} columns are not a whole number of 32-weight blocks for {format:?}"
            ))
        })?;
        if bytes.len() != rows * row_bytes {
            return Err(KernelError(format!(
                "{format:?} [{rows}, {cols}] needs {} bytes, got {}",
                rows * row_bytes,
                bytes.len()
            )));
        }
        let (data, row_bytes) = if format.is_quantized() {
            (
                repack(format, rows, cols, bytes),
                packed_row_bytes(format, cols),
            )
        } else {
            (bytes.to_vec(), row_bytes)
        };
        Ok(WeightMatrix {
            format,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize row `r` into `out[cols]`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = self.row(r);
        match self.format {
            WeightFormat::F32 => {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            WeightFormat::F16 => {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            WeightFormat::BF16 => {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            fmt => {
                let nb = self.cols / 32;
                let p = packed_row(fmt, row, nb);
                for b in 0..nb {
                    let o = &mut out[b * 32..b * 32 + 32];
                    let d = f32_at(p.d, b);
                    match fmt {
                        WeightFormat::Q8_0 => {
                            for j in 0..32 {
                                o[j] = d * (p.qs[b * 32 + j] as i8) as f32;
                            }
                        }
                        _ => {
                            let m = if fmt == WeightFormat::Q4_1 {
                                f32_at(p.m, b)
                            } else {
                                -8.0 * d
                            };
                            let qs = &p.qs[b * 16..b * 16 + 16];
                            for j in 0..16 {
                                o[j] = d * (qs[j] & 15) as f32 + m;
                                o[j + 16] = d * (qs[j] >> 4) as f32 + m;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Activations quantized per row into 16-bit blocks of 32.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    /// Blocks per row.
    pub blocks: usize,
    /// `[n, blocks, 32]` quantized values.
    pub qs: Vec<i16>,
    /// `[n, blocks]` scales.
    pub d: Vec<f32>,
    /// `[n, blocks]` scale × sum of the quantized values (for the zero-point terms).
    pub s: Vec<f32>,
}

/// Quantize `x[n, k]` (k a multiple of 32) per block of 32: `d = amax/32767`, `q = round(x/d)`.
pub fn quantize_acts(x: &[f32], n: usize, k: usize) -> QuantizedActs {
    let blocks = k / 32;
    let mut q = QuantizedActs {
        blocks,
        qs: vec![0; n * k],
        d: vec![0.0; n * blocks],
        s: vec![0.0; n * blocks],
    };
    for (b, src) in x[..n * k].chunks_exact(32).enumerate() {
        let amax = src.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 32767.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let dst = &mut q.qs[b * 32..b * 32 + 32];
        let mut s = 0i32;
        for (o, v) in dst.iter_mut().zip(src) {
            let qi = (v * id).round() as i32;
            *o = qi as i16;
            s += qi;
        }
        q.d[b] = d;
        q.s[b] = d * s as f32;
    }
    q
}

/// Operands of [`matmul`].
pub struct Matmul<'a> {
    /// `[n, k]` input.
    pub x: &'a [f32],
    /// Input rows.
    pub n: usize,
    /// `[m, k]` weight.
    pub w: &'a WeightMatrix,
    /// `[m]` bias.
    pub bias: Option<&'a [f32]>,
    /// `[n, m]` output.
    pub out: &'a mut [f32],
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Input rows processed together per weight row.
const TILE: usize = 4;

/// Run a matmul on the pool.
pub fn matmul(pool: &ThreadPool, a: Matmul<'_>) {
    matmul_with(pool, detect(), a)
}

/// Run a matmul with an explicit ISA (tests compare ISAs).
pub fn matmul_with(pool: &ThreadPool, isa: Isa, a: Matmul<'_>) {
    let (n, m, k) = (a.n, a.w.rows, a.w.cols);
    assert!(
        a.x.len() >= n * k && a.out.len() >= n * m,
        "matmul operands too small"
    );
    if n == 0 || m == 0 {
        return;
    }
    let acts = a.w.format.is_quantized().then(|| quantize_acts(a.x, n, k));
    let out = OutPtr(a.out.as_mut_ptr());
    let tasks = (pool.threads() * 4).min(m.div_ceil(16)).max(1);
    let (w, x, bias, accumulate) = (a.w, a.x, a.bias, a.accumulate);
    pool.run(tasks, &|task| {
        let cols = chunk(m, tasks, task);
        let mut res = [0f32; TILE];
        for j in cols {
            let wrow = w.row(j);
            for t0 in (0..n).step_by(TILE) {
                let nt = TILE.min(n - t0);
                match &acts {
                    Some(q) => dot_quant(isa, w.format, wrow, q, t0, nt, &mut res),
                    None => dot_float(isa, w.format, wrow, &x[t0 * k..], k, nt, &mut res),
                }
                for (i, &r) in res[..nt].iter().enumerate() {
                    let mut v = r;
                    if let Some(b) = bias {
                        v += b[j];
                    }
                    // SAFETY: column j belongs to this task only.
                    unsafe {
                        let o = out.get().add((t0 + i) * m + j);
                        *o = if accumulate { *o + v } else { v };
                    }
                }
            }
        }
    });
}

fn dot_quant(
    isa: Isa,
    fmt: WeightFormat,
    w: &[u8],
    q: &QuantizedActs,
    t0: usize,
    nt: usize,
    res: &mut [f32; TILE],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` or the caller verified the CPU features.
        Isa::Avx512Vnni => unsafe { x86::dot_quant_vnni(fmt, w, q, t0, nt, res) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::dot_quant_avx2(fmt, w, q, t0, nt, res) },
        _ => dot_quant_scalar(fmt, w, q, t0, nt, res),
    }
}

fn dot_float(
    isa: Isa,
    fmt: WeightFormat,
    w: &[u8],
    x: &[f32],
    k: usize,
    nt: usize,
    res: &mut [f32; TILE],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` or the caller verified the CPU features.
        Isa::Avx512Vnni => unsafe { x86::dot_float_avx512(fmt, w, x, k, nt, res) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::dot_float_avx2(fmt, w, x, k, nt, res) },
        _ => dot_float_scalar(fmt, w, x, k, nt, res),
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The zero-point factor of block `b`: `m` for Q4_1, `−8·d` for Q4_0, none for Q8_0.
fn zero_term(fmt: WeightFormat, p: &PackedRow<'_>, b: usize) -> f32 {
    match fmt {
        WeightFormat::Q4_1 => f32_at(p.m, b),
        WeightFormat::Q4_0 => -8.0 * f32_at(p.d, b),
        _ => 0.0,
    }
}

fn dot_quant_scalar(
    fmt: WeightFormat,
    w: &[u8],
    q: &QuantizedActs,
    t0: usize,
    nt: usize,
    res: &mut [f32; TILE],
) {
    let nb = q.blocks;
    let p = packed_row(fmt, w, nb);
    for (t, r) in res.iter_mut().enumerate().take(nt) {
        let row = t0 + t;
        let (mut acc, mut corr) = (0f32, 0f32);
        for b in 0..nb {
            let i = row * nb + b;
            let a = &q.qs[i * 32..i * 32 + 32];
            let dot: i32 = if fmt == WeightFormat::Q8_0 {
                p.qs[b * 32..b * 32 + 32]
                    .iter()
                    .zip(a)
                    .map(|(&w, &x)| (w as i8) as i32 * x as i32)
                    .sum()
            } else {
                let qs = &p.qs[b * 16..b * 16 + 16];
                (0..16)
                    .map(|j| {
                        (qs[j] & 15) as i32 * a[j] as i32 + (qs[j] >> 4) as i32 * a[j + 16] as i32
                    })
                    .sum()
            };
            acc += dot as f32 * (f32_at(p.d, b) * q.d[i]);
            corr += zero_term(fmt, &p, b) * q.s[i];
        }
        *r = acc + corr;
    }
}

fn float_at(fmt: WeightFormat, w: &[u8], i: usize) -> f32 {
    match fmt {
        WeightFormat::F32 => {
            f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
        }
        WeightFormat::F16 => f16_at(w, 2 * i),
        _ => bf16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32(),
    }
}

fn dot_float_scalar(
    fmt: WeightFormat,
    w: &[u8],
    x: &[f32],
    k: usize,
    nt: usize,
    res: &mut [f32; TILE],
) {
    for (t, r) in res.iter_mut().enumerate().take(nt) {
        let xr = &x[t * k..(t + 1) * k];
        *r = xr
            .iter()
            .enumerate()
            .fold(0f32, |acc, (i, &v)| acc + float_at(fmt, w, i) * v);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{
        PackedRow, QuantizedActs, TILE, WeightFormat, f32_at, float_at, packed_row, zero_term,
    };

    /// Expand a 4-bit block (16 bytes) into 32 unsigned bytes: low nibbles then high nibbles.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn expand_q4(qs: *const u8) -> __m256i {
        // SAFETY: the caller passes 16 readable bytes.
        let v = unsafe { _mm_loadu_si128(qs as *const __m128i) };
        let mask = _mm_set1_epi8(15);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The 32 weights of block `b` as 16-bit integers (Q4: 0..15; Q8: −128..127).
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw")]
    unsafe fn block_i16(fmt: WeightFormat, qs: &[u8], b: usize) -> __m512i {
        // SAFETY: the packed row holds 16 (Q4) or 32 (Q8) bytes per block.
        unsafe {
            if fmt == WeightFormat::Q8_0 {
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(qs.as_ptr().add(b * 32) as *const __m256i))
            } else {
                _mm512_cvtepu8_epi16(expand_q4(qs.as_ptr().add(b * 16)))
            }
        }
    }

    /// Zero-point correction `Σ_b z_b · s_b` over a row, 16 blocks at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn zero_dot(fmt: WeightFormat, p: &PackedRow<'_>, s: &[f32]) -> f32 {
        let nb = s.len();
        let zsrc = if fmt == WeightFormat::Q4_1 { p.m } else { p.d };
        let factor = if fmt == WeightFormat::Q4_0 { -8.0 } else { 1.0 };
        let mut acc = _mm512_setzero_ps();
        let mut b = 0;
        while b + 16 <= nb {
            // SAFETY: 16 f32 values at b in both arrays.
            unsafe {
                let z = _mm512_loadu_ps(zsrc.as_ptr().add(4 * b) as *const f32);
                acc = _mm512_fmadd_ps(z, _mm512_loadu_ps(s.as_ptr().add(b)), acc);
            }
            b += 16;
        }
        let mut total = _mm512_reduce_add_ps(acc);
        while b < nb {
            total += f32_at(zsrc, b) * s[b];
            b += 1;
        }
        total * factor
    }

    /// `NT` rows against one packed weight row. Even and odd blocks use
    /// separate accumulators (hiding FMA latency); the order is the same for
    /// every `NT`, so rows are batch-invariant.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quant_rows<const NT: usize>(
        fmt: WeightFormat,
        w: &[u8],
        q: &QuantizedActs,
        t0: usize,
        res: &mut [f32; TILE],
    ) {
        let nb = q.blocks;
        let p = packed_row(fmt, w, nb);
        let mut even = [_mm512_setzero_ps(); NT];
        let mut odd = [_mm512_setzero_ps(); NT];
        // A macro, not a closure: closures do not inherit target features.
        macro_rules! block {
            ($b:expr, $acc:ident) => {{
                let b = $b;
                // SAFETY: features enabled on the enclosing function; b < nb.
                unsafe {
                    let wv = block_i16(fmt, p.qs, b);
                    let dw = f32_at(p.d, b);
                    for t in 0..NT {
                        let i = (t0 + t) * nb + b;
                        let a = _mm512_loadu_si512(q.qs.as_ptr().add(i * 32) as *const __m512i);
                        let dot = _mm512_dpwssd_epi32(_mm512_setzero_si512(), wv, a);
                        $acc[t] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_set1_ps(dw * q.d[i]),
                            $acc[t],
                        );
                    }
                }
            }};
        }
        let mut b = 0;
        while b + 2 <= nb {
            block!(b, even);
            block!(b + 1, odd);
            b += 2;
        }
        if b < nb {
            block!(b, even);
        }
        for t in 0..NT {
            let row = t0 + t;
            let corr = if fmt == WeightFormat::Q8_0 {
                0.0
            } else {
                // SAFETY: same features.
                unsafe { zero_dot(fmt, &p, &q.s[row * nb..(row + 1) * nb]) }
            };
            res[t] = _mm512_reduce_add_ps(_mm512_add_ps(even[t], odd[t])) + corr;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_quant_vnni(
        fmt: WeightFormat,
        w: &[u8],
        q: &QuantizedActs,
        t0: usize,
        nt: usize,
        res: &mut [f32; TILE],
    ) {
        // SAFETY: same features.
        unsafe {
            match nt {
                1 => quant_rows::<1>(fmt, w, q, t0, res),
                2 => quant_rows::<2>(fmt, w, q, t0, res),
                3 => quant_rows::<3>(fmt, w, q, t0, res),
                _ => quant_rows::<4>(fmt, w, q, t0, res),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_quant_avx2(
        fmt: WeightFormat,
        w: &[u8],
        q: &QuantizedActs,
        t0: usize,
        nt: usize,
        res: &mut [f32; TILE],
    ) {
        let nb = q.blocks;
        let p = packed_row(fmt, w, nb);
        let mut acc = [_mm256_setzero_ps(); TILE];
        for b in 0..nb {
            // SAFETY: the packed row holds 16 (Q4) or 32 (Q8) bytes per block.
            let (lo, hi) = unsafe {
                if fmt == WeightFormat::Q8_0 {
                    let base = p.qs.as_ptr().add(b * 32);
                    (
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(base as *const __m128i)),
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(16) as *const __m128i)),
                    )
                } else {
                    let v = _mm_loadu_si128(p.qs.as_ptr().add(b * 16) as *const __m128i);
                    let mask = _mm_set1_epi8(15);
                    (
                        _mm256_cvtepu8_epi16(_mm_and_si128(v, mask)),
                        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), mask)),
                    )
                }
            };
            let dw = f32_at(p.d, b);
            for t in 0..nt {
                let i = (t0 + t) * nb + b;
                // SAFETY: `qs` holds 32 values per block.
                let (a_lo, a_hi) = unsafe {
                    let ptr = q.qs.as_ptr().add(i * 32);
                    (
                        _mm256_loadu_si256(ptr as *const __m256i),
                        _mm256_loadu_si256(ptr.add(16) as *const __m256i),
                    )
                };
                let dot =
                    _mm256_add_epi32(_mm256_madd_epi16(lo, a_lo), _mm256_madd_epi16(hi, a_hi));
                acc[t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * q.d[i]), acc[t]);
            }
        }
        for t in 0..nt {
            let row = t0 + t;
            let corr: f32 = (0..nb)
                .map(|b| zero_term(fmt, &p, b) * q.s[row * nb + b])
                .sum();
            // SAFETY: features enabled on this function.
            res[t] = unsafe { hsum256(acc[t]) } + corr;
        }
    }

    /// 16 weights converted to f32 from `w` at element `i`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    unsafe fn load_w16(fmt: WeightFormat, w: *const u8, i: usize) -> __m512 {
        // SAFETY: the caller guarantees 16 readable elements.
        unsafe {
            match fmt {
                WeightFormat::F32 => _mm512_loadu_ps(w.add(4 * i) as *const f32),
                WeightFormat::F16 => {
                    _mm512_cvtph_ps(_mm256_loadu_si256(w.add(2 * i) as *const __m256i))
                }
                _ => _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256(w.add(2 * i) as *const __m256i)),
                    16,
                )),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn dot_float_avx512(
        fmt: WeightFormat,
        w: &[u8],
        x: &[f32],
        k: usize,
        nt: usize,
        res: &mut [f32; TILE],
    ) {
        let mut acc = [_mm512_setzero_ps(); TILE];
        let full = k / 16 * 16;
        let mut i = 0;
        while i < full {
            // SAFETY: `i + 16 <= k`.
            let wv = unsafe { load_w16(fmt, w.as_ptr(), i) };
            for t in 0..nt {
                // SAFETY: row t has k values.
                let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(t * k + i)) };
                acc[t] = _mm512_fmadd_ps(wv, xv, acc[t]);
            }
            i += 16;
        }
        for t in 0..nt {
            let mut s = _mm512_reduce_add_ps(acc[t]);
            for j in full..k {
                s += float_at(fmt, w, j) * x[t * k + j];
            }
            res[t] = s;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load_w8(fmt: WeightFormat, w: *const u8, i: usize) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements.
        unsafe {
            match fmt {
                WeightFormat::F32 => _mm256_loadu_ps(w.add(4 * i) as *const f32),
                WeightFormat::F16 => {
                    _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i))
                }
                _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(w.add(2 * i) as *const __m128i)),
                    16,
                )),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_float_avx2(
        fmt: WeightFormat,
        w: &[u8],
        x: &[f32],
        k: usize,
        nt: usize,
        res: &mut [f32; TILE],
    ) {
        let mut acc = [_mm256_setzero_ps(); TILE];
        let full = k / 8 * 8;
        let mut i = 0;
        while i < full {
            // SAFETY: `i + 8 <= k`.
            let wv = unsafe { load_w8(fmt, w.as_ptr(), i) };
            for t in 0..nt {
                // SAFETY: row t has k values.
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(t * k + i)) };
                acc[t] = _mm256_fmadd_ps(wv, xv, acc[t]);
            }
            i += 8;
        }
        for t in 0..nt {
            // SAFETY: features enabled on this function.
            let mut s = unsafe { hsum256(acc[t]) };
            for j in full..k {
                s += float_at(fmt, w, j) * x[t * k + j];
            }
            res[t] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::supported;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn random_weight(fmt: WeightFormat, rows: usize, cols: usize, seed: &mut u64) -> WeightMatrix {
        let bytes = fmt.row_bytes(cols).unwrap() * rows;
        let mut raw = vec![0u8; bytes];
        match fmt {
            WeightFormat::F32 => {
                for c in raw.chunks_exact_mut(4) {
                    c.copy_from_slice(&lcg(seed).to_le_bytes());
                }
            }
            WeightFormat::F16 => {
                for c in raw.chunks_exact_mut(2) {
                    c.copy_from_slice(&f16::from_f32(lcg(seed)).to_le_bytes());
                }
            }
            WeightFormat::BF16 => {
                for c in raw.chunks_exact_mut(2) {
                    c.copy_from_slice(&bf16::from_f32(lcg(seed)).to_le_bytes());
                }
            }
            q => {
                for blk in raw.chunks_exact_mut(q.block_bytes()) {
                    for b in blk.iter_mut() {
                        *b = (lcg(seed) * 127.0 + 128.0) as u8;
                    }
                    blk[0..2].copy_from_slice(
                        &f16::from_f32(0.01 + lcg(seed).abs() * 0.02).to_le_bytes(),
                    );
                    if q == WeightFormat::Q4_1 {
                        blk[2..4].copy_from_slice(&f16::from_f32(lcg(seed) * 0.1).to_le_bytes());
                    }
                }
            }
        }
        WeightMatrix::from_raw(fmt, rows, cols, &raw).unwrap()
    }

    const FORMATS: [WeightFormat; 6] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
    ];

    fn isas() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni]
            .into_iter()
            .filter(|&i| supported(i))
            .collect()
    }

    fn reference(w: &WeightMatrix, x: &[f32], n: usize) -> Vec<f64> {
        let (m, k) = (w.rows(), w.cols());
        let mut row = vec![0f32; k];
        let mut out = vec![0f64; n * m];
        for j in 0..m {
            w.dequantize_row(j, &mut row);
            for t in 0..n {
                out[t * m + j] = (0..k).map(|i| row[i] as f64 * x[t * k + i] as f64).sum();
            }
        }
        out
    }

    #[test]
    fn every_format_and_isa_matches_the_reference() {
        let pool = ThreadPool::new(2);
        let mut seed = 7;
        for fmt in FORMATS {
            let (m, k, n) = (37, 96, 5);
            let w = random_weight(fmt, m, k, &mut seed);
            let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let want = reference(&w, &x, n);
            for isa in isas() {
                let mut out = vec![0f32; n * m];
                matmul_with(
                    &pool,
                    isa,
                    Matmul {
                        x: &x,
                        n,
                        w: &w,
                        bias: None,
                        out: &mut out,
                        accumulate: false,
                    },
                );
                // 16-bit activations add noise of ~1e-5 of the typical output; float paths only rounding.
                let rms = (want.iter().map(|r| r * r).sum::<f64>() / want.len() as f64).sqrt();
                let tol = if fmt.is_quantized() { 2e-4 } else { 1e-5 };
                for (i, (&g, &r)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        ((g as f64) - r).abs() / rms < tol,
                        "{fmt:?} {isa:?} [{i}]: {g} vs {r} (rms {rms})"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_paths_agree_with_scalar_on_quantized_integers() {
        let pool = ThreadPool::new(2);
        let mut seed = 11;
        for fmt in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let (m, k, n) = (19, 64, 3);
            let w = random_weight(fmt, m, k, &mut seed);
            let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let mut base = vec![0f32; n * m];
            matmul_with(
                &pool,
                Isa::Scalar,
                Matmul {
                    x: &x,
                    n,
                    w: &w,
                    bias: None,
                    out: &mut base,
                    accumulate: false,
                },
            );
            for isa in isas() {
                let mut out = vec![0f32; n * m];
                matmul_with(
                    &pool,
                    isa,
                    Matmul {
                        x: &x,
                        n,
                        w: &w,
                        bias: None,
                        out: &mut out,
                        accumulate: false,
                    },
                );
                for (g, b) in out.iter().zip(&base) {
                    assert!(
                        (g - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{fmt:?} {isa:?}: {g} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_are_bit_identical_alone_and_in_batches() {
        let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
        let mut seed = 3;
        for fmt in FORMATS {
            let (m, k) = (70, 160);
            let w = random_weight(fmt, m, k, &mut seed);
            let n = 11;
            let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            for isa in isas() {
                let mut batch = vec![0f32; n * m];
                matmul_with(
                    &pools[1],
                    isa,
                    Matmul {
                        x: &x,
                        n,
                        w: &w,
                        bias: None,
                        out: &mut batch,
                        accumulate: false,
                    },
                );
                for (p, pool) in pools.iter().enumerate() {
                    for t in 0..n {
                        let mut alone = vec![0f32; m];
                        matmul_with(
                            pool,
                            isa,
                            Matmul {
                                x: &x[t * k..(t + 1) * k],
                                n: 1,
                                w: &w,
                                bias: None,
                                out: &mut alone,
                                accumulate: false,
                            },
                        );
                        assert_eq!(
                            alone,
                            batch[t * m..(t + 1) * m],
                            "{fmt:?} {isa:?} row {t} pool {p}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bias_and_accumulate() {
        let pool = ThreadPool::new(2);
        let w = WeightMatrix::from_raw(
            WeightFormat::F32,
            2,
            3,
            &[1f32, 0., 0., 0., 1., 1.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let mut out = vec![10f32, 20., 30., 40.];
        matmul(
            &pool,
            Matmul {
                x: &[1., 2., 3., 4., 5., 6.],
                n: 2,
                w: &w,
                bias: Some(&[0.5, -0.5]),
                out: &mut out,
                accumulate: true,
            },
        );
        assert_eq!(out, vec![11.5, 24.5, 34.5, 50.5]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(WeightMatrix::from_raw(WeightFormat::Q4_1, 1, 33, &[0; 20]).is_err());
        assert!(WeightMatrix::from_raw(WeightFormat::F32, 2, 2, &[0; 15]).is_err());
    }
}
