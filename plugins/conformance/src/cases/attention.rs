//! Paged attention over scrambled block tables: a batch mixing prefills
//! and decodes, one with a sliding window and a logit soft-cap after
//! writing this step's keys and values, and the same window with every
//! block-table entry behind a sequence's window pointing at a block of NaN
//! (a host frees those blocks, so a backend must never load them).

use kiln_plugin_abi::ops;
use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::data::i32_bytes;
use crate::run::Run;
use crate::side::Side;

struct Batch {
    heads: usize,
    kv_heads: usize,
    hd: usize,
    block_size: usize,
    blocks: usize,
    max_blocks: usize,
    q_lens: Vec<usize>,
    context: Vec<usize>,
    window: i64,
    softcap: f32,
    /// Entries wholly behind the window of each sequence's first row point
    /// at block [`STALE_BLOCK`], which holds NaN.
    stale_behind_window: bool,
}

/// The block a freed table entry points at (real entries count down from
/// the last block and never reach it).
const STALE_BLOCK: i32 = 0;

impl Batch {
    fn tables(&self) -> Vec<i32> {
        let mut tables = vec![0i32; self.context.len() * self.max_blocks];
        let mut next = 0i32;
        for (s, (&q, &c)) in self.q_lens.iter().zip(&self.context).enumerate() {
            let behind = match (self.stale_behind_window, self.window) {
                (true, w) if w > 0 => (c - q + 1).saturating_sub(w as usize) / self.block_size,
                _ => 0,
            };
            for b in 0..c.div_ceil(self.block_size) {
                tables[s * self.max_blocks + b] = if b < behind {
                    STALE_BLOCK
                } else {
                    next += 1;
                    self.blocks as i32 - next
                };
            }
        }
        tables
    }

    /// The cache slot of each of this step's tokens.
    fn slots(&self, tables: &[i32]) -> Vec<i32> {
        let mut slots = Vec::new();
        for (s, (&q, &c)) in self.q_lens.iter().zip(&self.context).enumerate() {
            for p in c - q..c {
                let block = tables[s * self.max_blocks + p / self.block_size];
                slots.push(block * self.block_size as i32 + (p % self.block_size) as i32);
            }
        }
        slots
    }
}

struct Inputs {
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    q: Vec<f32>,
    /// New keys and values, written before attending (none: attend to the cache as is).
    new_kv: Option<(Vec<f32>, Vec<f32>)>,
}

fn exec(s: &Side<'_>, b: &Batch, inputs: &Inputs) -> AbiResult<Vec<f32>> {
    let n: usize = b.q_lens.iter().sum();
    let seqs = b.context.len() as u64;
    let width = (b.heads * b.hd) as u64;
    let kv_dim = (b.kv_heads * b.hd) as u64;
    let tables = b.tables();
    let seq_lens: Vec<i32> = b.context.iter().map(|&c| c as i32).collect();
    let mut starts = vec![0i32];
    for &l in &b.q_lens {
        starts.push(starts.last().copied().unwrap_or(0) + l as i32);
    }
    let (kc, vc) = (s.acts(&inputs.k_cache)?, s.acts(&inputs.v_cache)?);
    let qb = s.acts(&inputs.q)?;
    let ob = s.acts(&vec![0.0; inputs.q.len()])?;
    let tb = s.upload(&i32_bytes(&tables))?;
    let lb = s.upload(&i32_bytes(&seq_lens))?;
    let qs = s.upload(&i32_bytes(&starts))?;
    let cdims = [
        b.blocks as u64,
        b.block_size as u64,
        b.kv_heads as u64,
        b.hd as u64,
    ];
    let mut queue = Vec::new();
    let new_kv = match &inputs.new_kv {
        Some((k, v)) => Some((
            s.acts(k)?,
            s.acts(v)?,
            s.upload(&i32_bytes(&b.slots(&tables)))?,
        )),
        None => None,
    };
    if let Some((kb, vb, sb)) = &new_kv {
        queue.push(ops::kv_write(ops::KvWrite {
            k: kb.view(0, s.act, &[n as u64, kv_dim]),
            v: vb.view(0, s.act, &[n as u64, kv_dim]),
            k_cache: kc.view(0, s.act, &cdims),
            v_cache: vc.view(0, s.act, &cdims),
            slot_mapping: sb.view(0, KILN_I32, &[n as u64]),
        }));
    }
    queue.push(ops::attention(ops::Attention {
        q: qb.view(0, s.act, &[n as u64, width]),
        k_cache: kc.view(0, s.act, &cdims),
        v_cache: vc.view(0, s.act, &cdims),
        block_tables: tb.view(0, KILN_I32, &[seqs, b.max_blocks as u64]),
        seq_lens: lb.view(0, KILN_I32, &[seqs]),
        query_start_loc: qs.view(0, KILN_I32, &[seqs + 1]),
        out: ob.view(0, s.act, &[n as u64, width]),
        scale: 1.0 / (b.hd as f32).sqrt(),
        softcap: b.softcap,
        num_heads: b.heads as i64,
        num_kv_heads: b.kv_heads as i64,
        head_dim: b.hd as i64,
        block_size: b.block_size as i64,
        sliding_window: b.window,
        max_query_len: b.q_lens.iter().copied().max().unwrap_or(0) as i64,
        max_seq_len: b.context.iter().copied().max().unwrap_or(0) as i64,
    }));
    s.dev.execute(&queue)?;
    let mut out = s.read(&ob, s.act, inputs.q.len())?;
    if new_kv.is_some() {
        out.extend(s.read(&kc, s.act, inputs.k_cache.len())?);
        out.extend(s.read(&vc, s.act, inputs.v_cache.len())?);
    }
    Ok(out)
}

pub(crate) fn cases(run: &mut Run<'_>) {
    let mixed = Batch {
        heads: 4,
        kv_heads: 2,
        hd: 64,
        block_size: 16,
        blocks: 40,
        max_blocks: 20,
        // A prefill of 20 after 10 cached, decodes at 300 and 17, a fresh prefill of 5.
        q_lens: vec![20, 1, 1, 5],
        context: vec![30, 300, 17, 5],
        window: 0,
        softcap: 0.0,
        stale_behind_window: false,
    };
    let windowed = Batch {
        heads: 4,
        kv_heads: 2,
        hd: 32,
        block_size: 8,
        blocks: 24,
        max_blocks: 6,
        q_lens: vec![9, 1, 3],
        context: vec![30, 45, 3],
        window: 12,
        softcap: 2.0,
        stale_behind_window: false,
    };
    let name = "paged attention (prefill + decode)";
    if run.dut_supports(ops::OP_ATTENTION, None, name) {
        let inputs = inputs(run, &mixed, false);
        compare_sides(run, ops::OP_ATTENTION, name, &mixed, &inputs);
    }
    let name = "kv_write then attention with a sliding window and soft-cap";
    if run.dut_supports(ops::OP_KV_WRITE, None, name)
        && run.dut_supports(ops::OP_ATTENTION, None, name)
    {
        let inputs = inputs(run, &windowed, true);
        compare_sides(run, ops::OP_KV_WRITE, name, &windowed, &inputs);
    }
    let freed = Batch {
        stale_behind_window: true,
        ..windowed
    };
    let name = "attention never reads blocks behind a sliding window";
    if run.dut_supports(ops::OP_ATTENTION, None, name) {
        let mut inputs = inputs(run, &freed, false);
        let per_block = freed.block_size * freed.kv_heads * freed.hd;
        let stale = STALE_BLOCK as usize * per_block..(STALE_BLOCK as usize + 1) * per_block;
        inputs.k_cache[stale.clone()].fill(f32::NAN);
        inputs.v_cache[stale].fill(f32::NAN);
        compare_sides(run, ops::OP_ATTENTION, name, &freed, &inputs);
    }
}

/// Run the batch on the device under test and on the reference, and record
/// the comparison under `op`.
fn compare_sides(run: &mut Run<'_>, op: u32, name: &str, b: &Batch, inputs: &Inputs) {
    let (got, want) = (exec(&run.dut, b, inputs), exec(&run.reference, b, inputs));
    run.compare(op, None, name.into(), got, want, run.tolerance);
}

fn inputs(run: &mut Run<'_>, b: &Batch, write_new: bool) -> Inputs {
    let n: usize = b.q_lens.iter().sum();
    let kv_dim = b.kv_heads * b.hd;
    let cache = b.blocks * b.block_size * kv_dim;
    Inputs {
        k_cache: run.rng.vec(cache, 1.0),
        v_cache: run.rng.vec(cache, 1.0),
        q: run.rng.vec(n * b.heads * b.hd, 3.0),
        new_kv: write_new.then(|| (run.rng.vec(n * kv_dim, 1.0), run.rng.vec(n * kv_dim, 1.0))),
    }
}
