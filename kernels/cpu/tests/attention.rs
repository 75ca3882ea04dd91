//! Paged attention against a dense f64 reference, batch invariance (chunked
//! prefill == unchunked prefill == decode, bit for bit, for any thread count
//! and batch composition), GQA, sliding windows, soft-capping, f16 caches,
//! and `kv_write`.
//!
//! Tolerance against the reference: 2e-5 absolute (inputs in [-1, 1], so
//! outputs are convex combinations of values of magnitude ≤ 1; f32 dot
//! products of ≤ 64 terms and a polynomial `exp` with < 3e-7 relative error).

mod common;

use common::{Rng, bits, isas};
use half::f16;
use kiln_kernels_cpu::attention::{
    AttentionBatch, AttentionShape, KvCache, KvCacheMut, kv_write, paged_attention_with,
};
use kiln_kernels_cpu::isa::Isa;
use kiln_kernels_cpu::pool::ThreadPool;

/// A cache with random contents and a scrambled block table per sequence.
#[derive(Clone)]
struct World {
    shape: AttentionShape,
    k: Vec<f32>,
    v: Vec<f32>,
    k16: Vec<u16>,
    v16: Vec<u16>,
    /// `[seqs, max_blocks]`.
    tables: Vec<i32>,
    max_blocks: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum CacheType {
    F32,
    F16,
}

impl World {
    fn new(shape: AttentionShape, seq_count: usize, max_len: usize, seed: u64) -> World {
        let mut rng = Rng(seed);
        let max_blocks = max_len.div_ceil(shape.block_size);
        let blocks = seq_count * max_blocks + 3;
        let len = blocks * shape.block_size * shape.kv_heads * shape.head_dim;
        let k = rng.vec(len, 1.0);
        let v = rng.vec(len, 1.0);
        let k16 = k.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        let v16 = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        // Sequence s owns blocks s, s + seqs, s + 2·seqs, … in reverse order.
        let tables = (0..seq_count)
            .flat_map(|s| {
                (0..max_blocks)
                    .rev()
                    .map(move |b| (s + b * seq_count) as i32)
            })
            .collect();
        World {
            shape,
            k,
            v,
            k16,
            v16,
            tables,
            max_blocks,
        }
    }

    fn caches(&self, ct: CacheType) -> (KvCache<'_>, KvCache<'_>) {
        match ct {
            CacheType::F32 => (KvCache::F32(&self.k), KvCache::F32(&self.v)),
            CacheType::F16 => (KvCache::F16(&self.k16), KvCache::F16(&self.v16)),
        }
    }

    fn value(&self, ct: CacheType, keys: bool, at: usize) -> f64 {
        match (ct, keys) {
            (CacheType::F32, true) => self.k[at] as f64,
            (CacheType::F32, false) => self.v[at] as f64,
            (CacheType::F16, true) => f16::from_bits(self.k16[at]).to_f64(),
            (CacheType::F16, false) => f16::from_bits(self.v16[at]).to_f64(),
        }
    }

    /// Run attention for `parts`: (sequence, first query position, query count).
    fn run(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        ct: CacheType,
        q: &[f32],
        parts: &[(usize, usize, usize)],
    ) -> Vec<f32> {
        let qd = self.shape.heads * self.shape.head_dim;
        let mut qs = Vec::new();
        let mut qsl = vec![0i32];
        let mut lens = Vec::new();
        let mut tables = Vec::new();
        for &(s, p0, count) in parts {
            qs.extend_from_slice(&q[(s * 1000 + p0) * qd..(s * 1000 + p0 + count) * qd]);
            qsl.push(qsl.last().unwrap() + count as i32);
            lens.push((p0 + count) as i32);
            tables.extend_from_slice(&self.tables[s * self.max_blocks..(s + 1) * self.max_blocks]);
        }
        let mut out = vec![f32::NAN; qs.len()];
        let batch = AttentionBatch {
            q: &qs,
            block_tables: &tables,
            max_blocks: self.max_blocks,
            seq_lens: &lens,
            query_start_loc: &qsl,
        };
        paged_attention_with(pool, isa, &self.shape, &batch, self.caches(ct), &mut out);
        out
    }

    /// The dense f64 result for sequence `s`, position `p`, head `h`.
    fn reference(&self, ct: CacheType, q: &[f64], s: usize, p: usize, h: usize) -> Vec<f64> {
        let sh = &self.shape;
        let (hd, bs) = (sh.head_dim, sh.block_size);
        let kvh = h / (sh.heads / sh.kv_heads);
        let first = if sh.window > 0 {
            (p + 1).saturating_sub(sh.window)
        } else {
            0
        };
        let base = |j: usize| {
            let block = self.tables[s * self.max_blocks + j / bs] as usize;
            ((block * bs + j % bs) * sh.kv_heads + kvh) * hd
        };
        let scores: Vec<f64> = (first..=p)
            .map(|j| {
                let dot: f64 = (0..hd)
                    .map(|d| q[d] * self.value(ct, true, base(j) + d))
                    .sum();
                let x = dot * sh.scale as f64;
                if sh.softcap > 0.0 {
                    sh.softcap as f64 * (x / sh.softcap as f64).tanh()
                } else {
                    x
                }
            })
            .collect();
        let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
        let w: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
        let z: f64 = w.iter().sum();
        (0..hd)
            .map(|d| {
                (first..=p)
                    .zip(&w)
                    .map(|(j, wj)| wj / z * self.value(ct, false, base(j) + d))
                    .sum()
            })
            .collect()
    }
}

fn shape(heads: usize, kv_heads: usize, head_dim: usize, block_size: usize) -> AttentionShape {
    AttentionShape {
        heads,
        kv_heads,
        head_dim,
        block_size,
        window: 0,
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: 0.0,
    }
}

/// Queries for sequences 0..3 at positions 0..1000 (row `s·1000 + p`).
fn queries(sh: &AttentionShape, seed: u64) -> Vec<f32> {
    Rng(seed).vec(3 * 1000 * sh.heads * sh.head_dim, 1.0)
}

fn variants() -> Vec<AttentionShape> {
    vec![
        shape(4, 2, 8, 4),
        shape(6, 2, 64, 16),
        AttentionShape {
            window: 7,
            ..shape(3, 3, 40, 5)
        },
        AttentionShape {
            softcap: 1.5,
            scale: 0.9,
            ..shape(4, 1, 24, 16)
        },
        AttentionShape {
            window: 19,
            ..shape(8, 2, 128, 32)
        },
    ]
}

#[test]
fn mixed_batches_match_the_dense_reference() {
    let pool = ThreadPool::new(2);
    for (vi, sh) in variants().into_iter().enumerate() {
        let world = World::new(sh, 3, 80, 10 + vi as u64);
        let q = queries(&sh, 20 + vi as u64);
        let qd = sh.heads * sh.head_dim;
        // A prefill from 0, a continued chunk, and a decode, in one batch.
        let parts = [(0usize, 0usize, 21usize), (1, 31, 9), (2, 70, 1)];
        for ct in [CacheType::F32, CacheType::F16] {
            for isa in isas() {
                let out = world.run(&pool, isa, ct, &q, &parts);
                let mut row = 0;
                for &(s, p0, count) in &parts {
                    for p in p0..p0 + count {
                        for h in 0..sh.heads {
                            let qv: Vec<f64> = q[(s * 1000 + p) * qd + h * sh.head_dim..]
                                [..sh.head_dim]
                                .iter()
                                .map(|&x| x as f64)
                                .collect();
                            let want = world.reference(ct, &qv, s, p, h);
                            let got = &out[row * qd + h * sh.head_dim..][..sh.head_dim];
                            for d in 0..sh.head_dim {
                                assert!(
                                    (got[d] as f64 - want[d]).abs() < 2e-5,
                                    "variant {vi} {isa:?} seq {s} pos {p} head {h} dim {d}: {} vs {}",
                                    got[d],
                                    want[d]
                                );
                            }
                        }
                        row += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn chunked_prefill_equals_unchunked_and_decode_bit_for_bit() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    for (vi, sh) in variants().into_iter().enumerate() {
        let world = World::new(sh, 3, 80, 30 + vi as u64);
        let q = queries(&sh, 40 + vi as u64);
        let qd = sh.heads * sh.head_dim;
        let len = 67;
        for ct in [CacheType::F32, CacheType::F16] {
            for isa in isas() {
                let whole = world.run(&pools[1], isa, ct, &q, &[(1, 0, len)]);
                for pool in &pools {
                    assert_eq!(
                        bits(&world.run(pool, isa, ct, &q, &[(1, 0, len)])),
                        bits(&whole)
                    );
                }
                // Chunks of uneven sizes, each alone and inside a batch with other sequences.
                let mut p0 = 0;
                for size in [10, 1, 19, 3, 34] {
                    let part = world.run(&pools[2], isa, ct, &q, &[(1, p0, size)]);
                    assert_eq!(
                        bits(&part),
                        bits(&whole[p0 * qd..(p0 + size) * qd]),
                        "variant {vi} {isa:?} chunk at {p0}"
                    );
                    let mixed = world.run(
                        &pools[1],
                        isa,
                        ct,
                        &q,
                        &[(0, 5, 7), (1, p0, size), (2, 40, 1)],
                    );
                    assert_eq!(
                        bits(&mixed[7 * qd..(7 + size) * qd]),
                        bits(&part),
                        "variant {vi} {isa:?} mixed at {p0}"
                    );
                    p0 += size;
                }
                assert_eq!(p0, len);
                // Every position as a single decode row.
                for p in (0..len).step_by(11) {
                    let one = world.run(&pools[0], isa, ct, &q, &[(1, p, 1)]);
                    assert_eq!(
                        bits(&one),
                        bits(&whole[p * qd..(p + 1) * qd]),
                        "variant {vi} {isa:?} decode {p}"
                    );
                }
            }
        }
    }
}

#[test]
fn isas_agree_with_the_scalar_path() {
    let pool = ThreadPool::new(2);
    for (vi, sh) in variants().into_iter().enumerate() {
        let world = World::new(sh, 3, 80, 50 + vi as u64);
        let q = queries(&sh, 60 + vi as u64);
        let parts = [(0usize, 0usize, 33usize), (2, 50, 2)];
        for ct in [CacheType::F32, CacheType::F16] {
            let base = world.run(&pool, Isa::Scalar, ct, &q, &parts);
            for isa in isas() {
                let got = world.run(&pool, isa, ct, &q, &parts);
                for (i, (a, b)) in got.iter().zip(&base).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "variant {vi} {isa:?} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// The blocks wholly behind the window of a sequence's first row are never
/// read: with NaN in them and their table entries outside the cache, no
/// output bit changes.
#[test]
fn blocks_behind_the_window_are_never_read() {
    let pool = ThreadPool::new(2);
    let windowed = variants().into_iter().filter(|sh| sh.window > 0);
    for (vi, sh) in windowed.enumerate() {
        let world = World::new(sh, 3, 80, 70 + vi as u64);
        let q = queries(&sh, 80 + vi as u64);
        // A chunk and a decode far past the window, next to a prefill from 0.
        let parts = [(0usize, 0usize, 9usize), (1, 50, 6), (2, 77, 1)];
        let mut holed = world.clone();
        let per_block = sh.block_size * sh.kv_heads * sh.head_dim;
        let mut holes = 0;
        for &(s, p0, _) in &parts {
            let behind = (p0 + 1).saturating_sub(sh.window) / sh.block_size;
            for col in 0..behind {
                let entry = &mut holed.tables[s * holed.max_blocks + col];
                let at = *entry as usize * per_block..(*entry as usize + 1) * per_block;
                holed.k[at.clone()].fill(f32::NAN);
                holed.v[at.clone()].fill(f32::NAN);
                holed.k16[at.clone()].fill(f16::NAN.to_bits());
                holed.v16[at].fill(f16::NAN.to_bits());
                *entry = if col % 2 == 0 { -1 } else { i32::MAX };
                holes += 1;
            }
        }
        assert!(holes >= 2, "variant {vi}: the test must make holes");
        for ct in [CacheType::F32, CacheType::F16] {
            for isa in isas() {
                let want = world.run(&pool, isa, ct, &q, &parts);
                let got = holed.run(&pool, isa, ct, &q, &parts);
                assert!(got.iter().all(|x| x.is_finite()), "variant {vi} {isa:?}");
                assert_eq!(bits(&got), bits(&want), "variant {vi} {isa:?}");
            }
        }
    }
}

#[test]
fn empty_batches_and_sequences_are_fine() {
    let pool = ThreadPool::new(2);
    let sh = shape(2, 1, 8, 4);
    let world = World::new(sh, 3, 16, 1);
    let q = queries(&sh, 2);
    for isa in isas() {
        assert!(world.run(&pool, isa, CacheType::F32, &q, &[]).is_empty());
        // A sequence with no query rows next to one with a row.
        let out = world.run(&pool, isa, CacheType::F32, &q, &[(0, 5, 0), (1, 3, 1)]);
        let alone = world.run(&pool, isa, CacheType::F32, &q, &[(1, 3, 1)]);
        assert_eq!(bits(&out), bits(&alone));
    }
}

#[test]
fn kv_write_stores_rows_at_slots_and_skips_negative_ones() {
    let kv_dim = 3;
    let k = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let v = [0.1f32, 0.2, 0.3, 0.4, 0.5, 1.0 / 3.0];
    let mut kc = vec![0f32; 4 * kv_dim];
    let mut vc = vec![0u16; 4 * kv_dim];
    kv_write(
        &k,
        &v,
        KvCacheMut::F32(&mut kc),
        KvCacheMut::F16(&mut vc),
        &[2, -1],
        kv_dim,
    );
    assert_eq!(&kc[6..9], &[1.0, 2.0, 3.0]);
    assert!(kc[..6].iter().chain(&kc[9..]).all(|&x| x == 0.0));
    assert_eq!(
        vc[6..9],
        [0.1f32, 0.2, 0.3].map(|x| f16::from_f32(x).to_bits())
    );
    assert!(vc[..6].iter().chain(&vc[9..]).all(|&x| x == 0));
    kv_write(
        &k,
        &v,
        KvCacheMut::F32(&mut kc),
        KvCacheMut::F16(&mut vc),
        &[-5, 0],
        kv_dim,
    );
    assert_eq!(&kc[0..3], &[4.0, 5.0, 6.0]);
    assert_eq!(f16::from_bits(vc[2]), f16::from_f32(1.0 / 3.0));
}

#[test]
fn attention_reads_what_kv_write_stored() {
    // One sequence of 5 tokens written through kv_write into scattered blocks.
    let sh = shape(2, 1, 16, 2);
    let mut rng = Rng(77);
    let (k, v, q) = (
        rng.vec(5 * 16, 1.0),
        rng.vec(5 * 16, 1.0),
        rng.vec(5 * 32, 1.0),
    );
    let table = [3i32, 0, 2];
    let slots: Vec<i32> = (0..5).map(|p| table[p / 2] * 2 + (p % 2) as i32).collect();
    let mut kc = vec![0f32; 4 * 2 * 16];
    let mut vc = vec![0f32; 4 * 2 * 16];
    kv_write(
        &k,
        &v,
        KvCacheMut::F32(&mut kc),
        KvCacheMut::F32(&mut vc),
        &slots,
        16,
    );
    let batch = AttentionBatch {
        q: &q,
        block_tables: &table,
        max_blocks: 3,
        seq_lens: &[5],
        query_start_loc: &[0, 5],
    };
    let pool = ThreadPool::new(2);
    for isa in isas() {
        let mut out = vec![0f32; q.len()];
        paged_attention_with(
            &pool,
            isa,
            &sh,
            &batch,
            (KvCache::F32(&kc), KvCache::F32(&vc)),
            &mut out,
        );
        for p in 0..5 {
            for h in 0..2 {
                let qv = &q[p * 32 + h * 16..][..16];
                let s: Vec<f64> = (0..=p)
                    .map(|j| {
                        (0..16)
                            .map(|d| qv[d] as f64 * k[j * 16 + d] as f64)
                            .sum::<f64>()
                            * sh.scale as f64
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                for d in 0..16 {
                    let want: f64 = (0..=p)
                        .map(|j| (s[j] - mx).exp() / z * v[j * 16 + d] as f64)
                        .sum();
                    assert!((out[p * 32 + h * 16 + d] as f64 - want).abs() < 2e-5);
                }
            }
        }
    }
}
