//! RMS norm (plain and fused with the residual add), SwiGLU and add.

use kiln_plugin_abi::ops;
use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::run::Run;
use crate::side::Side;

pub(crate) fn cases(run: &mut Run<'_>) {
    let (n, h) = (7usize, 96usize);
    let x = run.rng.vec(n * h, 2.0);
    let y = run.rng.vec(n * h, 2.0);
    let gamma = run.rng.vec(h, 1.0);
    let exec = |s: &Side<'_>, which: &str| -> AbiResult<Vec<f32>> {
        let normalizes = which.ends_with("rms_norm");
        let g = if normalizes {
            Some(s.vector("gamma", &gamma)?)
        } else {
            None
        };
        let gamma = g.as_ref().map_or(KilnWeight::NULL, |g| g.raw());
        let (xb, yb, ob) = (s.acts(&x)?, s.acts(&y)?, s.acts(&vec![0.0; n * h])?);
        let dims = [n as u64, h as u64];
        let (xv, yv, ov) = (
            xb.view(0, s.act, &dims),
            yb.view(0, s.act, &dims),
            ob.view(0, s.act, &dims),
        );
        let op = match which {
            "rms_norm" => ops::rms_norm(xv, gamma, 1e-5, ov),
            "add_rms_norm" => ops::add_rms_norm(ops::AddRmsNorm {
                x: xv,
                residual: yv,
                gamma,
                eps: 1e-5,
                out: ov,
            }),
            "silu_mul" => ops::silu_mul(xv, yv, ov),
            _ => ops::add(xv, yv, ov),
        };
        s.dev.execute(&[op])?;
        let mut out = s.read(&ob, s.act, n * h)?;
        if which == "add_rms_norm" {
            out.extend(s.read(&yb, s.act, n * h)?);
        }
        Ok(out)
    };
    let cases = [
        ("rms_norm", ops::OP_RMS_NORM, Some(KILN_WEIGHT_F32)),
        ("add_rms_norm", ops::OP_ADD_RMS_NORM, Some(KILN_WEIGHT_F32)),
        ("silu_mul", ops::OP_SILU_MUL, None),
        ("add", ops::OP_ADD, None),
    ];
    for (which, opcode, format) in cases {
        if run.dut_supports(opcode, format, which) {
            let got = exec(&run.dut, which);
            let want = exec(&run.reference, which);
            run.compare(opcode, format, which.to_string(), got, want, run.tolerance);
        }
    }
}
