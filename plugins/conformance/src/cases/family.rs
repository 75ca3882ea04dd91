//! The operations families beyond Llama need: LayerNorm (with and without
//! a bias), every activation kind plain and gated, scaling (overwrite and
//! accumulate), soft-capping; each also checked row by row against the
//! whole batch, bit for bit.

use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::run::Run;
use crate::side::Side;

pub(crate) fn cases(run: &mut Run<'_>) {
    let (n, h) = (9usize, 96usize);
    let x = run.rng.vec(n * h, 2.0);
    let y = run.rng.vec(n * h, 1.0);
    let gamma: Vec<f32> = run.rng.vec(h, 0.5).iter().map(|g| 1.0 + g).collect();
    let beta = run.rng.vec(h, 0.3);
    let exec = |s: &Side<'_>, which: &str, rows: usize| -> AbiResult<Vec<f32>> {
        let (xs, ys) = (&x[..rows * h], &y[..rows * h]);
        let weights = if which.starts_with("layer_norm") {
            Some((s.vector("gamma", &gamma)?, s.vector("beta", &beta)?))
        } else {
            None
        };
        let (g, b) = weights
            .as_ref()
            .map_or((KilnWeight::NULL, KilnWeight::NULL), |(g, b)| {
                (g.raw(), b.raw())
            });
        let (xb, yb, ob) = (s.acts(xs)?, s.acts(ys)?, s.acts(ys)?);
        let dims = [rows as u64, h as u64];
        let (xv, yv, ov) = (
            xb.view(0, s.act, &dims),
            yb.view(0, s.act, &dims),
            ob.view(0, s.act, &dims),
        );
        let layer_norm = |beta| {
            ops::layer_norm(ops::LayerNorm {
                x: xv,
                gamma: g,
                beta,
                eps: 1e-5,
                out: ov,
            })
        };
        let act = |kind: &str| match kind {
            "silu" => ops::ACT_SILU,
            "gelu_tanh" => ops::ACT_GELU_TANH,
            "gelu" => ops::ACT_GELU,
            _ => ops::ACT_RELU,
        };
        let op = match which.split(' ').collect::<Vec<_>>()[..] {
            ["layer_norm"] => layer_norm(KilnWeight::NULL),
            ["layer_norm", "bias"] => layer_norm(b),
            ["activation", kind] => ops::activation(act(kind), xv, KilnTensor::NONE, ov),
            ["activation", kind, "gated"] => ops::activation(act(kind), xv, yv, ov),
            ["scale"] => ops::scale(xv, 0.37, ov, Accumulate::Overwrite),
            ["scale", "accumulate"] => ops::scale(xv, 1.7, ov, Accumulate::Add),
            _ => ops::softcap(xv, 1.5, ov),
        };
        s.dev.execute(&[op])?;
        s.read(&ob, s.act, rows * h)
    };
    let mut cases = vec![
        ("layer_norm".to_string(), ops::OP_LAYER_NORM),
        ("layer_norm bias".to_string(), ops::OP_LAYER_NORM),
        ("scale".to_string(), ops::OP_SCALE),
        ("scale accumulate".to_string(), ops::OP_SCALE),
        ("softcap".to_string(), ops::OP_SOFTCAP),
    ];
    for kind in ["silu", "gelu_tanh", "gelu", "relu"] {
        cases.push((format!("activation {kind}"), ops::OP_ACTIVATION));
        cases.push((format!("activation {kind} gated"), ops::OP_ACTIVATION));
    }
    for (which, opcode) in cases {
        if !run.dut_supports(opcode, None, &which) {
            continue;
        }
        let all = exec(&run.dut, &which, n);
        let want = exec(&run.reference, &which, n);
        run.compare(
            opcode,
            None,
            which.clone(),
            all.clone(),
            want,
            run.tolerance,
        );
        let first_rows = all.map(|v| v[..2 * h].to_vec());
        let alone = exec(&run.dut, &which, 2);
        run.compare(
            opcode,
            None,
            format!("{which} rows independent of the batch"),
            first_rows,
            alone,
            0.0,
        );
    }
}
