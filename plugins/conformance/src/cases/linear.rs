//! `OP_LINEAR` in every weight format: decode and prefill rows, overwrite
//! and accumulate, and each row independent of the batch (bit for bit).

use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::{AbiResult, WeightSpec};
use kiln_plugin_abi::*;

use crate::data::{WeightData, random_block_layout, to_bytes};
use crate::report::weight_format_name;
use crate::run::Run;
use crate::side::Side;

pub(crate) const FORMATS: [KilnWeightFormat; 16] = [
    KILN_WEIGHT_F32,
    KILN_WEIGHT_F16,
    KILN_WEIGHT_BF16,
    KILN_WEIGHT_GGUF_Q8_0,
    KILN_WEIGHT_GGUF_Q4_0,
    KILN_WEIGHT_GGUF_Q4_1,
    KILN_WEIGHT_GGUF_Q5_0,
    KILN_WEIGHT_GGUF_Q5_1,
    KILN_WEIGHT_GGUF_IQ4_NL,
    KILN_WEIGHT_GGUF_Q2_K,
    KILN_WEIGHT_GGUF_Q3_K,
    KILN_WEIGHT_GGUF_Q4_K,
    KILN_WEIGHT_GGUF_Q5_K,
    KILN_WEIGHT_GGUF_Q6_K,
    KILN_WEIGHT_GGUF_IQ4_XS,
    KILN_WEIGHT_FP8_E4M3,
];

pub(crate) fn cases(run: &mut Run<'_>) {
    for format in FORMATS {
        let fname = weight_format_name(format);
        // Super-block formats need whole 256-weight rows.
        let k = match random_block_layout(format) {
            Some(l) if l.weights == 256 => 256usize,
            _ => 128usize,
        };
        let m = 96usize;
        if !run.dut_supports(ops::OP_LINEAR, Some(format), &format!("linear {fname}")) {
            continue;
        }
        let w = run.rng.vec(m * k, 0.2);
        let weight = WeightData::new(format, &w, m);
        let bias = run.rng.vec(m, 0.1);
        let lin = LinearCase {
            format,
            weight: &weight,
            bias: &bias,
            m,
            k,
        };
        // (rows, leading decode rows)
        for (n, decode) in [(1usize, 1usize), (5, 5), (70, 0), (70, 6)] {
            for acc in [Accumulate::Overwrite, Accumulate::Add] {
                let x = run.rng.vec(n * k, 1.0);
                let init = run.rng.vec(n * m, 1.0);
                let got = lin.run(&run.dut, &x, &init, decode, acc);
                let want = lin.run(&run.reference, &x, &init, decode, acc);
                run.compare(
                    ops::OP_LINEAR,
                    Some(format),
                    format!("linear {fname} n={n} decode={decode} {acc:?}"),
                    got,
                    want,
                    run.tolerance,
                );
            }
        }
        // Batch invariance: a row's result must not depend on the other rows,
        // across chunk boundaries of batched kernels (bit for bit).
        let n = 300usize;
        let x = run.rng.vec(n * k, 1.0);
        let init = vec![0.0; n * m];
        let d = &run.dut;
        let batched = lin.run(d, &x, &init, 8, Accumulate::Overwrite).map(|all| {
            let mut rows = all[..3 * m].to_vec();
            rows.extend_from_slice(&all[(n - 40) * m..]);
            rows
        });
        let alone = lin
            .run(d, &x[..3 * k], &init[..3 * m], 3, Accumulate::Overwrite)
            .and_then(|mut rows| {
                let tail = &x[(n - 40) * k..];
                rows.extend(lin.run(d, tail, &init[..40 * m], 0, Accumulate::Overwrite)?);
                Ok(rows)
            });
        run.compare(
            ops::OP_LINEAR,
            Some(format),
            format!("linear {fname} rows independent of the batch"),
            batched,
            alone,
            0.0,
        );
    }
}

/// One weight (and bias) run through [`ops::linear`] on either side.
struct LinearCase<'a> {
    format: KilnWeightFormat,
    weight: &'a WeightData,
    bias: &'a [f32],
    m: usize,
    k: usize,
}

impl LinearCase<'_> {
    fn run(
        &self,
        s: &Side<'_>,
        x: &[f32],
        init: &[f32],
        decode_rows: usize,
        acc: Accumulate,
    ) -> AbiResult<Vec<f32>> {
        let (m, k) = (self.m, self.k);
        let n = x.len() / k;
        let wt = s
            .dev
            .prepare_weight(&self.weight.spec("w", self.format, m as u64, k as u64))?;
        let bt = s.dev.prepare_weight(&WeightSpec::single(
            "b",
            KILN_WEIGHT_F32,
            1,
            m as u64,
            &to_bytes(KILN_F32, self.bias),
        ))?;
        let xb = s.acts(x)?;
        let ob = s.acts(init)?;
        s.dev.execute(&[ops::linear(ops::Linear {
            x: xb.view(0, s.act, &[n as u64, k as u64]),
            weight: wt.raw(),
            bias: bt.raw(),
            out: ob.view(0, s.act, &[n as u64, m as u64]),
            accumulate: acc,
            decode_rows: decode_rows as u64,
        })])?;
        s.read(&ob, s.act, n * m)
    }
}
