//! The paged KV-cache block manager: reference-counted blocks, automatic
//! prefix caching, LRU reuse of freed cached blocks and copy-on-write,
//! driven by one [`AllocateForStep`] message per engine step.
//!
//! # Blocks and the free list
//! The pool holds `num_blocks` blocks of `block_size` token slots. Each block
//! has a reference count (the number of sequence block tables holding it).
//! Blocks with count 0 sit on a doubly linked free list; allocation takes the
//! head. A freed block that carries a prefix-cache identity goes to the
//! tail, so cached content is evicted least recently used first; a freed
//! block without an identity has nothing worth keeping and goes to the head,
//! to be reused before any cached block. A sequence's blocks are freed last
//! block first, so the deep end of a prompt is evicted before its start.
//!
//! # Prefix caching
//! When a block of a sequence becomes full it is registered under a key
//! `block_hash(parent identity, its block_size token ids)`, where the parent
//! identity is the unique id given to the previous block's registration (a
//! fixed root id for the first block). The registration stores the parent id
//! and the token ids themselves, and a lookup accepts a block only when both
//! match exactly, so by induction a hit chain is exactly the looked-up token
//! prefix: a 64-bit hash collision can cost a cache hit, never give wrong KV.
//! When the key is already held by a block with the same identity, the
//! sequence adopts that identity (its own copy stays unregistered); when it
//! is held by a different identity (a true collision), the sequence's chain
//! stops being cached from that block on.
//!
//! Blocks are registered as soon as the step that computes their last slot
//! is allocated, but a lookup never returns a block registered by the same
//! `allocate_for_step` call: its KV is being computed in that very step. The
//! engine must run a step before asking for the next one, and must call
//! [`BlockManager::reset_prefix_cache`] when a step failed (its KV may be
//! garbage). An identity is dropped only when its block is taken from the
//! free list for a new allocation.
//!
//! # Sliding windows
//! With [`BlockManagerConfig::sliding_window`] set (every attention layer of
//! the model slides), `allocate_for_step` first returns, for every
//! sequence, the blocks that lie wholly behind the window of its next row
//! (see [`crate::window`]); by then the KV of every slot granted so far has
//! been computed, so the next row is at the sequence's token count. Those
//! table entries become holes ([`NO_BLOCK`]), always a prefix of the table.
//! The block manager is the only one that frees them (the scheduler mirrors
//! the same rule); each goes to the free list like any freed block, cached
//! ones at the tail (LRU). The sequence keeps every block's cache identity,
//! so the full blocks it registers later still chain onto their parents.
//! An admission's cache hits that already lie behind the window of its
//! first computed row are not taken at all: they enter the table as holes.
//! A lookup still only returns a chain of resident blocks from the root: a
//! hole in one sequence's table is never part of another's hit.

use std::collections::HashMap;

use kiln_protocol::step::{
    AllocateForStep, BlockCopy, BlockDemand, BlockGrant, DemandKind, Fork, Granted, StepAllocation,
};
use kiln_protocol::{BlockId, NO_BLOCK, SeqId, TokenId};

use crate::window::blocks_behind_window;

/// Block manager settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockManagerConfig {
    /// Blocks in the pool (at most `u32::MAX - 1`).
    pub num_blocks: usize,
    /// Tokens per block (values below 1 are treated as 1).
    pub block_size: usize,
    /// Automatic prefix caching.
    pub enable_prefix_caching: bool,
    /// The window of every attention layer in tokens, when all of them slide
    /// (the largest, should they differ): blocks behind it are freed. `None`
    /// when any layer sees the whole context.
    pub sliding_window: Option<usize>,
}

/// Free-list link meaning "none".
const NIL: u32 = u32::MAX;

/// Parent identity of the first block of every sequence.
pub const ROOT_IDENTITY: u64 = 0;

/// A sequence block whose content has no cache identity.
const NO_IDENTITY: u64 = u64::MAX;

/// The lookup key of a full block: a fast, deterministic 64-bit hash of the
/// parent block's identity and the block's token ids. Stable across runs and
/// platforms (it is not `std`'s randomly keyed hasher).
pub fn block_hash(parent: u64, tokens: &[TokenId]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = parent ^ 0x6b69_6c6e_5f6b_7663;
    for &t in tokens {
        h = (h.rotate_left(26) ^ u64::from(t)).wrapping_mul(K);
    }
    // Final avalanche (splitmix64's finaliser).
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[derive(Debug, Clone)]
struct Block {
    refs: u32,
    /// Present while the block is registered in the prefix cache.
    cached: Option<Identity>,
    prev: u32,
    next: u32,
    free: bool,
}

/// What a registered block holds: the registration's unique id, the parent
/// registration's id and the block's token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    key: u64,
    id: u64,
    parent: u64,
    tokens: Vec<TokenId>,
    /// `allocate_for_step` call that registered it (not hittable during it).
    epoch: u64,
}

#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    /// [ceil(num_tokens / block_size)] block ids; the first `holes` are [`NO_BLOCK`].
    table: Vec<BlockId>,
    /// Leading entries of `table` whose blocks went back to the pool.
    holes: usize,
    /// Position of the earliest row that may still be computed, as of the
    /// last sweep or admission: every block it can see is resident.
    rows_from: usize,
    /// Token slots allocated.
    num_tokens: usize,
    /// [num_tokens / block_size] cache identity of each full block's content.
    identities: Vec<u64>,
    /// [num_tokens % block_size] tokens of the last, partial block.
    partial: Vec<TokenId>,
    /// Register full blocks in the prefix cache.
    caching: bool,
}

/// The pure block manager (see the module docs).
#[derive(Debug, Clone)]
pub struct BlockManager {
    config: BlockManagerConfig,
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    free_count: usize,
    cache: HashMap<u64, BlockId>,
    seqs: HashMap<SeqId, SeqBlocks>,
    next_identity: u64,
    epoch: u64,
    queries: u32,
    hits: u32,
}

impl BlockManager {
    /// A pool of `num_blocks` free blocks.
    pub fn new(config: BlockManagerConfig) -> BlockManager {
        let config = BlockManagerConfig {
            num_blocks: config.num_blocks.min(NIL as usize - 1),
            block_size: config.block_size.max(1),
            sliding_window: config.sliding_window.filter(|&w| w > 0),
            ..config
        };
        let n = config.num_blocks;
        let blocks = (0..n)
            .map(|i| Block {
                refs: 0,
                cached: None,
                prev: if i == 0 { NIL } else { i as u32 - 1 },
                next: if i + 1 == n { NIL } else { i as u32 + 1 },
                free: true,
            })
            .collect();
        BlockManager {
            config,
            blocks,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n as u32 - 1 },
            free_count: n,
            cache: HashMap::new(),
            seqs: HashMap::new(),
            next_identity: ROOT_IDENTITY + 1,
            epoch: 0,
            queries: 0,
            hits: 0,
        }
    }

    /// The settings in use (after clamping).
    pub fn config(&self) -> BlockManagerConfig {
        self.config
    }

    /// Blocks available for allocation (including cached, evictable ones).
    pub fn num_free_blocks(&self) -> usize {
        self.free_count
    }

    /// Blocks in the pool.
    pub fn num_total_blocks(&self) -> usize {
        self.config.num_blocks
    }

    /// Blocks referenced by at least one sequence.
    pub fn num_used_blocks(&self) -> usize {
        self.config.num_blocks - self.free_count
    }

    /// Blocks registered in the prefix cache (used or free).
    pub fn num_cached_blocks(&self) -> usize {
        self.cache.len()
    }

    /// A sequence's block table (`None` for sequences holding nothing);
    /// holes are [`NO_BLOCK`].
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.table.as_slice())
    }

    /// Blocks a sequence holds (its table without the holes).
    pub fn num_resident_blocks(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.table.len() - s.holes)
    }

    /// Token slots a sequence holds.
    pub fn num_tokens(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.num_tokens)
    }

    /// A block's reference count (0 for free or unknown blocks).
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks.get(block as usize).map_or(0, |b| b.refs)
    }

    /// Sequences holding blocks.
    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// The sequences holding blocks, in no particular order.
    pub fn sequences(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    // ---------------------------------------------------------------- free list

    fn unlink(&mut self, b: u32) {
        let (prev, next) = (self.blocks[b as usize].prev, self.blocks[b as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let blk = &mut self.blocks[b as usize];
        blk.prev = NIL;
        blk.next = NIL;
        blk.free = false;
        self.free_count -= 1;
    }

    fn push_tail(&mut self, b: u32) {
        let blk = &mut self.blocks[b as usize];
        blk.prev = self.tail;
        blk.next = NIL;
        blk.free = true;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.blocks[self.tail as usize].next = b;
        }
        self.tail = b;
        self.free_count += 1;
    }

    fn push_head(&mut self, b: u32) {
        let blk = &mut self.blocks[b as usize];
        blk.next = self.head;
        blk.prev = NIL;
        blk.free = true;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.blocks[self.head as usize].prev = b;
        }
        self.head = b;
        self.free_count += 1;
    }

    /// Take the head of the free list (count 1), evicting its cache identity.
    fn pop_free(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        if let Some(id) = self.blocks[b as usize].cached.take()
            && self.cache.get(&id.key) == Some(&b)
        {
            self.cache.remove(&id.key);
        }
        self.blocks[b as usize].refs = 1;
        Some(b)
    }

    /// One more reference to `b`; a free (cached) block leaves the free list.
    fn touch(&mut self, b: BlockId) {
        if self.blocks[b as usize].free {
            self.unlink(b);
        }
        self.blocks[b as usize].refs += 1;
    }

    fn drop_ref(&mut self, b: BlockId) {
        let blk = &mut self.blocks[b as usize];
        blk.refs = blk.refs.saturating_sub(1);
        if blk.refs == 0 && !blk.free {
            if blk.cached.is_some() {
                self.push_tail(b);
            } else {
                self.push_head(b);
            }
        }
    }

    // ---------------------------------------------------------------- messages

    /// Return every block reference of `seq`; blocks whose count reaches 0
    /// go to the free list (cached ones keep their identity). Releasing an
    /// unknown sequence does nothing.
    pub fn release(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            for &b in s.table[s.holes..].iter().rev() {
                self.drop_ref(b);
            }
        }
    }

    /// Return every sequence's blocks that its next row cannot see (see
    /// the module docs); they become holes.
    fn free_behind_windows(&mut self) {
        let Some(window) = self.config.sliding_window else {
            return;
        };
        let bs = self.config.block_size;
        let mut seqs = std::mem::take(&mut self.seqs);
        for s in seqs.values_mut() {
            let behind = blocks_behind_window(s.num_tokens, window, bs).min(s.table.len());
            for i in s.holes..behind {
                self.drop_ref(s.table[i]);
                s.table[i] = NO_BLOCK;
            }
            s.holes = s.holes.max(behind);
            s.rows_from = s.num_tokens;
        }
        self.seqs = seqs;
    }

    /// Forget every cached prefix: call it after a failed step. Blocks keep
    /// their places; running sequences stop registering blocks.
    pub fn reset_prefix_cache(&mut self) {
        self.cache.clear();
        for b in &mut self.blocks {
            b.cached = None;
        }
        for s in self.seqs.values_mut() {
            s.caching = false;
        }
    }

    /// `child` shares every block of `parent`. An unknown parent is ignored;
    /// a child that already held blocks first releases them.
    fn fork(&mut self, f: Fork) {
        let Some(p) = self.seqs.get(&f.parent).cloned() else {
            return;
        };
        self.release(f.child);
        for &b in &p.table[p.holes..] {
            self.blocks[b as usize].refs += 1;
        }
        self.seqs.insert(f.child, p);
    }

    /// Process one step's message: `forks`, then `releases`, then the
    /// blocks behind each sequence's sliding window, then `demands` in order
    /// (see [`AllocateForStep`]).
    pub fn allocate_for_step(&mut self, msg: AllocateForStep) -> StepAllocation {
        self.epoch += 1;
        for &f in &msg.forks {
            self.fork(f);
        }
        for &seq in &msg.releases {
            self.release(seq);
        }
        self.free_behind_windows();
        self.queries = 0;
        self.hits = 0;
        let mut copies = Vec::new();
        let mut admissions_open = true;
        let grants = msg
            .demands
            .into_iter()
            .map(|d| self.grant(d, &mut admissions_open, &mut copies))
            .collect();
        StepAllocation {
            step_id: msg.step_id,
            grants,
            copies,
            num_free_blocks: self.free_count as u32,
            num_total_blocks: self.config.num_blocks as u32,
            prefix_cache_queries: self.queries,
            prefix_cache_hits: self.hits,
        }
    }

    fn grant(
        &mut self,
        d: BlockDemand,
        admissions_open: &mut bool,
        copies: &mut Vec<BlockCopy>,
    ) -> BlockGrant {
        let granted = match d.kind {
            DemandKind::Admit {
                token_ids,
                max_new_tokens,
                use_prefix_cache,
            } if *admissions_open => {
                let req = AdmitRequest {
                    tokens: &token_ids,
                    max_new: max_new_tokens as usize,
                    use_cache: use_prefix_cache && self.config.enable_prefix_caching,
                };
                let g = self.admit(d.seq_id, req);
                *admissions_open = g.is_some();
                g
            }
            DemandKind::Admit { .. } => None,
            DemandKind::Extend { token_ids } => self.extend(d.seq_id, &token_ids, copies),
        };
        BlockGrant {
            seq_id: d.seq_id,
            granted,
        }
    }

    /// The longest chain of cached blocks for `tokens`, never covering the
    /// last token, never a block registered in this call.
    fn lookup(&self, tokens: &[TokenId]) -> Vec<(BlockId, u64)> {
        let bs = self.config.block_size;
        let max_hits = tokens.len().saturating_sub(1) / bs;
        let mut parent = ROOT_IDENTITY;
        let mut hits = Vec::new();
        for chunk in tokens.chunks_exact(bs).take(max_hits) {
            let Some(&b) = self.cache.get(&block_hash(parent, chunk)) else {
                break;
            };
            let Some(id) = self.blocks[b as usize].cached.as_ref() else {
                break;
            };
            if id.parent != parent || id.tokens != chunk || id.epoch == self.epoch {
                break;
            }
            hits.push((b, id.id));
            parent = id.id;
        }
        hits
    }

    fn admit(&mut self, seq: SeqId, req: AdmitRequest<'_>) -> Option<Granted> {
        let bs = self.config.block_size;
        if req.tokens.is_empty() || req.max_new == 0 || self.seqs.contains_key(&seq) {
            return None;
        }
        let hits = if req.use_cache {
            self.lookup(req.tokens)
        } else {
            Vec::new()
        };
        let cached = hits.len() * bs;
        let new_tokens = req.max_new.min(req.tokens.len() - cached);
        let fresh = (cached + new_tokens).div_ceil(bs) - hits.len();
        // Hits the first computed row (at `cached`) cannot see stay where they are.
        let behind = self
            .config
            .sliding_window
            .map_or(0, |w| blocks_behind_window(cached, w, bs).min(hits.len()));
        let touched_free = hits[behind..]
            .iter()
            .filter(|(b, _)| self.blocks[*b as usize].free)
            .count();
        if self.free_count < fresh + touched_free {
            return None;
        }
        if req.use_cache {
            self.queries += req.tokens.len() as u32;
            self.hits += cached as u32;
        }
        let mut s = SeqBlocks {
            caching: req.use_cache,
            num_tokens: cached,
            holes: behind,
            rows_from: cached,
            ..Default::default()
        };
        // Touch the hits first so that taking fresh blocks cannot evict them.
        for (i, &(b, id)) in hits.iter().enumerate() {
            if i < behind {
                s.table.push(NO_BLOCK);
            } else {
                self.touch(b);
                s.table.push(b);
            }
            s.identities.push(id);
        }
        for _ in 0..fresh {
            s.table.extend(self.pop_free());
        }
        self.append_tokens(&mut s, &req.tokens[cached..cached + new_tokens]);
        let table = s.table.clone();
        self.seqs.insert(seq, s);
        Some(Granted {
            num_cached_tokens: cached as u32,
            num_new_tokens: new_tokens as u32,
            table_keep: 0,
            new_blocks: table,
            table_holes: behind as u32,
        })
    }

    fn extend(
        &mut self,
        seq: SeqId,
        tokens: &[TokenId],
        copies: &mut Vec<BlockCopy>,
    ) -> Option<Granted> {
        let bs = self.config.block_size;
        let mut s = self.seqs.remove(&seq)?;
        let len = s.table.len();
        let needed = (s.num_tokens + tokens.len()).div_ceil(bs) - len;
        let shared_partial_tail = s
            .table
            .last()
            .filter(|_| !s.num_tokens.is_multiple_of(bs) && !tokens.is_empty())
            .filter(|&&b| self.blocks[b as usize].refs > 1)
            .copied();
        if self.free_count < needed + usize::from(shared_partial_tail.is_some()) {
            self.seqs.insert(seq, s);
            return None;
        }
        let mut keep = len;
        let mut added = Vec::with_capacity(needed + 1);
        if let Some(old) = shared_partial_tail {
            // Copy-on-write: the fresh block gets the old one's filled slots.
            let fresh = self.pop_free()?;
            copies.push(BlockCopy {
                src: old,
                dst: fresh,
            });
            self.drop_ref(old);
            keep = len - 1;
            added.push(fresh);
        }
        for _ in 0..needed {
            added.extend(self.pop_free());
        }
        s.table.truncate(keep);
        s.table.extend_from_slice(&added);
        self.append_tokens(&mut s, tokens);
        let holes = s.holes as u32;
        self.seqs.insert(seq, s);
        Some(Granted {
            num_cached_tokens: 0,
            num_new_tokens: tokens.len() as u32,
            table_keep: keep as u32,
            new_blocks: added,
            table_holes: holes,
        })
    }

    /// Record tokens written into the sequence's slots; register blocks that become full.
    fn append_tokens(&mut self, s: &mut SeqBlocks, tokens: &[TokenId]) {
        let bs = self.config.block_size;
        for &t in tokens {
            s.partial.push(t);
            s.num_tokens += 1;
            if s.partial.len() == bs {
                let index = s.num_tokens / bs - 1;
                let identity = self.register(s, s.table[index]);
                s.identities.push(identity);
                s.partial.clear();
            }
        }
    }

    /// Register a block that just became full; returns its content's identity.
    fn register(&mut self, s: &SeqBlocks, block: BlockId) -> u64 {
        let parent = s.identities.last().copied().unwrap_or(ROOT_IDENTITY);
        if !s.caching || parent == NO_IDENTITY {
            return NO_IDENTITY;
        }
        let key = block_hash(parent, &s.partial);
        if let Some(&other) = self.cache.get(&key) {
            return match self.blocks[other as usize].cached.as_ref() {
                Some(id) if id.parent == parent && id.tokens == s.partial => id.id,
                _ => NO_IDENTITY,
            };
        }
        let id = self.next_identity;
        self.next_identity += 1;
        self.cache.insert(key, block);
        self.blocks[block as usize].cached = Some(Identity {
            key,
            id,
            parent,
            tokens: s.partial.clone(),
            epoch: self.epoch,
        });
        id
    }

    // ---------------------------------------------------------------- checks

    /// Check every invariant; the error says which one broke. Meant for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let refs = self.check_sequences()?;
        self.check_free_list()?;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.refs != refs[i] {
                return Err(format!(
                    "block {i}: ref count {} but {} tables hold it",
                    b.refs, refs[i]
                ));
            }
            if (b.refs == 0) != b.free {
                return Err(format!(
                    "block {i}: ref count {} but free flag {}",
                    b.refs, b.free
                ));
            }
            if let Some(id) = &b.cached
                && self.cache.get(&id.key) != Some(&(i as BlockId))
            {
                return Err(format!(
                    "block {i} has an identity the cache does not map to it"
                ));
            }
        }
        let used = refs.iter().filter(|&&r| r > 0).count();
        if self.free_count + used != self.config.num_blocks {
            return Err(format!(
                "free {} + used {used} != total {}",
                self.free_count, self.config.num_blocks
            ));
        }
        for (key, &b) in &self.cache {
            let held = self.blocks.get(b as usize).and_then(|b| b.cached.as_ref());
            if held.map(|id| id.key) != Some(*key) {
                return Err(format!(
                    "cache key {key:x} points at block {b}, which holds another identity"
                ));
            }
        }
        Ok(())
    }

    /// Per-sequence bookkeeping; returns the reference count each block should have.
    fn check_sequences(&self) -> Result<Vec<u32>, String> {
        let bs = self.config.block_size;
        let mut refs = vec![0u32; self.config.num_blocks];
        for (id, s) in &self.seqs {
            if s.table.len() != s.num_tokens.div_ceil(bs)
                || s.identities.len() != s.num_tokens / bs
                || s.partial.len() != s.num_tokens % bs
            {
                return Err(format!(
                    "seq {id}: {} blocks, {} identities, {} partial tokens for {} tokens",
                    s.table.len(),
                    s.identities.len(),
                    s.partial.len(),
                    s.num_tokens
                ));
            }
            self.check_holes(*id, s)?;
            for &b in &s.table[s.holes..] {
                let Some(r) = refs.get_mut(b as usize) else {
                    return Err(format!("seq {id} holds block {b}, outside the pool"));
                };
                *r += 1;
            }
        }
        Ok(refs)
    }

    /// Holes are exactly the blocks behind the window of the sequence's
    /// earliest row still to compute: a prefix of the table, and every
    /// position that row (or a later one) can see is in a resident block.
    fn check_holes(&self, id: SeqId, s: &SeqBlocks) -> Result<(), String> {
        let leading = s.table.iter().take_while(|&&b| b == NO_BLOCK).count();
        let expected = self.config.sliding_window.map_or(0, |w| {
            blocks_behind_window(s.rows_from, w, self.config.block_size).min(s.table.len())
        });
        if leading != s.holes || s.table[s.holes..].contains(&NO_BLOCK) {
            return Err(format!(
                "seq {id}: {} holes recorded but the table is {:?}",
                s.holes, s.table
            ));
        }
        if s.holes != expected || s.rows_from > s.num_tokens {
            return Err(format!(
                "seq {id}: {} holes, but its rows from position {} see all but {expected} blocks",
                s.holes, s.rows_from
            ));
        }
        Ok(())
    }

    fn check_free_list(&self) -> Result<(), String> {
        let mut seen = 0;
        let mut cur = self.head;
        let mut prev = NIL;
        while cur != NIL {
            let b = &self.blocks[cur as usize];
            if !b.free || b.refs != 0 || b.prev != prev {
                return Err(format!("free list corrupt at block {cur}"));
            }
            seen += 1;
            if seen > self.config.num_blocks {
                return Err("free list has a cycle".into());
            }
            prev = cur;
            cur = b.next;
        }
        if seen != self.free_count || self.tail != prev {
            return Err(format!(
                "free list has {seen} blocks, counter says {}",
                self.free_count
            ));
        }
        Ok(())
    }
}

/// An `Admit` demand's parameters.
struct AdmitRequest<'a> {
    /// [num_known_tokens] every token of the sequence.
    tokens: &'a [TokenId],
    /// Most tokens to compute this step.
    max_new: usize,
    /// Look up and register prefix-cache blocks.
    use_cache: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(blocks: usize) -> BlockManager {
        BlockManager::new(BlockManagerConfig {
            num_blocks: blocks,
            block_size: 4,
            enable_prefix_caching: true,
            sliding_window: None,
        })
    }

    fn admit(seq: SeqId, tokens: &[u32], max: u32) -> BlockDemand {
        BlockDemand {
            seq_id: seq,
            kind: DemandKind::Admit {
                token_ids: tokens.to_vec(),
                max_new_tokens: max,
                use_prefix_cache: true,
            },
        }
    }

    fn extend(seq: SeqId, tokens: &[u32]) -> BlockDemand {
        BlockDemand {
            seq_id: seq,
            kind: DemandKind::Extend {
                token_ids: tokens.to_vec(),
            },
        }
    }

    fn fork(parent: SeqId, child: SeqId) -> Fork {
        Fork { parent, child }
    }

    fn step(
        m: &mut BlockManager,
        releases: Vec<SeqId>,
        forks: Vec<Fork>,
        demands: Vec<BlockDemand>,
    ) -> StepAllocation {
        let a = m.allocate_for_step(AllocateForStep {
            step_id: 0,
            releases,
            forks,
            demands,
        });
        m.check_invariants().unwrap();
        a
    }

    fn granted(a: &StepAllocation, i: usize) -> Granted {
        a.grants[i].granted.clone().expect("granted")
    }

    fn run_one(m: &mut BlockManager, seq: SeqId, tokens: &[u32]) -> Granted {
        let a = step(
            m,
            vec![],
            vec![],
            vec![admit(seq, tokens, tokens.len() as u32)],
        );
        granted(&a, 0)
    }

    #[test]
    fn admit_extend_release() {
        let mut m = bm(8);
        let g = run_one(&mut m, 1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            (g.num_cached_tokens, g.num_new_tokens, g.new_blocks.len()),
            (0, 6, 2)
        );
        let a = step(&mut m, vec![], vec![], vec![extend(1, &[7, 8, 9])]);
        let g = granted(&a, 0);
        assert_eq!((g.table_keep, g.new_blocks.len()), (2, 1));
        assert_eq!(m.num_free_blocks(), 5);
        assert_eq!(m.num_used_blocks(), 3);
        assert_eq!(m.num_tokens(1), Some(9));
        assert_eq!(a.num_free_blocks, 5);
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 8);
        assert_eq!(m.num_sequences(), 0);
    }

    #[test]
    fn admission_chunks_to_max_new_tokens() {
        let mut m = bm(8);
        let a = step(&mut m, vec![], vec![], vec![admit(1, &[1; 10], 3)]);
        let g = granted(&a, 0);
        assert_eq!((g.num_new_tokens, g.new_blocks.len()), (3, 1));
        assert_eq!(m.num_tokens(1), Some(3));
    }

    #[test]
    fn prefix_hits_skip_cached_blocks_but_never_the_last_token() {
        let mut m = bm(8);
        let prompt: Vec<u32> = (0..9).collect();
        run_one(&mut m, 1, &prompt);
        step(&mut m, vec![1], vec![], vec![]);
        // Same prompt: two full blocks cached (8 tokens), the 9th recomputed.
        let a = step(&mut m, vec![], vec![], vec![admit(2, &prompt, 9)]);
        let g = granted(&a, 0);
        assert_eq!((g.num_cached_tokens, g.num_new_tokens), (8, 1));
        assert_eq!((a.prefix_cache_queries, a.prefix_cache_hits), (9, 8));
        // An exact multiple of the block size: the last block is recomputed.
        let a = step(&mut m, vec![], vec![], vec![admit(3, &prompt[..8], 8)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 4);
        // A different continuation shares only what matches.
        let mut other = prompt.clone();
        other[5] = 99;
        let a = step(&mut m, vec![], vec![], vec![admit(4, &other, 9)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 4);
        // Hits on used blocks only bump their counts.
        let t2 = m.block_table(2).unwrap().to_vec();
        assert_eq!(m.ref_count(t2[0]), 3);
        assert_eq!(m.ref_count(t2[1]), 1);
    }

    #[test]
    fn hits_on_free_blocks_leave_the_free_list() {
        let mut m = bm(4);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!((m.num_free_blocks(), m.num_cached_blocks()), (4, 1));
        let g = run_one(&mut m, 2, &[1, 2, 3, 4, 9]);
        assert_eq!(g.num_cached_tokens, 4);
        assert_eq!(m.num_free_blocks(), 2);
        assert_eq!(m.ref_count(g.new_blocks[0]), 1);
    }

    #[test]
    fn no_hit_on_blocks_computed_in_the_same_step() {
        let mut m = bm(8);
        let prompt: Vec<u32> = (0..9).collect();
        let a = step(
            &mut m,
            vec![],
            vec![],
            vec![admit(1, &prompt, 9), admit(2, &prompt, 9)],
        );
        assert_eq!(granted(&a, 1).num_cached_tokens, 0);
        // From the next step on, they are hits.
        let a = step(&mut m, vec![], vec![], vec![admit(3, &prompt, 9)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 8);
    }

    #[test]
    fn duplicate_content_adopts_the_cached_identity() {
        let mut m = bm(16);
        let prompt: Vec<u32> = (0..8).collect();
        // Two identical prompts in one step: only the first registers.
        step(
            &mut m,
            vec![],
            vec![],
            vec![admit(1, &prompt, 8), admit(2, &prompt, 8)],
        );
        assert_eq!(m.num_cached_blocks(), 2);
        // The second keeps growing; its next full block chains onto the
        // identity it adopted, so the longer prompt is found.
        step(&mut m, vec![1], vec![], vec![extend(2, &[8, 9, 10, 11])]);
        let mut longer = prompt.clone();
        longer.extend([8, 9, 10, 11, 12]);
        let a = step(&mut m, vec![], vec![], vec![admit(3, &longer, 13)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 12);
    }

    #[test]
    fn colliding_keys_never_give_a_hit() {
        let mut m = bm(8);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        // Forge a collision: point the key of another chunk at block 0.
        let key = block_hash(ROOT_IDENTITY, &[9, 9, 9, 9]);
        let b = m.block_table(1).unwrap()[0];
        m.cache.insert(key, b);
        let a = m.allocate_for_step(AllocateForStep {
            demands: vec![admit(2, &[9, 9, 9, 9, 9], 5)],
            ..Default::default()
        });
        assert_eq!(granted(&a, 0).num_cached_tokens, 0);
        assert!(m.check_invariants().is_err(), "the forged entry is caught");
    }

    #[test]
    fn denied_admissions_block_later_ones_but_not_extends() {
        let mut m = bm(3);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        let a = step(
            &mut m,
            vec![],
            vec![],
            vec![admit(2, &[9; 8], 8), admit(3, &[7], 1), extend(1, &[6])],
        );
        assert!(a.grants[0].granted.is_none());
        assert!(
            a.grants[1].granted.is_none(),
            "FCFS: no admission overtakes a denied one"
        );
        assert!(a.grants[2].granted.is_some());
    }

    #[test]
    fn denied_demands_change_nothing() {
        let mut m = bm(2);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5, 6]);
        let before = (m.block_table(1).unwrap().to_vec(), m.num_tokens(1));
        let a = step(&mut m, vec![], vec![], vec![extend(1, &[7, 8, 9])]);
        assert!(a.grants[0].granted.is_none());
        assert_eq!(
            (m.block_table(1).unwrap().to_vec(), m.num_tokens(1)),
            before
        );
        let a = step(&mut m, vec![], vec![], vec![admit(2, &[1; 5], 5)]);
        assert!(a.grants[0].granted.is_none());
        assert_eq!(m.block_table(2), None);
        assert_eq!(m.num_free_blocks(), 0);
    }

    #[test]
    fn forks_share_blocks_and_copy_on_write() {
        let mut m = bm(8);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5, 6]);
        let a = step(
            &mut m,
            vec![],
            vec![fork(1, 2), fork(1, 3)],
            vec![extend(1, &[7]), extend(2, &[8]), extend(3, &[9])],
        );
        // Seqs 1 and 2 copy the shared half-full block; seq 3 then owns the original alone.
        assert_eq!(a.copies.len(), 2);
        let (t1, t2, t3) = (
            m.block_table(1).unwrap().to_vec(),
            m.block_table(2).unwrap().to_vec(),
            m.block_table(3).unwrap().to_vec(),
        );
        assert_eq!(a.copies[0].dst, t1[1]);
        assert_eq!(a.copies[1].dst, t2[1]);
        assert_eq!(a.copies[0].src, t3[1]);
        assert_eq!(granted(&a, 0).table_keep, 1);
        assert_eq!(granted(&a, 2).table_keep, 2);
        assert_eq!((t1[0], t2[0]), (t3[0], t3[0]));
        assert_eq!(m.ref_count(t1[0]), 3);
        assert_eq!(m.ref_count(t3[1]), 1);
        step(&mut m, vec![1, 2, 3], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 8);
    }

    #[test]
    fn a_fork_survives_its_parent_released_in_the_same_message() {
        let mut m = bm(4);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        step(&mut m, vec![1], vec![fork(1, 2)], vec![extend(2, &[6])]);
        assert_eq!(m.num_tokens(2), Some(6));
        assert_eq!(m.num_used_blocks(), 2);
    }

    #[test]
    fn copy_on_write_needs_a_free_block() {
        let mut m = bm(2);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5, 6]);
        let a = step(&mut m, vec![], vec![fork(1, 2)], vec![extend(1, &[7])]);
        assert!(a.grants[0].granted.is_none());
        assert!(a.copies.is_empty());
        assert_eq!(m.num_tokens(1), Some(6));
    }

    #[test]
    fn freed_blocks_are_reused_lru_and_cached_ones_last() {
        let mut m = bm(4);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        step(&mut m, vec![1], vec![], vec![]);
        // Two fresh blocks come from the uncached part of the list first.
        run_one(&mut m, 2, &[9, 9, 9, 9, 9]);
        let a = step(&mut m, vec![2], vec![], vec![admit(3, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 4);
        // Filling the pool evicts the least recently freed cached block first.
        step(&mut m, vec![3], vec![], vec![]);
        run_one(&mut m, 4, &[7; 5]);
        let a = step(&mut m, vec![], vec![], vec![admit(5, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(
            granted(&a, 0).num_cached_tokens,
            4,
            "the newer entry survives"
        );
    }

    #[test]
    fn taking_a_cached_block_evicts_its_identity() {
        let mut m = bm(2);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!(m.num_cached_blocks(), 1);
        run_one(&mut m, 2, &[8; 6]);
        assert_eq!(
            m.num_cached_blocks(),
            1,
            "the old entry gave way to the new one"
        );
        step(&mut m, vec![2], vec![], vec![]);
        let a = step(&mut m, vec![], vec![], vec![admit(3, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 0);
    }

    #[test]
    fn reset_forgets_every_prefix() {
        let mut m = bm(4);
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        m.reset_prefix_cache();
        m.check_invariants().unwrap();
        step(&mut m, vec![1], vec![], vec![]);
        let a = step(&mut m, vec![], vec![], vec![admit(2, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 0);
    }

    #[test]
    fn caching_off_registers_nothing() {
        let mut m = BlockManager::new(BlockManagerConfig {
            num_blocks: 4,
            block_size: 4,
            enable_prefix_caching: false,
            sliding_window: None,
        });
        run_one(&mut m, 1, &[1, 2, 3, 4, 5]);
        step(&mut m, vec![1], vec![], vec![]);
        let a = step(&mut m, vec![], vec![], vec![admit(2, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 0);
        assert_eq!((a.prefix_cache_queries, a.prefix_cache_hits), (0, 0));
    }

    #[test]
    fn bad_demands_are_denied_not_panics() {
        let mut m = bm(2);
        run_one(&mut m, 1, &[1, 2]);
        let a = step(
            &mut m,
            vec![42],
            vec![fork(77, 78)],
            vec![extend(42, &[1]), admit(1, &[1, 2], 2)],
        );
        assert!(a.grants.iter().all(|g| g.granted.is_none()));
        let a = step(&mut m, vec![], vec![], vec![admit(5, &[], 1)]);
        assert!(a.grants[0].granted.is_none());
        let a = step(&mut m, vec![1], vec![], vec![admit(5, &[1], 0)]);
        assert!(a.grants[0].granted.is_none());
        assert_eq!(m.num_free_blocks(), 2);
        assert_eq!(m.ref_count(999), 0);
        let z = BlockManager::new(BlockManagerConfig {
            num_blocks: 0,
            block_size: 0,
            enable_prefix_caching: true,
            sliding_window: None,
        });
        assert_eq!((z.num_total_blocks(), z.config().block_size), (0, 1));
    }

    /// Blocks of 4 tokens, every layer sliding over 4 tokens.
    fn windowed(blocks: usize) -> BlockManager {
        BlockManager::new(BlockManagerConfig {
            num_blocks: blocks,
            block_size: 4,
            enable_prefix_caching: true,
            sliding_window: Some(4),
        })
    }

    #[test]
    fn blocks_behind_the_window_return_to_the_pool() {
        let mut m = windowed(3);
        let prompt: Vec<u32> = (0..7).collect();
        let g = run_one(&mut m, 1, &prompt);
        assert_eq!((g.new_blocks.len(), g.table_holes), (2, 0));
        let first = g.new_blocks[0];
        // The row at 7 sees 4..=7: block 0 goes back before the step's
        // blocks are taken, so the pool of 3 keeps serving one sequence.
        let a = step(&mut m, vec![], vec![], vec![extend(1, &[7, 8])]);
        let g = granted(&a, 0);
        assert_eq!((g.table_keep, g.table_holes, g.new_blocks.len()), (2, 1, 1));
        assert_eq!(m.block_table(1).unwrap()[0], NO_BLOCK);
        assert_eq!(m.ref_count(first), 0);
        assert_eq!(m.num_resident_blocks(1), Some(2));
        assert_eq!(m.num_free_blocks(), 1);
        for t in 9..40 {
            let a = step(&mut m, vec![], vec![], vec![extend(1, &[t])]);
            assert!(a.grants[0].granted.is_some(), "token {t}");
            assert!(m.num_resident_blocks(1).unwrap() <= 2);
        }
        assert_eq!(m.num_tokens(1), Some(40));
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 3);
    }

    #[test]
    fn no_window_keeps_every_block() {
        let mut m = bm(16);
        run_one(&mut m, 1, &(0..7).collect::<Vec<_>>());
        for t in 7..40 {
            step(&mut m, vec![], vec![], vec![extend(1, &[t])]);
        }
        assert_eq!(m.num_resident_blocks(1), Some(10));
        assert!(!m.block_table(1).unwrap().contains(&NO_BLOCK));
    }

    #[test]
    fn hits_behind_the_window_are_not_taken() {
        let mut m = windowed(8);
        let prompt: Vec<u32> = (0..13).collect();
        run_one(&mut m, 1, &prompt);
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!(m.num_cached_blocks(), 3);
        // 12 tokens hit; the row at 12 sees 9..=12, so blocks 0 and 1 stay free.
        let a = step(&mut m, vec![], vec![], vec![admit(2, &prompt, 13)]);
        let g = granted(&a, 0);
        assert_eq!((g.num_cached_tokens, g.table_holes), (12, 2));
        assert_eq!(&g.new_blocks[..2], &[NO_BLOCK, NO_BLOCK]);
        assert_eq!(m.num_resident_blocks(2), Some(2));
        assert_eq!(m.num_free_blocks(), 6);
        // The holes keep their identities: the next full block chains onto
        // them, so a longer prompt hits all four blocks.
        step(&mut m, vec![], vec![], vec![extend(2, &[13, 14, 15])]);
        step(&mut m, vec![2], vec![], vec![]);
        let longer: Vec<u32> = (0..17).collect();
        let a = step(&mut m, vec![], vec![], vec![admit(3, &longer, 17)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 16);
    }

    #[test]
    fn freed_cached_blocks_wait_on_the_free_list_until_evicted() {
        let mut m = windowed(5);
        let prompt: Vec<u32> = (0..9).collect();
        run_one(&mut m, 1, &prompt);
        // Block 0 leaves the window; it stays cached on the free list.
        step(&mut m, vec![], vec![], vec![extend(1, &[9])]);
        assert_eq!(m.num_cached_blocks(), 2);
        let a = step(&mut m, vec![], vec![], vec![admit(2, &prompt, 9)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 8);
        step(&mut m, vec![2], vec![], vec![]);
        // Filling the pool evicts block 0: the chain is broken at its root,
        // so block 1 (still cached, still held by seq 1) is no hit either.
        let a = step(&mut m, vec![], vec![], vec![admit(3, &[50; 9], 9)]);
        assert!(a.grants[0].granted.is_some());
        step(&mut m, vec![3], vec![], vec![]);
        let a = step(&mut m, vec![], vec![], vec![admit(4, &prompt, 9)]);
        assert_eq!(granted(&a, 0).num_cached_tokens, 0);
    }

    #[test]
    fn forks_share_holes_and_resident_blocks() {
        let mut m = windowed(8);
        run_one(&mut m, 1, &(0..9).collect::<Vec<_>>());
        let a = step(
            &mut m,
            vec![],
            vec![fork(1, 2)],
            vec![extend(1, &[9]), extend(2, &[10])],
        );
        assert_eq!(granted(&a, 0).table_holes, 1);
        assert_eq!(granted(&a, 1).table_holes, 1);
        let (t1, t2) = (m.block_table(1).unwrap(), m.block_table(2).unwrap());
        assert_eq!((t1[0], t2[0]), (NO_BLOCK, NO_BLOCK));
        assert_eq!(t1[1], t2[1]);
        assert_eq!(m.ref_count(t1[1]), 2);
        // Rows 10..=12 see 7..=12: blocks 1 to 3.
        step(&mut m, vec![1], vec![], vec![extend(2, &[11, 12, 13])]);
        assert_eq!(m.num_resident_blocks(2), Some(3));
        step(&mut m, vec![2], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 8);
    }

    #[test]
    fn invariants_catch_a_hole_inside_the_window() {
        let mut m = windowed(8);
        run_one(&mut m, 1, &(0..9).collect::<Vec<_>>());
        step(&mut m, vec![], vec![], vec![extend(1, &[9])]);
        let s = m.seqs.get_mut(&1).unwrap();
        let b = std::mem::replace(&mut s.table[1], NO_BLOCK);
        s.holes = 2;
        m.drop_ref(b);
        let e = m.check_invariants().unwrap_err();
        assert!(e.contains("holes"), "{e}");
    }

    #[test]
    fn block_hash_is_stable() {
        assert_eq!(block_hash(0, &[1, 2, 3]), block_hash(0, &[1, 2, 3]));
        assert_ne!(block_hash(0, &[1, 2, 3]), block_hash(1, &[1, 2, 3]));
        assert_ne!(block_hash(0, &[1, 2, 3]), block_hash(0, &[3, 2, 1]));
    }
}
