//! `OP_ROPE` in both layouts, queries and keys.

use kiln_plugin_abi::ops;
use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::data::{i32_bytes, to_bytes};
use crate::run::Run;
use crate::side::Side;

pub(crate) fn cases(run: &mut Run<'_>) {
    let (n, heads, kv_heads, hd, max_pos) = (6usize, 4usize, 2usize, 32usize, 64usize);
    let q = run.rng.vec(n * heads * hd, 1.0);
    let k = run.rng.vec(n * kv_heads * hd, 1.0);
    let positions: Vec<i32> = vec![0, 1, 5, 17, 40, 63];
    let half = hd / 2;
    let angle = |i: usize| (i / half) as f32 * 0.1 * (1.0 + (i % half) as f32);
    let cos: Vec<f32> = (0..max_pos * half).map(|i| angle(i).cos()).collect();
    let sin: Vec<f32> = (0..max_pos * half).map(|i| angle(i).sin()).collect();
    for (style, name) in [
        (ops::ROPE_NEOX, "neox"),
        (ops::ROPE_INTERLEAVED, "interleaved"),
    ] {
        if !run.dut_supports(ops::OP_ROPE, None, &format!("rope {name}")) {
            continue;
        }
        let exec = |s: &Side<'_>| -> AbiResult<Vec<f32>> {
            let (qb, kb) = (s.acts(&q)?, s.acts(&k)?);
            let pb = s.upload(&i32_bytes(&positions))?;
            let cb = s.upload(&to_bytes(KILN_F32, &cos))?;
            let sb = s.upload(&to_bytes(KILN_F32, &sin))?;
            s.dev.execute(&[ops::rope(ops::Rope {
                q: qb.view(0, s.act, &[n as u64, (heads * hd) as u64]),
                k: kb.view(0, s.act, &[n as u64, (kv_heads * hd) as u64]),
                positions: pb.view(0, KILN_I32, &[n as u64]),
                cos: cb.view(0, KILN_F32, &[max_pos as u64, half as u64]),
                sin: sb.view(0, KILN_F32, &[max_pos as u64, half as u64]),
                head_dim: hd as i64,
                rotary_dim: hd as i64,
                style,
            })])?;
            let mut out = s.read(&qb, s.act, q.len())?;
            out.extend(s.read(&kb, s.act, k.len())?);
            Ok(out)
        };
        let (got, want) = (exec(&run.dut), exec(&run.reference));
        run.compare(
            ops::OP_ROPE,
            None,
            format!("rope {name}"),
            got,
            want,
            run.tolerance,
        );
    }
}
