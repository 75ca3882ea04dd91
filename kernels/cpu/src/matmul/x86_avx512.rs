//! AVX-512 kernels: VNNI `vpdpbusd` for block formats, zmm FMA for floats.
//!
//! One zmm holds a 16-row weight group (a lane per output row), so block
//! products land per lane without horizontal sums, and the float steps per
//! lane are exactly those of [`super::scalar`].

use std::arch::x86_64::*;
use std::ops::Range;

use super::x86_prefetch::Prefetch;
use super::{Cols, Store, WeightFormat, WeightMatrix};
use crate::quant::{CodeForm, QuantizedActs};
use crate::weights::{IQ4_CODES, MinKind, QuantLayout, SubScale};

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Write lanes of `y` for row `t` through the canonical bias/accumulate steps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store_row(store: &Store, t: usize, cols: Cols, y: __m512) {
    let Cols { col0, lanes } = cols;
    let mask: __mmask16 = if lanes >= 16 {
        0xffff
    } else {
        (1u16 << lanes) - 1
    };
    // SAFETY: the caller owns columns col0..col0+lanes of row t.
    unsafe {
        let y = if store.bias.is_null() {
            y
        } else {
            _mm512_add_ps(
                y,
                _mm512_maskz_loadu_ps(mask, store.bias.add(col0 - store.col_base)),
            )
        };
        let o = store.out.add(t * store.m + col0 - store.col_base);
        let y = if store.accumulate {
            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), y)
        } else {
            y
        };
        _mm512_mask_storeu_ps(o, mask, y);
    }
}

/// Broadcast the little-endian i32 at `p`.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    // SAFETY: the caller passes 4 readable bytes; callers enable AVX-512.
    unsafe { _mm512_set1_epi32((p as *const i32).read_unaligned()) }
}

/// Group `g` of a quantized matrix against activation rows `rows`.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI and F16C; `acts` is in
/// [`CodeForm::Split`] form; the `(rows, g)` output tile belongs to the caller.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn quant_group(
    w: &WeightMatrix,
    g: usize,
    acts: &QuantizedActs,
    rows: Range<usize>,
    store: &Store,
) {
    debug_assert_eq!(acts.form, CodeForm::Split);
    let grp = QGroup {
        base: w.group(g).as_ptr(),
        stride: w.group_stride(),
        layout: w.quant_layout(),
        cols: Cols::of_group(w, g),
    };
    let mut t = rows.start;
    macro_rules! tiles {
        ($f:expr) => {{
            while t + 4 <= rows.end {
                // SAFETY: forwarded from the caller.
                unsafe { quant_rows::<{ $f }, 4>(&grp, acts, t, store) };
                t += 4;
            }
            // SAFETY: as above.
            unsafe {
                match rows.end - t {
                    3 => quant_rows::<{ $f }, 3>(&grp, acts, t, store),
                    2 => quant_rows::<{ $f }, 2>(&grp, acts, t, store),
                    1 => quant_rows::<{ $f }, 1>(&grp, acts, t, store),
                    _ => {}
                }
            }
        }};
    }
    match w.format() {
        WeightFormat::Q4_0 => tiles!(Q4_0),
        WeightFormat::Q4_1 => tiles!(Q4_1),
        WeightFormat::Q8_0 => tiles!(Q8_0),
        // SAFETY: forwarded from the caller.
        fmt => unsafe { generic_group(fmt, &grp, acts, rows, store) },
    }
}

/// Group rows of the formats without a hand-specialized kernel.
///
/// # Safety
/// As for [`quant_group`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn generic_group(
    fmt: WeightFormat,
    grp: &QGroup,
    acts: &QuantizedActs,
    rows: Range<usize>,
    store: &Store,
) {
    let mut t = rows.start;
    macro_rules! tiles {
        ($f:expr) => {{
            const F: u8 = $f;
            while t + 4 <= rows.end {
                // SAFETY: forwarded from the caller.
                unsafe { block_rows::<F, 4>(grp, acts, t, store) };
                t += 4;
            }
            // SAFETY: as above.
            unsafe {
                match rows.end - t {
                    3 => block_rows::<F, 3>(grp, acts, t, store),
                    2 => block_rows::<F, 2>(grp, acts, t, store),
                    1 => block_rows::<F, 1>(grp, acts, t, store),
                    _ => {}
                }
            }
        }};
    }
    match fmt {
        WeightFormat::Q5_0 => tiles!(6),
        WeightFormat::Q5_1 => tiles!(7),
        WeightFormat::Q2_K => tiles!(8),
        WeightFormat::Q3_K => tiles!(9),
        WeightFormat::Q4_K => tiles!(10),
        WeightFormat::Q5_K => tiles!(11),
        WeightFormat::Q6_K => tiles!(12),
        WeightFormat::IQ4_NL => tiles!(13),
        WeightFormat::IQ4_XS => tiles!(14),
        WeightFormat::Int {
            bits: 2,
            bf16_scales: false,
        } => tiles!(15),
        WeightFormat::Int {
            bits: 2,
            bf16_scales: true,
        } => tiles!(16),
        WeightFormat::Int {
            bits: 3,
            bf16_scales: false,
        } => tiles!(17),
        WeightFormat::Int {
            bits: 3,
            bf16_scales: true,
        } => tiles!(18),
        WeightFormat::Int {
            bits: 4,
            bf16_scales: false,
        } => tiles!(19),
        WeightFormat::Int {
            bits: 4,
            bf16_scales: true,
        } => tiles!(20),
        WeightFormat::Int {
            bf16_scales: false, ..
        } => tiles!(21),
        WeightFormat::Int {
            bf16_scales: true, ..
        } => tiles!(22),
        other => unreachable!("{} has its own kernel", other.name()),
    }
}

/// The format a generic kernel instance is specialized for: the GGUF
/// formats by their position in [`WeightFormat::ALL`], then the integer
/// groups by bits and scale type (inlined so that constant ids fold).
#[inline(always)]
fn format_of(id: u8) -> WeightFormat {
    match id {
        0..=14 => WeightFormat::ALL[id as usize],
        _ => WeightFormat::Int {
            bits: [2, 3, 4, 8][(id as usize - 15) / 2],
            bf16_scales: (id - 15) % 2 == 1,
        },
    }
}

/// `T` activation rows from `t0` against one 16-row group of format
/// `WeightFormat::ALL[F]`: the arithmetic of `scalar::quant_group`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_rows<const F: u8, const T: usize>(
    grp: &QGroup,
    acts: &QuantizedActs,
    t0: usize,
    store: &Store,
) {
    let Some(p) = format_of(F).packing() else {
        return;
    };
    let group = grp.base;
    let l = grp.layout;
    let nb = l.nb;
    let cb = l.cb;
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm512_setzero_ps(); T];
    let codes_base = acts.codes.as_ptr();
    let sign = _mm512_set1_epi32(i32::MIN);
    let lut = if p.lut {
        let table = IQ4_CODES;
        // SAFETY: 16 readable bytes.
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr() as *const __m128i) })
    } else {
        _mm512_setzero_si512()
    };
    let mut prefetch = Prefetch::new(&l, group, grp.stride);
    for b in 0..nb {
        // SAFETY: block b of the group holds its codes, planes, scale bytes
        // and (per unit) its f16 scales at the layout's offsets.
        unsafe {
            let codes = group.add(b * cb);
            if T == 1 {
                prefetch.step(&p, &l);
            }
            let mut wv = [_mm512_setzero_si512(); 8];
            match p.code_bits {
                8 => {
                    for (c, v) in wv.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(codes.add(64 * c) as *const __m512i);
                    }
                }
                4 => {
                    let nibble = _mm512_set1_epi8(0x0f);
                    for c in 0..4 {
                        let v = _mm512_loadu_si512(codes.add(64 * c) as *const __m512i);
                        wv[c] = _mm512_and_si512(v, nibble);
                        wv[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
                    }
                }
                _ => {
                    let crumb = _mm512_set1_epi8(0x03);
                    for c in 0..2 {
                        let v = _mm512_loadu_si512(codes.add(64 * c) as *const __m512i);
                        wv[c] = _mm512_and_si512(v, crumb);
                        wv[c + 2] = _mm512_and_si512(_mm512_srli_epi16(v, 2), crumb);
                        wv[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), crumb);
                        wv[c + 6] = _mm512_and_si512(_mm512_srli_epi16(v, 6), crumb);
                    }
                }
            }
            for pl in 0..p.planes {
                let plane = _mm512_loadu_si512(
                    group.add(l.plane_off + (b * p.planes + pl) * 64) as *const __m512i
                );
                // Bit c of every byte of the plane is the high bit of chunk c's
                // code in that byte: test it, then add the bit's weight.
                let high = _mm512_set1_epi8(1 << (p.code_bits as usize + pl));
                for (c, v) in wv.iter_mut().enumerate() {
                    let set = _mm512_test_epi8_mask(plane, _mm512_set1_epi8(1 << c));
                    *v = _mm512_mask_add_epi8(*v, set, *v, high);
                }
            }
            if p.lut {
                for v in wv.iter_mut() {
                    *v = _mm512_shuffle_epi8(lut, *v);
                }
            }
            // Per sub-block scale and minimum of every lane (scalar `sub_factors`).
            let unit = b / l.unit_blocks;
            let d_bits = _mm256_loadu_si256(group.add(l.d_off + unit * 32) as *const __m256i);
            let d = if p.d_bf16 {
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(d_bits), 16))
            } else {
                _mm512_cvtph_ps(d_bits)
            };
            let dmin = if p.has_unit_min() {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    group.add(l.m_off + unit * 32) as *const __m256i
                ))
            } else {
                _mm512_setzero_ps()
            };
            let mut ws = [d; 2];
            let mut mw = [_mm512_setzero_ps(); 2];
            for s in 0..p.subs {
                let sc_bytes =
                    _mm_loadu_si128(group.add(l.sc_off + (b * p.subs + s) * 16) as *const __m128i);
                let sc = match p.sub_scale {
                    SubScale::None => _mm512_setzero_si512(),
                    SubScale::U8 => _mm512_cvtepu8_epi32(sc_bytes),
                    SubScale::I8 => _mm512_cvtepi8_epi32(sc_bytes),
                    SubScale::Q2K => {
                        _mm512_and_si512(_mm512_cvtepu8_epi32(sc_bytes), _mm512_set1_epi32(15))
                    }
                };
                if p.sub_scale != SubScale::None {
                    ws[s] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                }
                macro_rules! neg {
                    ($x:expr) => {
                        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512($x), sign))
                    };
                }
                mw[s] = match p.min {
                    MinKind::None => _mm512_setzero_ps(),
                    MinKind::Add => dmin,
                    MinKind::SubBytes => {
                        let m = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                            group.add(l.mn_off + b * 16) as *const __m128i
                        ));
                        neg!(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m)))
                    }
                    MinKind::SubQ2K => {
                        let m = _mm512_srli_epi32(_mm512_cvtepu8_epi32(sc_bytes), 4);
                        neg!(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m)))
                    }
                    MinKind::Zero => {
                        let z = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                            group.add(l.zp_off + unit * 16) as *const __m128i,
                        ));
                        neg!(_mm512_mul_ps(d, _mm512_cvtepi32_ps(z)))
                    }
                };
            }
            for t in 0..T {
                let i = (t0 + t) * nb + b;
                let a = codes_base.add(i * 64);
                let dx = _mm512_set1_ps(*acts.d.get_unchecked(i));
                // Dot products of chunks 0..4 (columns 0..16) and 4..8 apart,
                // high and low activation bytes apart.
                let mut h = [_mm512_setzero_si512(); 2];
                let mut lo = [_mm512_setzero_si512(); 2];
                for c in 0..8 {
                    h[c / 4] = _mm512_dpbusd_epi32(h[c / 4], wv[c], bcast4(a.add(4 * c)));
                    lo[c / 4] = _mm512_dpbusd_epi32(lo[c / 4], wv[c], bcast4(a.add(32 + 4 * c)));
                }
                if p.sub16() {
                    for s in 0..2 {
                        let dot = _mm512_add_epi32(_mm512_slli_epi32(h[s], 8), lo[s]);
                        let sum = *acts.sum16.get_unchecked(2 * i + s);
                        let dint = _mm512_sub_epi32(dot, _mm512_set1_epi32(p.offset * sum));
                        let scale = _mm512_mul_ps(ws[s], dx);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dint), scale, acc[t]);
                        if p.min != MinKind::None {
                            let sx = _mm512_set1_ps(*acts.sx16.get_unchecked(2 * i + s));
                            accm[t] = _mm512_fmadd_ps(mw[s], sx, accm[t]);
                        }
                    }
                } else {
                    let hi = _mm512_add_epi32(h[0], h[1]);
                    let lw = _mm512_add_epi32(lo[0], lo[1]);
                    let dot = _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lw);
                    let sum = *acts.sum.get_unchecked(i);
                    let dint = _mm512_sub_epi32(dot, _mm512_set1_epi32(p.offset * sum));
                    let scale = _mm512_mul_ps(ws[0], dx);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dint), scale, acc[t]);
                    if p.min != MinKind::None {
                        let sx = _mm512_set1_ps(*acts.sx.get_unchecked(i));
                        accm[t] = _mm512_fmadd_ps(mw[0], sx, accm[t]);
                    }
                }
            }
        }
    }
    for t in 0..T {
        let y = if p.min != MinKind::None {
            _mm512_add_ps(acc[t], accm[t])
        } else {
            acc[t]
        };
        // SAFETY: the tile is the caller's.
        unsafe { store_row(store, t0 + t, grp.cols, y) };
    }
}

/// One packed 16-row group of a quantized matrix.
struct QGroup {
    base: *const u8,
    /// Bytes from one group to the next.
    stride: usize,
    layout: QuantLayout,
    cols: Cols,
}

/// `T` activation rows from `t0` against one 16-row group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn quant_rows<const F: u8, const T: usize>(
    grp: &QGroup,
    acts: &QuantizedActs,
    t0: usize,
    store: &Store,
) {
    let group = grp.base;
    let QuantLayout {
        nb,
        cb,
        d_off,
        m_off,
        ..
    } = grp.layout;
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm512_setzero_ps(); T];
    let nibble = _mm512_set1_epi8(0x0f);
    let codes_base = acts.codes.as_ptr();
    let packing = [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0][F as usize]
        .packing()
        .expect("a block format");
    let mut prefetch = Prefetch::new(&grp.layout, group, grp.stride);
    for b in 0..nb {
        // SAFETY: block b of the group holds `cb` code bytes and 16 scales.
        unsafe {
            let codes = group.add(b * cb);
            if T == 1 {
                prefetch.step(&packing, &grp.layout);
            }
            // wv[c] holds every lane's codes for columns 4c..4c+4 of the block.
            let mut wv = [_mm512_setzero_si512(); 8];
            if F == Q8_0 {
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(codes.add(64 * c) as *const __m512i);
                }
            } else {
                for c in 0..4 {
                    let v = _mm512_loadu_si512(codes.add(64 * c) as *const __m512i);
                    wv[c] = _mm512_and_si512(v, nibble);
                    wv[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(
                group.add(d_off + b * 32) as *const __m256i
            ));
            let mw = if F == Q4_1 {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    group.add(m_off + b * 32) as *const __m256i
                ))
            } else {
                _mm512_setzero_ps()
            };
            for t in 0..T {
                let i = (t0 + t) * nb + b;
                let a = codes_base.add(i * 64);
                let (mut h0, mut h1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                let (mut l0, mut l1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for c in (0..8).step_by(2) {
                    h0 = _mm512_dpbusd_epi32(h0, wv[c], bcast4(a.add(4 * c)));
                    h1 = _mm512_dpbusd_epi32(h1, wv[c + 1], bcast4(a.add(4 * c + 4)));
                    l0 = _mm512_dpbusd_epi32(l0, wv[c], bcast4(a.add(32 + 4 * c)));
                    l1 = _mm512_dpbusd_epi32(l1, wv[c + 1], bcast4(a.add(36 + 4 * c)));
                }
                let hi = _mm512_add_epi32(h0, h1);
                let lo = _mm512_add_epi32(l0, l1);
                let mut dint = _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo);
                if F == Q4_0 {
                    dint =
                        _mm512_sub_epi32(dint, _mm512_set1_epi32(8 * *acts.sum.get_unchecked(i)));
                } else if F == Q8_0 {
                    dint =
                        _mm512_sub_epi32(dint, _mm512_set1_epi32(128 * *acts.sum.get_unchecked(i)));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*acts.d.get_unchecked(i)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dint), scale, acc[t]);
                if F == Q4_1 {
                    accm[t] =
                        _mm512_fmadd_ps(mw, _mm512_set1_ps(*acts.sx.get_unchecked(i)), accm[t]);
                }
            }
        }
    }
    for t in 0..T {
        let y = if F == Q4_1 {
            _mm512_add_ps(acc[t], accm[t])
        } else {
            acc[t]
        };
        // SAFETY: the tile is the caller's.
        unsafe { store_row(store, t0 + t, grp.cols, y) };
    }
}

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;
const F8_E4M3: u8 = 3;

/// Column `i` of a packed float group as 16 f32 lanes.
#[inline(always)]
unsafe fn load_w<const E: u8>(group: *const u8, i: usize) -> __m512 {
    // SAFETY: the caller passes a column inside the group; features are
    // enabled on every caller.
    unsafe {
        match E {
            F32 => _mm512_loadu_ps(group.add(i * 64) as *const f32),
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(group.add(i * 32) as *const __m256i)),
            F8_E4M3 => {
                let b = _mm256_cvtepu8_epi16(_mm_loadu_si128(group.add(i * 16) as *const __m128i));
                let sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
                let rest = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7F)), 7);
                _mm512_cvtph_ps(_mm256_or_si256(sign, rest))
            }
            _ => _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(group.add(i * 32) as *const __m256i)),
                16,
            )),
        }
    }
}

/// Float groups `groups` against activation rows `rows`.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL and F16C; the `(rows, groups)` output
/// tile belongs to the caller.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn float_groups(
    w: &WeightMatrix,
    groups: Range<usize>,
    x: &[f32],
    rows: Range<usize>,
    store: &Store,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match w.format() {
            WeightFormat::F32 => float_fmt::<F32>(w, groups, x, rows, store),
            WeightFormat::F16 => float_fmt::<F16>(w, groups, x, rows, store),
            WeightFormat::F8_E4M3 => float_fmt::<F8_E4M3>(w, groups, x, rows, store),
            _ => float_fmt::<BF16>(w, groups, x, rows, store),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn float_fmt<const E: u8>(
    w: &WeightMatrix,
    groups: Range<usize>,
    x: &[f32],
    rows: Range<usize>,
    store: &Store,
) {
    let mut g = groups.start;
    while g < groups.end {
        let pair = g + 1 < groups.end;
        let mut t = rows.start;
        // SAFETY: forwarded from the caller.
        unsafe {
            macro_rules! run {
                ($gs:expr, $t:expr) => {
                    float_rows::<E, { $gs }, { $t }>(w, g, x, t, store)
                };
            }
            while t + 6 <= rows.end {
                if pair {
                    run!(2, 6)
                } else {
                    run!(1, 6)
                }
                t += 6;
            }
            match (pair, rows.end - t) {
                (true, 5) => run!(2, 5),
                (true, 4) => run!(2, 4),
                (true, 3) => run!(2, 3),
                (true, 2) => run!(2, 2),
                (true, 1) => run!(2, 1),
                (false, 5) => run!(1, 5),
                (false, 4) => run!(1, 4),
                (false, 3) => run!(1, 3),
                (false, 2) => run!(1, 2),
                (false, 1) => run!(1, 1),
                _ => {}
            }
        }
        g += if pair { 2 } else { 1 };
    }
}

/// `T` rows from `t0` against `G` consecutive groups from `g0`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn float_rows<const E: u8, const G: usize, const T: usize>(
    w: &WeightMatrix,
    g0: usize,
    x: &[f32],
    t0: usize,
    store: &Store,
) {
    let k = w.cols();
    let gp: [*const u8; G] = std::array::from_fn(|i| w.group(g0 + i).as_ptr());
    let mut acc = [[_mm512_setzero_ps(); T]; G];
    let xp = x.as_ptr();
    for i in 0..k {
        // SAFETY: column i is inside every group; rows t0..t0+T hold k values each.
        unsafe {
            let mut wv = [_mm512_setzero_ps(); G];
            for gi in 0..G {
                wv[gi] = load_w::<E>(gp[gi], i);
            }
            for t in 0..T {
                let xb = _mm512_set1_ps(*xp.add((t0 + t) * k + i));
                for gi in 0..G {
                    acc[gi][t] = _mm512_fmadd_ps(wv[gi], xb, acc[gi][t]);
                }
            }
        }
    }
    if E == F8_E4M3 {
        for gi in 0..G {
            // SAFETY: the group's 16 row scales follow its codes.
            let scale = unsafe { _mm512_loadu_ps(gp[gi].add(w.row_scale_offset()) as *const f32) };
            for a in acc[gi].iter_mut() {
                *a = _mm512_mul_ps(*a, scale);
            }
        }
    }
    for gi in 0..G {
        let cols = Cols::of_group(w, g0 + gi);
        for t in 0..T {
            // SAFETY: the tile is the caller's.
            unsafe { store_row(store, t0 + t, cols, acc[gi][t]) };
        }
    }
}
