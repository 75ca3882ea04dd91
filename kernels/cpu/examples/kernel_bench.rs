//! Kernel throughput on SmolLM2-135M's shapes:
//! `cargo run --release -p kiln-kernels-cpu --example kernel_bench [threads] [formats]`
//! (`formats`: comma-separated, e.g. `Q4_1,Q8_0`; `none` for attention and
//! pool only; default all).
//!
//! - per-shape matmuls at n = 1 (weights rotated through copies larger than
//!   the L3 cache, so GB/s is DRAM bandwidth) and n = 512 (GFLOP/s);
//! - a whole-model pass (30 layers × 7 matrices + the Q8_0 `lm_head`):
//!   matmul-only decode and prefill tokens/s;
//! - paged attention at contexts 512 and 2048 (decode and prefill);
//! - thread-pool dispatch latency.

use std::time::{Duration, Instant};

use kiln_kernels_cpu::attention::{AttentionBatch, AttentionShape, KvCache, paged_attention};
use kiln_kernels_cpu::isa;
use kiln_kernels_cpu::matmul::{Matmul, WeightFormat, WeightMatrix, matmul};
use kiln_kernels_cpu::pool::ThreadPool;

/// (name, out_features m, in_features k).
const SHAPES: [(&str, usize, usize); 5] = [
    ("q/o 576x576", 576, 576),
    ("k/v 192x576", 192, 576),
    ("gate/up 1536x576", 1536, 576),
    ("down 576x1536", 576, 1536),
    ("lm_head 49152x576", 49152, 576),
];
/// Qwen2.5-1.5B's shapes, where every K-quant applies (k a multiple of 256).
const SHAPES_1B5: [(&str, usize, usize); 4] = [
    ("q/o 1536x1536", 1536, 1536),
    ("k/v 256x1536", 256, 1536),
    ("gate/up 8960x1536", 8960, 1536),
    ("down 1536x8960", 1536, 8960),
];
/// Bytes of weights to rotate through for cold-cache decode timings.
const COLD_BYTES: usize = 160 << 20;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A random weight: quantized from f32 where Kiln has an encoder, random
/// source blocks (with small positive f16 scales) otherwise.
fn weight(fmt: WeightFormat, m: usize, k: usize, seed: u64) -> WeightMatrix {
    let mut r = Lcg(seed);
    let vals: Vec<f32> = (0..m * k).map(|_| r.next() * 0.05).collect();
    if let Ok(w) = WeightMatrix::from_f32(fmt, m, k, &vals) {
        return w;
    }
    let row = fmt.row_bytes(k).expect("k is a whole number of blocks");
    let mut raw: Vec<u8> = (0..m * row)
        .map(|_| (r.next() * 127.0) as i8 as u8)
        .collect();
    for blk in raw.chunks_exact_mut(fmt.block_bytes()) {
        for &at in fmt.f16_fields() {
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(1e-3).to_le_bytes());
        }
    }
    WeightMatrix::from_raw(fmt, m, k, &raw).expect("bench weight")
}

/// Fastest of `reps` runs of `f` after one warm-up, in seconds (the minimum
/// filters out preemption on shared machines).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

fn mm(pool: &ThreadPool, w: &WeightMatrix, x: &[f32], n: usize, out: &mut [f32]) {
    matmul(
        pool,
        Matmul {
            x,
            n,
            w,
            bias: None,
            out,
            accumulate: false,
        },
    );
}

fn shapes_bench(pool: &ThreadPool, fmt: WeightFormat) {
    for &(name, m, k) in SHAPES.iter().chain(&SHAPES_1B5) {
        if m == 49152 && fmt != WeightFormat::Q8_0 || !k.is_multiple_of(fmt.block_size()) {
            continue;
        }
        let one = weight(fmt, m, k, 1);
        let copies = (COLD_BYTES / one.source_bytes()).clamp(2, 4096);
        let ws: Vec<WeightMatrix> = std::iter::once(one)
            .chain((1..copies).map(|c| weight(fmt, m, k, c as u64 + 1)))
            .collect();
        let x = vec![0.5f32; 512 * k];
        let mut out = vec![0f32; 512 * m];
        // Mean over a pass through every copy (each call then reads from DRAM); best of 5 passes.
        let dec = time(5, || {
            for w in &ws {
                mm(pool, w, &x, 1, &mut out);
            }
        }) / copies as f64;
        let pre = time(3, || mm(pool, &ws[0], &x, 512, &mut out));
        let bytes = ws[0].source_bytes() as f64;
        let flops = 2.0 * (m * k) as f64;
        println!(
            "  {:<5} {name:<18} n=1: {:7.1} µs {:6.1} GB/s {:6.1} GFLOP/s | n=512: {:8.2} ms {:6.1} GFLOP/s",
            fmt.name(),
            dec * 1e6,
            bytes / dec / 1e9,
            flops / dec / 1e9,
            pre * 1e3,
            flops * 512.0 / pre / 1e9
        );
    }
}

/// One decoder's worth of matrices for the whole-model pass.
struct Model {
    layers: Vec<[WeightMatrix; 7]>,
    lm_head: WeightMatrix,
}

fn model(fmt: WeightFormat) -> Model {
    let dims = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let base: Vec<WeightMatrix> = dims
        .iter()
        .enumerate()
        .map(|(i, &(m, k))| weight(fmt, m, k, 100 + i as u64))
        .collect();
    Model {
        // Distinct copies so every layer streams its own memory.
        layers: (0..30)
            .map(|_| std::array::from_fn(|i| base[i].clone()))
            .collect(),
        lm_head: weight(WeightFormat::Q8_0, 49152, 576, 99),
    }
}

fn model_bench(pool: &ThreadPool, fmt: WeightFormat) {
    let md = model(fmt);
    let bytes: usize = md
        .layers
        .iter()
        .flatten()
        .map(|w| w.source_bytes())
        .sum::<usize>()
        + md.lm_head.source_bytes();
    let x = vec![0.25f32; 512 * 1536];
    let mut out = vec![0f32; 512 * 1536];
    let mut logits = vec![0f32; 49152];
    let mut pass = |n: usize| {
        for layer in &md.layers {
            for w in layer {
                mm(pool, w, &x, n, &mut out);
            }
        }
        mm(pool, &md.lm_head, &x, 1, &mut logits);
    };
    let dec = time(20, || pass(1));
    let pre = time(2, || pass(512));
    println!(
        "  {:<5} whole model ({:.0} MB): decode {:6.1} tok/s ({:5.1} GB/s) | prefill 512: {:7.1} tok/s",
        fmt.name(),
        bytes as f64 / 1e6,
        1.0 / dec,
        bytes as f64 / dec / 1e9,
        512.0 / pre
    );
}

fn attention_bench(pool: &ThreadPool) {
    let (heads, kv_heads, hd, bs) = (9, 3, 64, 16);
    for ctx in [512usize, 2048] {
        let blocks = ctx.div_ceil(bs);
        let kv_len = blocks * bs * kv_heads * hd;
        let mut r = Lcg(5);
        let kf: Vec<f32> = (0..kv_len).map(|_| r.next()).collect();
        let vf: Vec<f32> = (0..kv_len).map(|_| r.next()).collect();
        let kh: Vec<u16> = kf
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let vh: Vec<u16> = vf
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let table: Vec<i32> = (0..blocks as i32).collect();
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
            block_size: bs,
            window: 0,
            scale: 0.125,
            softcap: 0.0,
        };
        for (label, n) in [("decode", 1usize), ("prefill", 512.min(ctx))] {
            let q: Vec<f32> = (0..n * heads * hd).map(|_| r.next()).collect();
            let mut out = vec![0f32; q.len()];
            let batch = AttentionBatch {
                q: &q,
                block_tables: &table,
                max_blocks: blocks,
                seq_lens: &[ctx as i32],
                query_start_loc: &[0, n as i32],
            };
            for (cache, k, v) in [
                ("f32", KvCache::F32(&kf), KvCache::F32(&vf)),
                ("f16", KvCache::F16(&kh), KvCache::F16(&vh)),
            ] {
                let reps = if n == 1 { 200 } else { 5 };
                let s = time(reps, || {
                    paged_attention(pool, &shape, &batch, k, v, &mut out)
                });
                // Keys attended per query row, summed.
                let keys: f64 = (0..n).map(|i| (ctx - n + i + 1) as f64).sum();
                let flops = 4.0 * keys * (heads * hd) as f64;
                let kv_bytes =
                    (2 * ctx * kv_heads * hd * if cache == "f32" { 4 } else { 2 }) as f64;
                println!(
                    "  ctx {ctx:5} {label:<7} {cache}: {:8.1} µs {:6.1} GFLOP/s{}",
                    s * 1e6,
                    flops / s / 1e9,
                    if n == 1 {
                        format!(" {:6.1} GB/s of KV (L3-warm)", kv_bytes / s / 1e9)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
}

fn pool_bench(pool: &ThreadPool) {
    let busy = |d: Duration| {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    };
    let task = Duration::from_micros(2);
    let tasks = pool.threads();
    // Median over runs, so preemption by other processes does not dominate.
    let overhead = |gap: Duration, reps: u32| {
        let mut v: Vec<f64> = (0..reps)
            .map(|_| {
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
                let t = Instant::now();
                pool.run(tasks, &|_| busy(task));
                t.elapsed().saturating_sub(task).as_secs_f64() * 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "  dispatch overhead ({tasks} tasks of 2 µs): {:.2} µs back to back, {:.1} µs after 300 µs idle, {:.1} µs after 10 ms idle (workers parked)",
        overhead(Duration::ZERO, 20_000),
        overhead(Duration::from_micros(300), 300),
        overhead(Duration::from_millis(10), 30),
    );
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let formats: Vec<WeightFormat> = match std::env::args().nth(2) {
        Some(list) => WeightFormat::ALL
            .into_iter()
            .filter(|f| list.split(',').any(|s| s.eq_ignore_ascii_case(f.name())))
            .collect(),
        None => WeightFormat::ALL.to_vec(),
    };
    let pool = ThreadPool::new(threads);
    println!(
        "kiln-kernels-cpu bench: isa {}, {threads} threads",
        isa::describe()
    );
    println!("thread pool");
    pool_bench(&pool);
    println!("matmul per shape (n=1 from DRAM, n=512 warm)");
    for &fmt in &formats {
        shapes_bench(&pool, fmt);
    }
    println!("whole-model matmuls (30 layers + Q8_0 lm_head on one row)");
    for &fmt in formats.iter().filter(|f| 576 % f.block_size() == 0) {
        model_bench(&pool, fmt);
    }
    println!("paged attention (9 heads, 3 KV heads, head_dim 64, block 16)");
    attention_bench(&pool);
}
