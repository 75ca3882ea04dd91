//! `OP_MOE` on the CPU backend: against a straightforward f64 reference
//! (softmax routing, then each chosen expert as three linear layers on the
//! dequantized weights), bit for bit the same for a row alone, in a batch
//! of mixed decode and prefill rows, and across thread counts; and sizes
//! the packed weights cannot split per expert are refused by name.

use half::f16;
use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::{Backend, Device, WeightSpec};
use kiln_plugin_abi::*;

static HOST: KilnHostApi = KilnHostApi {
    struct_size: std::mem::size_of::<KilnHostApi>() as u32,
    abi_version: KILN_ABI_VERSION,
    log: None,
};

fn device(threads: usize) -> Device {
    // SAFETY: the statically linked plugin's registration is static.
    let backend =
        unsafe { Backend::from_registration(kiln_backend_cpu::kiln_static_registration(&HOST)) }
            .unwrap();
    backend
        .open(0, &format!("{{\"threads\": {threads}}}"))
        .unwrap()
}

/// A small deterministic generator (LCG) of values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// A stacked weight in one format, with the values the kernels see.
struct Stacked {
    format: KilnWeightFormat,
    bytes: Vec<u8>,
    /// Row-major `[rows, cols]`, dequantized.
    values: Vec<f32>,
}

impl Stacked {
    fn new(format: KilnWeightFormat, v: &[f32]) -> Stacked {
        match format {
            KILN_WEIGHT_GGUF_Q8_0 => {
                let (mut bytes, mut values) = (Vec::new(), Vec::new());
                for block in v.chunks_exact(32) {
                    let amax = block.iter().fold(0f32, |a, x| a.max(x.abs()));
                    let d = f16::from_f32(amax / 127.0);
                    bytes.extend(d.to_le_bytes());
                    for x in block {
                        let q = (x / d.to_f32()).round().clamp(-127.0, 127.0) as i8;
                        bytes.push(q as u8);
                        values.push(d.to_f32() * f32::from(q));
                    }
                }
                Stacked {
                    format,
                    bytes,
                    values,
                }
            }
            _ => Stacked {
                format: KILN_WEIGHT_F32,
                bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                values: v.to_vec(),
            },
        }
    }
}

/// A layer: `experts` experts of intermediate size `inter`, hidden size `hidden`.
struct Layer {
    experts: usize,
    top_k: usize,
    hidden: usize,
    inter: usize,
    gate_up: Stacked,
    down: Stacked,
    renormalize: bool,
}

impl Layer {
    fn random(format: KilnWeightFormat, rng: &mut Rng, renormalize: bool) -> Layer {
        let (experts, top_k, hidden, inter) = (8, 3, 64, 32);
        let gate_up = rng.vec(experts * 2 * inter * hidden, 0.25);
        let down = rng.vec(experts * hidden * inter, 0.35);
        Layer {
            experts,
            top_k,
            hidden,
            inter,
            gate_up: Stacked::new(format, &gate_up),
            down: Stacked::new(format, &down),
            renormalize,
        }
    }
}

/// One call's per-row inputs.
struct Rows {
    n: usize,
    decode_rows: usize,
    x: Vec<f32>,
    logits: Vec<f32>,
    shared: Vec<f32>,
    shared_gate: Vec<f32>,
    init: Vec<f32>,
}

impl Rows {
    /// Router logits are distinct per row (a shuffled ladder with a random
    /// offset), so the f32 kernel and the f64 reference rank them alike.
    fn random(layer: &Layer, rng: &mut Rng, n: usize, decode_rows: usize) -> Rows {
        let (h, e) = (layer.hidden, layer.experts);
        let mut logits = Vec::with_capacity(n * e);
        for _ in 0..n {
            let mut ladder: Vec<f32> = (0..e).map(|v| v as f32 * 0.4).collect();
            for i in (1..e).rev() {
                let j = (((rng.next() + 1.0) * 0.5 * (i + 1) as f32) as usize).min(i);
                ladder.swap(i, j);
            }
            let offset = rng.next();
            logits.extend(ladder.iter().map(|v| v + offset));
        }
        Rows {
            n,
            decode_rows,
            x: rng.vec(n * h, 1.0),
            logits,
            shared: rng.vec(n * h, 0.5),
            shared_gate: rng.vec(n, 3.0),
            init: rng.vec(n * h, 1.0),
        }
    }

    fn slice(&self, layer: &Layer, r: std::ops::Range<usize>, decode_rows: usize) -> Rows {
        let (h, e) = (layer.hidden, layer.experts);
        let part = |v: &[f32], w: usize| v[r.start * w..r.end * w].to_vec();
        Rows {
            n: r.len(),
            decode_rows,
            x: part(&self.x, h),
            logits: part(&self.logits, e),
            shared: part(&self.shared, h),
            shared_gate: part(&self.shared_gate, 1),
            init: part(&self.init, h),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shared {
    None,
    Ungated,
    Gated,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn run(dev: &Device, layer: &Layer, rows: &Rows, shared: Shared, acc: Accumulate) -> Vec<f32> {
    try_run(dev, layer, rows, shared, acc).unwrap_or_else(|e| panic!("{e}"))
}

fn try_run(
    dev: &Device,
    layer: &Layer,
    rows: &Rows,
    shared: Shared,
    acc: Accumulate,
) -> Result<Vec<f32>, String> {
    let (n, h, i, e) = (
        rows.n as u64,
        layer.hidden as u64,
        layer.inter as u64,
        layer.experts as u64,
    );
    // Rows from the data, so a test can declare a number of experts the
    // stack does not hold.
    let weight = |name: &str, w: &Stacked, cols: u64| {
        let rows = w.values.len() as u64 / cols;
        dev.prepare_weight(&WeightSpec::single(name, w.format, rows, cols, &w.bytes))
            .map_err(|e| e.to_string())
    };
    let gate_up = weight("gate_up", &layer.gate_up, h)?;
    let down = weight("down", &layer.down, i)?;
    let upload = |v: &[f32]| {
        let b = dev.alloc((v.len() * 4).max(4) as u64).unwrap();
        dev.write(&b, 0, &f32_bytes(v)).unwrap();
        b
    };
    let (xb, lb, sb, gb, ob) = (
        upload(&rows.x),
        upload(&rows.logits),
        upload(&rows.shared),
        upload(&rows.shared_gate),
        upload(&rows.init),
    );
    let (shared_out, shared_gate) = match shared {
        Shared::None => (KilnTensor::NONE, KilnTensor::NONE),
        Shared::Ungated => (sb.view(0, KILN_F32, &[n, h]), KilnTensor::NONE),
        Shared::Gated => (sb.view(0, KILN_F32, &[n, h]), gb.view(0, KILN_F32, &[n, 1])),
    };
    dev.execute(&[ops::moe(ops::Moe {
        x: xb.view(0, KILN_F32, &[n, h]),
        router_logits: lb.view(0, KILN_F32, &[n, e]),
        out: ob.view(0, KILN_F32, &[n, h]),
        shared_out,
        shared_gate,
        gate_up: gate_up.raw(),
        down: down.raw(),
        num_experts: layer.experts as i64,
        top_k: layer.top_k as i64,
        decode_rows: rows.decode_rows as u64,
        activation: ops::ACT_SILU,
        routing: if layer.renormalize {
            ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM
        } else {
            ops::MOE_ROUTING_SOFTMAX_TOPK
        },
        accumulate: acc,
    })])
    .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; rows.n * layer.hidden * 4];
    dev.read(&ob, 0, &mut out).unwrap();
    Ok(out
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Row `r` of the layer in f64: softmax, top-k (ties to the lower id),
/// optional renormalization, then per chosen expert
/// `down · (silu(gate · x) ⊙ (up · x))`, weighted and summed; then the shared term.
fn reference_row(layer: &Layer, rows: &Rows, r: usize, shared: Shared) -> Vec<f64> {
    let (h, i, e, k) = (layer.hidden, layer.inter, layer.experts, layer.top_k);
    let logits: Vec<f64> = rows.logits[r * e..(r + 1) * e]
        .iter()
        .map(|&l| f64::from(l))
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let probs: Vec<f64> = logits.iter().map(|l| (l - max).exp() / total).collect();
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap().then(a.cmp(&b)));
    let chosen = &order[..k];
    let norm: f64 = if layer.renormalize {
        chosen.iter().map(|&x| probs[x]).sum()
    } else {
        1.0
    };
    let x: Vec<f64> = rows.x[r * h..(r + 1) * h]
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let linear = |w: &[f32], row: usize, cols: usize, input: &[f64]| -> f64 {
        (0..cols)
            .map(|c| f64::from(w[row * cols + c]) * input[c])
            .sum()
    };
    let mut result = vec![0f64; h];
    for &expert in chosen {
        let weight = probs[expert] / norm;
        let hidden: Vec<f64> = (0..i)
            .map(|j| {
                let gate = linear(&layer.gate_up.values, expert * 2 * i + j, h, &x);
                let up = linear(&layer.gate_up.values, expert * 2 * i + i + j, h, &x);
                gate / (1.0 + (-gate).exp()) * up
            })
            .collect();
        for (c, out) in result.iter_mut().enumerate() {
            *out += weight * linear(&layer.down.values, expert * h + c, i, &hidden);
        }
    }
    if shared != Shared::None {
        let scale = if shared == Shared::Gated {
            1.0 / (1.0 + (-f64::from(rows.shared_gate[r])).exp())
        } else {
            1.0
        };
        for (c, out) in result.iter_mut().enumerate() {
            *out += scale * f64::from(rows.shared[r * h + c]);
        }
    }
    result
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn moe_matches_the_per_expert_reference() {
    let dev = device(2);
    let mut rng = Rng(21);
    for format in [KILN_WEIGHT_F32, KILN_WEIGHT_GGUF_Q8_0] {
        // Activations are quantized to 16-bit codes for block weights.
        let tolerance = if format == KILN_WEIGHT_F32 {
            1e-5
        } else {
            1e-3
        };
        for renormalize in [false, true] {
            let layer = Layer::random(format, &mut rng, renormalize);
            for (shared, acc) in [
                (Shared::None, Accumulate::Overwrite),
                (Shared::Ungated, Accumulate::Add),
                (Shared::Gated, Accumulate::Overwrite),
            ] {
                let rows = Rows::random(&layer, &mut rng, 9, 2);
                let got = run(&dev, &layer, &rows, shared, acc);
                let h = layer.hidden;
                let mut want = Vec::with_capacity(rows.n * h);
                for r in 0..rows.n {
                    let row = reference_row(&layer, &rows, r, shared);
                    want.extend(row.iter().enumerate().map(|(c, v)| {
                        if acc == Accumulate::Add {
                            v + f64::from(rows.init[r * h + c])
                        } else {
                            *v
                        }
                    }));
                }
                let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (f64::from(*g) - w).abs())
                    .fold(0f64, f64::max);
                assert!(
                    worst <= tolerance * rms,
                    "format {format} renormalize {renormalize}: error {worst:e} over rms {rms:e}"
                );
            }
        }
    }
}

#[test]
fn every_row_has_the_same_bits_alone_in_a_batch_and_across_threads() {
    let mut rng = Rng(5);
    for format in [KILN_WEIGHT_F32, KILN_WEIGHT_GGUF_Q8_0] {
        let layer = Layer::random(format, &mut rng, true);
        let (n, decode) = (40, 6);
        let rows = Rows::random(&layer, &mut rng, n, decode);
        let h = layer.hidden;
        let reference = run(&device(1), &layer, &rows, Shared::Gated, Accumulate::Add);
        for threads in [2, 3] {
            let batched = run(
                &device(threads),
                &layer,
                &rows,
                Shared::Gated,
                Accumulate::Add,
            );
            assert_eq!(bits(&batched), bits(&reference), "{threads} threads");
        }
        let dev = device(2);
        for r in 0..n {
            let alone = rows.slice(&layer, r..r + 1, usize::from(r < decode));
            let got = run(&dev, &layer, &alone, Shared::Gated, Accumulate::Add);
            assert_eq!(
                bits(&got),
                bits(&reference[r * h..(r + 1) * h]),
                "format {format} row {r}"
            );
        }
        // A different batch around the same rows: the prefill rows reversed.
        let tail = rows.slice(&layer, decode..n, 0);
        let mut reversed = rows.slice(&layer, decode..n, 0);
        for r in 0..tail.n {
            let from = tail.n - 1 - r;
            let copy = |dst: &mut Vec<f32>, src: &Vec<f32>, w: usize| {
                dst[r * w..(r + 1) * w].copy_from_slice(&src[from * w..(from + 1) * w]);
            };
            copy(&mut reversed.x, &tail.x, h);
            copy(&mut reversed.logits, &tail.logits, layer.experts);
            copy(&mut reversed.shared, &tail.shared, h);
            copy(&mut reversed.shared_gate, &tail.shared_gate, 1);
            copy(&mut reversed.init, &tail.init, h);
        }
        let got = run(&dev, &layer, &reversed, Shared::Gated, Accumulate::Add);
        for r in 0..tail.n {
            let original = decode + tail.n - 1 - r;
            assert_eq!(
                bits(&got[r * h..(r + 1) * h]),
                bits(&reference[original * h..(original + 1) * h]),
                "format {format} reversed row {r}"
            );
        }
    }
}

#[test]
fn sizes_the_packed_groups_cannot_split_are_refused_by_name() {
    let dev = device(1);
    let mut rng = Rng(9);
    let mut layer = Layer::random(KILN_WEIGHT_F32, &mut rng, true);
    // 2I = 24 is not a multiple of 16.
    layer.inter = 12;
    layer.gate_up = Stacked::new(KILN_WEIGHT_F32, &rng.vec(8 * 2 * 12 * 64, 0.2));
    layer.down = Stacked::new(KILN_WEIGHT_F32, &rng.vec(8 * 64 * 12, 0.2));
    let rows = Rows::random(&layer, &mut rng, 2, 1);
    let err = try_run(&dev, &layer, &rows, Shared::None, Accumulate::Overwrite).unwrap_err();
    assert!(
        err.contains("2·12 = 24") && err.contains("multiples of 16"),
        "{err}"
    );
}

#[test]
fn stacked_weights_of_the_wrong_shape_are_refused() {
    let dev = device(1);
    let mut rng = Rng(13);
    let mut layer = Layer::random(KILN_WEIGHT_F32, &mut rng, false);
    // Declare 7 experts over weights stacked for 8: 8·2·32 rows are not a multiple of 14.
    layer.experts = 7;
    let mut rows = Rows::random(&layer, &mut rng, 2, 0);
    rows.logits.truncate(2 * 7);
    let err = try_run(&dev, &layer, &rows, Shared::None, Accumulate::Overwrite).unwrap_err();
    assert!(err.contains("not a positive multiple of 2·E = 14"), "{err}");
}
