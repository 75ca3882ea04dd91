//! AVX2 kernels: a 16-row group is two ymm halves of 8 lanes. Block products
//! use `pmaddwd` on zero-extended codes and 16-bit activation codes (exact),
//! float weights use ymm FMA; per-lane float steps equal [`super::scalar`].

use std::arch::x86_64::*;
use std::ops::Range;

use super::scalar::code_offset;
use super::x86_prefetch::Prefetch;
use super::{Cols, Store, WeightFormat, WeightMatrix};
use crate::quant::{CodeForm, QuantizedActs};
use crate::weights::{IQ4_CODES, MinKind, QuantLayout, SubScale};

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
                _mm256_add_ps(y, _mm256_loadu_ps(store.bias.add(col0 - store.col_base)))
            };
            let o = store.out.add(t * store.m + col0 - store.col_base);
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
    if !matches!(
        fmt,
        WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0
    ) {
        // SAFETY: forwarded from the caller.
        return unsafe { generic_group(w, g, acts, rows, store) };
    }
    let QuantLayout {
        nb,
        cb,
        d_off,
        m_off,
        ..
    } = w.quant_layout();
    let group = w.group(g).as_ptr();
    let cols = Cols::of_group(w, g);
    let off = code_offset(fmt);
    let nibble = _mm256_set1_epi8(0x0f);
    let (layout, packing) = (w.quant_layout(), w.packing());
    let decode = rows.len() == 1;
    for t in rows {
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        let mut prefetch = Prefetch::new(&layout, group, w.group_stride());
        for b in 0..nb {
            let i = t * nb + b;
            // SAFETY: block b holds `cb` code bytes and 16 scales; row t's
            // block i holds 32 i16 codes.
            unsafe {
                if decode {
                    prefetch.step(&packing, &layout);
                }
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

/// Group `g` of the formats without a hand-specialized kernel: the
/// arithmetic of `scalar::quant_group`, 8 lanes at a time.
///
/// # Safety
/// As for [`quant_group`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn generic_group(
    w: &WeightMatrix,
    g: usize,
    acts: &QuantizedActs,
    rows: Range<usize>,
    store: &Store,
) {
    let p = w.packing();
    let l = w.quant_layout();
    let nb = l.nb;
    let group = w.group(g).as_ptr();
    let cols = Cols::of_group(w, g);
    let sign = _mm256_set1_epi32(i32::MIN);
    let lut = {
        let table = IQ4_CODES;
        // SAFETY: 16 readable bytes.
        unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr() as *const __m128i)) }
    };
    let decode = rows.len() == 1;
    for t in rows {
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        let mut prefetch = Prefetch::new(&l, group, w.group_stride());
        for b in 0..nb {
            let i = t * nb + b;
            // SAFETY: block b's parts lie at the layout's offsets; row t's
            // block i holds 32 i16 codes.
            unsafe {
                if decode {
                    prefetch.step(&p, &l);
                }
                let codes = group.add(b * l.cb);
                let q = acts.codes.as_ptr().add(i * 64);
                let unit = b / l.unit_blocks;
                for h in 0..2 {
                    // wv[c]: 8 lanes × 4 code bytes for columns 4c..4c+4.
                    let mut wv = [_mm256_setzero_si256(); 8];
                    let at = |c: usize| codes.add(64 * c + 32 * h) as *const __m256i;
                    match p.code_bits {
                        8 => {
                            for c in 0..8 {
                                wv[c] = _mm256_loadu_si256(at(c));
                            }
                        }
                        4 => {
                            let nibble = _mm256_set1_epi8(0x0f);
                            for c in 0..4 {
                                let v = _mm256_loadu_si256(at(c));
                                wv[c] = _mm256_and_si256(v, nibble);
                                wv[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                            }
                        }
                        _ => {
                            let crumb = _mm256_set1_epi8(0x03);
                            for c in 0..2 {
                                let v = _mm256_loadu_si256(at(c));
                                wv[c] = _mm256_and_si256(v, crumb);
                                wv[c + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 2), crumb);
                                wv[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), crumb);
                                wv[c + 6] = _mm256_and_si256(_mm256_srli_epi16(v, 6), crumb);
                            }
                        }
                    }
                    for pl in 0..p.planes {
                        let plane = _mm256_loadu_si256(
                            group.add(l.plane_off + (b * p.planes + pl) * 64 + 32 * h)
                                as *const __m256i,
                        );
                        let to = _mm256_set1_epi32((p.code_bits as usize + pl) as i32);
                        for (c, v) in wv.iter_mut().enumerate() {
                            let hb = _mm256_and_si256(
                                _mm256_srlv_epi32(plane, _mm256_set1_epi32(c as i32)),
                                _mm256_set1_epi32(0x0101_0101),
                            );
                            *v = _mm256_or_si256(*v, _mm256_sllv_epi32(hb, to));
                        }
                    }
                    if p.lut {
                        for v in wv.iter_mut() {
                            *v = _mm256_shuffle_epi8(lut, *v);
                        }
                    }
                    // Integer dot of each sub-block (chunks 0..4 and 4..8 apart).
                    let mut a = [_mm256_setzero_si256(); 2];
                    let mut bb = [_mm256_setzero_si256(); 2];
                    for c in 0..8 {
                        let qv = _mm256_set1_epi64x((q.add(8 * c) as *const i64).read_unaligned());
                        let lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(wv[c]));
                        let hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(wv[c], 1));
                        a[c / 4] = _mm256_add_epi32(a[c / 4], _mm256_madd_epi16(lo, qv));
                        bb[c / 4] = _mm256_add_epi32(bb[c / 4], _mm256_madd_epi16(hi, qv));
                    }
                    // [r0 r1 r4 r5 | r2 r3 r6 r7] → lanes in order.
                    let dots = [
                        _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[0], bb[0]), 0xd8),
                        _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[1], bb[1]), 0xd8),
                    ];
                    let d_bits =
                        _mm_loadu_si128(group.add(l.d_off + unit * 32 + 16 * h) as *const __m128i);
                    let d = if p.d_bf16 {
                        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(d_bits), 16))
                    } else {
                        _mm256_cvtph_ps(d_bits)
                    };
                    let dmin = if p.has_unit_min() {
                        _mm256_cvtph_ps(_mm_loadu_si128(
                            group.add(l.m_off + unit * 32 + 16 * h) as *const __m128i
                        ))
                    } else {
                        _mm256_setzero_ps()
                    };
                    let dx = _mm256_set1_ps(acts.d[i]);
                    macro_rules! neg {
                        ($x:expr) => {
                            _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256($x), sign))
                        };
                    }
                    for s in 0..p.subs {
                        let sc_bytes =
                            _mm_loadl_epi64(group.add(l.sc_off + (b * p.subs + s) * 16 + 8 * h)
                                as *const __m128i);
                        let ws = match p.sub_scale {
                            SubScale::None => d,
                            SubScale::U8 => {
                                _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sc_bytes)))
                            }
                            SubScale::I8 => {
                                _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc_bytes)))
                            }
                            SubScale::Q2K => _mm256_mul_ps(
                                d,
                                _mm256_cvtepi32_ps(_mm256_and_si256(
                                    _mm256_cvtepu8_epi32(sc_bytes),
                                    _mm256_set1_epi32(15),
                                )),
                            ),
                        };
                        let (dot, sum, sx) = if p.sub16() {
                            (dots[s], acts.sum16[2 * i + s], acts.sx16[2 * i + s])
                        } else {
                            (_mm256_add_epi32(dots[0], dots[1]), acts.sum[i], acts.sx[i])
                        };
                        let dint = _mm256_sub_epi32(dot, _mm256_set1_epi32(p.offset * sum));
                        let scale = _mm256_mul_ps(ws, dx);
                        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dint), scale, acc[h]);
                        let mw = match p.min {
                            MinKind::None => continue,
                            MinKind::Add => dmin,
                            MinKind::SubBytes => {
                                let m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                    group.add(l.mn_off + b * 16 + 8 * h) as *const __m128i,
                                ));
                                neg!(_mm256_mul_ps(dmin, _mm256_cvtepi32_ps(m)))
                            }
                            MinKind::SubQ2K => {
                                let m = _mm256_srli_epi32(_mm256_cvtepu8_epi32(sc_bytes), 4);
                                neg!(_mm256_mul_ps(dmin, _mm256_cvtepi32_ps(m)))
                            }
                            MinKind::Zero => {
                                let z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                    group.add(l.zp_off + unit * 16 + 8 * h) as *const __m128i,
                                ));
                                neg!(_mm256_mul_ps(d, _mm256_cvtepi32_ps(z)))
                            }
                        };
                        accm[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(sx), accm[h]);
                    }
                }
            }
        }
        for h in 0..2 {
            let y = if p.min != MinKind::None {
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
            WeightFormat::F8_E4M3 => {
                let b =
                    _mm_cvtepu8_epi16(_mm_loadl_epi64(group.add(i * 16 + h * 8) as *const __m128i));
                let sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
                let rest = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7F)), 7);
                _mm256_cvtph_ps(_mm_or_si128(sign, rest))
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
    if fmt == WeightFormat::F8_E4M3 {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            // SAFETY: the group's 16 row scales follow its codes.
            let scale =
                unsafe { _mm256_loadu_ps(gp.add(w.row_scale_offset() + h * 32) as *const f32) };
            for a in acc_h.iter_mut() {
                *a = _mm256_mul_ps(*a, scale);
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
