//! AVX2 kernels: a 16-row group is two ymm halves of 8 lanes. Block products
//! use `pmaddwd` on zero-extended codes and 16-bit activation codes (exact),
//! float weights use ymm FMA; per-lane float steps equal [`super::scalar`].

use std::arch::x86_64::*;
use std::ops::Range;

use super::scalar::code_offset;
use super::{Cols, Store, WeightFormat, WeightMatrix};
use crate::quant::{CodeForm, QuantizedActs};
use crate::weights::QuantLayout;

/// Write lanes of one half (8 columns from `col0`) for row `t`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_half(store: &Store, t: usize, cols: Cols, y: __m256) {
    let Cols { col0, lanes } = cols;
    // SAFETY: the caller owns columns col0..col0+lanes of row t.
    unsafe {
        if lanes >= 8 {
            let y = if store.bias.is_null() {
                y
            } else {
                _mm256_add_ps(y, _mm256_loadu_ps(store.bias.add(col0)))
            };
            let o = store.out.add(t * store.m + col0);
            let y = if store.accumulate {
                _mm256_add_ps(_mm256_loadu_ps(o), y)
            } else {
                y
            };
            _mm256_storeu_ps(o, y);
        } else {
            let mut ys = [0f32; 8];
            _mm256_storeu_ps(ys.as_mut_ptr(), y);
            store.put_lanes(t, cols, &ys);
        }
    }
}

/// Group `g` of a quantized matrix against activation rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `acts` is in [`CodeForm::Wide`]
/// form; the `(rows, g)` output tile belongs to the caller.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quant_group(
    w: &WeightMatrix,
    g: usize,
    acts: &QuantizedActs,
    rows: Range<usize>,
    store: &Store,
) {
    debug_assert_eq!(acts.form, CodeForm::Wide);
    let fmt = w.format();
    let QuantLayout {
        nb,
        cb,
        d_off,
        m_off,
    } = w.quant_layout();
    let group = w.group(g).as_ptr();
    let cols = Cols::of_group(w, g);
    let off = code_offset(fmt);
    let nibble = _mm256_set1_epi8(0x0f);
    for t in rows {
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let i = t * nb + b;
            // SAFETY: block b holds `cb` code bytes and 16 scales; row t's
            // block i holds 32 i16 codes.
            unsafe {
                let codes = group.add(b * cb);
                let q = acts.codes.as_ptr().add(i * 64);
                for h in 0..2 {
                    let mut a = _mm256_setzero_si256();
                    let mut bb = _mm256_setzero_si256();
                    // Codes for columns 4c..4c+4 of lanes 8h..8h+8 (a macro: closures
                    // would not inherit the target features).
                    macro_rules! step {
                        ($c:expr, $v:expr) => {{
                            let v = $v;
                            let qv =
                                _mm256_set1_epi64x((q.add(8 * $c) as *const i64).read_unaligned());
                            let lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
                            let hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1));
                            a = _mm256_add_epi32(a, _mm256_madd_epi16(lo, qv));
                            bb = _mm256_add_epi32(bb, _mm256_madd_epi16(hi, qv));
                        }};
                    }
                    if fmt == WeightFormat::Q8_0 {
                        for c in 0..8 {
                            step!(
                                c,
                                _mm256_loadu_si256(codes.add(64 * c + 32 * h) as *const __m256i)
                            );
                        }
                    } else {
                        for c in 0..4 {
                            let v =
                                _mm256_loadu_si256(codes.add(64 * c + 32 * h) as *const __m256i);
                            step!(c, _mm256_and_si256(v, nibble));
                            step!(c + 4, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
                        }
                    }
                    // [r0 r1 r4 r5 | r2 r3 r6 r7] → lanes in order.
                    let dint = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a, bb), 0xd8);
                    let dint = _mm256_sub_epi32(dint, _mm256_set1_epi32(off * acts.sum[i]));
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(
                        group.add(d_off + b * 32 + h * 16) as *const __m128i
                    ));
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(acts.d[i]));
                    acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dint), scale, acc[h]);
                    if fmt == WeightFormat::Q4_1 {
                        let mw = _mm256_cvtph_ps(_mm_loadu_si128(
                            group.add(m_off + b * 32 + h * 16) as *const __m128i,
                        ));
                        accm[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(acts.sx[i]), accm[h]);
                    }
                }
            }
        }
        for h in 0..2 {
            let y = if fmt == WeightFormat::Q4_1 {
                _mm256_add_ps(acc[h], accm[h])
            } else {
                acc[h]
            };
            if let Some(half) = cols.half(h) {
                // SAFETY: the tile is the caller's.
                unsafe { store_half(store, t, half, y) };
            }
        }
    }
}

/// 8 lanes of column `i`, half `h`, of a packed float group.
#[inline(always)]
unsafe fn load_w8(fmt: WeightFormat, group: *const u8, i: usize, h: usize) -> __m256 {
    // SAFETY: the caller passes a column inside the group; features are
    // enabled on every caller.
    unsafe {
        match fmt {
            WeightFormat::F32 => _mm256_loadu_ps(group.add(i * 64 + h * 32) as *const f32),
            WeightFormat::F16 => {
                _mm256_cvtph_ps(_mm_loadu_si128(group.add(i * 32 + h * 16) as *const __m128i))
            }
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(
                    _mm_loadu_si128(group.add(i * 32 + h * 16) as *const __m128i),
                ),
                16,
            )),
        }
    }
}

/// Float groups `groups` against activation rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; the `(rows, groups)` output tile
/// belongs to the caller.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn float_groups(
    w: &WeightMatrix,
    groups: Range<usize>,
    x: &[f32],
    rows: Range<usize>,
    store: &Store,
) {
    for g in groups {
        let mut t = rows.start;
        // SAFETY: forwarded from the caller.
        unsafe {
            while t + 6 <= rows.end {
                float_rows::<6>(w, g, x, t, store);
                t += 6;
            }
            match rows.end - t {
                5 => float_rows::<5>(w, g, x, t, store),
                4 => float_rows::<4>(w, g, x, t, store),
                3 => float_rows::<3>(w, g, x, t, store),
                2 => float_rows::<2>(w, g, x, t, store),
                1 => float_rows::<1>(w, g, x, t, store),
                _ => {}
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<const T: usize>(
    w: &WeightMatrix,
    g: usize,
    x: &[f32],
    t0: usize,
    store: &Store,
) {
    let (fmt, k) = (w.format(), w.cols());
    let gp = w.group(g).as_ptr();
    let mut acc = [[_mm256_setzero_ps(); T]; 2];
    let xp = x.as_ptr();
    for i in 0..k {
        // SAFETY: column i is inside the group; rows t0..t0+T hold k values each.
        unsafe {
            let w0 = load_w8(fmt, gp, i, 0);
            let w1 = load_w8(fmt, gp, i, 1);
            for t in 0..T {
                let xb = _mm256_set1_ps(*xp.add((t0 + t) * k + i));
                acc[0][t] = _mm256_fmadd_ps(w0, xb, acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(w1, xb, acc[1][t]);
            }
        }
    }
    let cols = Cols::of_group(w, g);
    for h in 0..2 {
        if let Some(half) = cols.half(h) {
            for t in 0..T {
                // SAFETY: the tile is the caller's.
                unsafe { store_half(store, t0 + t, half, acc[h][t]) };
            }
        }
    }
}
