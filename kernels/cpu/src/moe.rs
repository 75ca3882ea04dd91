//! Mixture-of-experts feed-forward with top-k routing (Mixtral, Qwen2-MoE,
//! Qwen3-MoE): per row, route to k experts from the router logits, run each
//! chosen expert's gated MLP and sum the results weighted by the routing
//! probabilities, plus an optional (gated) shared expert.
//!
//! The work is grouped by expert across the batch, so each expert's weights
//! are streamed once per call: the rows routed to an expert are gathered,
//! multiplied by the expert's rows of the stacked `gate_up` and `down`
//! matrices ([`matmul_rows`]) and scattered to per-(row, rank) slots; then
//! every row combines its k slots in rank order. Since a matmul's output row
//! depends only on its input row, and the combination only on the row's own
//! slots, every output row has the same bits whatever the batch, its order,
//! the chunking or the thread count.
//!
//! [`route`] and [`group_by_expert`] are the pure halves of that plan.

use std::cell::RefCell;
use std::ops::Range;

use crate::activation::{Activation, activate_mul};
use crate::error::KernelError;
use crate::matmul::{GROUP_ROWS, Matmul, WeightMatrix, matmul_rows};
use crate::pool::ThreadPool;

/// One of a row's k experts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Expert id, `0..E`.
    pub expert: usize,
    /// Routing weight: the expert's softmax probability, renormalized over
    /// the k chosen when asked.
    pub weight: f32,
}

/// The k experts of one row from its `E` router logits, largest weight
/// first: the softmax over all logits in f32, the k largest probabilities
/// (ties to the lower expert id) and, with `renormalize`, each divided by
/// their sum (taken in rank order).
///
/// Panics unless `1 ≤ top_k ≤ logits.len()`.
pub fn route(logits: &[f32], top_k: usize, renormalize: bool) -> Vec<Choice> {
    assert!(
        (1..=logits.len()).contains(&top_k),
        "route: top_k {top_k} outside 1..={}",
        logits.len()
    );
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Probabilities share one denominator, so ranking the numerators ranks
    // them, except where the division rounds two apart to the same value:
    // rank the probabilities themselves so such ties fall to the lower id.
    let probs: Vec<f32> = exps.iter().map(|&e| e / sum).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut chosen: Vec<Choice> = order[..top_k]
        .iter()
        .map(|&expert| Choice {
            expert,
            weight: probs[expert],
        })
        .collect();
    if renormalize {
        let total: f32 = chosen.iter().map(|c| c.weight).sum();
        for c in &mut chosen {
            c.weight /= total;
        }
    }
    chosen
}

/// A row's output slot: the row (counted from the start of the planned
/// rows) and the rank of the expert within its k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Row index.
    pub row: usize,
    /// Position among the row's experts, `0..k`.
    pub rank: usize,
}

/// The rows routed to one expert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertGroup {
    /// Expert id.
    pub expert: usize,
    /// Its rows in ascending order (so decode rows come first).
    pub slots: Vec<Slot>,
    /// How many leading slots are decode rows (a GEMV/GEMM kernel choice
    /// hint, as `OP_LINEAR`'s; the CPU matmul treats every row alike).
    pub decode_rows: usize,
}

/// Group `rows × top_k` ranked choices (row-major, as [`route`] returns
/// them per row) by expert: one group per expert that has rows, in expert
/// order, each listing its rows in ascending order. Rows `0..decode_rows`
/// are decode rows.
pub fn group_by_expert(
    choices: &[Choice],
    top_k: usize,
    num_experts: usize,
    decode_rows: usize,
) -> Vec<ExpertGroup> {
    let mut slots: Vec<Vec<Slot>> = vec![Vec::new(); num_experts];
    for (i, c) in choices.iter().enumerate() {
        slots[c.expert].push(Slot {
            row: i / top_k,
            rank: i % top_k,
        });
    }
    slots
        .into_iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(expert, slots)| ExpertGroup {
            expert,
            decode_rows: slots.iter().take_while(|s| s.row < decode_rows).count(),
            slots,
        })
        .collect()
}

/// Shapes and modes of a mixture-of-experts layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeShape {
    /// E.
    pub num_experts: usize,
    /// k, experts per row.
    pub top_k: usize,
    /// h, the model's hidden size.
    pub hidden: usize,
    /// I, each expert's intermediate size.
    pub intermediate: usize,
    /// Applied to the gate projection before it multiplies the up projection.
    pub activation: Activation,
    /// Divide the k routing weights by their sum.
    pub renormalize: bool,
}

impl MoeShape {
    /// Check the stacked weights against the shape: `gate_up` `[E·2·I, h]`,
    /// `down` `[E·h, I]`, and every expert's block starting on a 16-row
    /// group of the packed matrices (2I and h multiples of [`GROUP_ROWS`]).
    pub fn check(&self, gate_up: &WeightMatrix, down: &WeightMatrix) -> Result<(), KernelError> {
        let (e, h, i) = (self.num_experts, self.hidden, self.intermediate);
        let invalid = |what: String| Err(KernelError::Moe { what });
        if e == 0 || !(1..=e).contains(&self.top_k) {
            return invalid(format!("top_k {} with {e} experts", self.top_k));
        }
        if (gate_up.rows(), gate_up.cols()) != (e * 2 * i, h) {
            return invalid(format!(
                "gate_up is [{}, {}], {e} experts of intermediate size {i} and hidden size {h} need [{}, {h}]",
                gate_up.rows(),
                gate_up.cols(),
                e * 2 * i
            ));
        }
        if (down.rows(), down.cols()) != (e * h, i) {
            return invalid(format!(
                "down is [{}, {}], {e} experts of intermediate size {i} and hidden size {h} need [{}, {i}]",
                down.rows(),
                down.cols(),
                e * h
            ));
        }
        if !(2 * i).is_multiple_of(GROUP_ROWS) || !h.is_multiple_of(GROUP_ROWS) {
            return invalid(format!(
                "the CPU backend packs weights in {GROUP_ROWS}-row groups, so it needs twice the \
                 intermediate size (2·{i} = {}) and the hidden size ({h}) to be multiples of \
                 {GROUP_ROWS}",
                2 * i
            ));
        }
        Ok(())
    }
}

/// A shared expert's contribution, added to every row.
#[derive(Debug, Clone, Copy)]
pub struct SharedExpert<'a> {
    /// `[n, h]` the shared expert's output.
    pub out: &'a [f32],
    /// `[n]` logits whose sigmoid scales each row's `out`; `None` adds it unscaled.
    pub gate: Option<&'a [f32]>,
}

/// Operands of [`moe`].
pub struct Moe<'a> {
    /// Shapes and modes.
    pub shape: MoeShape,
    /// Rows.
    pub n: usize,
    /// Leading rows that are single-token decode rows.
    pub decode_rows: usize,
    /// `[n, h]` input.
    pub x: &'a [f32],
    /// `[n, E]` router logits.
    pub router_logits: &'a [f32],
    /// `[E·2·I, h]` stacked gate and up projections.
    pub gate_up: &'a WeightMatrix,
    /// `[E·h, I]` stacked down projections.
    pub down: &'a WeightMatrix,
    /// Optional shared expert.
    pub shared: Option<SharedExpert<'a>>,
    /// `[n, h]` output.
    pub out: &'a mut [f32],
    /// `out += result` instead of `out = result`.
    pub accumulate: bool,
}

/// Bytes of per-(row, rank) expert outputs held at once; larger batches are
/// processed in chunks of rows (which changes no row's bits).
const SLOT_BYTES: usize = 64 << 20;

/// Reused buffers (per calling thread).
#[derive(Default)]
struct Scratch {
    /// `[m, h]` rows gathered for one expert.
    x: Vec<f32>,
    /// `[m, 2I]` their gate and up projections.
    gate_up: Vec<f32>,
    /// `[m, I]` `act(gate) · up`.
    hidden: Vec<f32>,
    /// `[m, h]` the expert's output.
    y: Vec<f32>,
    /// `[rows, k, h]` every row's expert outputs, by rank.
    slots: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Run a mixture-of-experts layer (see the module documentation).
///
/// Refuses shapes [`MoeShape::check`] refuses; panics if a slice is shorter
/// than the shapes require.
pub fn moe(pool: &ThreadPool, mut a: Moe<'_>) -> Result<(), KernelError> {
    let s = a.shape;
    s.check(a.gate_up, a.down)?;
    let (n, h, k, e) = (a.n, s.hidden, s.top_k, s.num_experts);
    assert!(a.x.len() >= n * h, "moe: x is shorter than [{n}, {h}]");
    assert!(a.out.len() >= n * h, "moe: out is shorter than [{n}, {h}]");
    assert!(
        a.router_logits.len() >= n * e,
        "moe: router logits are shorter than [{n}, {e}]"
    );
    if let Some(shared) = a.shared {
        assert!(shared.out.len() >= n * h, "moe: shared output too short");
        assert!(
            shared.gate.is_none_or(|g| g.len() >= n),
            "moe: shared gate too short"
        );
    }
    let choices: Vec<Choice> = a.router_logits[..n * e]
        .chunks_exact(e)
        .flat_map(|logits| route(logits, k, s.renormalize))
        .collect();
    let chunk_rows = (SLOT_BYTES / (4 * k * h).max(1)).max(1);
    // Written row by row while the other operands are read.
    let out = std::mem::take(&mut a.out);
    SCRATCH.with(|cell| {
        let scratch = &mut *cell.borrow_mut();
        let mut start = 0;
        while start < n {
            let rows = start..(start + chunk_rows).min(n);
            run_chunk(pool, &a, &choices, rows.clone(), scratch, out);
            start = rows.end;
        }
    });
    Ok(())
}

/// Rows `rows` of [`moe`]: every expert over its rows, then each row's combination.
fn run_chunk(
    pool: &ThreadPool,
    a: &Moe<'_>,
    choices: &[Choice],
    rows: Range<usize>,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let s = a.shape;
    let (h, i, k) = (s.hidden, s.intermediate, s.top_k);
    let decode_rows = a.decode_rows.clamp(rows.start, rows.end) - rows.start;
    let chunk_choices = &choices[rows.start * k..rows.end * k];
    let groups = group_by_expert(chunk_choices, k, s.num_experts, decode_rows);
    let slots = sized(&mut scratch.slots, rows.len() * k * h);
    for group in &groups {
        let m = group.slots.len();
        let xg = sized(&mut scratch.x, m * h);
        for (dst, slot) in xg.chunks_exact_mut(h).zip(&group.slots) {
            let r = rows.start + slot.row;
            dst.copy_from_slice(&a.x[r * h..(r + 1) * h]);
        }
        let gate_up = sized(&mut scratch.gate_up, m * 2 * i);
        let first = group.expert * 2 * i;
        matmul_rows(
            pool,
            Matmul {
                x: xg,
                n: m,
                w: a.gate_up,
                bias: None,
                out: gate_up,
                accumulate: false,
            },
            first..first + 2 * i,
        );
        let hidden = sized(&mut scratch.hidden, m * i);
        for (dst, gu) in hidden.chunks_exact_mut(i).zip(gate_up.chunks_exact(2 * i)) {
            let (gate, up) = gu.split_at(i);
            dst.copy_from_slice(gate);
            activate_mul(s.activation, dst, up);
        }
        let y = sized(&mut scratch.y, m * h);
        let first = group.expert * h;
        matmul_rows(
            pool,
            Matmul {
                x: hidden,
                n: m,
                w: a.down,
                bias: None,
                out: y,
                accumulate: false,
            },
            first..first + h,
        );
        for (src, slot) in y.chunks_exact(h).zip(&group.slots) {
            let at = (slot.row * k + slot.rank) * h;
            slots[at..at + h].copy_from_slice(src);
        }
    }
    for (local, r) in rows.clone().enumerate() {
        let ranked = &chunk_choices[local * k..(local + 1) * k];
        let own = &slots[local * k * h..(local + 1) * k * h];
        combine_row(a, r, ranked, own, &mut out[r * h..(r + 1) * h]);
    }
}

/// Row `r`: `Σ_j weight_j · y_j` in rank order, then the shared term, then
/// written or added into `out`.
fn combine_row(a: &Moe<'_>, r: usize, ranked: &[Choice], ys: &[f32], out: &mut [f32]) {
    let h = a.shape.hidden;
    let shared = a.shared.map(|sh| {
        let scale = sh.gate.map(|g| 1.0 / (1.0 + (-g[r]).exp()));
        (&sh.out[r * h..(r + 1) * h], scale)
    });
    for c in 0..h {
        let mut acc = ranked[0].weight * ys[c];
        for (j, choice) in ranked.iter().enumerate().skip(1) {
            acc += choice.weight * ys[j * h + c];
        }
        if let Some((values, scale)) = shared {
            acc = match scale {
                Some(g) => acc + g * values[c],
                None => acc + values[c],
            };
        }
        out[c] = if a.accumulate { out[c] + acc } else { acc };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn experts(c: &[Choice]) -> Vec<usize> {
        c.iter().map(|c| c.expert).collect()
    }

    #[test]
    fn route_takes_the_largest_probabilities_in_order() {
        let c = route(&[0.0, 3.0, 1.0, 2.0], 2, false);
        assert_eq!(experts(&c), [1, 3]);
        let z: f32 = [0f32, 3.0, 1.0, 2.0].iter().map(|l| (l - 3.0).exp()).sum();
        assert_eq!(c[0].weight, 1.0 / z);
        assert!(c[0].weight > c[1].weight);
    }

    #[test]
    fn renormalized_weights_are_a_softmax_over_the_chosen_logits() {
        let c = route(&[0.0, 3.0, 1.0, 2.0], 2, true);
        let want = 1.0 / (1.0 + (-1f32).exp());
        assert!((c[0].weight - want).abs() < 1e-6, "{c:?}");
        assert!((c[0].weight + c[1].weight - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_expert() {
        assert_eq!(experts(&route(&[1.0, 2.0, 2.0, 2.0], 2, true)), [1, 2]);
        assert_eq!(experts(&route(&[0.0; 5], 5, false)), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn grouping_lists_rows_in_order_with_decode_rows_first() {
        // Rows: 0 → (2, 0), 1 → (0, 2), 2 → (2, 1).
        let pick = |e: &[usize]| -> Vec<Choice> {
            e.iter()
                .map(|&expert| Choice {
                    expert,
                    weight: 0.5,
                })
                .collect()
        };
        let choices = pick(&[2, 0, 0, 2, 2, 1]);
        let groups = group_by_expert(&choices, 2, 4, 2);
        let group = |expert, slots: &[(usize, usize)], decode_rows| ExpertGroup {
            expert,
            slots: slots
                .iter()
                .map(|&(row, rank)| Slot { row, rank })
                .collect(),
            decode_rows,
        };
        assert_eq!(
            groups,
            [
                group(0, &[(0, 1), (1, 0)], 2),
                group(1, &[(2, 1)], 0),
                group(2, &[(0, 0), (1, 1), (2, 0)], 2),
            ]
        );
    }

    proptest! {
        #[test]
        fn routing_is_a_ranked_subset_of_the_softmax(
            logits in proptest::collection::vec(-20f32..20.0, 1..40),
            k_seed in 0usize..1000,
            renormalize: bool,
        ) {
            let k = 1 + k_seed % logits.len();
            let c = route(&logits, k, renormalize);
            prop_assert_eq!(c.len(), k);
            let mut seen = experts(&c);
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), k);
            for w in c.windows(2) {
                prop_assert!(w[0].weight > w[1].weight
                    || (w[0].weight == w[1].weight && w[0].expert < w[1].expert));
            }
            // No unchosen expert has a larger logit than a chosen one.
            let least = c.iter().map(|c| logits[c.expert]).fold(f32::INFINITY, f32::min);
            for (e, &l) in logits.iter().enumerate() {
                if !c.iter().any(|c| c.expert == e) {
                    prop_assert!(l <= least);
                }
            }
            let total: f32 = c.iter().map(|c| c.weight).sum();
            if renormalize {
                prop_assert!((total - 1.0).abs() < 1e-5);
            } else {
                prop_assert!(total <= 1.0 + 1e-5);
            }
        }

        #[test]
        fn grouping_covers_every_slot_once(
            rows in proptest::collection::vec(
                proptest::collection::vec(-5f32..5.0, 6), 0..20),
            decode in 0usize..20,
        ) {
            let k = 3;
            let choices: Vec<Choice> = rows.iter().flat_map(|l| route(l, k, true)).collect();
            let decode = decode.min(rows.len());
            let groups = group_by_expert(&choices, k, 6, decode);
            let mut seen = vec![false; choices.len()];
            for g in &groups {
                prop_assert!(!g.slots.is_empty());
                prop_assert!(g.slots.windows(2).all(|w| w[0].row < w[1].row));
                prop_assert_eq!(
                    g.decode_rows,
                    g.slots.iter().filter(|s| s.row < decode).count()
                );
                for s in &g.slots {
                    let i = s.row * k + s.rank;
                    prop_assert_eq!(choices[i].expert, g.expert);
                    prop_assert!(!seen[i]);
                    seen[i] = true;
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
        }
    }
}
