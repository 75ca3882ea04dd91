//! `OP_SAMPLE` (f32 logits whatever the activation type): greedy and seeded
//! draws give the same tokens as the reference, with and without
//! adjustments; log-probabilities agree to 1e-4 and top ids exactly.

use kiln_plugin_abi::ops;
use kiln_plugin_abi::safe::{AbiResult, Buffer};
use kiln_plugin_abi::*;

use crate::data::to_bytes;
use crate::run::Run;
use crate::side::Side;

pub(crate) fn cases(run: &mut Run<'_>) {
    if !run.dut_supports(ops::OP_SAMPLE, None, "sample")
        || !run.reference.dev.supports(ops::OP_SAMPLE, None, KILN_F32)
    {
        return;
    }
    let (m, vocab, top) = (8usize, 3000usize, 4usize);
    let logits = run.rng.vec(m * vocab, 4.0);
    let adjust = [
        KilnLogitAdjust {
            token: 11,
            add_before: f32::NEG_INFINITY,
            repeat: 0,
            add_after: 0.0,
        },
        KilnLogitAdjust {
            token: 57,
            add_before: 2.5,
            repeat: 1,
            add_after: -0.5,
        },
        KilnLogitAdjust {
            token: 900,
            add_before: 0.0,
            repeat: 1,
            add_after: 0.0,
        },
    ];
    let params: Vec<KilnSampleParams> = (0..m)
        .map(|i| KilnSampleParams {
            temperature: if i % 2 == 0 {
                0.0
            } else {
                0.7 + 0.1 * i as f32
            },
            top_k: if i == 3 { 20 } else { 0 },
            top_p: if i == 5 { 0.8 } else { 1.0 },
            min_p: if i == 7 { 0.05 } else { 0.0 },
            seed: 1234 + i as u64,
            counter: 3 * i as u64,
            repetition_penalty: 1.4,
            adjust_start: 0,
            adjust_count: if i < 4 { adjust.len() as u32 } else { 0 },
            flags: 0,
        })
        .collect();
    let exec = |s: &Side<'_>| -> AbiResult<(Vec<f32>, Vec<f32>)> {
        let lb = s.upload(&to_bytes(KILN_F32, &logits))?;
        let pbytes: Vec<u8> = params.iter().flat_map(KilnSampleParams::to_bytes).collect();
        let pb = s.upload(&pbytes)?;
        let abytes: Vec<u8> = adjust.iter().flat_map(KilnLogitAdjust::to_bytes).collect();
        let ab = s.upload(&abytes)?;
        let (ib, lpb) = (s.upload(&[0; 32])?, s.upload(&[0; 32])?);
        let (tib, tlb) = (
            s.upload(&vec![0; m * top * 4])?,
            s.upload(&vec![0; m * top * 4])?,
        );
        s.dev.execute(&[ops::sample(ops::Sample {
            logits: lb.view(0, KILN_F32, &[m as u64, vocab as u64]),
            params: pb.view(0, KILN_U8, &[pbytes.len() as u64]),
            out_ids: ib.view(0, KILN_I32, &[m as u64]),
            out_logprobs: lpb.view(0, KILN_F32, &[m as u64]),
            out_top_ids: tib.view(0, KILN_I32, &[m as u64, top as u64]),
            out_top_logprobs: tlb.view(0, KILN_F32, &[m as u64, top as u64]),
            adjustments: ab.view(0, KILN_U8, &[abytes.len() as u64]),
            num_top: top as i64,
            allowed: KilnTensor::NONE,
        })])?;
        let words = |b: &Buffer, n: usize| -> AbiResult<Vec<u32>> {
            let mut bytes = vec![0u8; n * 4];
            s.dev.read(b, 0, &mut bytes)?;
            Ok(bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let lps = words(&lpb, m)?
            .into_iter()
            .chain(words(&tlb, m * top)?)
            .map(f32::from_bits)
            .collect();
        let ids = words(&ib, m)?
            .into_iter()
            .chain(words(&tib, m * top)?)
            .map(|v| v as f32)
            .collect();
        Ok((ids, lps))
    };
    let (got, want) = (exec(&run.dut), exec(&run.reference));
    let split = |r: &AbiResult<(Vec<f32>, Vec<f32>)>| {
        (r.clone().map(|(ids, _)| ids), r.clone().map(|(_, lps)| lps))
    };
    let ((got_ids, got_lps), (want_ids, want_lps)) = (split(&got), split(&want));
    run.compare(
        ops::OP_SAMPLE,
        None,
        "sample: drawn and top ids".into(),
        got_ids,
        want_ids,
        0.0,
    );
    run.compare(
        ops::OP_SAMPLE,
        None,
        "sample: log-probabilities".into(),
        got_lps,
        want_lps,
        1e-4,
    );
}
