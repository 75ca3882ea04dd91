//! The paged KV-cache block manager: reference-counted blocks, automatic
//! prefix caching and copy-on-write, driven by one [`AllocateForStep`]
//! message per engine step.
//!
//! Prefix caching: a full block is identified by a chained hash of its parent
//! block's hash and its own token ids; the block also keeps those token ids,
//! so a hash collision can never hand out the wrong KV (a hit is only taken
//! when the tokens and the parent hash match). Freed cached blocks keep their
//! identity on an LRU free list and are reused by later requests until a new
//! allocation evicts them from the head of the list.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use kiln_protocol::step::{
    AllocateForStep, BlockCopy, BlockDemand, BlockGrant, DemandKind, Granted, StepAllocation,
};
use kiln_protocol::{BlockId, SeqId, TokenId};

/// Block manager settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockManagerConfig {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Automatic prefix caching.
    pub enable_prefix_caching: bool,
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    refs: u32,
    /// Identity while cached: chained hash, parent hash and token ids.
    cached: Option<CachedIdentity>,
    prev: u32,
    next: u32,
    free: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedIdentity {
    hash: u64,
    parent: u64,
    tokens: Vec<TokenId>,
}

#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    table: Vec<BlockId>,
    num_tokens: usize,
    /// Chained hashes of the full blocks, by block index.
    hashes: Vec<u64>,
    /// Tokens of the last, partial block.
    partial: Vec<TokenId>,
    caching: bool,
}

/// Hash of a full block given its parent's hash.
pub fn block_hash(parent: u64, tokens: &[TokenId]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The root of every hash chain.
pub const ROOT_HASH: u64 = 0x6b69_6c6e_0000_0001;

/// The pure block manager.
#[derive(Debug, Clone)]
pub struct BlockManager {
    config: BlockManagerConfig,
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    free_count: usize,
    cache: HashMap<u64, BlockId>,
    seqs: HashMap<SeqId, SeqBlocks>,
    queries: u32,
    hits: u32,
}

impl BlockManager {
    /// A pool of free blocks.
    pub fn new(config: BlockManagerConfig) -> BlockManager {
        let n = config.num_blocks;
        let blocks = (0..n)
            .map(|i| Block {
                refs: 0,
                cached: None,
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
                free: true,
            })
            .collect();
        BlockManager {
            config,
            blocks,
            head: if n == 0 { NONE } else { 0 },
            tail: if n == 0 { NONE } else { n as u32 - 1 },
            free_count: n,
            cache: HashMap::new(),
            seqs: HashMap::new(),
            queries: 0,
            hits: 0,
        }
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

    /// A sequence's block table.
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.table.as_slice())
    }

    /// Tokens a sequence holds slots for.
    pub fn num_tokens(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.num_tokens)
    }

    /// A block's reference count.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks[block as usize].refs
    }

    /// Sequences holding blocks.
    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }

    // ---------------------------------------------------------------- free list

    fn unlink(&mut self, b: u32) {
        let (prev, next) = (self.blocks[b as usize].prev, self.blocks[b as usize].next);
        if prev == NONE {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let blk = &mut self.blocks[b as usize];
        blk.prev = NONE;
        blk.next = NONE;
        blk.free = false;
        self.free_count -= 1;
    }

    fn push_tail(&mut self, b: u32) {
        let blk = &mut self.blocks[b as usize];
        blk.prev = self.tail;
        blk.next = NONE;
        blk.free = true;
        if self.tail == NONE {
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
        blk.prev = NONE;
        blk.free = true;
        if self.head == NONE {
            self.tail = b;
        } else {
            self.blocks[self.head as usize].prev = b;
        }
        self.head = b;
        self.free_count += 1;
    }

    /// Take the least recently freed block, evicting its cache identity.
    fn pop_free(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NONE {
            return None;
        }
        self.unlink(b);
        if let Some(id) = self.blocks[b as usize].cached.take()
            && self.cache.get(&id.hash) == Some(&b)
        {
            self.cache.remove(&id.hash);
        }
        self.blocks[b as usize].refs = 1;
        Some(b)
    }

    fn acquire(&mut self, b: BlockId) {
        if self.blocks[b as usize].free {
            self.unlink(b);
        }
        self.blocks[b as usize].refs += 1;
    }

    fn drop_ref(&mut self, b: BlockId) {
        let blk = &mut self.blocks[b as usize];
        debug_assert!(blk.refs > 0, "block {b} released more often than taken");
        blk.refs = blk.refs.saturating_sub(1);
        if blk.refs == 0 {
            let keep = blk
                .cached
                .as_ref()
                .is_some_and(|c| self.cache.get(&c.hash) == Some(&b));
            if keep {
                self.push_tail(b);
            } else {
                self.blocks[b as usize].cached = None;
                self.push_head(b);
            }
        }
    }

    // ---------------------------------------------------------------- requests

    /// Return every block reference of `seq` (no-op for unknown sequences).
    pub fn release(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            // Last blocks first, so that a prompt's first blocks are evicted last.
            for &b in s.table.iter().rev() {
                self.drop_ref(b);
            }
        }
    }

    /// Forget every cached prefix (blocks keep their contents but are no longer found).
    pub fn reset_prefix_cache(&mut self) {
        self.cache.clear();
        for b in &mut self.blocks {
            b.cached = None;
        }
        for s in self.seqs.values_mut() {
            s.caching = false;
        }
    }

    fn fork(&mut self, parent: SeqId, child: SeqId) -> bool {
        let Some(p) = self.seqs.get(&parent).cloned() else {
            return false;
        };
        self.release(child);
        for &b in &p.table {
            self.blocks[b as usize].refs += 1;
        }
        self.seqs.insert(child, p);
        true
    }

    /// Process one step's message.
    pub fn allocate_for_step(&mut self, msg: AllocateForStep) -> StepAllocation {
        for f in &msg.forks {
            self.fork(f.parent, f.child);
        }
        for seq in &msg.releases {
            self.release(*seq);
        }
        self.queries = 0;
        self.hits = 0;
        let mut copies = Vec::new();
        let mut admissions_blocked = false;
        let grants = msg
            .demands
            .into_iter()
            .map(|d| self.grant(d, &mut admissions_blocked, &mut copies))
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
        admissions_blocked: &mut bool,
        copies: &mut Vec<BlockCopy>,
    ) -> BlockGrant {
        let granted = match d.kind {
            DemandKind::Admit {
                token_ids,
                max_new_tokens,
                use_prefix_cache,
            } => {
                if *admissions_blocked {
                    None
                } else {
                    let g = self.admit(
                        d.seq_id,
                        &token_ids,
                        max_new_tokens as usize,
                        use_prefix_cache,
                    );
                    *admissions_blocked = g.is_none();
                    g
                }
            }
            DemandKind::Extend { token_ids } => self.extend(d.seq_id, &token_ids, copies),
        };
        BlockGrant {
            seq_id: d.seq_id,
            granted,
        }
    }

    fn lookup(&self, tokens: &[TokenId]) -> Vec<(BlockId, u64)> {
        let bs = self.config.block_size;
        let max_hits = tokens.len().saturating_sub(1) / bs;
        let mut parent = ROOT_HASH;
        let mut hits = Vec::new();
        for i in 0..max_hits {
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let h = block_hash(parent, chunk);
            let Some(&b) = self.cache.get(&h) else { break };
            let same = self.blocks[b as usize]
                .cached
                .as_ref()
                .is_some_and(|c| c.parent == parent && c.tokens == chunk);
            if !same {
                break;
            }
            hits.push((b, h));
            parent = h;
        }
        hits
    }

    fn admit(
        &mut self,
        seq: SeqId,
        tokens: &[TokenId],
        max_new: usize,
        use_cache: bool,
    ) -> Option<Granted> {
        let bs = self.config.block_size;
        let caching = self.config.enable_prefix_caching && use_cache;
        if tokens.is_empty() || max_new == 0 {
            return None;
        }
        self.release(seq);
        let hits = if caching {
            self.lookup(tokens)
        } else {
            Vec::new()
        };
        let cached = hits.len() * bs;
        let new_tokens = max_new.min(tokens.len() - cached);
        let total_blocks = (cached + new_tokens).div_ceil(bs);
        let new_blocks = total_blocks - hits.len();
        let hits_on_free = hits
            .iter()
            .filter(|(b, _)| self.blocks[*b as usize].free)
            .count();
        if self.free_count < new_blocks + hits_on_free {
            return None;
        }
        if caching {
            self.queries += tokens.len() as u32;
            self.hits += cached as u32;
        }
        let mut s = SeqBlocks {
            caching,
            ..Default::default()
        };
        for &(b, h) in &hits {
            self.acquire(b);
            s.table.push(b);
            s.hashes.push(h);
        }
        for _ in 0..new_blocks {
            let b = self.pop_free()?;
            s.table.push(b);
        }
        s.num_tokens = cached;
        self.seqs.insert(seq, s);
        self.append_tokens(seq, &tokens[cached..cached + new_tokens]);
        let table = self
            .seqs
            .get(&seq)
            .map(|s| s.table.clone())
            .unwrap_or_default();
        Some(Granted {
            num_cached_tokens: cached as u32,
            num_new_tokens: new_tokens as u32,
            table_keep: 0,
            new_blocks: table,
        })
    }

    fn extend(
        &mut self,
        seq: SeqId,
        tokens: &[TokenId],
        copies: &mut Vec<BlockCopy>,
    ) -> Option<Granted> {
        let bs = self.config.block_size;
        let s = self.seqs.get(&seq)?;
        let (len, n) = (s.table.len(), s.num_tokens);
        let needed = (n + tokens.len()).div_ceil(bs).saturating_sub(len);
        let last = s.table.last().copied();
        let cow = !n.is_multiple_of(bs)
            && !tokens.is_empty()
            && last.is_some_and(|b| self.blocks[b as usize].refs > 1);
        if self.free_count < needed + usize::from(cow) {
            return None;
        }
        let mut keep = len;
        let mut added = Vec::new();
        if cow && let Some(old) = last {
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
            added.push(self.pop_free()?);
        }
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.table.truncate(keep);
            s.table.extend_from_slice(&added);
        }
        self.append_tokens(seq, tokens);
        Some(Granted {
            num_cached_tokens: 0,
            num_new_tokens: tokens.len() as u32,
            table_keep: keep as u32,
            new_blocks: added,
        })
    }

    /// Record tokens written into the sequence's slots; register blocks that become full.
    fn append_tokens(&mut self, seq: SeqId, tokens: &[TokenId]) {
        let bs = self.config.block_size;
        let Some(mut s) = self.seqs.remove(&seq) else {
            return;
        };
        for &t in tokens {
            s.partial.push(t);
            s.num_tokens += 1;
            if s.partial.len() == bs {
                let idx = s.num_tokens / bs - 1;
                let parent = if idx == 0 {
                    ROOT_HASH
                } else {
                    s.hashes[idx - 1]
                };
                let h = block_hash(parent, &s.partial);
                let block = s.table[idx];
                if s.caching
                    && !self.cache.contains_key(&h)
                    && self.blocks[block as usize].cached.is_none()
                {
                    self.cache.insert(h, block);
                    self.blocks[block as usize].cached = Some(CachedIdentity {
                        hash: h,
                        parent,
                        tokens: s.partial.clone(),
                    });
                }
                s.hashes.push(h);
                s.partial.clear();
            }
        }
        self.seqs.insert(seq, s);
    }

    /// Check every invariant; the error says which one broke.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut refs = vec![0u32; self.config.num_blocks];
        for (id, s) in &self.seqs {
            if s.table.len() != s.num_tokens.div_ceil(self.config.block_size) {
                return Err(format!(
                    "seq {id}: {} blocks for {} tokens",
                    s.table.len(),
                    s.num_tokens
                ));
            }
            for &b in &s.table {
                refs[b as usize] += 1;
            }
        }
        let mut free_seen = 0;
        let mut cur = self.head;
        let mut prev = NONE;
        while cur != NONE {
            let b = &self.blocks[cur as usize];
            if !b.free || b.refs != 0 || b.prev != prev {
                return Err(format!("free list corrupt at block {cur}"));
            }
            free_seen += 1;
            if free_seen > self.config.num_blocks {
                return Err("free list has a cycle".into());
            }
            prev = cur;
            cur = b.next;
        }
        if free_seen != self.free_count || self.tail != prev {
            return Err(format!(
                "free list has {free_seen} blocks, counter says {}",
                self.free_count
            ));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.refs != refs[i] {
                return Err(format!(
                    "block {i}: ref count {} but {} tables hold it",
                    b.refs, refs[i]
                ));
            }
            if (b.refs == 0) != b.free {
                return Err(format!("block {i}: refs {} free {}", b.refs, b.free));
            }
        }
        if self.free_count + refs.iter().filter(|&&r| r > 0).count() != self.config.num_blocks {
            return Err("free + used != total".into());
        }
        for (h, &b) in &self.cache {
            if self.blocks[b as usize].cached.as_ref().map(|c| c.hash) != Some(*h) {
                return Err(format!(
                    "cache entry {h:x} points at block {b} with another identity"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::step::Fork;

    fn bm(blocks: usize) -> BlockManager {
        BlockManager::new(BlockManagerConfig {
            num_blocks: blocks,
            block_size: 4,
            enable_prefix_caching: true,
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

    #[test]
    fn admit_extend_release() {
        let mut m = bm(8);
        let a = step(
            &mut m,
            vec![],
            vec![],
            vec![admit(1, &[1, 2, 3, 4, 5, 6], 6)],
        );
        let g = a.grants[0].granted.clone().unwrap();
        assert_eq!(
            (g.num_cached_tokens, g.num_new_tokens, g.new_blocks.len()),
            (0, 6, 2)
        );
        let a = step(&mut m, vec![], vec![], vec![extend(1, &[7, 8, 9])]);
        let g = a.grants[0].granted.clone().unwrap();
        assert_eq!((g.table_keep, g.new_blocks.len()), (2, 1));
        assert_eq!(m.num_free_blocks(), 5);
        step(&mut m, vec![1], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 8);
    }

    #[test]
    fn prefix_hits_skip_cached_blocks_but_never_the_last_token() {
        let mut m = bm(8);
        let prompt: Vec<u32> = (0..9).collect();
        step(&mut m, vec![], vec![], vec![admit(1, &prompt, 9)]);
        step(&mut m, vec![1], vec![], vec![]);
        // Same prompt: two full blocks cached (8 tokens), the 9th recomputed.
        let a = step(&mut m, vec![], vec![], vec![admit(2, &prompt, 9)]);
        let g = a.grants[0].granted.clone().unwrap();
        assert_eq!((g.num_cached_tokens, g.num_new_tokens), (8, 1));
        assert_eq!((a.prefix_cache_queries, a.prefix_cache_hits), (9, 8));
        // An exact multiple of the block size: the last block is recomputed.
        let a = step(&mut m, vec![], vec![], vec![admit(3, &prompt[..8], 8)]);
        assert_eq!(a.grants[0].granted.as_ref().unwrap().num_cached_tokens, 4);
        // A different continuation shares only what matches.
        let mut other = prompt.clone();
        other[5] = 99;
        let a = step(&mut m, vec![], vec![], vec![admit(4, &other, 9)]);
        assert_eq!(a.grants[0].granted.as_ref().unwrap().num_cached_tokens, 4);
    }

    #[test]
    fn denied_admissions_block_later_ones_but_not_extends() {
        let mut m = bm(3);
        step(&mut m, vec![], vec![], vec![admit(1, &[1, 2, 3, 4, 5], 5)]);
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
    fn forks_share_blocks_and_copy_on_write() {
        let mut m = bm(8);
        step(
            &mut m,
            vec![],
            vec![],
            vec![admit(1, &[1, 2, 3, 4, 5, 6], 6)],
        );
        let a = step(
            &mut m,
            vec![],
            vec![Fork {
                parent: 1,
                child: 2,
            }],
            vec![extend(1, &[7]), extend(2, &[8])],
        );
        // Seq 1 copies the shared half-full block; seq 2 then owns the original alone.
        assert_eq!(a.copies.len(), 1);
        let t1 = m.block_table(1).unwrap().to_vec();
        let t2 = m.block_table(2).unwrap().to_vec();
        assert_eq!(t1[0], t2[0]);
        assert_ne!(t1[1], t2[1]);
        assert_eq!(m.ref_count(t1[0]), 2);
        step(&mut m, vec![1, 2], vec![], vec![]);
        assert_eq!(m.num_free_blocks(), 8);
    }

    #[test]
    fn lru_eviction_reuses_cached_blocks_last() {
        let mut m = bm(4);
        step(&mut m, vec![], vec![], vec![admit(1, &[1, 2, 3, 4, 5], 5)]);
        step(&mut m, vec![1], vec![], vec![]);
        // Two fresh blocks come from the never-cached part of the list first.
        step(&mut m, vec![], vec![], vec![admit(2, &[9, 9, 9, 9, 9], 5)]);
        let a = step(&mut m, vec![2], vec![], vec![admit(3, &[1, 2, 3, 4, 5], 5)]);
        assert_eq!(a.grants[0].granted.as_ref().unwrap().num_cached_tokens, 4);
    }

    #[test]
    fn releasing_unknown_sequences_is_harmless() {
        let mut m = bm(2);
        step(&mut m, vec![42], vec![], vec![extend(42, &[1])]);
        assert_eq!(m.num_free_blocks(), 2);
    }
}
