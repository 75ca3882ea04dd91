//! The backend conformance suite: every operation of a device under test is
//! run on random inputs and compared with the CPU backend, the reference.
//! Any backend plugin can be checked with [`check_device`].

use half::{bf16, f16};
use kiln_kernels_cpu::weights::WeightFormat;
use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::{Buffer, Device, WeightSpec};
use kiln_plugin_abi::*;

/// One failed comparison.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// What was compared.
    pub case: String,
    /// Largest error relative to the reference's RMS.
    pub error: f64,
    /// The tolerance.
    pub tolerance: f64,
}

/// The report of a conformance run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cases that passed, with their errors.
    pub passed: Vec<(String, f64)>,
    /// Cases that failed.
    pub failed: Vec<Mismatch>,
    /// Cases not run because the device under test declares them unsupported.
    pub skipped: Vec<String>,
}

use crate::Rng;

fn to_bytes(dtype: KilnDType, v: &[f32]) -> Vec<u8> {
    match dtype {
        KILN_F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        KILN_BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn from_bytes(dtype: KilnDType, b: &[u8]) -> Vec<f32> {
    match dtype {
        KILN_F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        KILN_BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A device with a helper to upload and read tensors.
struct Side<'a> {
    dev: &'a Device,
    act: KilnDType,
}

impl Side<'_> {
    fn upload(&self, _dtype: KilnDType, data: &[u8]) -> Buffer {
        let b = self.dev.alloc(data.len().max(4) as u64).unwrap();
        self.dev.write(&b, 0, data).unwrap();
        b
    }
    fn acts(&self, v: &[f32]) -> Buffer {
        self.upload(self.act, &to_bytes(self.act, v))
    }
    fn read(&self, b: &Buffer, dtype: KilnDType, n: usize) -> Vec<f32> {
        let mut out = vec![0u8; n * dtype_size(dtype) as usize];
        self.dev.read(b, 0, &mut out).unwrap();
        from_bytes(dtype, &out)
    }
}

fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    let rms = (want.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64)
        .sqrt()
        .max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| ((*a - *b) as f64).abs())
        .fold(0.0, f64::max)
        / rms
}

fn record(report: &mut Report, case: String, got: &[f32], want: &[f32], tolerance: f64) {
    let error = if got.len() == want.len() {
        rel_error(got, want)
    } else {
        f64::INFINITY
    };
    let error = if got.iter().any(|v| !v.is_finite()) {
        f64::INFINITY
    } else {
        error
    };
    if error <= tolerance {
        report.passed.push((case, error));
    } else {
        report.failed.push(Mismatch {
            case,
            error,
            tolerance,
        });
    }
}

/// Whether the device under test declares `query` (an opcode, with a weight
/// format or none) supported in its activation dtype; if not, `case` is
/// recorded as skipped.
fn supported(
    d: &Side<'_>,
    query: (u32, Option<KilnWeightFormat>),
    case: &str,
    report: &mut Report,
) -> bool {
    let ok = d.dev.supports(query.0, query.1, d.act);
    if !ok {
        report.skipped.push(case.to_string());
    }
    ok
}

fn quantize_q8_0(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in v.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d = amax / 127.0;
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|x| {
            if d > 0.0 {
                (x / d).round() as i8 as u8
            } else {
                0
            }
        }));
    }
    out
}

fn quantize_q4(v: &[f32], with_min: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for b in v.chunks_exact(32) {
        let (min, max) = b
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if with_min {
            let d = (max - min) / 15.0;
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            let q = |x: f32| (((x - min) / d.max(1e-12)) + 0.5).clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
        } else {
            let m = if max.abs() > min.abs() { max } else { min };
            let d = m / -8.0;
            out.extend(f16::from_f32(d).to_le_bytes());
            let q = |x: f32| ((x / if d == 0.0 { 1.0 } else { d }) + 8.5).clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
        }
    }
    out
}

/// The GGUF formats that have no quantizer here, as the CPU kernels name
/// them: their cases use random blocks with modest f16 scales instead.
fn random_block_format(format: KilnWeightFormat) -> Option<WeightFormat> {
    Some(match format {
        KILN_WEIGHT_GGUF_Q5_0 => WeightFormat::Q5_0,
        KILN_WEIGHT_GGUF_Q5_1 => WeightFormat::Q5_1,
        KILN_WEIGHT_GGUF_Q2_K => WeightFormat::Q2_K,
        KILN_WEIGHT_GGUF_Q3_K => WeightFormat::Q3_K,
        KILN_WEIGHT_GGUF_Q4_K => WeightFormat::Q4_K,
        KILN_WEIGHT_GGUF_Q5_K => WeightFormat::Q5_K,
        KILN_WEIGHT_GGUF_Q6_K => WeightFormat::Q6_K,
        KILN_WEIGHT_GGUF_IQ4_NL => WeightFormat::IQ4_NL,
        KILN_WEIGHT_GGUF_IQ4_XS => WeightFormat::IQ4_XS,
        _ => return None,
    })
}

/// Random source blocks of `fmt` for `v.len()` weights (the values only
/// seed the bytes); `d`/`dmin` in [1e-3, 5e-3] so outputs stay O(1).
fn random_blocks(fmt: WeightFormat, v: &[f32]) -> Vec<u8> {
    let mut rng = Rng(v.len() as u64 ^ 0x5EED);
    let blocks = v.len() / fmt.block_size();
    let mut raw: Vec<u8> = (0..blocks * fmt.block_bytes())
        .map(|_| ((rng.next_f32() + 1.0) * 127.5) as u8)
        .collect();
    for blk in raw.chunks_exact_mut(fmt.block_bytes()) {
        for &at in fmt.f16_fields() {
            let d = 1e-3 + (rng.next_f32() + 1.0) * 2e-3;
            blk[at..at + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        }
    }
    raw
}

fn weight_bytes(format: KilnWeightFormat, v: &[f32]) -> Vec<u8> {
    if let Some(fmt) = random_block_format(format) {
        return random_blocks(fmt, v);
    }
    match format {
        KILN_WEIGHT_F16 => to_bytes(KILN_F16, v),
        KILN_WEIGHT_BF16 => to_bytes(KILN_BF16, v),
        KILN_WEIGHT_GGUF_Q8_0 => quantize_q8_0(v),
        KILN_WEIGHT_GGUF_Q4_0 => quantize_q4(v, false),
        KILN_WEIGHT_GGUF_Q4_1 => quantize_q4(v, true),
        _ => to_bytes(KILN_F32, v),
    }
}

/// Compare `dut` (activations in `act`) with `reference` (a CPU device, f32).
/// Tolerances are relative to each output's RMS: 1e-4 for f32, 2e-2 for
/// 16-bit activations (one bf16 rounding is 4e-3). Cases `dut` declares
/// unsupported (`Device::supports`) are not run but listed in [`Report::skipped`].
pub fn check_device(dut: &Device, reference: &Device, act: KilnDType) -> Report {
    let mut report = Report::default();
    let tol = if act == KILN_F32 { 1e-4 } else { 3e-2 };
    let d = Side { dev: dut, act };
    let r = Side {
        dev: reference,
        act: KILN_F32,
    };
    let mut rng = Rng(7);
    linear_cases(&d, &r, &mut rng, tol, &mut report);
    norm_and_elementwise_cases(&d, &r, &mut rng, tol, &mut report);
    family_op_cases(&d, &r, &mut rng, tol, &mut report);
    rope_cases(&d, &r, &mut rng, tol, &mut report);
    attention_cases(&d, &r, &mut rng, tol, &mut report);
    embedding_cases(&d, &r, &mut rng, tol, &mut report);
    sample_cases(&d, &r, &mut rng, &mut report);
    report
}

fn linear_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, tol: f64, report: &mut Report) {
    let formats = [
        (KILN_WEIGHT_F32, "f32"),
        (KILN_WEIGHT_F16, "f16"),
        (KILN_WEIGHT_BF16, "bf16"),
        (KILN_WEIGHT_GGUF_Q8_0, "q8_0"),
        (KILN_WEIGHT_GGUF_Q4_0, "q4_0"),
        (KILN_WEIGHT_GGUF_Q4_1, "q4_1"),
        (KILN_WEIGHT_GGUF_Q5_0, "q5_0"),
        (KILN_WEIGHT_GGUF_Q5_1, "q5_1"),
        (KILN_WEIGHT_GGUF_IQ4_NL, "iq4_nl"),
        (KILN_WEIGHT_GGUF_Q2_K, "q2_k"),
        (KILN_WEIGHT_GGUF_Q3_K, "q3_k"),
        (KILN_WEIGHT_GGUF_Q4_K, "q4_k"),
        (KILN_WEIGHT_GGUF_Q5_K, "q5_k"),
        (KILN_WEIGHT_GGUF_Q6_K, "q6_k"),
        (KILN_WEIGHT_GGUF_IQ4_XS, "iq4_xs"),
    ];
    for (format, fname) in formats {
        // Super-block formats need whole 256-weight rows.
        let k = match random_block_format(format) {
            Some(f) if f.block_size() == 256 => 256usize,
            _ => 128usize,
        };
        let m = 96usize;
        if !supported(
            d,
            (ops::OP_LINEAR, Some(format)),
            &format!("linear {fname}"),
            report,
        ) {
            continue;
        }
        let w = rng.vec(m * k, 0.2);
        let raw = weight_bytes(format, &w);
        let bias = rng.vec(m, 0.1);
        let lin = LinearCase {
            format,
            raw: &raw,
            bias: &bias,
            m,
            k,
        };
        // (rows, leading decode rows)
        for (n, decode) in [(1usize, 1usize), (5, 5), (70, 0), (70, 6)] {
            for acc in [Accumulate::Overwrite, Accumulate::Add] {
                let x = rng.vec(n * k, 1.0);
                let init = rng.vec(n * m, 1.0);
                let (got, want) = (
                    lin.run(d, &x, &init, decode, acc),
                    lin.run(r, &x, &init, decode, acc),
                );
                record(
                    report,
                    format!("linear {fname} n={n} decode={decode} {acc:?}"),
                    &got,
                    &want,
                    tol,
                );
            }
        }
        // Batch invariance: a row's result must not depend on the other rows,
        // across chunk boundaries of batched kernels (bit for bit).
        let n = 300usize;
        let x = rng.vec(n * k, 1.0);
        let init = vec![0.0; n * m];
        let all = lin.run(d, &x, &init, 8, Accumulate::Overwrite);
        let decode_alone = lin.run(d, &x[..3 * k], &init[..3 * m], 3, Accumulate::Overwrite);
        let tail = &x[(n - 40) * k..];
        let prefill_alone = lin.run(d, tail, &init[..40 * m], 0, Accumulate::Overwrite);
        let mut got = all[..3 * m].to_vec();
        got.extend_from_slice(&all[(n - 40) * m..]);
        let mut want = decode_alone;
        want.extend(prefill_alone);
        record(
            report,
            format!("linear {fname} rows independent of the batch"),
            &got,
            &want,
            0.0,
        );
    }
}

/// One weight (and bias) run through [`ops::linear`] on either side.
struct LinearCase<'a> {
    format: KilnWeightFormat,
    raw: &'a [u8],
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
    ) -> Vec<f32> {
        let (m, k) = (self.m, self.k);
        let n = x.len() / k;
        let wt = s
            .dev
            .prepare_weight(&WeightSpec::single(
                "w",
                self.format,
                m as u64,
                k as u64,
                self.raw,
            ))
            .unwrap();
        let bt = s
            .dev
            .prepare_weight(&WeightSpec::single(
                "b",
                KILN_WEIGHT_F32,
                1,
                m as u64,
                &to_bytes(KILN_F32, self.bias),
            ))
            .unwrap();
        let xb = s.acts(x);
        let ob = s.acts(init);
        s.dev
            .execute(&[ops::linear(ops::Linear {
                x: xb.view(0, s.act, &[n as u64, k as u64]),
                weight: wt.raw(),
                bias: bt.raw(),
                out: ob.view(0, s.act, &[n as u64, m as u64]),
                accumulate: acc,
                decode_rows: decode_rows as u64,
            })])
            .unwrap();
        s.read(&ob, s.act, n * m)
    }
}

fn norm_and_elementwise_cases(
    d: &Side<'_>,
    r: &Side<'_>,
    rng: &mut Rng,
    tol: f64,
    report: &mut Report,
) {
    let (n, h) = (7usize, 96usize);
    let x = rng.vec(n * h, 2.0);
    let y = rng.vec(n * h, 2.0);
    let gamma = rng.vec(h, 1.0);
    let run = |s: &Side<'_>, which: &str| {
        let g = s
            .dev
            .prepare_weight(&WeightSpec::single(
                "g",
                KILN_WEIGHT_F32,
                1,
                h as u64,
                &to_bytes(KILN_F32, &gamma),
            ))
            .unwrap();
        let (xb, yb, ob) = (s.acts(&x), s.acts(&y), s.acts(&vec![0.0; n * h]));
        let dims = [n as u64, h as u64];
        let (xv, yv, ov) = (
            xb.view(0, s.act, &dims),
            yb.view(0, s.act, &dims),
            ob.view(0, s.act, &dims),
        );
        let op = match which {
            "rms_norm" => ops::rms_norm(xv, g.raw(), 1e-5, ov),
            "add_rms_norm" => ops::add_rms_norm(ops::AddRmsNorm {
                x: xv,
                residual: yv,
                gamma: g.raw(),
                eps: 1e-5,
                out: ov,
            }),
            "silu_mul" => ops::silu_mul(xv, yv, ov),
            _ => ops::add(xv, yv, ov),
        };
        s.dev.execute(&[op]).unwrap();
        let mut out = s.read(&ob, s.act, n * h);
        if which == "add_rms_norm" {
            out.extend(s.read(&yb, s.act, n * h));
        }
        out
    };
    let cases = [
        ("rms_norm", ops::OP_RMS_NORM, Some(KILN_WEIGHT_F32)),
        ("add_rms_norm", ops::OP_ADD_RMS_NORM, Some(KILN_WEIGHT_F32)),
        ("silu_mul", ops::OP_SILU_MUL, None),
        ("add", ops::OP_ADD, None),
    ];
    for (which, opcode, format) in cases {
        if supported(d, (opcode, format), which, report) {
            record(
                report,
                which.to_string(),
                &run(d, which),
                &run(r, which),
                tol,
            );
        }
    }
}

/// The operations families beyond Llama need: LayerNorm (with and without
/// a bias), every activation kind plain and gated, scaling (overwrite and
/// accumulate), soft-capping; each also checked row by row against the
/// whole batch, bit for bit.
fn family_op_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, tol: f64, report: &mut Report) {
    let (n, h) = (9usize, 96usize);
    let x = rng.vec(n * h, 2.0);
    let y = rng.vec(n * h, 1.0);
    let gamma: Vec<f32> = rng.vec(h, 0.5).iter().map(|g| 1.0 + g).collect();
    let beta = rng.vec(h, 0.3);
    let vector = |s: &Side<'_>, v: &[f32]| {
        s.dev
            .prepare_weight(&WeightSpec::single(
                "v",
                KILN_WEIGHT_F32,
                1,
                v.len() as u64,
                &to_bytes(KILN_F32, v),
            ))
            .unwrap()
    };
    let run = |s: &Side<'_>, which: &str, rows: usize| -> Vec<f32> {
        let (xs, ys) = (&x[..rows * h], &y[..rows * h]);
        let (g, b) = (vector(s, &gamma), vector(s, &beta));
        let (xb, yb, ob) = (s.acts(xs), s.acts(ys), s.acts(ys));
        let dims = [rows as u64, h as u64];
        let (xv, yv, ov) = (
            xb.view(0, s.act, &dims),
            yb.view(0, s.act, &dims),
            ob.view(0, s.act, &dims),
        );
        let layer_norm = |beta| {
            ops::layer_norm(ops::LayerNorm {
                x: xv,
                gamma: g.raw(),
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
            ["layer_norm", "bias"] => layer_norm(b.raw()),
            ["activation", kind] => ops::activation(act(kind), xv, KilnTensor::NONE, ov),
            ["activation", kind, "gated"] => ops::activation(act(kind), xv, yv, ov),
            ["scale"] => ops::scale(xv, 0.37, ov, Accumulate::Overwrite),
            ["scale", "accumulate"] => ops::scale(xv, 1.7, ov, Accumulate::Add),
            _ => ops::softcap(xv, 1.5, ov),
        };
        s.dev.execute(&[op]).unwrap();
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
        if !supported(d, (opcode, None), &which, report) {
            continue;
        }
        let all = run(d, &which, n);
        record(report, which.clone(), &all, &run(r, &which, n), tol);
        record(
            report,
            format!("{which} rows independent of the batch"),
            &all[..2 * h],
            &run(d, &which, 2),
            0.0,
        );
    }
}

fn rope_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, tol: f64, report: &mut Report) {
    let (n, heads, kv_heads, hd, max_pos) = (6usize, 4usize, 2usize, 32usize, 64usize);
    let q = rng.vec(n * heads * hd, 1.0);
    let k = rng.vec(n * kv_heads * hd, 1.0);
    let positions: Vec<i32> = vec![0, 1, 5, 17, 40, 63];
    let half = hd / 2;
    let cos: Vec<f32> = (0..max_pos * half)
        .map(|i| ((i / half) as f32 * 0.1 * (1.0 + (i % half) as f32)).cos())
        .collect();
    let sin: Vec<f32> = (0..max_pos * half)
        .map(|i| ((i / half) as f32 * 0.1 * (1.0 + (i % half) as f32)).sin())
        .collect();
    for (style, name) in [
        (ops::ROPE_NEOX, "neox"),
        (ops::ROPE_INTERLEAVED, "interleaved"),
    ] {
        if !supported(d, (ops::OP_ROPE, None), &format!("rope {name}"), report) {
            continue;
        }
        let run = |s: &Side<'_>| {
            let (qb, kb) = (s.acts(&q), s.acts(&k));
            let pb = s.upload(KILN_I32, &i32_bytes(&positions));
            let cb = s.upload(KILN_F32, &to_bytes(KILN_F32, &cos));
            let sb = s.upload(KILN_F32, &to_bytes(KILN_F32, &sin));
            s.dev
                .execute(&[ops::rope(ops::Rope {
                    q: qb.view(0, s.act, &[n as u64, (heads * hd) as u64]),
                    k: kb.view(0, s.act, &[n as u64, (kv_heads * hd) as u64]),
                    positions: pb.view(0, KILN_I32, &[n as u64]),
                    cos: cb.view(0, KILN_F32, &[max_pos as u64, half as u64]),
                    sin: sb.view(0, KILN_F32, &[max_pos as u64, half as u64]),
                    head_dim: hd as i64,
                    rotary_dim: hd as i64,
                    style,
                })])
                .unwrap();
            let mut out = s.read(&qb, s.act, q.len());
            out.extend(s.read(&kb, s.act, k.len()));
            out
        };
        record(report, format!("rope {name}"), &run(d), &run(r), tol);
    }
}

/// Mixed prefill and decode attention over scrambled block tables.
fn attention_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, tol: f64, report: &mut Report) {
    if !supported(
        d,
        (ops::OP_ATTENTION, None),
        "paged attention (prefill + decode)",
        report,
    ) {
        return;
    }
    let (heads, kv_heads, hd, bs, blocks) = (4usize, 2usize, 64usize, 16usize, 40usize);
    // Sequence 0: prefill of 20 new tokens after 10 cached; 1: decode at 300; 2: decode at 17; 3: prefill of 5.
    let q_lens = [20usize, 1, 1, 5];
    let ctx = [30usize, 300, 17, 5];
    let n: usize = q_lens.iter().sum();
    let kv_dim = kv_heads * hd;
    let cache_k = rng.vec(blocks * bs * kv_dim, 1.0);
    let cache_v = rng.vec(blocks * bs * kv_dim, 1.0);
    let q = rng.vec(n * heads * hd, 1.0);
    let max_blocks = 20usize;
    let mut tables = vec![0i32; 4 * max_blocks];
    let mut next = 0i32;
    for (s, &c) in ctx.iter().enumerate() {
        for b in 0..c.div_ceil(bs) {
            tables[s * max_blocks + b] = (blocks as i32 - 1 - next) % blocks as i32;
            next += 1;
        }
    }
    let seq_lens: Vec<i32> = ctx.iter().map(|&c| c as i32).collect();
    let mut qsl = vec![0i32];
    for &l in &q_lens {
        qsl.push(qsl.last().unwrap() + l as i32);
    }
    let run = |s: &Side<'_>| {
        let kc = s.acts(&cache_k);
        let vc = s.acts(&cache_v);
        let qb = s.acts(&q);
        let ob = s.acts(&vec![0.0; q.len()]);
        let tb = s.upload(KILN_I32, &i32_bytes(&tables));
        let lb = s.upload(KILN_I32, &i32_bytes(&seq_lens));
        let qs = s.upload(KILN_I32, &i32_bytes(&qsl));
        let cdims = [blocks as u64, bs as u64, kv_heads as u64, hd as u64];
        s.dev
            .execute(&[ops::attention(ops::Attention {
                q: qb.view(0, s.act, &[n as u64, (heads * hd) as u64]),
                k_cache: kc.view(0, s.act, &cdims),
                v_cache: vc.view(0, s.act, &cdims),
                block_tables: tb.view(0, KILN_I32, &[4, max_blocks as u64]),
                seq_lens: lb.view(0, KILN_I32, &[4]),
                query_start_loc: qs.view(0, KILN_I32, &[5]),
                out: ob.view(0, s.act, &[n as u64, (heads * hd) as u64]),
                scale: 1.0 / (hd as f32).sqrt(),
                softcap: 0.0,
                num_heads: heads as i64,
                num_kv_heads: kv_heads as i64,
                head_dim: hd as i64,
                block_size: bs as i64,
                sliding_window: 0,
                max_query_len: 20,
                max_seq_len: 300,
            })])
            .unwrap();
        s.read(&ob, s.act, q.len())
    };
    record(
        report,
        "paged attention (prefill + decode)".into(),
        &run(d),
        &run(r),
        tol,
    );
}

fn embedding_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, tol: f64, report: &mut Report) {
    let (vocab, h) = (50usize, 64usize);
    let table = rng.vec(vocab * h, 1.0);
    let ids: Vec<i32> = vec![0, 7, 49, 7, 13];
    for (format, name) in [
        (KILN_WEIGHT_GGUF_Q8_0, "q8_0"),
        (KILN_WEIGHT_BF16, "bf16"),
        (KILN_WEIGHT_F32, "f32"),
    ] {
        if !supported(
            d,
            (ops::OP_EMBEDDING, Some(format)),
            &format!("embedding {name}"),
            report,
        ) {
            continue;
        }
        let raw = weight_bytes(format, &table);
        let run = |s: &Side<'_>| {
            let w = s
                .dev
                .prepare_weight(&WeightSpec::single(
                    "e",
                    format,
                    vocab as u64,
                    h as u64,
                    &raw,
                ))
                .unwrap();
            let ib = s.upload(KILN_I32, &i32_bytes(&ids));
            let ob = s.acts(&vec![0.0; ids.len() * h]);
            s.dev
                .execute(&[ops::embedding(
                    ib.view(0, KILN_I32, &[ids.len() as u64]),
                    w.raw(),
                    ob.view(0, s.act, &[ids.len() as u64, h as u64]),
                )])
                .unwrap();
            s.read(&ob, s.act, ids.len() * h)
        };
        record(report, format!("embedding {name}"), &run(d), &run(r), tol);
    }
}

/// `OP_SAMPLE` (f32 logits whatever the activation type): greedy and seeded
/// draws give the same tokens as the reference, with and without
/// adjustments; log-probabilities agree to 1e-4 and top ids exactly.
fn sample_cases(d: &Side<'_>, r: &Side<'_>, rng: &mut Rng, report: &mut Report) {
    if !supported(d, (ops::OP_SAMPLE, None), "sample", report)
        || !r.dev.supports(ops::OP_SAMPLE, None, KILN_F32)
    {
        return;
    }
    let (m, vocab, top) = (8usize, 3000usize, 4usize);
    let logits = rng.vec(m * vocab, 4.0);
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
    let run = |s: &Side<'_>| {
        let lb = s.upload(KILN_F32, &to_bytes(KILN_F32, &logits));
        let pbytes: Vec<u8> = params.iter().flat_map(KilnSampleParams::to_bytes).collect();
        let pb = s.upload(KILN_U8, &pbytes);
        let abytes: Vec<u8> = adjust.iter().flat_map(KilnLogitAdjust::to_bytes).collect();
        let ab = s.upload(KILN_U8, &abytes);
        let (ib, lpb) = (s.upload(KILN_I32, &[0; 32]), s.upload(KILN_F32, &[0; 32]));
        let (tib, tlb) = (
            s.upload(KILN_I32, &vec![0; m * top * 4]),
            s.upload(KILN_F32, &vec![0; m * top * 4]),
        );
        s.dev
            .execute(&[ops::sample(ops::Sample {
                logits: lb.view(0, KILN_F32, &[m as u64, vocab as u64]),
                params: pb.view(0, KILN_U8, &[pbytes.len() as u64]),
                out_ids: ib.view(0, KILN_I32, &[m as u64]),
                out_logprobs: lpb.view(0, KILN_F32, &[m as u64]),
                out_top_ids: tib.view(0, KILN_I32, &[m as u64, top as u64]),
                out_top_logprobs: tlb.view(0, KILN_F32, &[m as u64, top as u64]),
                adjustments: ab.view(0, KILN_U8, &[abytes.len() as u64]),
                num_top: top as i64,
                allowed: KilnTensor::NONE,
            })])
            .unwrap();
        let words = |b: &Buffer, n: usize| {
            let mut bytes = vec![0u8; n * 4];
            s.dev.read(b, 0, &mut bytes).unwrap();
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<u32>>()
        };
        let lps = words(&lpb, m)
            .into_iter()
            .chain(words(&tlb, m * top))
            .map(f32::from_bits)
            .collect::<Vec<f32>>();
        let ids = words(&ib, m)
            .into_iter()
            .chain(words(&tib, m * top))
            .map(|v| v as f32)
            .collect::<Vec<f32>>();
        (ids, lps)
    };
    let ((got_ids, got_lps), (want_ids, want_lps)) = (run(d), run(r));
    record(
        report,
        "sample: drawn and top ids".into(),
        &got_ids,
        &want_ids,
        0.0,
    );
    record(
        report,
        "sample: log-probabilities".into(),
        &got_lps,
        &want_lps,
        1e-4,
    );
}
