//! Paged KV cache writes and causal attention over block tables.
//!
//! The cache of one layer is two buffers (keys, values) of shape
//! `[num_blocks, block_size, kv_heads, head_dim]` in f32 or f16; token
//! position `p` of a sequence lives in block `block_table[p / block_size]`,
//! slot `p % block_size`.
//!
//! [`paged_attention`] serves prefill chunks and decodes in one call. Each
//! query row (token, head) runs an online softmax over its keys in chunks of
//! 16 *absolute* positions, in order; rows are grouped into tiles (a
//! sequence's query tokens × the heads sharing a KV head) only to share the
//! loading of each key chunk, never their arithmetic. A row's result thus
//! depends only on its own query, position and keys: chunked prefill equals
//! unchunked prefill and a decode equals the same row inside a prefill, bit
//! for bit, for any thread count.
//!
//! With a sliding window, a row's keys start at the first position its
//! window holds: nothing before it is loaded, not even to be weighted by 0
//! (a reused block may hold NaN). The block-table entries wholly before the
//! window of a sequence's first row are never read, so they may be holes
//! whatever their value (the engine frees those blocks).

use std::cell::RefCell;

use half::f16;

use crate::isa::{self, Isa, detect};
use crate::pool::ThreadPool;

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// Keys per softmax chunk (absolute positions `16c..16c+16`).
pub const CHUNK: usize = 16;

/// One layer's keys or values, read-only.
#[derive(Debug, Clone, Copy)]
pub enum KvCache<'a> {
    /// f32 cache.
    F32(&'a [f32]),
    /// f16 cache (raw IEEE half bits).
    F16(&'a [u16]),
}

impl KvCache<'_> {
    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            KvCache::F32(s) => s.len(),
            KvCache::F16(s) => s.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn elem_bytes(&self) -> usize {
        match self {
            KvCache::F32(_) => 4,
            KvCache::F16(_) => 2,
        }
    }

    fn as_ptr(&self) -> *const u8 {
        match self {
            KvCache::F32(s) => s.as_ptr() as *const u8,
            KvCache::F16(s) => s.as_ptr() as *const u8,
        }
    }

    /// Copy `out.len()` values from element `base` into `out` as f32.
    #[inline]
    pub(crate) fn read(&self, base: usize, out: &mut [f32]) {
        match self {
            KvCache::F32(s) => out.copy_from_slice(&s[base..base + out.len()]),
            KvCache::F16(s) => {
                let len = out.len();
                for (o, &b) in out.iter_mut().zip(&s[base..base + len]) {
                    *o = f16::from_bits(b).to_f32();
                }
            }
        }
    }
}

/// One layer's keys or values, writable.
#[derive(Debug)]
pub enum KvCacheMut<'a> {
    /// f32 cache.
    F32(&'a mut [f32]),
    /// f16 cache (raw IEEE half bits).
    F16(&'a mut [u16]),
}

impl KvCacheMut<'_> {
    /// Store `src` at element `base` (rounded to nearest for f16).
    fn write(&mut self, base: usize, src: &[f32]) {
        match self {
            KvCacheMut::F32(c) => c[base..base + src.len()].copy_from_slice(src),
            KvCacheMut::F16(c) => {
                for (d, &x) in c[base..base + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(x).to_bits();
                }
            }
        }
    }
}

/// Store `k`, `v` rows `[n, kv_dim]` (`kv_dim = kv_heads·head_dim`) at their
/// cache slots (`slot = block·block_size + offset`); negative slots are skipped.
///
/// Panics if a slot lies outside the cache.
pub fn kv_write(
    k: &[f32],
    v: &[f32],
    mut k_cache: KvCacheMut<'_>,
    mut v_cache: KvCacheMut<'_>,
    slots: &[i32],
    kv_dim: usize,
) {
    for (t, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let base = slot as usize * kv_dim;
        k_cache.write(base, &k[t * kv_dim..(t + 1) * kv_dim]);
        v_cache.write(base, &v[t * kv_dim..(t + 1) * kv_dim]);
    }
}

/// Attention hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`; query head `h` reads KV head `h / (heads / kv_heads)`).
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Tokens per cache block.
    pub block_size: usize,
    /// Sliding window in tokens (a row at position `p` sees `p − window + 1 ..= p`); 0: none.
    pub window: usize,
    /// Softmax scale applied to `q·k` (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Logit soft-cap `c` (`s → c·tanh(s/c)`); 0: none.
    pub softcap: f32,
}

/// The batch's layout.
#[derive(Debug, Clone, Copy)]
pub struct AttentionBatch<'a> {
    /// `[n_tokens, heads·head_dim]` queries (RoPE applied).
    pub q: &'a [f32],
    /// `[seqs, max_blocks]` block tables.
    pub block_tables: &'a [i32],
    /// Columns of `block_tables`.
    pub max_blocks: usize,
    /// `[seqs]` context lengths, including this step's tokens.
    pub seq_lens: &'a [i32],
    /// `[seqs + 1]` query row offsets: sequence `i` owns rows `query_start_loc[i]..query_start_loc[i+1]`.
    pub query_start_loc: &'a [i32],
}

/// One sequence's share of the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq<'a> {
    /// First query row.
    pub q_start: usize,
    /// Query rows.
    pub q_len: usize,
    /// Position of the first query row.
    pub pos0: usize,
    /// Block table row.
    pub table: &'a [i32],
}

/// A unit of parallel work: some query tokens of one sequence × some heads of one KV group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    pub seq: usize,
    pub kv_head: usize,
    /// Query heads (absolute indices, all reading `kv_head`).
    pub heads: (usize, usize),
    /// Query rows (absolute batch rows).
    pub tokens: (usize, usize),
}

/// Everything a tile kernel reads.
pub(crate) struct Ctx<'a> {
    pub shape: AttentionShape,
    pub q: &'a [f32],
    pub k: KvCache<'a>,
    pub v: KvCache<'a>,
    pub seqs: Vec<Seq<'a>>,
    pub out: OutPtr,
}

impl Ctx<'_> {
    /// `(position, element offset)` of keys `keys.0..keys.1` of the item's
    /// sequence and KV head (one division per call, not per key).
    #[inline]
    pub(crate) fn kv_bases(
        &self,
        item: &Item,
        keys: (usize, usize),
    ) -> impl Iterator<Item = (usize, usize)> {
        let (bs, kvh, hd) = (
            self.shape.block_size,
            self.shape.kv_heads,
            self.shape.head_dim,
        );
        let table = self.seqs[item.seq].table;
        let (mut blk, mut off) = (keys.0 / bs, keys.0 % bs);
        (keys.0..keys.1).map(move |p| {
            let base = ((table[blk] as usize * bs + off) * kvh + item.kv_head) * hd;
            off += 1;
            if off == bs {
                off = 0;
                blk += 1;
            }
            (p, base)
        })
    }

    /// Ask the cache hierarchy for the key and value rows of positions
    /// `keys.0..keys.1` of the item's KV head (a hint; no effect on results).
    #[inline]
    pub(crate) fn prefetch_keys(&self, item: &Item, keys: (usize, usize)) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            for (_, base) in self.kv_bases(item, keys) {
                for cache in [&self.k, &self.v] {
                    let (at, es) = (cache.as_ptr(), cache.elem_bytes());
                    for line in (0..self.shape.head_dim * es).step_by(64) {
                        // SAFETY: prefetching never faults; the address is
                        // only computed, not dereferenced.
                        unsafe {
                            _mm_prefetch::<_MM_HINT_T0>(
                                at.wrapping_add(base * es + line) as *const i8
                            )
                        };
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (item, keys);
    }

    /// First key position row at position `p` attends to.
    #[inline]
    pub(crate) fn first_key(&self, p: usize) -> usize {
        if self.shape.window > 0 {
            (p + 1).saturating_sub(self.shape.window)
        } else {
            0
        }
    }
}

/// The output pointer, shared by tasks writing disjoint rows.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);
// SAFETY: every (token, head) slice is written by exactly one task.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// `len` values at element `at`.
    ///
    /// # Safety
    /// In bounds, and written by the calling task only.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// Query rows (token × head) per tile, targeted.
const TILE_ROWS: usize = 48;
/// Multiply-adds below which the whole call runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 16;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Causal paged attention; writes `out[n_tokens, heads·head_dim]`.
///
/// Panics if the batch is inconsistent (offsets, lengths, tables or cache
/// sizes); callers validate user-facing inputs before building a batch.
pub fn paged_attention(
    pool: &ThreadPool,
    shape: &AttentionShape,
    batch: &AttentionBatch<'_>,
    k: KvCache<'_>,
    v: KvCache<'_>,
    out: &mut [f32],
) {
    paged_attention_with(pool, detect(), shape, batch, (k, v), out)
}

/// [`paged_attention`] with the kernels of `isa` (capped to what this CPU supports).
pub fn paged_attention_with(
    pool: &ThreadPool,
    isa: Isa,
    shape: &AttentionShape,
    batch: &AttentionBatch<'_>,
    kv: (KvCache<'_>, KvCache<'_>),
    out: &mut [f32],
) {
    let isa = isa::clamp(isa);
    let (hd, heads) = (shape.head_dim, shape.heads);
    if hd == 0 || heads == 0 || batch.seq_lens.is_empty() {
        return;
    }
    assert!(
        shape.kv_heads > 0 && heads.is_multiple_of(shape.kv_heads) && shape.block_size > 0,
        "attention: heads ({heads}) must be a multiple of kv_heads ({}) and block_size > 0",
        shape.kv_heads
    );
    let n = batch.q.len() / (heads * hd);
    assert!(
        out.len() >= n * heads * hd,
        "attention: out holds fewer than {n} rows"
    );
    let seqs = sequences(shape, batch, kv.0.len().min(kv.1.len()), n);
    let ctx = Ctx {
        shape: *shape,
        q: batch.q,
        k: kv.0,
        v: kv.1,
        seqs,
        out: OutPtr(out.as_mut_ptr()),
    };
    let (items, macs) = plan(&ctx, pool.threads());
    let run = |i: usize| {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            run_item(isa, &ctx, &items[i], &mut s);
        })
    };
    if macs < PARALLEL_MACS || pool.threads() == 1 {
        (0..items.len()).for_each(run);
    } else {
        pool.run(items.len(), &run);
    }
}

/// Check the batch and describe each sequence.
fn sequences<'a>(
    shape: &AttentionShape,
    batch: &AttentionBatch<'a>,
    cache_len: usize,
    n: usize,
) -> Vec<Seq<'a>> {
    let nseq = batch.seq_lens.len();
    let qsl = batch.query_start_loc;
    assert!(
        qsl.len() > nseq,
        "attention: query_start_loc needs {} entries",
        nseq + 1
    );
    assert!(
        batch.block_tables.len() >= nseq * batch.max_blocks,
        "attention: block_tables holds fewer than {nseq} rows"
    );
    let per_block = shape.block_size * shape.kv_heads * shape.head_dim;
    let cache_blocks = cache_len / per_block;
    (0..nseq)
        .map(|i| {
            let (a, b) = (qsl[i], qsl[i + 1]);
            let len = batch.seq_lens[i];
            assert!(
                0 <= a && a <= b && b as usize <= n && len >= b - a,
                "attention: sequence {i} has rows {a}..{b} of {n} and context {len}"
            );
            let table = &batch.block_tables[i * batch.max_blocks..(i + 1) * batch.max_blocks];
            let used = (len as usize).div_ceil(shape.block_size);
            assert!(
                used <= batch.max_blocks,
                "attention: sequence {i} needs {used} blocks"
            );
            let pos0 = (len - (b - a)) as usize;
            let first_read = match shape.window {
                0 => 0,
                w => (pos0 + 1).saturating_sub(w) / shape.block_size,
            };
            assert!(
                table[first_read.min(used)..used]
                    .iter()
                    .all(|&b| b >= 0 && (b as usize) < cache_blocks),
                "attention: sequence {i} has a block outside the cache of {cache_blocks}"
            );
            Seq {
                q_start: a as usize,
                q_len: (b - a) as usize,
                pos0,
                table,
            }
        })
        .collect()
}

/// Cut the batch into items, largest first; also return the total work.
fn plan(ctx: &Ctx<'_>, threads: usize) -> (Vec<Item>, usize) {
    let sh = &ctx.shape;
    let group = sh.heads / sh.kv_heads;
    let tokens_per_tile = (TILE_ROWS / group).max(1);
    let mut items = Vec::new();
    let mut macs = 0usize;
    for (si, s) in ctx.seqs.iter().enumerate() {
        for t0 in (0..s.q_len).step_by(tokens_per_tile) {
            let t1 = (t0 + tokens_per_tile).min(s.q_len);
            for kvh in 0..sh.kv_heads {
                items.push(Item {
                    seq: si,
                    kv_head: kvh,
                    heads: (kvh * group, (kvh + 1) * group),
                    tokens: (s.q_start + t0, s.q_start + t1),
                });
            }
        }
    }
    let work = |it: &Item| {
        let s = &ctx.seqs[it.seq];
        let last = s.pos0 + (it.tokens.1 - s.q_start) - 1;
        let keys = last + 1 - ctx.first_key(s.pos0 + (it.tokens.0 - s.q_start));
        (it.tokens.1 - it.tokens.0) * (it.heads.1 - it.heads.0) * keys * sh.head_dim * 2
    };
    // Fewer items than threads (a long decode on a wide machine): split each
    // group's heads so more threads work, at the price of loading keys per head.
    if threads > 1 && group > 1 && items.len() < threads {
        items = items
            .iter()
            .flat_map(|it| {
                (it.heads.0..it.heads.1).map(move |h| Item {
                    heads: (h, h + 1),
                    ..*it
                })
            })
            .collect();
    }
    items.iter().for_each(|it| macs += work(it));
    items.sort_by_key(|it| std::cmp::Reverse(work(it)));
    (items, macs)
}

/// Run one item with the kernels of `isa`.
fn run_item(isa: Isa, ctx: &Ctx<'_>, item: &Item, scratch: &mut Vec<f32>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was clamped to what this CPU supports.
        Isa::Avx512Vnni => unsafe { x86_avx512::run_item(ctx, item, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { portable::run_item_avx2(ctx, item, scratch) },
        _ => portable::run_item(ctx, item, scratch),
    }
}
