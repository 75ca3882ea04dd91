//! # kiln-kernels-cpu
//!
//! The numeric kernels of Kiln's CPU backend, for a Llama-family decoder with
//! f32 activations:
//! - [`weights`]: weight matrices in F32/F16/BF16 or GGUF Q4_0/Q4_1/Q8_0,
//!   repacked at load into 16-row interleaved groups;
//! - [`matmul`]: `out (+)= x·Wᵀ (+ bias)`; block formats multiply exact
//!   integers (activations quantized per block of 32 to 16-bit codes by
//!   [`quant`], AVX-512 VNNI `vpdpbusd` / AVX2 `pmaddwd` / scalar);
//! - [`ops`]: RMS norm (with fused residual add), RoPE (NeoX and interleaved),
//!   SiLU-gating, adds, embedding lookup;
//! - [`activation`]: SiLU, GELU (tanh and erf), ReLU, optionally gated;
//!   scaling and soft-capping;
//! - [`layer_norm`]: LayerNorm with or without a bias;
//! - [`moe`]: mixture-of-experts feed-forward (top-k routing, experts
//!   grouped across the batch over the stacked weights, shared expert);
//! - [`attention`]: paged KV cache writes and causal varlen attention
//!   (online softmax, GQA, sliding window, soft-cap, f32/f16 cache);
//! - [`pool`]: a persistent low-latency thread pool every kernel runs on;
//! - [`isa`]: run-time selection of AVX-512 VNNI, AVX2 or scalar code
//!   (`KILN_CPU_ISA=scalar|avx2|avx512` caps it).
//!
//! Invariant: every output row is computed with the same sequence of
//! floating-point operations whatever the batch size, the chunking of a
//! prompt or the thread count. Matmuls and row-wise ops are moreover
//! bit-identical across ISAs; attention is within 1e-5 across ISAs. Tests
//! check all of it bit for bit.
//!
//! Depends on `half` and `thiserror` only; never on anything else in Kiln.
//!
//! ```
//! use kiln_kernels_cpu::matmul::{matmul, Matmul, WeightFormat, WeightMatrix};
//! use kiln_kernels_cpu::pool::ThreadPool;
//! // W = [[2, 3]] (one output feature, two inputs).
//! let w = WeightMatrix::from_f32(WeightFormat::F32, 1, 2, &[2.0, 3.0]).unwrap();
//! let mut out = [0f32];
//! let pool = ThreadPool::new(1);
//! matmul(&pool, Matmul { x: &[1.0, 1.0], n: 1, w: &w, bias: None, out: &mut out, accumulate: false });
//! assert_eq!(out, [5.0]);
//! ```

// Kernels index several arrays with one counter; iterator chains would hide the access pattern.
#![allow(clippy::needless_range_loop)]

pub mod activation;
mod aligned;
pub mod attention;
pub mod error;
pub mod isa;
pub mod layer_norm;
pub mod math;
pub mod matmul;
pub mod moe;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod weights;

pub use error::KernelError;
