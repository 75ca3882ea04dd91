//! The example backend against the CPU reference: the shared conformance
//! suite, plus the operations the suite does not cover (KV writes, attention
//! with a sliding window and a soft-cap, block copies, row gathers, casts).

mod common;

use std::path::Path;

use common::example_device;
use kiln_backend_conformance::check_device;
use kiln_engine::BackendChoice;
use kiln_plugin_abi::safe::{Backend, Buffer, Device};
use kiln_plugin_abi::{KILN_BF16, KILN_F32, KILN_I32, KilnDType, ops};
use kiln_plugin_host::HOST_API;

/// The reference: the CPU backend that `kiln-tests` links in, taken from the
/// engine config it builds for tests.
fn cpu() -> Device {
    let BackendChoice::Static { init, .. } = kiln_tests::cpu_config(Path::new("unused")).backend
    else {
        panic!("kiln-tests links the CPU backend statically");
    };
    // SAFETY: a statically linked plugin's registration lives for the whole process.
    let backend = unsafe { Backend::from_registration(init(&HOST_API)) }.expect("a registration");
    backend
        .open(0, r#"{"threads": 1}"#)
        .expect("the CPU device opens")
}

#[test]
fn the_conformance_suite_passes_and_skips_only_what_it_declines() {
    let Some(example) = example_device() else {
        return;
    };
    let r = check_device(&example, &cpu(), KILN_F32);
    eprintln!("{}", r.table());
    let failed: Vec<_> = r.failed().map(|c| &c.name).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let skipped: Vec<&str> = r.skipped().collect();
    // Skipped: quantized weights and device-side sampling, which it declines.
    for case in [
        "linear q8_0",
        "linear q4_0",
        "linear q4_1",
        "embedding q8_0",
    ] {
        assert!(skipped.contains(&case), "{case} was not skipped");
    }
    // It also declines the operations only families beyond Llama need.
    let family_op = |c: &str| {
        ["layer_norm", "activation", "scale", "softcap", "moe"]
            .iter()
            .any(|op| c.starts_with(op))
    };
    // Every quantized linear case (GGUF block types, FP8) is declined too.
    let declined = |c: &&str| {
        c.starts_with("linear q")
            || c.starts_with("linear iq")
            || c.starts_with("linear fp8")
            || c.contains("q8_0")
            || c.starts_with("sample")
            || family_op(c)
    };
    assert!(skipped.iter().all(declined), "{skipped:?}");
    let ran = r.passed().count();
    assert!(ran >= 30, "only {ran} cases ran");
}

#[test]
fn sixteen_bit_activations_are_skipped_not_failed() {
    let Some(example) = example_device() else {
        return;
    };
    let r = check_device(&example, &cpu(), KILN_BF16);
    assert!(
        r.passed().next().is_none() && r.failed().next().is_none(),
        "{r:?}"
    );
    assert!(r.skipped().count() >= 16, "{}", r.table());
}

struct Rng(u64);

impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn upload(dev: &Device, bytes: &[u8]) -> Buffer {
    let b = dev.alloc(bytes.len().max(4) as u64).unwrap();
    dev.write(&b, 0, bytes).unwrap();
    b
}

fn read(dev: &Device, b: &Buffer, dtype: KilnDType) -> Vec<f32> {
    let mut out = vec![0u8; b.len() as usize];
    dev.read(b, 0, &mut out).unwrap();
    match dtype {
        KILN_F32 => out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => out
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// Largest difference relative to the reference's RMS.
fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let rms = (want.iter().map(|x| x * x).sum::<f32>() / want.len() as f32).sqrt();
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    max / rms.max(1e-6)
}

/// Three sequences (a prefill of 9 after 21 cached, a decode at 45, a fresh
/// prefill of 3) over scrambled blocks.
struct AttentionCase {
    q_lens: [usize; 3],
    ctx: [usize; 3],
    tables: Vec<i32>,
    slots: Vec<i32>,
}

const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = 32;
const BS: usize = 8;
const BLOCKS: usize = 24;
const MAX_BLOCKS: usize = 6;

impl AttentionCase {
    fn new() -> Self {
        let (q_lens, ctx): ([usize; 3], [usize; 3]) = ([9, 1, 3], [30, 45, 3]);
        let mut tables = vec![0i32; 3 * MAX_BLOCKS];
        let mut next = 0;
        for (s, &c) in ctx.iter().enumerate() {
            for b in 0..c.div_ceil(BS) {
                tables[s * MAX_BLOCKS + b] = (BLOCKS - 1 - next) as i32;
                next += 1;
            }
        }
        let mut slots = Vec::new();
        for s in 0..3 {
            for p in ctx[s] - q_lens[s]..ctx[s] {
                slots.push(tables[s * MAX_BLOCKS + p / BS] * BS as i32 + (p % BS) as i32);
            }
        }
        AttentionCase {
            q_lens,
            ctx,
            tables,
            slots,
        }
    }

    /// Write the new keys and values, then attend; returns the output and the key cache.
    fn run(&self, dev: &Device) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng(11);
        let n: usize = self.q_lens.iter().sum();
        let kv_dim = KV_HEADS * HD;
        let cache = |rng: &mut Rng| upload(dev, &f32_bytes(&rng.vec(BLOCKS * BS * kv_dim, 1.0)));
        let (kc, vc) = (cache(&mut rng), cache(&mut rng));
        let q = upload(dev, &f32_bytes(&rng.vec(n * HEADS * HD, 3.0)));
        let k = upload(dev, &f32_bytes(&rng.vec(n * kv_dim, 1.0)));
        let v = upload(dev, &f32_bytes(&rng.vec(n * kv_dim, 1.0)));
        let out = dev.alloc((n * HEADS * HD * 4) as u64).unwrap();
        let slots = upload(dev, &i32_bytes(&self.slots));
        let tables = upload(dev, &i32_bytes(&self.tables));
        let lens: Vec<i32> = self.ctx.iter().map(|&c| c as i32).collect();
        let lens = upload(dev, &i32_bytes(&lens));
        let starts = upload(dev, &i32_bytes(&[0, 9, 10, 13]));
        let cdims = [BLOCKS as u64, BS as u64, KV_HEADS as u64, HD as u64];
        let rows = |b: &Buffer, w: usize| b.view(0, KILN_F32, &[n as u64, w as u64]);
        let write = ops::kv_write(ops::KvWrite {
            k: rows(&k, kv_dim),
            v: rows(&v, kv_dim),
            k_cache: kc.view(0, KILN_F32, &cdims),
            v_cache: vc.view(0, KILN_F32, &cdims),
            slot_mapping: slots.view(0, KILN_I32, &[n as u64]),
        });
        let attend = ops::attention(ops::Attention {
            q: rows(&q, HEADS * HD),
            k_cache: kc.view(0, KILN_F32, &cdims),
            v_cache: vc.view(0, KILN_F32, &cdims),
            block_tables: tables.view(0, KILN_I32, &[3, MAX_BLOCKS as u64]),
            seq_lens: lens.view(0, KILN_I32, &[3]),
            query_start_loc: starts.view(0, KILN_I32, &[4]),
            out: rows(&out, HEADS * HD),
            scale: 1.0 / (HD as f32).sqrt(),
            softcap: 2.0,
            num_heads: HEADS as i64,
            num_kv_heads: KV_HEADS as i64,
            head_dim: HD as i64,
            block_size: BS as i64,
            sliding_window: 12,
            max_query_len: 9,
            max_seq_len: 45,
        });
        dev.execute(&[write, attend]).unwrap();
        (read(dev, &out, KILN_F32), read(dev, &kc, KILN_F32))
    }
}

#[test]
fn kv_writes_and_windowed_soft_capped_attention_match_the_cpu_backend() {
    let Some(example) = example_device() else {
        return;
    };
    let case = AttentionCase::new();
    let (out, k_cache) = case.run(&example);
    let (want_out, want_k_cache) = case.run(&cpu());
    assert_eq!(k_cache, want_k_cache);
    let error = rel_error(&out, &want_out);
    assert!(error < 1e-4, "attention differs by {error:.2e}");
}

/// Copy two blocks of both caches, gather three rows, cast; returns every output.
fn copies_gathers_and_casts(dev: &Device) -> Vec<f32> {
    let mut rng = Rng(5);
    let cdims = [6u64, 4, 2, 8];
    let (kc, vc) = (
        upload(dev, &f32_bytes(&rng.vec(6 * 64, 1.0))),
        upload(dev, &f32_bytes(&rng.vec(6 * 64, 1.0))),
    );
    let pairs = upload(dev, &i32_bytes(&[3, 0, 1, 5]));
    let x = upload(dev, &f32_bytes(&rng.vec(5 * 16, 1.0)));
    let indices = upload(dev, &i32_bytes(&[4, 0, 4]));
    let gathered = dev.alloc(3 * 16 * 4).unwrap();
    let cast = dev.alloc(5 * 16 * 4).unwrap();
    dev.execute(&[
        ops::copy_blocks(
            kc.view(0, KILN_F32, &cdims),
            vc.view(0, KILN_F32, &cdims),
            pairs.view(0, KILN_I32, &[2, 2]),
        ),
        ops::gather_rows(
            x.view(0, KILN_F32, &[5, 16]),
            indices.view(0, KILN_I32, &[3]),
            gathered.view(0, KILN_F32, &[3, 16]),
        ),
        ops::cast(
            x.view(0, KILN_F32, &[5, 16]),
            cast.view(0, KILN_F32, &[5, 16]),
        ),
    ])
    .unwrap();
    [&kc, &vc, &gathered, &cast]
        .into_iter()
        .flat_map(|b| read(dev, b, KILN_F32))
        .collect()
}

#[test]
fn block_copies_row_gathers_and_casts_match_the_cpu_backend() {
    let Some(example) = example_device() else {
        return;
    };
    assert_eq!(
        copies_gathers_and_casts(&example),
        copies_gathers_and_casts(&cpu())
    );
}

#[test]
fn casts_convert_between_float_dtypes() {
    let Some(dev) = example_device() else { return };
    let values = [1.0f32, -2.5, 3.0e-3, 65504.0];
    let x = upload(&dev, &f32_bytes(&values));
    let narrow = dev.alloc(8).unwrap();
    let wide = dev.alloc(16).unwrap();
    dev.execute(&[
        ops::cast(x.view(0, KILN_F32, &[4]), narrow.view(0, KILN_BF16, &[4])),
        ops::cast(
            narrow.view(0, KILN_BF16, &[4]),
            wide.view(0, KILN_F32, &[4]),
        ),
    ])
    .unwrap();
    let want: Vec<f32> = values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_eq!(read(&dev, &narrow, KILN_BF16), want);
    assert_eq!(read(&dev, &wide, KILN_F32), want);
}
