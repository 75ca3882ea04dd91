//! Kernel throughput on the default model's shapes:
//! `cargo run --release -p kiln-kernels-cpu --example kernel_bench [threads]`.

use std::time::Instant;

use half::f16;
use kiln_kernels_cpu::isa;
use kiln_kernels_cpu::matmul::{Matmul, WeightFormat, WeightMatrix, matmul};
use kiln_kernels_cpu::pool::ThreadPool;

fn weight(fmt: WeightFormat, rows: usize, cols: usize) -> WeightMatrix {
    let bytes = fmt.row_bytes(cols).unwrap() * rows;
    let mut raw: Vec<u8> = (0..bytes).map(|i| (i * 7919 % 251) as u8).collect();
    if fmt.is_quantized() {
        let bb = bytes / rows / (cols / 32);
        for blk in raw.chunks_exact_mut(bb) {
            blk[0..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        }
    }
    WeightMatrix::from_raw(fmt, rows, cols, &raw).unwrap()
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    println!("isa {} threads {threads}", isa::describe());
    let shapes = [
        (576, 576),
        (192, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ];
    for fmt in [
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
        WeightFormat::F16,
        WeightFormat::F32,
    ] {
        let weights: Vec<WeightMatrix> = shapes.iter().map(|&(m, k)| weight(fmt, m, k)).collect();
        for n in [1usize, 64, 512] {
            let inputs: Vec<(Vec<f32>, Vec<f32>)> = shapes
                .iter()
                .map(|&(m, k)| (vec![0.5f32; n * k], vec![0f32; n * m]))
                .collect();
            let mut inputs = inputs;
            let mut bytes = 0usize;
            let mut flops = 0f64;
            let reps = if n == 1 { 200 } else { 3 };
            let started = Instant::now();
            for _ in 0..reps {
                for ((w, (x, out)), &(m, k)) in weights.iter().zip(inputs.iter_mut()).zip(&shapes) {
                    matmul(
                        &pool,
                        Matmul {
                            x,
                            n,
                            w,
                            bias: None,
                            out,
                            accumulate: false,
                        },
                    );
                    bytes += w.bytes();
                    flops += 2.0 * (n * m * k) as f64;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{fmt:?} n={n:4}: {:6.1} GB/s weights, {:6.1} GFLOP/s",
                bytes as f64 / secs / 1e9,
                flops / secs / 1e9
            );
        }
    }
}
