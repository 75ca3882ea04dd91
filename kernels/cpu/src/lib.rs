//! # kiln-kernels-cpu
//!
//! The numeric kernels of Kiln's CPU backend: quantized and float matmuls
//! ([`matmul`]), norms, RoPE and element-wise ops ([`ops`]), paged attention
//! ([`attention`]), a low-latency thread pool ([`pool`]) and run-time ISA
//! selection ([`isa`]: AVX-512 VNNI, AVX2, scalar; `KILN_CPU_ISA` caps it).
//!
//! Invariant: every output row is computed with the same sequence of
//! floating-point operations whatever the batch size, the chunking of a
//! prompt or the thread count (tests check it bit for bit).
//!
//! Depends on `half` only; never on anything else in Kiln.
//!
//! ```
//! use kiln_kernels_cpu::{matmul::{matmul, Matmul, WeightFormat, WeightMatrix}, pool::ThreadPool};
//! let w = WeightMatrix::from_raw(WeightFormat::F32, 1, 2,
//!     &[2f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
//! let mut out = [0f32];
//! matmul(&ThreadPool::new(1), Matmul { x: &[1.0, 1.0], n: 1, w: &w, bias: None, out: &mut out, accumulate: false });
//! assert_eq!(out, [5.0]);
//! ```

// Kernels index several arrays with one counter; iterator chains would hide the access pattern.
#![allow(clippy::needless_range_loop)]

pub mod attention;
pub mod isa;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod vecops;
