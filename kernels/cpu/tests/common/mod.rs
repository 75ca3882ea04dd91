//! Shared helpers for the integration tests: a seeded generator and random weights.

#![allow(dead_code)]

use half::f16;
use kiln_kernels_cpu::isa::{Isa, supported};
use kiln_kernels_cpu::weights::{IntParts, WeightFormat, WeightMatrix};

/// A small deterministic generator (64-bit LCG).
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }

    /// `len` values in [-scale, scale).
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.f32() * scale).collect()
    }
}

/// A weight with random codes over their full range and modest scales.
pub fn random_weight(fmt: WeightFormat, rows: usize, cols: usize, rng: &mut Rng) -> WeightMatrix {
    if !fmt.is_quantized() {
        let vals = rng.vec(rows * cols, 1.0);
        return WeightMatrix::from_f32(fmt, rows, cols, &vals).unwrap();
    }
    let mut raw: Vec<u8> = (0..rows * fmt.row_bytes(cols).unwrap())
        .map(|_| rng.byte())
        .collect();
    // Keep `d` modest and positive, and `m`/`dmin` within ±0.05 (the
    // K-quants' 6-bit scales and minimums multiply them by up to 63).
    let k_quant = fmt.block_size() == 256;
    for blk in raw.chunks_exact_mut(fmt.block_bytes()) {
        for (f, &at) in fmt.f16_fields().iter().enumerate() {
            let v = match (f, k_quant) {
                (0, false) => 0.002 + rng.f32().abs() * 0.01,
                (0, true) => (0.002 + rng.f32().abs() * 0.01) / 32.0,
                (_, false) => rng.f32() * 0.05,
                (_, true) => rng.f32().abs() * 0.05 / 63.0,
            };
            blk[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    WeightMatrix::from_raw(fmt, rows, cols, &raw).unwrap()
}

/// The ISAs this CPU runs.
pub fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|&i| supported(i)).collect()
}

/// Bit patterns, for exact comparisons that treat NaN and -0 precisely.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A random integer-group weight ([`WeightFormat::Int`]): codes over their
/// full range, scales in [0.002, 0.012], zero points anywhere in the code
/// range, and with `shuffle` a random input permutation (act-order).
pub fn random_int_weight(
    bits: u8,
    bf16_scales: bool,
    rows: usize,
    cols: usize,
    group: usize,
    shuffle: bool,
    rng: &mut Rng,
) -> WeightMatrix {
    let codes: Vec<u8> = (0..rows * cols).map(|_| rng.byte() >> (8 - bits)).collect();
    let n_groups = rows * (cols / group);
    let scales: Vec<u16> = (0..n_groups)
        .map(|_| {
            let v = 0.002 + rng.f32().abs() * 0.01;
            if bf16_scales {
                half::bf16::from_f32(v).to_bits()
            } else {
                f16::from_f32(v).to_bits()
            }
        })
        .collect();
    let zeros: Vec<u8> = (0..n_groups).map(|_| rng.byte() >> (8 - bits)).collect();
    let perm: Option<Vec<u32>> = shuffle.then(|| {
        let mut p: Vec<u32> = (0..cols as u32).collect();
        for i in (1..cols).rev() {
            let j = (rng.byte() as usize * 256 + rng.byte() as usize) % (i + 1);
            p.swap(i, j);
        }
        p
    });
    WeightMatrix::from_int(IntParts {
        bits,
        bf16_scales,
        rows,
        cols,
        group,
        codes: &codes,
        scales: &scales,
        zeros: &zeros,
        perm: perm.as_deref(),
    })
    .unwrap()
}
