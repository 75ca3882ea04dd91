//! The tile driver shared by every ISA, and the portable chunk kernel.
//!
//! The portable kernel uses no fused multiply-adds, so its baseline and AVX2
//! builds give identical bits.

use super::{CHUNK, Ctx, Item};
use crate::math;

/// How one ISA loads a key chunk and updates rows' online softmax with it.
pub(crate) trait ChunkKernel {
    /// Load keys and values of absolute positions `keys.0..keys.1` (inside
    /// chunk `c`) into `bufs.0` (`2·CHUNK·head_dim` values) and `bufs.1`
    /// (`CHUNK·head_dim` values), in the kernel's layout.
    ///
    /// # Safety
    /// The CPU supports the kernel's features.
    unsafe fn load(
        ctx: &Ctx<'_>,
        item: &Item,
        c: usize,
        keys: (usize, usize),
        bufs: (&mut [f32], &mut [f32]),
    );

    /// Fold chunk lanes `jlo..jhi` into the states of `R` rows with the same
    /// lanes (`q`: `[R, head_dim]`). Each row's arithmetic is that of `R = 1`;
    /// rows only share loads.
    ///
    /// # Safety
    /// The CPU supports the kernel's features.
    unsafe fn rows<const R: usize>(
        q: &[f32],
        bufs: (&[f32], &[f32]),
        lanes: (usize, usize),
        softcap: f32,
        state: Rows<'_>,
    );
}

/// Rows' online-softmax states: running maxima `[R]`, running sums `[R]`,
/// weighted value sums `[R, head_dim]`.
pub(crate) struct Rows<'a> {
    pub m: &'a mut [f32],
    pub l: &'a mut [f32],
    pub acc: &'a mut [f32],
}

/// Chunks ahead of the current one whose keys and values are prefetched:
/// a sequence's cache rows of one KV head lie `kv_heads·head_dim` elements
/// apart, a stride the hardware prefetchers do not follow far enough.
const PREFETCH_CHUNKS: usize = 2;

/// Run one item: every (token, head) row of it over its causal key range.
#[inline(always)]
pub(crate) fn drive<K: ChunkKernel>(ctx: &Ctx<'_>, item: &Item, scratch: &mut Vec<f32>) {
    let sh = &ctx.shape;
    let hd = sh.head_dim;
    let qd = sh.heads * hd;
    let s = &ctx.seqs[item.seq];
    let nh = item.heads.1 - item.heads.0;
    let ntok = item.tokens.1 - item.tokens.0;
    let rows = ntok * nh;
    let pos_of = |t: usize| s.pos0 + (t - s.q_start);
    scratch.clear();
    scratch.resize(2 * rows * hd + 2 * rows + 3 * CHUNK * hd, 0.0);
    let (qs, rest) = scratch.split_at_mut(rows * hd);
    let (acc, rest) = rest.split_at_mut(rows * hd);
    let (ms, rest) = rest.split_at_mut(rows);
    let (ls, rest) = rest.split_at_mut(rows);
    // Keys get two chunk buffers (a kernel may stage them before transposing).
    let (kbuf, vbuf) = rest.split_at_mut(2 * CHUNK * hd);
    ms.fill(f32::NEG_INFINITY);
    for ti in 0..ntok {
        let t = item.tokens.0 + ti;
        for hi in 0..nh {
            let src = &ctx.q[t * qd + (item.heads.0 + hi) * hd..][..hd];
            for (d, &x) in qs[(ti * nh + hi) * hd..][..hd].iter_mut().zip(src) {
                *d = x * sh.scale;
            }
        }
    }
    let first = ctx.first_key(pos_of(item.tokens.0));
    let last = pos_of(item.tokens.1 - 1);
    for c in first / CHUNK..=last / CHUNK {
        let base = c * CHUNK;
        let keys = (base.max(first), (base + CHUNK).min(last + 1));
        let ahead = base + PREFETCH_CHUNKS * CHUNK;
        if ahead <= last {
            ctx.prefetch_keys(item, (ahead, (ahead + CHUNK).min(last + 1)));
        }
        // SAFETY: the caller picked a kernel this CPU supports.
        unsafe { K::load(ctx, item, c, keys, (&mut *kbuf, &mut *vbuf)) };
        for ti in 0..ntok {
            let p = pos_of(item.tokens.0 + ti);
            let lo = ctx.first_key(p).max(base);
            let hi = (p + 1).min(base + CHUNK);
            if lo >= hi {
                continue;
            }
            // The heads of one token share their lanes: up to four go together.
            let mut h = 0;
            while h < nh {
                let r = ti * nh + h;
                let take = (nh - h).min(4);
                let q = &qs[r * hd..(r + take) * hd];
                let state = Rows {
                    m: &mut ms[r..r + take],
                    l: &mut ls[r..r + take],
                    acc: &mut acc[r * hd..(r + take) * hd],
                };
                let args = ((&*kbuf, &*vbuf), (lo - base, hi - base), sh.softcap);
                // SAFETY: as above.
                unsafe {
                    match take {
                        4 => K::rows::<4>(q, args.0, args.1, args.2, state),
                        3 => K::rows::<3>(q, args.0, args.1, args.2, state),
                        2 => K::rows::<2>(q, args.0, args.1, args.2, state),
                        _ => K::rows::<1>(q, args.0, args.1, args.2, state),
                    }
                };
                h += take;
            }
        }
    }
    for ti in 0..ntok {
        let t = item.tokens.0 + ti;
        for hi in 0..nh {
            let r = ti * nh + hi;
            let inv = if ls[r] > 0.0 { 1.0 / ls[r] } else { 0.0 };
            // SAFETY: row (t, head) belongs to this item only.
            let dst = unsafe { ctx.out.slice(t * qd + (item.heads.0 + hi) * hd, hd) };
            for (o, &a) in dst.iter_mut().zip(&acc[r * hd..(r + 1) * hd]) {
                *o = a * inv;
            }
        }
    }
}

/// Keys as rows `[CHUNK][hd]`, scores by dot products, no fused steps.
pub(crate) struct Portable;

impl ChunkKernel for Portable {
    #[inline(always)]
    unsafe fn load(
        ctx: &Ctx<'_>,
        item: &Item,
        c: usize,
        keys: (usize, usize),
        bufs: (&mut [f32], &mut [f32]),
    ) {
        let hd = ctx.shape.head_dim;
        for (p, base) in ctx.kv_bases(item, keys) {
            let j = p - c * CHUNK;
            ctx.k.read(base, &mut bufs.0[j * hd..(j + 1) * hd]);
            ctx.v.read(base, &mut bufs.1[j * hd..(j + 1) * hd]);
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
        for r in 0..R {
            one_row(
                &q[r * hd..(r + 1) * hd],
                bufs,
                lanes,
                softcap,
                (
                    &mut st.m[r],
                    &mut st.l[r],
                    &mut st.acc[r * hd..(r + 1) * hd],
                ),
            );
        }
    }
}

/// One row's online-softmax update with chunk lanes `jlo..jhi`.
#[inline(always)]
fn one_row(
    q: &[f32],
    bufs: (&[f32], &[f32]),
    lanes: (usize, usize),
    softcap: f32,
    st: (&mut f32, &mut f32, &mut [f32]),
) {
    let (m, l, acc) = st;
    let hd = q.len();
    let (jlo, jhi) = lanes;
    let mut s = [f32::NEG_INFINITY; CHUNK];
    for j in jlo..jhi {
        s[j] = math::dot(q, &bufs.0[j * hd..(j + 1) * hd]);
        if softcap > 0.0 {
            s[j] = softcap * math::tanh(s[j] / softcap);
        }
    }
    let cmax = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let m_new = m.max(cmax);
    let corr = math::exp(*m - m_new);
    let mut p = [0f32; CHUNK];
    for j in jlo..jhi {
        p[j] = math::exp(s[j] - m_new);
    }
    *l = *l * corr + math::reduce16(p);
    *m = m_new;
    if corr != 1.0 {
        for a in acc.iter_mut() {
            *a *= corr;
        }
    }
    for j in jlo..jhi {
        let pj = p[j];
        for (a, &v) in acc.iter_mut().zip(&bufs.1[j * hd..(j + 1) * hd]) {
            *a += pj * v;
        }
    }
}

/// One item with the portable kernel, baseline build.
pub(crate) fn run_item(ctx: &Ctx<'_>, item: &Item, scratch: &mut Vec<f32>) {
    drive::<Portable>(ctx, item, scratch)
}

/// One item with the portable kernel, AVX2 build (same bits as the baseline).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn run_item_avx2(ctx: &Ctx<'_>, item: &Item, scratch: &mut Vec<f32>) {
    drive::<Portable>(ctx, item, scratch)
}
