//! AVX-512 chunk kernel: keys are transposed to `[head_dim][16]` once per
//! chunk and tile, so a row's 16 scores are one zmm built by FMAs over the
//! head dimension (no horizontal sums), softmax runs on that zmm, and values
//! are accumulated 16 dimensions at a time.

use std::arch::x86_64::*;

use super::portable::{ChunkKernel, Rows, drive};
use super::{CHUNK, Ctx, Item, KvCache};
use crate::math::{EXP_MAX, EXP_MIN};

/// One item with the AVX-512 kernel.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn run_item(ctx: &Ctx<'_>, item: &Item, scratch: &mut Vec<f32>) {
    drive::<Avx512>(ctx, item, scratch)
}

struct Avx512;

/// 16 values of the cache at element `at` as f32.
#[inline(always)]
unsafe fn load16(cache: &KvCache<'_>, at: usize) -> __m512 {
    // SAFETY: the caller passes 16 in-bounds elements; features enabled by callers.
    unsafe {
        match cache {
            KvCache::F32(s) => _mm512_loadu_ps(s.as_ptr().add(at)),
            KvCache::F16(s) => {
                _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().add(at) as *const __m256i))
            }
        }
    }
}

/// Transpose 16 rows of 16 floats in place.
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    // SAFETY: only reached from functions with AVX-512 F/BW/VL, FMA and F16C enabled.
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + i] = column i (mod 4) of rows 4g..4g+4, per 128-bit lane.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            let pd = |x: __m512| _mm512_castps_pd(x);
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        for i in 0..4 {
            let s0 = _mm512_shuffle_f32x4(u[i], u[4 + i], 0x88);
            let s1 = _mm512_shuffle_f32x4(u[i], u[4 + i], 0xdd);
            let s2 = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0x88);
            let s3 = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0xdd);
            r[i] = _mm512_shuffle_f32x4(s0, s2, 0x88);
            r[8 + i] = _mm512_shuffle_f32x4(s0, s2, 0xdd);
            r[4 + i] = _mm512_shuffle_f32x4(s1, s3, 0x88);
            r[12 + i] = _mm512_shuffle_f32x4(s1, s3, 0xdd);
        }
    }
}

/// `e^x` per lane (the steps of [`crate::math::exp`] with fused multiply-adds);
/// lanes below `EXP_MIN` (−∞ included) give exactly 0.
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    // SAFETY: only reached from functions with AVX-512 F/BW/VL, FMA and F16C enabled.
    unsafe {
        const MAGIC: f32 = 12_582_912.0;
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)),
            _mm512_set1_ps(EXP_MAX),
        );
        let magic = _mm512_set1_ps(MAGIC);
        let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
        let n = _mm512_sub_ps(t, magic);
        let nbits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_add_epi32(nbits, _mm512_set1_epi32(127)),
            23,
        ));
        let keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_MIN), _CMP_GE_OQ);
        let nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        _mm512_mask_mov_ps(_mm512_maskz_mul_ps(keep, p, scale), nan, x)
    }
}

impl ChunkKernel for Avx512 {
    #[inline(always)]
    unsafe fn load(
        ctx: &Ctx<'_>,
        item: &Item,
        c: usize,
        keys: (usize, usize),
        bufs: (&mut [f32], &mut [f32]),
    ) {
        let hd = ctx.shape.head_dim;
        let mut bases = [usize::MAX; CHUNK];
        for (p, base) in ctx.kv_bases(item, keys) {
            bases[p - c * CHUNK] = base;
        }
        let (kt, vb) = bufs;
        // SAFETY: bases are in-bounds cache rows of hd elements; buffers hold CHUNK·hd values.
        unsafe {
            let full = hd / 16 * 16;
            for cb in (0..full).step_by(16) {
                let mut r = [_mm512_setzero_ps(); 16];
                for j in 0..CHUNK {
                    if bases[j] != usize::MAX {
                        r[j] = load16(&ctx.k, bases[j] + cb);
                    }
                }
                transpose16(&mut r);
                for (i, v) in r.iter().enumerate() {
                    _mm512_storeu_ps(kt.as_mut_ptr().add((cb + i) * CHUNK), *v);
                }
            }
            if full < hd {
                let mut row = [0f32; 16];
                for j in 0..CHUNK {
                    if bases[j] != usize::MAX {
                        ctx.k.read(bases[j] + full, &mut row[..hd - full]);
                        for d in full..hd {
                            kt[d * CHUNK + j] = row[d - full];
                        }
                    }
                }
            }
            for j in 0..CHUNK {
                if bases[j] != usize::MAX {
                    let dst = vb.as_mut_ptr().add(j * hd);
                    let mut d = 0;
                    while d < full {
                        _mm512_storeu_ps(dst.add(d), load16(&ctx.v, bases[j] + d));
                        d += 16;
                    }
                    if full < hd {
                        ctx.v
                            .read(bases[j] + full, &mut vb[j * hd + full..(j + 1) * hd]);
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn rows<const R: usize>(
        q: &[f32],
        bufs: (&[f32], &[f32]),
        lanes: (usize, usize),
        softcap: f32,
        st: Rows<'_>,
    ) {
        let hd = q.len() / R;
        let (kt, vb) = bufs;
        let (jlo, jhi) = lanes;
        // SAFETY: kt holds hd·16 values, vb CHUNK·hd; lanes ⊆ 0..16; q and the
        // states hold R rows.
        unsafe {
            // Scores: per row, four partial sums over d mod 4, then (a0+a1)+(a2+a3).
            let mut a = [[_mm512_setzero_ps(); 4]; R];
            let qp = q.as_ptr();
            let mut d = 0;
            while d + 4 <= hd {
                for u in 0..4 {
                    let k = _mm512_loadu_ps(kt.as_ptr().add((d + u) * CHUNK));
                    for r in 0..R {
                        a[r][u] =
                            _mm512_fmadd_ps(_mm512_set1_ps(*qp.add(r * hd + d + u)), k, a[r][u]);
                    }
                }
                d += 4;
            }
            while d < hd {
                let k = _mm512_loadu_ps(kt.as_ptr().add(d * CHUNK));
                for r in 0..R {
                    a[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(*qp.add(r * hd + d)), k, a[r][0]);
                }
                d += 1;
            }
            let valid: __mmask16 = (((1u32 << jhi) - 1) & !((1u32 << jlo) - 1)) as __mmask16;
            let mut pj = [[0f32; CHUNK]; R];
            let mut corr = [1f32; R];
            for r in 0..R {
                let mut s = _mm512_add_ps(
                    _mm512_add_ps(a[r][0], a[r][1]),
                    _mm512_add_ps(a[r][2], a[r][3]),
                );
                if softcap > 0.0 {
                    // c·tanh(s/c) = c − 2c/(e^{2s/c} + 1)
                    let e = exp16(_mm512_mul_ps(s, _mm512_set1_ps(2.0 / softcap)));
                    let two_c = _mm512_set1_ps(2.0 * softcap);
                    s = _mm512_sub_ps(
                        _mm512_set1_ps(softcap),
                        _mm512_div_ps(two_c, _mm512_add_ps(e, _mm512_set1_ps(1.0))),
                    );
                }
                let s = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), valid, s);
                let m_new = st.m[r].max(_mm512_reduce_max_ps(s));
                corr[r] = crate::math::exp(st.m[r] - m_new);
                let p = exp16(_mm512_sub_ps(s, _mm512_set1_ps(m_new)));
                st.l[r] = st.l[r] * corr[r] + _mm512_reduce_add_ps(p);
                st.m[r] = m_new;
                _mm512_storeu_ps(pj[r].as_mut_ptr(), p);
            }
            // Values: per row, four 16-dimension accumulators per pass.
            let acc = st.acc.as_mut_ptr();
            let mut d = 0;
            while d < hd {
                let mut masks = [0 as __mmask16; 4];
                for u in 0..4 {
                    let rem = hd.saturating_sub(d + 16 * u);
                    masks[u] = if rem >= 16 {
                        0xffff
                    } else {
                        ((1u32 << rem) - 1) as __mmask16
                    };
                }
                let mut o = [[_mm512_setzero_ps(); 4]; R];
                for r in 0..R {
                    for u in 0..4 {
                        o[r][u] = _mm512_maskz_loadu_ps(masks[u], acc.add(r * hd + d + 16 * u));
                        if corr[r] != 1.0 {
                            o[r][u] = _mm512_mul_ps(o[r][u], _mm512_set1_ps(corr[r]));
                        }
                    }
                }
                for j in jlo..jhi {
                    let row = vb.as_ptr().add(j * hd + d);
                    let mut v = [_mm512_setzero_ps(); 4];
                    for u in 0..4 {
                        v[u] = _mm512_maskz_loadu_ps(masks[u], row.add(16 * u));
                    }
                    for r in 0..R {
                        let pb = _mm512_set1_ps(*pj[r].get_unchecked(j));
                        for u in 0..4 {
                            o[r][u] = _mm512_fmadd_ps(pb, v[u], o[r][u]);
                        }
                    }
                }
                for r in 0..R {
                    for u in 0..4 {
                        _mm512_mask_storeu_ps(acc.add(r * hd + d + 16 * u), masks[u], o[r][u]);
                    }
                }
                d += 64;
            }
        }
    }
}
