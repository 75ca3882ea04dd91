//! Embedding lookups in every table format, row gathers, block copies and
//! casts.

use kiln_plugin_abi::ops;
use kiln_plugin_abi::safe::{AbiResult, WeightSpec};
use kiln_plugin_abi::*;

use crate::data::{i32_bytes, weight_bytes};
use crate::report::weight_format_name;
use crate::run::Run;
use crate::side::Side;

pub(crate) fn cases(run: &mut Run<'_>) {
    embedding_cases(run);
    let x = run.rng.vec(5 * 16, 1.0);
    let name = "gather_rows";
    if run.dut_supports(ops::OP_GATHER_ROWS, None, name) {
        let exec = |s: &Side<'_>| -> AbiResult<Vec<f32>> {
            let xb = s.acts(&x)?;
            let ib = s.upload(&i32_bytes(&[4, 0, 4]))?;
            let ob = s.acts(&[0.0; 3 * 16])?;
            s.dev.execute(&[ops::gather_rows(
                xb.view(0, s.act, &[5, 16]),
                ib.view(0, KILN_I32, &[3]),
                ob.view(0, s.act, &[3, 16]),
            )])?;
            s.read(&ob, s.act, 3 * 16)
        };
        let (got, want) = (exec(&run.dut), exec(&run.reference));
        run.compare(
            ops::OP_GATHER_ROWS,
            None,
            name.into(),
            got,
            want,
            run.tolerance,
        );
    }
    let caches = (run.rng.vec(6 * 64, 1.0), run.rng.vec(6 * 64, 1.0));
    let name = "copy_blocks";
    if run.dut_supports(ops::OP_COPY_BLOCKS, None, name) {
        let exec = |s: &Side<'_>| -> AbiResult<Vec<f32>> {
            let cdims = [6u64, 4, 2, 8];
            let (kc, vc) = (s.acts(&caches.0)?, s.acts(&caches.1)?);
            let pairs = s.upload(&i32_bytes(&[3, 0, 1, 5]))?;
            s.dev.execute(&[ops::copy_blocks(
                kc.view(0, s.act, &cdims),
                vc.view(0, s.act, &cdims),
                pairs.view(0, KILN_I32, &[2, 2]),
            )])?;
            let mut out = s.read(&kc, s.act, caches.0.len())?;
            out.extend(s.read(&vc, s.act, caches.1.len())?);
            Ok(out)
        };
        let (got, want) = (exec(&run.dut), exec(&run.reference));
        run.compare(
            ops::OP_COPY_BLOCKS,
            None,
            name.into(),
            got,
            want,
            run.tolerance,
        );
    }
    let name = "cast to f32";
    if run.dut_supports(ops::OP_CAST, None, name) {
        let exec = |s: &Side<'_>| -> AbiResult<Vec<f32>> {
            let xb = s.acts(&x)?;
            let ob = s.upload(&[0u8; 5 * 16 * 4])?;
            s.dev.execute(&[ops::cast(
                xb.view(0, s.act, &[5, 16]),
                ob.view(0, KILN_F32, &[5, 16]),
            )])?;
            s.read(&ob, KILN_F32, 5 * 16)
        };
        let (got, want) = (exec(&run.dut), exec(&run.reference));
        run.compare(ops::OP_CAST, None, name.into(), got, want, run.tolerance);
    }
}

fn embedding_cases(run: &mut Run<'_>) {
    let (vocab, h) = (50usize, 64usize);
    let table = run.rng.vec(vocab * h, 1.0);
    let ids: Vec<i32> = vec![0, 7, 49, 7, 13];
    for format in [KILN_WEIGHT_GGUF_Q8_0, KILN_WEIGHT_BF16, KILN_WEIGHT_F32] {
        let name = format!("embedding {}", weight_format_name(format));
        if !run.dut_supports(ops::OP_EMBEDDING, Some(format), &name) {
            continue;
        }
        let raw = weight_bytes(format, &table);
        let exec = |s: &Side<'_>| -> AbiResult<Vec<f32>> {
            let w = s.dev.prepare_weight(&WeightSpec::single(
                "e",
                format,
                vocab as u64,
                h as u64,
                &raw,
            ))?;
            let ib = s.upload(&i32_bytes(&ids))?;
            let ob = s.acts(&vec![0.0; ids.len() * h])?;
            s.dev.execute(&[ops::embedding(
                ib.view(0, KILN_I32, &[ids.len() as u64]),
                w.raw(),
                ob.view(0, s.act, &[ids.len() as u64, h as u64]),
            )])?;
            s.read(&ob, s.act, ids.len() * h)
        };
        let (got, want) = (exec(&run.dut), exec(&run.reference));
        run.compare(
            ops::OP_EMBEDDING,
            Some(format),
            name,
            got,
            want,
            run.tolerance,
        );
    }
}
