//! Paged KV cache writes and causal attention over block tables.
//!
//! The cache of one layer is `[blocks, block_size, kv_heads, head_dim]` in
//! f32 or f16. Attention handles prefill chunks and decodes in one call: each
//! query row walks its keys in position order with an online softmax, alone,
//! so its result does not depend on other rows (chunked prefill equals
//! unchunked prefill bit for bit).

use half::f16;

use crate::pool::{ThreadPool, chunk};
use crate::vecops;

/// One layer's keys or values.
#[derive(Debug, Clone, Copy)]
pub enum KvCache<'a> {
    /// f32 cache.
    F32(&'a [f32]),
    /// f16 cache (raw bits).
    F16(&'a [u16]),
}

impl<'a> KvCache<'a> {
    /// `len` values at `base` as f32 (converted into `buf` for f16 caches).
    #[inline]
    fn row<'b>(&self, base: usize, len: usize, buf: &'b mut [f32]) -> &'b [f32]
    where
        'a: 'b,
    {
        match self {
            KvCache::F32(s) => &s[base..base + len],
            KvCache::F16(s) => {
                for (o, &b) in buf.iter_mut().zip(&s[base..base + len]) {
                    *o = f16::from_bits(b).to_f32();
                }
                &buf[..len]
            }
        }
    }
}

/// Mutable view of one layer's keys or values.
#[derive(Debug)]
pub enum KvCacheMut<'a> {
    /// f32 cache.
    F32(&'a mut [f32]),
    /// f16 cache (raw bits).
    F16(&'a mut [u16]),
}

/// Store `k`/`v` rows `[n, kv_dim]` at their slots (negative slots are skipped).
pub fn kv_write(
    k: &[f32],
    v: &[f32],
    k_cache: KvCacheMut<'_>,
    v_cache: KvCacheMut<'_>,
    slots: &[i32],
    kv_dim: usize,
) {
    let store = |cache: KvCacheMut<'_>, src: &[f32]| match cache {
        KvCacheMut::F32(c) => {
            for (t, &slot) in slots.iter().enumerate() {
                if slot >= 0 {
                    let s = slot as usize * kv_dim;
                    c[s..s + kv_dim].copy_from_slice(&src[t * kv_dim..(t + 1) * kv_dim]);
                }
            }
        }
        KvCacheMut::F16(c) => {
            for (t, &slot) in slots.iter().enumerate() {
                if slot >= 0 {
                    let s = slot as usize * kv_dim;
                    for (d, &x) in c[s..s + kv_dim]
                        .iter_mut()
                        .zip(&src[t * kv_dim..(t + 1) * kv_dim])
                    {
                        *d = f16::from_f32(x).to_bits();
                    }
                }
            }
        }
    };
    store(k_cache, k);
    store(v_cache, v);
}

/// Attention hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Sliding window (0: none).
    pub window: usize,
    /// Softmax scale.
    pub scale: f32,
    /// Logit soft-cap (0: none).
    pub softcap: f32,
}

/// The batch's layout.
#[derive(Debug, Clone, Copy)]
pub struct AttentionBatch<'a> {
    /// `[n, heads·hd]` queries.
    pub q: &'a [f32],
    /// `[seqs, max_blocks]` block tables.
    pub block_tables: &'a [i32],
    /// Columns of `block_tables`.
    pub max_blocks: usize,
    /// `[seqs]` context lengths (including this step's tokens).
    pub seq_lens: &'a [i32],
    /// `[seqs + 1]` query row offsets.
    pub query_start_loc: &'a [i32],
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every (token, head) output slice is written by one task.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Causal paged attention; writes `out[n, heads·hd]`.
pub fn paged_attention(
    pool: &ThreadPool,
    shape: &AttentionShape,
    batch: &AttentionBatch<'_>,
    k: KvCache<'_>,
    v: KvCache<'_>,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let qd = shape.heads * hd;
    let n = batch.q.len() / qd.max(1);
    let seqs = batch.seq_lens.len();
    let mut token_seq = vec![0usize; n];
    for s in 0..seqs {
        for t in batch.query_start_loc[s] as usize..batch.query_start_loc[s + 1] as usize {
            token_seq[t] = s;
        }
    }
    let items = n * shape.heads;
    let keys: usize = batch
        .seq_lens
        .iter()
        .map(|&l| l as usize)
        .sum::<usize>()
        .max(1);
    let tasks = if items * keys * hd < 200_000 {
        1
    } else {
        (pool.threads() * 4).min(items)
    };
    let o = OutPtr(out.as_mut_ptr());
    let group = shape.heads / shape.kv_heads.max(1);
    pool.run(tasks, &|task| {
        let mut acc = vec![0f32; hd];
        let mut scores: Vec<f32> = Vec::new();
        let mut krow = vec![0f32; hd];
        for item in chunk(items, tasks, task) {
            let (t, h) = (item / shape.heads, item % shape.heads);
            let s = token_seq[t];
            let qsl = batch.query_start_loc[s] as usize;
            let q_len = batch.query_start_loc[s + 1] as usize - qsl;
            let pos = batch.seq_lens[s] as usize - q_len + (t - qsl);
            let from = if shape.window > 0 {
                (pos + 1).saturating_sub(shape.window)
            } else {
                0
            };
            let table = &batch.block_tables[s * batch.max_blocks..(s + 1) * batch.max_blocks];
            let q = &batch.q[t * qd + h * hd..t * qd + (h + 1) * hd];
            let kvh = h / group;
            let base = |j: usize| {
                let block = table[j / shape.block_size] as usize;
                ((block * shape.block_size + j % shape.block_size) * shape.kv_heads + kvh) * hd
            };
            // Pass 1: scores, in key order.
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in from..=pos {
                let mut score = vecops::dot(q, k.row(base(j), hd, &mut krow)) * shape.scale;
                if shape.softcap > 0.0 {
                    score = shape.softcap * (score / shape.softcap).tanh();
                }
                max = max.max(score);
                scores.push(score);
            }
            // Pass 2: softmax weights and the weighted sum of values, in key order.
            let mut total = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                total += *sc;
            }
            acc.fill(0.0);
            for (j, &w) in (from..=pos).zip(scores.iter()) {
                vecops::axpy(&mut acc, w, v.row(base(j), hd, &mut krow));
            }
            let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
            // SAFETY: (t, h) is written by this task only.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.get().add(t * qd + h * hd), hd) };
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = a * inv;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    struct Setup {
        shape: AttentionShape,
        k: Vec<f32>,
        v: Vec<f32>,
        q: Vec<f32>,
        table: Vec<i32>,
    }

    fn setup(len: usize) -> Setup {
        let shape = AttentionShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            block_size: 4,
            window: 0,
            scale: 0.3,
            softcap: 0.0,
        };
        let blocks = len.div_ceil(4) + 2;
        let mut seed = 5;
        let kv_dim = shape.kv_heads * shape.head_dim;
        let k: Vec<f32> = (0..blocks * 4 * kv_dim).map(|_| lcg(&mut seed)).collect();
        let v: Vec<f32> = (0..blocks * 4 * kv_dim).map(|_| lcg(&mut seed)).collect();
        let q: Vec<f32> = (0..len * shape.heads * shape.head_dim)
            .map(|_| lcg(&mut seed))
            .collect();
        // A scrambled block table.
        let table: Vec<i32> = (0..blocks as i32).rev().collect();
        Setup {
            shape,
            k,
            v,
            q,
            table,
        }
    }

    fn run(s: &Setup, rows: std::ops::Range<usize>, pool: &ThreadPool) -> Vec<f32> {
        let qd = s.shape.heads * s.shape.head_dim;
        let q = &s.q[rows.start * qd..rows.end * qd];
        let mut out = vec![0f32; q.len()];
        let batch = AttentionBatch {
            q,
            block_tables: &s.table,
            max_blocks: s.table.len(),
            seq_lens: &[rows.end as i32],
            query_start_loc: &[0, rows.len() as i32],
        };
        paged_attention(
            pool,
            &s.shape,
            &batch,
            KvCache::F32(&s.k),
            KvCache::F32(&s.v),
            &mut out,
        );
        out
    }

    #[test]
    fn matches_a_dense_reference() {
        let s = setup(9);
        let pool = ThreadPool::new(2);
        let out = run(&s, 0..9, &pool);
        let (hd, qd) = (8, 32);
        for t in 0..9 {
            for h in 0..4 {
                let kvh = h / 2;
                let q = &s.q[t * qd + h * hd..][..hd];
                let mut scores = vec![];
                for j in 0..=t {
                    let block = s.table[j / 4] as usize;
                    let base = ((block * 4 + j % 4) * 2 + kvh) * hd;
                    scores.push(
                        (0..hd)
                            .map(|d| q[d] as f64 * s.k[base + d] as f64)
                            .sum::<f64>()
                            * 0.3,
                    );
                }
                let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let want: f64 = (0..=t)
                        .map(|j| {
                            let block = s.table[j / 4] as usize;
                            w[j] / z * s.v[((block * 4 + j % 4) * 2 + kvh) * hd + d] as f64
                        })
                        .sum();
                    let got = out[t * qd + h * hd + d] as f64;
                    assert!((got - want).abs() < 1e-5, "t{t} h{h} d{d}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn chunked_prefill_equals_unchunked_bit_for_bit() {
        let s = setup(13);
        let pool = ThreadPool::new(2);
        let whole = run(&s, 0..13, &pool);
        let qd = 32;
        for split in [1, 5, 12] {
            let tail = run(&s, split..13, &pool);
            assert_eq!(&whole[split * qd..], &tail[..], "split at {split}");
        }
        let decode = run(&s, 12..13, &ThreadPool::new(1));
        assert_eq!(&whole[12 * qd..], &decode[..]);
    }

    #[test]
    fn kv_write_skips_negative_slots_and_converts_f16() {
        let mut kc = vec![0f32; 8];
        let mut vc = vec![0u16; 8];
        let k = [1.0f32, 2.0, 3.0, 4.0];
        kv_write(
            &k,
            &k,
            KvCacheMut::F32(&mut kc),
            KvCacheMut::F16(&mut vc),
            &[3, -1],
            2,
        );
        assert_eq!(&kc[6..8], &[1.0, 2.0]);
        assert_eq!(kc[..6].iter().sum::<f32>(), 0.0);
        assert_eq!(f16::from_bits(vc[7]).to_f32(), 2.0);
    }
}
