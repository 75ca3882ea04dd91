//! Every GGUF block format the CPU kernels run, checked against the
//! reference dequantizer (gguf-py's arithmetic, `kiln_models::weights::dequant`):
//! a packed row dequantizes to exactly the reference values, and a matmul of
//! random blocks stays within the activation-rounding bound of the exact
//! product of those values.

use half::f16;
use kiln_kernels_cpu::matmul::{Matmul, WeightFormat, WeightMatrix, matmul};
use kiln_kernels_cpu::pool::ThreadPool;
use kiln_models::weights::WeightDType;
use kiln_models::weights::dequant::dequantize;
use kiln_tests::Rng;

/// The model-side name of each kernel block format.
fn dtype_of(fmt: WeightFormat) -> WeightDType {
    match fmt {
        WeightFormat::Q4_0 => WeightDType::Q4_0,
        WeightFormat::Q4_1 => WeightDType::Q4_1,
        WeightFormat::Q5_0 => WeightDType::Q5_0,
        WeightFormat::Q5_1 => WeightDType::Q5_1,
        WeightFormat::Q8_0 => WeightDType::Q8_0,
        WeightFormat::Q2_K => WeightDType::Q2_K,
        WeightFormat::Q3_K => WeightDType::Q3_K,
        WeightFormat::Q4_K => WeightDType::Q4_K,
        WeightFormat::Q5_K => WeightDType::Q5_K,
        WeightFormat::Q6_K => WeightDType::Q6_K,
        WeightFormat::IQ4_NL => WeightDType::IQ4_NL,
        WeightFormat::IQ4_XS => WeightDType::IQ4_XS,
        WeightFormat::F32 => WeightDType::F32,
        WeightFormat::F16 => WeightDType::F16,
        WeightFormat::BF16 => WeightDType::BF16,
        WeightFormat::F8_E4M3 => WeightDType::F8_E4M3,
        WeightFormat::Int { .. } => unreachable!("integer groups have no GGUF type"),
    }
}

/// Random source blocks with finite, modest f16 scales.
fn random_blocks(fmt: WeightFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut raw: Vec<u8> = (0..rows * fmt.row_bytes(cols).unwrap())
        .map(|_| ((rng.next_f32() + 1.0) * 128.0) as u8)
        .collect();
    for blk in raw.chunks_exact_mut(fmt.block_bytes()) {
        for &at in fmt.f16_fields() {
            let v = (rng.next_f32() + 1.0) * 5e-3 + 1e-4;
            blk[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    raw
}

#[test]
fn packed_rows_dequantize_exactly_like_the_reference() {
    let mut rng = Rng(17);
    let mut formats = 0;
    for fmt in WeightFormat::ALL.into_iter().filter(|f| f.is_quantized()) {
        let (rows, cols) = (21, 2 * fmt.block_size().max(256));
        let raw = random_blocks(fmt, rows, cols, &mut rng);
        let w = WeightMatrix::from_raw(fmt, rows, cols, &raw).unwrap();
        let reference = dequantize(dtype_of(fmt), &raw, rows * cols)
            .unwrap_or_else(|| panic!("no reference dequantizer for {fmt:?}"));
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut row);
            let want = &reference[r * cols..(r + 1) * cols];
            for (i, (a, b)) in row.iter().zip(want).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{fmt:?} row {r} col {i}: {a} vs {b}"
                );
            }
        }
        formats += 1;
    }
    assert_eq!(formats, 12, "every GGUF block format is covered");
}

#[test]
fn matmul_of_every_format_matches_the_reference_product() {
    let mut rng = Rng(29);
    let pool = ThreadPool::new(2);
    for fmt in WeightFormat::ALL.into_iter().filter(|f| f.is_quantized()) {
        let (m, k, n) = (33, 512, 3);
        let raw = random_blocks(fmt, m, k, &mut rng);
        let w = WeightMatrix::from_raw(fmt, m, k, &raw).unwrap();
        let reference = dequantize(dtype_of(fmt), &raw, m * k).unwrap();
        let x = rng.vec(n * k, 1.0);
        let mut out = vec![0f32; n * m];
        matmul(
            &pool,
            Matmul {
                x: &x,
                n,
                w: &w,
                bias: None,
                out: &mut out,
                accumulate: false,
            },
        );
        for t in 0..n {
            for j in 0..m {
                let wr = &reference[j * k..(j + 1) * k];
                let xr = &x[t * k..(t + 1) * k];
                let exact: f64 = wr.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale: f64 = wr
                    .iter()
                    .zip(xr)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let got = out[t * m + j] as f64;
                assert!(
                    (got - exact).abs() <= 1e-4 * scale + 1e-6,
                    "{fmt:?} out[{t}, {j}] = {got}, reference {exact}"
                );
            }
        }
    }
}
