//! `OP_MOE` in every weight format: a lone decode row, decode rows mixed
//! with prefill rows, both routing modes, with no, an ungated and a gated
//! shared expert, overwrite and accumulate; and each row independent of the
//! batch (bit for bit).
//!
//! Router logits are distinct multiples of 3/8 per row, exact in every
//! activation dtype, so the device under test and the reference route each
//! row to the same experts even in 16-bit activations; one row holds a tie
//! at the k-th place, which must go to the lower expert id.

use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::cases::linear::FORMATS;
use crate::data::{Rng, WeightData, random_block_layout};
use crate::report::weight_format_name;
use crate::run::Run;
use crate::side::Side;

const EXPERTS: usize = 6;
const TOP_K: usize = 2;

/// What runs alongside the routed experts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shared {
    None,
    Ungated,
    Gated,
}

/// One call's settings.
#[derive(Debug, Clone, Copy)]
struct Variant {
    rows: usize,
    decode_rows: usize,
    routing: i64,
    shared: Shared,
    activation: i64,
    accumulate: Accumulate,
}

impl Variant {
    fn name(&self, format: &str) -> String {
        let routing = if self.routing == ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM {
            "renorm"
        } else {
            "topk"
        };
        format!(
            "moe {format} n={} decode={} {routing} shared={:?} {:?}",
            self.rows, self.decode_rows, self.shared, self.accumulate
        )
    }
}

/// A random layer: stacked weights in one format plus per-row inputs.
struct MoeCase {
    format: KilnWeightFormat,
    hidden: usize,
    intermediate: usize,
    gate_up: WeightData,
    down: WeightData,
}

/// `rows` rows of router logits: each a permutation of distinct multiples of
/// 3/8, row 1 with a tie between the experts at ranks k and k+1.
fn router_logits(rng: &mut Rng, rows: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * EXPERTS);
    for r in 0..rows {
        let mut order: Vec<usize> = (0..EXPERTS).collect();
        for i in (1..EXPERTS).rev() {
            let j = ((rng.next_f32() + 1.0) * 0.5 * (i + 1) as f32) as usize;
            order.swap(i, j.min(i));
        }
        let mut row: Vec<f32> = order.iter().map(|&v| v as f32 * 0.375 - 1.125).collect();
        if r == 1 {
            let next = EXPERTS as f32 - 1.0 - TOP_K as f32;
            let tied = next * 0.375 - 1.125;
            for l in &mut row {
                if *l == tied {
                    *l += 0.375;
                }
            }
        }
        out.extend(row);
    }
    out
}

pub(crate) fn cases(run: &mut Run<'_>) {
    for format in FORMATS {
        let fname = weight_format_name(format);
        if !run.dut_supports(ops::OP_MOE, Some(format), &format!("moe {fname}")) {
            continue;
        }
        // Block formats need whole blocks per row in both projections.
        let (hidden, intermediate) = match random_block_layout(format) {
            Some(l) if l.weights == 256 => (256usize, 256usize),
            _ => (64usize, 32usize),
        };
        let gate_up = run.rng.vec(
            EXPERTS * 2 * intermediate * hidden,
            2.0 / (hidden as f32).sqrt(),
        );
        let down = run.rng.vec(
            EXPERTS * hidden * intermediate,
            2.0 / (intermediate as f32).sqrt(),
        );
        let case = MoeCase {
            format,
            hidden,
            intermediate,
            gate_up: WeightData::new(format, &gate_up, EXPERTS * 2 * intermediate),
            down: WeightData::new(format, &down, EXPERTS * hidden),
        };
        let variants = [
            Variant {
                rows: 1,
                decode_rows: 1,
                routing: ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
                shared: Shared::None,
                activation: ops::ACT_SILU,
                accumulate: Accumulate::Overwrite,
            },
            Variant {
                rows: 7,
                decode_rows: 3,
                routing: ops::MOE_ROUTING_SOFTMAX_TOPK,
                shared: Shared::Gated,
                activation: ops::ACT_SILU,
                accumulate: Accumulate::Add,
            },
            Variant {
                rows: 21,
                decode_rows: 0,
                routing: ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
                shared: Shared::Ungated,
                activation: ops::ACT_GELU_TANH,
                accumulate: Accumulate::Overwrite,
            },
        ];
        for v in variants {
            let inputs = Inputs::random(&mut run.rng, v.rows, hidden);
            let got = case.run(&run.dut, &inputs, v);
            let want = case.run(&run.reference, &inputs, v);
            run.compare(
                ops::OP_MOE,
                Some(format),
                v.name(fname),
                got,
                want,
                run.tolerance,
            );
        }
        // Batch invariance: leading decode rows and trailing prefill rows
        // give the same bits alone as among other rows.
        let batch = Variant {
            rows: 24,
            decode_rows: 4,
            routing: ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
            shared: Shared::Gated,
            activation: ops::ACT_SILU,
            accumulate: Accumulate::Add,
        };
        let inputs = Inputs::random(&mut run.rng, batch.rows, hidden);
        let d = &run.dut;
        let h = hidden;
        let batched = case.run(d, &inputs, batch).map(|all| {
            let mut rows = all[..3 * h].to_vec();
            rows.extend_from_slice(&all[(batch.rows - 5) * h..]);
            rows
        });
        let decode_alone = Variant {
            rows: 3,
            decode_rows: 3,
            ..batch
        };
        let prefill_alone = Variant {
            rows: 5,
            decode_rows: 0,
            ..batch
        };
        let alone = case
            .run(d, &inputs.rows(0..3), decode_alone)
            .and_then(|mut rows| {
                let tail = inputs.rows(batch.rows - 5..batch.rows);
                rows.extend(case.run(d, &tail, prefill_alone)?);
                Ok(rows)
            });
        run.compare(
            ops::OP_MOE,
            Some(format),
            format!("moe {fname} rows independent of the batch"),
            batched,
            alone,
            0.0,
        );
    }
}

/// Per-row inputs of one call.
struct Inputs {
    hidden: usize,
    x: Vec<f32>,
    logits: Vec<f32>,
    shared_out: Vec<f32>,
    shared_gate: Vec<f32>,
    init: Vec<f32>,
}

impl Inputs {
    fn random(rng: &mut Rng, rows: usize, hidden: usize) -> Inputs {
        Inputs {
            hidden,
            x: rng.vec(rows * hidden, 1.0),
            logits: router_logits(rng, rows),
            shared_out: rng.vec(rows * hidden, 0.5),
            shared_gate: rng.vec(rows, 3.0),
            init: rng.vec(rows * hidden, 1.0),
        }
    }

    fn rows(&self, r: std::ops::Range<usize>) -> Inputs {
        let h = self.hidden;
        let wide = |v: &[f32], w: usize| v[r.start * w..r.end * w].to_vec();
        Inputs {
            hidden: h,
            x: wide(&self.x, h),
            logits: wide(&self.logits, EXPERTS),
            shared_out: wide(&self.shared_out, h),
            shared_gate: wide(&self.shared_gate, 1),
            init: wide(&self.init, h),
        }
    }
}

impl MoeCase {
    fn run(&self, s: &Side<'_>, inputs: &Inputs, v: Variant) -> AbiResult<Vec<f32>> {
        let (n, h, i) = (v.rows as u64, self.hidden as u64, self.intermediate as u64);
        let e = EXPERTS as u64;
        let gate_up = s.dev.prepare_weight(&self.gate_up.spec(
            "experts.gate_up",
            self.format,
            e * 2 * i,
            h,
        ))?;
        let down = s
            .dev
            .prepare_weight(&self.down.spec("experts.down", self.format, e * h, i))?;
        let xb = s.acts(&inputs.x)?;
        let lb = s.acts(&inputs.logits)?;
        let sb = s.acts(&inputs.shared_out)?;
        let gb = s.acts(&inputs.shared_gate)?;
        let ob = s.acts(&inputs.init)?;
        let (shared_out, shared_gate) = match v.shared {
            Shared::None => (KilnTensor::NONE, KilnTensor::NONE),
            Shared::Ungated => (sb.view(0, s.act, &[n, h]), KilnTensor::NONE),
            Shared::Gated => (sb.view(0, s.act, &[n, h]), gb.view(0, s.act, &[n, 1])),
        };
        s.dev.execute(&[ops::moe(ops::Moe {
            x: xb.view(0, s.act, &[n, h]),
            router_logits: lb.view(0, s.act, &[n, e]),
            out: ob.view(0, s.act, &[n, h]),
            shared_out,
            shared_gate,
            gate_up: gate_up.raw(),
            down: down.raw(),
            num_experts: EXPERTS as i64,
            top_k: TOP_K as i64,
            decode_rows: v.decode_rows as u64,
            activation: v.activation,
            routing: v.routing,
            accumulate: v.accumulate,
        })])?;
        s.read(&ob, s.act, v.rows * self.hidden)
    }
}
