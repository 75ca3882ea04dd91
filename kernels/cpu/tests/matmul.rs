//! Matmul against an f64 reference, across ISAs, and batch invariance.
//!
//! Tolerances (per output `y = Σ_i w_i·x_i`, with `S = Σ_i |w_i·x_i|`):
//! - float weights: `|err| ≤ 1.01·k·2⁻²⁴·S` (the worst case of an f32 FMA chain),
//!   plus, for FP8, the rounding of its row scale and of the reference's
//!   own dequantized weight `scale·e4m3(q)` (`1.01·(k+2)·2⁻²⁴·S`);
//! - block weights: the activation rounding bound `Σ_b amax_b/65024 · Σ_{i∈b} |w_i|`
//!   (16-bit codes: ≈1.5e-5 of `S`) plus `4·(k/16+4)·2⁻²⁴·S'` for the f32 steps,
//!   where `S'` also counts the minimums (|m| ≤ 0.05 in these weights), with
//!   two steps per block for the formats with 16-weight sub-blocks.

mod common;

use common::{Rng, bits, isas, random_int_weight, random_weight};
use kiln_kernels_cpu::isa::Isa;
use kiln_kernels_cpu::matmul::{
    Matmul, WeightFormat, WeightMatrix, matmul, matmul_rows_with, matmul_with,
};
use kiln_kernels_cpu::pool::ThreadPool;
use proptest::prelude::*;

/// Run one matmul into a fresh (or given) output.
fn run(
    pool: &ThreadPool,
    isa: Isa,
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    init: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = init.map_or_else(|| vec![f32::NAN; n * w.rows()], |o| o.to_vec());
    matmul_with(
        pool,
        isa,
        Matmul {
            x,
            n,
            w,
            bias,
            out: &mut out,
            accumulate: init.is_some(),
        },
    );
    out
}

/// Check `got[n, m]` against the exact product of the dequantized weights.
fn check_against_reference(w: &WeightMatrix, x: &[f32], n: usize, got: &[f32], what: &str) {
    let (m, k) = (w.rows(), w.cols());
    let u = 2f64.powi(-24);
    let mut row = vec![0f32; k];
    for j in 0..m {
        w.dequantize_row(j, &mut row);
        for t in 0..n {
            let xr = &x[t * k..(t + 1) * k];
            let exact: f64 = (0..k).map(|i| row[i] as f64 * xr[i] as f64).sum();
            let s: f64 = (0..k).map(|i| (row[i] as f64 * xr[i] as f64).abs()).sum();
            let tol = if w.format().is_quantized() {
                let act: f64 = xr
                    .chunks(32)
                    .zip(row.chunks(32))
                    .map(|(xb, wb)| {
                        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                        amax / 65024.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>()
                    })
                    .sum();
                let s_m: f64 = s + 0.05 * xr.iter().map(|v| v.abs() as f64).sum::<f64>();
                // Up to two f32 steps per block (16-weight sub-blocks).
                act * 1.01 + 4.0 * (k as f64 / 16.0 + 4.0) * u * s_m
            } else if w.format() == WeightFormat::F8_E4M3 {
                1.01 * (k + 2) as f64 * u * s
            } else {
                1.01 * k as f64 * u * s
            } + 1e-30;
            let g = got[t * m + j] as f64;
            assert!(
                (g - exact).abs() <= tol,
                "{what}: out[{t}, {j}] = {g}, exact {exact}, tolerance {tol:e}"
            );
        }
    }
}

#[test]
fn every_format_and_isa_matches_the_f64_reference() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(7);
    for fmt in WeightFormat::ALL {
        // k: a multiple of 32 but not of 64 for blocks of 32; one and three
        // super-blocks for the 256-weight formats; odd for floats.
        let ks: &[usize] = match fmt.block_size() {
            1 => &[37, 1, 16, 600],
            32 => &[96, 32, 608],
            _ => &[256, 768],
        };
        for &k in ks {
            let (m, n) = (37, 5);
            let w = random_weight(fmt, m, k, &mut rng);
            let x = rng.vec(n * k, 2.0);
            for isa in isas() {
                let got = run(&pool, isa, &w, &x, n, None, None);
                check_against_reference(&w, &x, n, &got, &format!("{fmt:?} {isa:?} k={k}"));
            }
        }
    }
}

#[test]
fn isas_agree_bit_for_bit_with_bias_and_accumulation() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(11);
    for fmt in WeightFormat::ALL {
        // 37 rows: nine 4-row tiles and a tail.
        for (m, k, n) in [(19, 64usize, 3), (50, 160, 9), (16, 32, 1), (33, 96, 37)] {
            let k = k.next_multiple_of(fmt.block_size());
            let w = random_weight(fmt, m, k, &mut rng);
            let x = rng.vec(n * k, 1.0);
            let bias = rng.vec(m, 1.0);
            let init = rng.vec(n * m, 1.0);
            let base = run(&pool, Isa::Scalar, &w, &x, n, Some(&bias), Some(&init));
            let plain = run(&pool, Isa::Scalar, &w, &x, n, None, None);
            for isa in isas() {
                let got = run(&pool, isa, &w, &x, n, Some(&bias), Some(&init));
                assert_eq!(bits(&got), bits(&base), "{fmt:?} {isa:?} [{m}, {k}] n={n}");
                let got = run(&pool, isa, &w, &x, n, None, None);
                assert_eq!(bits(&got), bits(&plain), "{fmt:?} {isa:?} plain");
            }
        }
    }
}

#[test]
fn a_row_range_gives_the_full_matmuls_bits_for_its_columns() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(17);
    let (m, n) = (64 + 5, 3);
    let mut weights: Vec<WeightMatrix> = WeightFormat::ALL
        .into_iter()
        .map(|fmt| random_weight(fmt, m, 64usize.next_multiple_of(fmt.block_size()), &mut rng))
        .collect();
    // Integer groups, plain and act-order (the activation gather).
    for shuffle in [false, true] {
        weights.push(random_int_weight(4, false, m, 64, 32, shuffle, &mut rng));
    }
    for w in &weights {
        let (fmt, k) = (w.format(), w.cols());
        let x = rng.vec(n * k, 1.0);
        let bias = rng.vec(m, 1.0);
        for isa in isas() {
            let full = run(&pool, isa, w, &x, n, Some(&bias), None);
            for rows in [0..16, 16..48, 48..m, 0..m] {
                let width = rows.len();
                let mut out = vec![f32::NAN; n * width];
                matmul_rows_with(
                    &pool,
                    isa,
                    Matmul {
                        x: &x,
                        n,
                        w,
                        bias: Some(&bias[rows.clone()]),
                        out: &mut out,
                        accumulate: false,
                    },
                    rows.clone(),
                );
                for t in 0..n {
                    assert_eq!(
                        bits(&out[t * width..(t + 1) * width]),
                        bits(&full[t * m + rows.start..t * m + rows.end]),
                        "{fmt:?} {isa:?} rows {rows:?} row {t}"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "group boundaries")]
fn a_row_range_off_the_group_boundaries_is_refused() {
    let mut rng = Rng(5);
    let w = random_weight(WeightFormat::F32, 40, 8, &mut rng);
    let mut out = vec![0f32; 8];
    matmul_rows_with(
        &ThreadPool::new(1),
        Isa::Scalar,
        Matmul {
            x: &[0.0; 8],
            n: 1,
            w: &w,
            bias: None,
            out: &mut out,
            accumulate: false,
        },
        8..16,
    );
}

#[test]
fn rows_are_bit_identical_alone_in_batches_and_across_threads() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    let mut rng = Rng(3);
    // The last shape is large enough to be split over rows and row blocks.
    for (m, k, n) in [(70, 160usize, 13), (16, 512, 300)] {
        for fmt in WeightFormat::ALL {
            let k = k.next_multiple_of(fmt.block_size());
            let w = random_weight(fmt, m, k, &mut rng);
            let x = rng.vec(n * k, 1.0);
            for isa in isas() {
                let whole = run(&pools[1], isa, &w, &x, n, None, None);
                for pool in &pools {
                    assert_eq!(bits(&run(pool, isa, &w, &x, n, None, None)), bits(&whole));
                }
                // Every row alone, and the batch cut into uneven pieces.
                for t in (0..n).step_by(if n > 50 { 37 } else { 1 }) {
                    let alone = run(&pools[0], isa, &w, &x[t * k..(t + 1) * k], 1, None, None);
                    assert_eq!(
                        bits(&alone),
                        bits(&whole[t * m..(t + 1) * m]),
                        "{fmt:?} {isa:?} row {t}"
                    );
                }
                let mut t0 = 0;
                for len in [2, 3, 5, 8].iter().cycle() {
                    if t0 >= n {
                        break;
                    }
                    let len = (*len).min(n - t0);
                    let part = run(
                        &pools[2],
                        isa,
                        &w,
                        &x[t0 * k..(t0 + len) * k],
                        len,
                        None,
                        None,
                    );
                    assert_eq!(
                        bits(&part),
                        bits(&whole[t0 * m..(t0 + len) * m]),
                        "{fmt:?} {isa:?} rows {t0}+{len}"
                    );
                    t0 += len;
                }
            }
        }
    }
}

#[test]
fn bias_and_accumulate_follow_the_formula() {
    let pool = ThreadPool::new(2);
    let w = WeightMatrix::from_f32(WeightFormat::F32, 2, 3, &[1., 0., 0., 0., 1., 1.]).unwrap();
    let mut out = vec![10f32, 20., 30., 40.];
    matmul(
        &pool,
        Matmul {
            x: &[1., 2., 3., 4., 5., 6.],
            n: 2,
            w: &w,
            bias: Some(&[0.5, -0.5]),
            out: &mut out,
            accumulate: true,
        },
    );
    assert_eq!(out, vec![11.5, 24.5, 34.5, 50.5]);
}

#[test]
fn empty_shapes_are_no_ops_or_bias_only() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(5);
    for fmt in WeightFormat::ALL {
        let w = random_weight(
            fmt,
            20,
            64usize.next_multiple_of(fmt.block_size()),
            &mut rng,
        );
        let mut out: Vec<f32> = vec![];
        for isa in isas() {
            matmul_with(
                &pool,
                isa,
                Matmul {
                    x: &[],
                    n: 0,
                    w: &w,
                    bias: None,
                    out: &mut out,
                    accumulate: false,
                },
            );
        }
    }
    // k = 0: the product is empty, the bias remains.
    let w = WeightMatrix::from_f32(WeightFormat::F32, 3, 0, &[]).unwrap();
    for isa in isas() {
        let out = run(&pool, isa, &w, &[], 2, Some(&[1.0, 2.0, 3.0]), None);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}

#[test]
fn a_real_quantizer_round_trip_stays_close_to_the_f32_product() {
    // Weights quantized from f32 by the GGUF rules, then the product compared
    // with the f32 weights' product: the quantization error of the weights
    // dominates (Q8_0 ≈ 0.4%, Q4 ≈ 6% of the output scale here).
    let pool = ThreadPool::new(2);
    let mut rng = Rng(21);
    let (m, k, n) = (48, 256, 4);
    let vals = rng.vec(m * k, 1.0);
    let x = rng.vec(n * k, 1.0);
    let exact = run(
        &pool,
        Isa::Scalar,
        &WeightMatrix::from_f32(WeightFormat::F32, m, k, &vals).unwrap(),
        &x,
        n,
        None,
        None,
    );
    let rms = (exact.iter().map(|v| v * v).sum::<f32>() / exact.len() as f32).sqrt();
    for (fmt, tol) in [
        (WeightFormat::Q8_0, 0.01),
        (WeightFormat::Q4_0, 0.15),
        (WeightFormat::Q4_1, 0.15),
        (WeightFormat::BF16, 0.01),
        (WeightFormat::F16, 0.001),
    ] {
        let w = WeightMatrix::from_f32(fmt, m, k, &vals).unwrap();
        let got = run(&pool, Isa::Avx512Vnni, &w, &x, n, None, None);
        let err = (got
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / got.len() as f32)
            .sqrt();
        assert!(err / rms < tol, "{fmt:?}: relative rms error {}", err / rms);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any shape, format and split: each row equals itself computed alone on
    /// the scalar path, bit for bit.
    #[test]
    fn any_row_equals_its_scalar_self(
        fmt_i in 0usize..WeightFormat::ALL.len(),
        m in 1usize..40,
        kb in 1usize..6,
        n in 1usize..12,
        seed in any::<u64>(),
    ) {
        let fmt = WeightFormat::ALL[fmt_i];
        let k = match fmt.block_size() {
            1 => kb * 13,
            block => kb * block,
        };
        let mut rng = Rng(seed);
        let w = random_weight(fmt, m, k, &mut rng);
        let x = rng.vec(n * k, 3.0);
        let pool = ThreadPool::new(2);
        let t = (seed as usize) % n;
        let alone = run(&pool, Isa::Scalar, &w, &x[t * k..(t + 1) * k], 1, None, None);
        for isa in isas() {
            let batch = run(&pool, isa, &w, &x, n, None, None);
            prop_assert_eq!(bits(&batch[t * m..(t + 1) * m]), bits(&alone));
        }
    }
}

#[test]
fn integer_groups_match_the_reference_across_isas_and_batches() {
    // GPTQ/AWQ-style weights: every code width, both scale types, group
    // sizes from one block to the whole row, with and without act-order.
    let pool = ThreadPool::new(2);
    let mut rng = Rng(41);
    for bits in [2u8, 3, 4, 8] {
        for bf16_scales in [false, true] {
            for (group, shuffle) in [(32, false), (64, true), (128, false), (256, true)] {
                let (m, k, n) = (37, 256, 5);
                let w = random_int_weight(bits, bf16_scales, m, k, group, shuffle, &mut rng);
                let x = rng.vec(n * k, 2.0);
                let what = format!("INT{bits} bf16={bf16_scales} g{group} perm={shuffle}");
                let base = run(&pool, Isa::Scalar, &w, &x, n, None, None);
                check_against_reference(&w, &x, n, &base, &what);
                for isa in isas() {
                    let got = run(&pool, isa, &w, &x, n, None, None);
                    assert_eq!(bits_of(&got), bits_of(&base), "{what} {isa:?}");
                    for t in 0..n {
                        let alone = run(&pool, isa, &w, &x[t * k..(t + 1) * k], 1, None, None);
                        assert_eq!(
                            bits_of(&alone),
                            bits_of(&base[t * m..(t + 1) * m]),
                            "{what} {isa:?} row {t}"
                        );
                    }
                }
            }
        }
    }
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    bits(v)
}

#[test]
fn integer_group_parts_are_checked() {
    use kiln_kernels_cpu::weights::IntParts;
    let parts = |group, codes: &'static [u8]| IntParts {
        bits: 4,
        bf16_scales: false,
        rows: 1,
        cols: 64,
        group,
        codes,
        scales: &[0x3c00, 0x3c00],
        zeros: &[8, 8],
        perm: None,
    };
    static CODES: [u8; 64] = [1; 64];
    static BIG: [u8; 64] = [16; 64];
    assert!(WeightMatrix::from_int(parts(32, &CODES)).is_ok());
    let e = WeightMatrix::from_int(parts(48, &CODES))
        .unwrap_err()
        .to_string();
    assert!(e.contains("group size 48"), "{e}");
    let e = WeightMatrix::from_int(parts(32, &BIG))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit in 4 bits"), "{e}");
    let e = WeightMatrix::from_int(parts(64, &CODES))
        .unwrap_err()
        .to_string();
    assert!(e.contains("scales has 2 values"), "{e}");
}

#[test]
fn every_fp8_code_widens_exactly_on_every_isa() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(23);
    // Every finite code (subnormals and ±448 included) in every lane.
    let finite: Vec<u8> = (0..=255u8).filter(|c| c & 0x7F != 0x7F).collect();
    let (m, k, n) = (37, 254, 3);
    let codes: Vec<u8> = (0..m * k).map(|i| finite[(i * 7 + i / k) % 254]).collect();
    let scales: Vec<f32> = (0..m).map(|_| 0.001 + rng.f32().abs() * 0.01).collect();
    let w = WeightMatrix::from_fp8(m, k, &codes, &scales).unwrap();
    let x = rng.vec(n * k, 1.0);
    let mut row = vec![0f32; k];
    for r in 0..m {
        w.dequantize_row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            let want = kiln_plugin_abi::e4m3::e4m3_value(codes[r * k + c]) * scales[r];
            assert_eq!(v.to_bits(), want.to_bits(), "row {r}, column {c}");
        }
    }
    let base = run(&pool, Isa::Scalar, &w, &x, n, None, None);
    check_against_reference(&w, &x, n, &base, "F8_E4M3 scalar, every code");
    for isa in isas() {
        let got = run(&pool, isa, &w, &x, n, None, None);
        assert_eq!(bits(&got), bits(&base), "F8_E4M3 {isa:?}");
    }
    // The NaN codes are refused with where they are.
    let mut bad = codes.clone();
    bad[k + 3] = 0x7F;
    let e = WeightMatrix::from_fp8(m, k, &bad, &scales).unwrap_err();
    assert!(e.to_string().contains("row 1, column 3"), "{e}");
}
