//! Activation quantization for the quantized matmuls.
//!
//! Each activation row is cut into blocks of 32 and quantized symmetrically
//! to 16-bit integers: `d = amax / 32512`, `q = round_half_even(x · 32512 / amax)`.
//! 16 bits keep the matmul within ~1e-5 of the exact product of the
//! dequantized weights (8-bit activations move SmolLM2's logits by ~0.1 and
//! flip near-tied greedy choices).
//!
//! The codes are stored in one of two forms with the same integer meaning:
//! - [`CodeForm::Wide`]: 32 × i16 per block (AVX2 `pmaddwd`, scalar);
//! - [`CodeForm::Split`]: `q = 256·hi + lo` with `hi, lo` in i8, as 32 `hi`
//!   bytes then 32 `lo` bytes per block, for AVX-512 VNNI `vpdpbusd`
//!   (`|q| ≤ 32512` keeps `hi` within ±127 and `lo` within −128..127).
//!
//! Either way the weight·activation block products are exact integers, so
//! every ISA computes the same integers and, with the same float steps after
//! them, bit-identical outputs.

use crate::isa::Isa;
use crate::pool::{ThreadPool, chunk};

/// Largest code magnitude: 127·256.
pub(crate) const QMAX: f32 = 32512.0;

/// How the 16-bit codes of a block are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeForm {
    /// 32 little-endian i16 per block.
    Wide,
    /// 32 `hi` then 32 `lo` signed bytes per block, `q = 256·hi + lo`.
    Split,
}

impl CodeForm {
    /// The form the matmul of `isa` reads.
    pub fn for_isa(isa: Isa) -> CodeForm {
        if isa == Isa::Avx512Vnni {
            CodeForm::Split
        } else {
            CodeForm::Wide
        }
    }
}

/// Activation rows `[n, k]` quantized per block of 32.
#[derive(Debug, Clone)]
pub struct QuantizedActs {
    /// Rows.
    pub n: usize,
    /// Blocks per row (`k / 32`).
    pub nb: usize,
    /// Code layout.
    pub form: CodeForm,
    /// `[n, nb, 64]` code bytes.
    pub codes: Vec<u8>,
    /// `[n, nb]` scales.
    pub d: Vec<f32>,
    /// `[n, nb]` sums of the integer codes.
    pub sum: Vec<i32>,
    /// `[n, nb]` `d · sum` (the minimum term's factor).
    pub sx: Vec<f32>,
    /// `[n, nb, 2]` sums of the codes of each 16-column half of a block
    /// (formats with 16-weight sub-blocks).
    pub sum16: Vec<i32>,
    /// `[n, nb, 2]` `d · sum16`.
    pub sx16: Vec<f32>,
}

impl QuantizedActs {
    /// An empty buffer (reused across calls by [`QuantizedActs::quantize`]).
    pub fn new() -> QuantizedActs {
        QuantizedActs {
            n: 0,
            nb: 0,
            form: CodeForm::Wide,
            codes: Vec::new(),
            d: Vec::new(),
            sum: Vec::new(),
            sx: Vec::new(),
            sum16: Vec::new(),
            sx16: Vec::new(),
        }
    }

    /// The integer code of row `t`, column `i` (for tests and the scalar kernel).
    pub fn code(&self, t: usize, i: usize) -> i32 {
        let base = (t * self.nb + i / 32) * 64;
        let j = i % 32;
        match self.form {
            CodeForm::Wide => {
                i16::from_le_bytes([self.codes[base + 2 * j], self.codes[base + 2 * j + 1]]) as i32
            }
            CodeForm::Split => {
                256 * (self.codes[base + j] as i8) as i32 + (self.codes[base + 32 + j] as i8) as i32
            }
        }
    }
}

impl Default for QuantizedActs {
    fn default() -> Self {
        QuantizedActs::new()
    }
}

/// Round half to even for `|v| < 2^22` with two additions (vectorizes everywhere).
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (v + MAGIC) - MAGIC
}

/// Blocks whose largest magnitude is below this quantize to zero (their
/// contribution is far below f32 resolution of any realistic output).
const TINY: f32 = 1e-30;

/// Where one quantized row goes: its code bytes and per-block factors.
struct RowOut<'a> {
    codes: &'a mut [u8],
    d: &'a mut [f32],
    sum: &'a mut [i32],
    sx: &'a mut [f32],
    sum16: &'a mut [i32],
    sx16: &'a mut [f32],
}

/// Quantize one row `x[nb·32]`.
#[inline(always)]
fn quantize_row_body(form: CodeForm, x: &[f32], o: RowOut<'_>) {
    let RowOut {
        codes,
        d,
        sum,
        sx,
        sum16,
        sx16,
    } = o;
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let mut amax = 0f32;
        for &v in xb {
            amax = amax.max(v.abs());
        }
        let (db, id) = if amax >= TINY {
            (amax / QMAX, QMAX / amax)
        } else {
            (0.0, 0.0)
        };
        let mut q = [0i32; 32];
        for (qj, &v) in q.iter_mut().zip(xb) {
            *qj = round_even(v * id) as i32;
        }
        let s0: i32 = q[..16].iter().sum();
        let s1: i32 = q[16..].iter().sum();
        let s = s0 + s1;
        let out = &mut codes[b * 64..b * 64 + 64];
        match form {
            CodeForm::Wide => {
                for (o, &qj) in out.chunks_exact_mut(2).zip(&q) {
                    o.copy_from_slice(&(qj as i16).to_le_bytes());
                }
            }
            CodeForm::Split => {
                let (hi, lo) = out.split_at_mut(32);
                for j in 0..32 {
                    let h = (q[j] + 128) >> 8;
                    hi[j] = h as i8 as u8;
                    lo[j] = (q[j] - 256 * h) as i8 as u8;
                }
            }
        }
        d[b] = db;
        sum[b] = s;
        sx[b] = db * s as f32;
        sum16[2 * b] = s0;
        sum16[2 * b + 1] = s1;
        sx16[2 * b] = db * s0 as f32;
        sx16[2 * b + 1] = db * s1 as f32;
    }
}

/// One row with the code of `isa` (same arithmetic, same bits everywhere).
fn quantize_row(isa: Isa, form: CodeForm, x: &[f32], o: RowOut<'_>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was checked against the CPU by the caller.
        Isa::Avx512Vnni | Isa::Avx2 => unsafe { x86::quantize_row_avx2(form, x, o) },
        _ => quantize_row_body(form, x, o),
    }
}

/// An explicit AVX2 version of [`quantize_row_body`] (same arithmetic, same
/// bits), also used by the AVX-512 family (it was faster than a zmm version).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CodeForm, QMAX, RowOut, TINY};

    /// `(d, 1/d)` of a block from its largest magnitude, as the scalar body computes them.
    #[inline(always)]
    fn factors(amax: f32) -> (f32, f32) {
        if amax >= TINY {
            (amax / QMAX, QMAX / amax)
        } else {
            (0.0, 0.0)
        }
    }

    /// # Safety
    /// The CPU supports AVX2; `codes` holds 64 bytes per block of `x`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_row_avx2(form: CodeForm, x: &[f32], o: RowOut<'_>) {
        let RowOut {
            codes,
            d,
            sum,
            sx,
            sum16,
            sx16,
        } = o;
        let magic = _mm256_set1_ps(12_582_912.0);
        let sign = _mm256_set1_ps(-0.0);
        for b in 0..x.len() / 32 {
            // SAFETY: block b has 32 inputs and 64 code bytes.
            unsafe {
                let mut v = [_mm256_setzero_ps(); 4];
                let mut m = _mm256_setzero_ps();
                for i in 0..4 {
                    v[i] = _mm256_loadu_ps(x.as_ptr().add(32 * b + 8 * i));
                    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
                }
                let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
                let (db, id) = factors(amax);
                let vid = _mm256_set1_ps(id);
                let mut q = [_mm256_setzero_si256(); 4];
                for i in 0..4 {
                    let r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[i], vid), magic), magic);
                    q[i] = _mm256_cvtps_epi32(r);
                }
                // A macro: closures would not inherit the target features.
                macro_rules! hsum {
                    ($acc:expr) => {{
                        let acc = $acc;
                        let a4 = _mm_add_epi32(
                            _mm256_castsi256_si128(acc),
                            _mm256_extracti128_si256(acc, 1),
                        );
                        let a2 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0b01_00_11_10));
                        _mm_cvtsi128_si32(_mm_add_epi32(a2, _mm_shuffle_epi32(a2, 0b00_00_00_01)))
                    }};
                }
                let s0 = hsum!(_mm256_add_epi32(q[0], q[1]));
                let s1 = hsum!(_mm256_add_epi32(q[2], q[3]));
                let s = s0 + s1;
                // Pack (values fit, no saturation); packs interleave 128-bit lanes.
                let out = codes.as_mut_ptr().add(64 * b);
                match form {
                    CodeForm::Wide => {
                        for h in 0..2 {
                            let p = _mm256_packs_epi32(q[2 * h], q[2 * h + 1]);
                            _mm256_storeu_si256(
                                out.add(32 * h) as *mut __m256i,
                                _mm256_permute4x64_epi64(p, 0xd8),
                            );
                        }
                    }
                    CodeForm::Split => {
                        let c128 = _mm256_set1_epi32(128);
                        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                        let mut hi = [_mm256_setzero_si256(); 4];
                        let mut lo = [_mm256_setzero_si256(); 4];
                        for i in 0..4 {
                            hi[i] = _mm256_srai_epi32(_mm256_add_epi32(q[i], c128), 8);
                            lo[i] = _mm256_sub_epi32(q[i], _mm256_slli_epi32(hi[i], 8));
                        }
                        for (h, part) in [hi, lo].iter().enumerate() {
                            let p = _mm256_packs_epi16(
                                _mm256_packs_epi32(part[0], part[1]),
                                _mm256_packs_epi32(part[2], part[3]),
                            );
                            _mm256_storeu_si256(
                                out.add(32 * h) as *mut __m256i,
                                _mm256_permutevar8x32_epi32(p, order),
                            );
                        }
                    }
                }
                d[b] = db;
                sum[b] = s;
                sx[b] = db * s as f32;
                sum16[2 * b] = s0;
                sum16[2 * b + 1] = s1;
                sx16[2 * b] = db * s0 as f32;
                sx16[2 * b + 1] = db * s1 as f32;
            }
        }
    }
}

/// Rows × columns below which quantization stays on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 16;

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: tasks write disjoint rows.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Rows `r` of `len` elements each, as a slice.
    ///
    /// # Safety
    /// The range must be in bounds and written by one task only.
    unsafe fn rows<'a>(&self, r: std::ops::Range<usize>, len: usize) -> &'a mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r.start * len), r.len() * len) }
    }
}

impl QuantizedActs {
    /// Quantize rows `x[n, k]` (`n = x.len() / k`, `k` a multiple of 32) for
    /// the kernels of `isa`, reusing this buffer's memory; large inputs are
    /// split over the pool by rows.
    pub fn quantize(&mut self, pool: &ThreadPool, isa: Isa, x: &[f32], k: usize) {
        let n = x.len().checked_div(k).unwrap_or(0);
        let nb = k / 32;
        let form = CodeForm::for_isa(isa);
        self.n = n;
        self.nb = nb;
        self.form = form;
        self.codes.resize(n * nb * 64, 0);
        self.d.resize(n * nb, 0.0);
        self.sum.resize(n * nb, 0);
        self.sx.resize(n * nb, 0.0);
        self.sum16.resize(n * nb * 2, 0);
        self.sx16.resize(n * nb * 2, 0.0);
        let ptrs = (
            SendPtr(self.codes.as_mut_ptr()),
            SendPtr(self.d.as_mut_ptr()),
            SendPtr(self.sum.as_mut_ptr()),
            SendPtr(self.sx.as_mut_ptr()),
            SendPtr(self.sum16.as_mut_ptr()),
            SendPtr(self.sx16.as_mut_ptr()),
        );
        let run = |rows: std::ops::Range<usize>| {
            for t in rows {
                // SAFETY: row t is in bounds and handled by this task only.
                let out = unsafe {
                    RowOut {
                        codes: ptrs.0.rows(t..t + 1, nb * 64),
                        d: ptrs.1.rows(t..t + 1, nb),
                        sum: ptrs.2.rows(t..t + 1, nb),
                        sx: ptrs.3.rows(t..t + 1, nb),
                        sum16: ptrs.4.rows(t..t + 1, 2 * nb),
                        sx16: ptrs.5.rows(t..t + 1, 2 * nb),
                    }
                };
                quantize_row(isa, form, &x[t * k..t * k + nb * 32], out);
            }
        };
        if n * k < PARALLEL_ELEMS || pool.threads() == 1 || n < 2 {
            run(0..n);
        } else {
            let tasks = pool.threads().min(n);
            pool.run(tasks, &|i| run(chunk(n, tasks, i)));
        }
    }
}

/// Quantize rows `x[n, k]` into a new buffer (see [`QuantizedActs::quantize`]).
pub fn quantize(pool: &ThreadPool, isa: Isa, x: &[f32], k: usize) -> QuantizedActs {
    let mut q = QuantizedActs::new();
    q.quantize(pool, isa, x, k);
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::supported;

    #[test]
    fn codes_reconstruct_the_row_and_forms_agree() {
        let pool = ThreadPool::new(1);
        let k = 96;
        let x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 7919 % 263) as f32 - 131.0) * 0.013)
            .collect();
        let wide = quantize(&pool, Isa::Scalar, &x, k);
        for isa in Isa::ALL.into_iter().filter(|&i| supported(i)) {
            let q = quantize(&pool, isa, &x, k);
            for t in 0..2 {
                for i in 0..k {
                    assert_eq!(q.code(t, i), wide.code(t, i), "{isa:?} t{t} i{i}");
                    let back = q.d[t * 3 + i / 32] * q.code(t, i) as f32;
                    assert!((back - x[t * k + i]).abs() <= q.d[t * 3 + i / 32] * 0.5001);
                    assert!(q.code(t, i).abs() <= 32512);
                }
                for b in 0..3 {
                    let s: i32 = (0..32).map(|j| q.code(t, b * 32 + j)).sum();
                    assert_eq!(q.sum[t * 3 + b], s);
                    assert_eq!(q.sx[t * 3 + b], q.d[t * 3 + b] * s as f32);
                }
            }
            assert_eq!(
                (q.d.clone(), q.sx.clone()),
                (wide.d.clone(), wide.sx.clone())
            );
        }
    }

    #[test]
    fn zero_and_tiny_blocks_quantize_to_zero() {
        let pool = ThreadPool::new(1);
        let mut x = vec![0f32; 64];
        x[40] = 1e-35;
        let q = quantize(&pool, Isa::Scalar, &x, 64);
        assert!((0..64).all(|i| q.code(0, i) == 0));
        assert_eq!(q.d, vec![0.0, 0.0]);
    }

    #[test]
    fn split_codes_cover_the_extremes() {
        let pool = ThreadPool::new(1);
        let x: Vec<f32> = (0..32)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let q = quantize(&pool, Isa::Scalar, &x, 32);
        assert_eq!(q.code(0, 0), 32512);
        assert_eq!(q.code(0, 1), -32512);
        if supported(Isa::Avx512Vnni) {
            let s = quantize(&pool, Isa::Avx512Vnni, &x, 32);
            assert_eq!((s.code(0, 0), s.code(0, 1)), (32512, -32512));
        }
    }
}
