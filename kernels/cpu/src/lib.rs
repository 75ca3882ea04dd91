//! Kiln's CPU compute kernels: SIMD quantized matmul, norms, RoPE, paged attention, with run-time dispatch.
