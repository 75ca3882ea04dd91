//! Quantized Linear tensors (GPTQ, AWQ, compressed-tensors, FP8) read
//! through `QuantizedLinears` from an in-memory weight source, as the
//! decoder loader reads them from a safetensors checkpoint.
//!
//! Input layout: one byte picks the scheme as a `quantization_config` can
//! declare it, two bytes the Linear's `[rows, cols]` (1 to 256 each, as a
//! validated config gives them), then one byte per companion tensor
//! (`qweight`, `qzeros`, `scales`, `g_idx`, `weight_packed`, `weight_scale`,
//! `weight_zero_point`, `weight`): absent, or present with a dtype and up to
//! three dimensions, each picked from the sizes the loaders expect
//! (`rows`, `cols / per-word codes`, groups, ...) or a small literal. The
//! remaining bytes fill the tensors' data. Every tensor's data is exactly
//! its shape's size, as the safetensors reader guarantees. Any error is
//! fine; a panic, or a result whose sizes disagree with its shape, is a bug.

#![no_main]

use std::borrow::Cow;
use std::collections::BTreeMap;

use kiln_models::weights::quantized::{Fp8Config, QuantScheme, QuantizedLinear, QuantizedLinears};
use kiln_models::weights::{TensorView, WeightDType, WeightError, WeightSource};
use libfuzzer_sys::fuzz_target;

/// Largest tensor built from one input, in bytes.
const MAX_TENSOR_BYTES: usize = 1 << 20;

const PREFIX: &str = "model.layers.0.mlp.down_proj";

const SUFFIXES: [&str; 8] = [
    "qweight",
    "qzeros",
    "scales",
    "g_idx",
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight",
];

const DTYPES: [WeightDType; 8] = [
    WeightDType::I32,
    WeightDType::F16,
    WeightDType::BF16,
    WeightDType::F32,
    WeightDType::I8,
    WeightDType::F8_E4M3,
    WeightDType::U8,
    WeightDType::I64,
];

/// Tensors held in memory, answering by name like a safetensors checkpoint.
struct MemorySource {
    tensors: BTreeMap<String, (WeightDType, Vec<usize>, Vec<u8>)>,
}

impl WeightSource for MemorySource {
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError> {
        Ok(self.tensors.get(name).map(|(dtype, shape, data)| TensorView {
            name: name.to_string(),
            dtype: *dtype,
            shape: shape.clone(),
            data: Cow::Borrowed(data),
        }))
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.2.len() as u64).sum()
    }
}

/// Reads the input front to back; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

/// A scheme `QuantScheme::from_quantization_config` can return.
fn scheme(b: u8) -> QuantScheme {
    let group = |sel: u8| [None, Some(32), Some(64), Some(128)][(sel & 3) as usize];
    match b & 3 {
        0 => QuantScheme::Gptq {
            bits: [2, 4, 8, 4][((b >> 2) & 3) as usize],
            group_size: group(b >> 4),
            v1_zeros: b & 0x40 == 0,
        },
        1 => QuantScheme::Awq {
            bits: 4,
            group_size: group(b >> 2).unwrap_or(256),
        },
        2 => {
            let bits = if b & 4 == 0 { 4 } else { 8 };
            let symmetric = b & 0x40 == 0;
            QuantScheme::CompressedTensors {
                bits,
                group_size: group(b >> 3),
                int_quantized: bits == 8 && symmetric && b & 0x20 != 0,
                symmetric,
            }
        }
        _ => QuantScheme::Fp8 {
            config: if b & 4 == 0 {
                Fp8Config::CompressedTensors
            } else {
                Fp8Config::Fp8
            },
        },
    }
}

fn check(linear: &QuantizedLinear, rows: usize, cols: usize) {
    match linear {
        QuantizedLinear::Int(l) => {
            assert_eq!((l.rows, l.cols), (rows, cols));
            assert!(l.group > 0 && cols % l.group == 0, "group {}", l.group);
            let groups = cols / l.group;
            assert_eq!(l.codes.len(), rows * cols, "codes");
            assert_eq!(l.scales.len(), rows * groups, "scales");
            assert_eq!(l.zeros.len(), rows * groups, "zeros");
            if let Some(perm) = &l.perm {
                assert_eq!(perm.len(), cols, "perm");
            }
        }
        QuantizedLinear::Fp8(l) => {
            assert_eq!(l.codes.len(), rows * cols, "codes");
            assert_eq!(l.scales.len(), rows, "scales");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let scheme = scheme(input.next());
    let rows = 1 + input.next() as usize;
    let cols = 1 + input.next() as usize;
    let (bits, group) = match &scheme {
        QuantScheme::Gptq {
            bits, group_size, ..
        }
        | QuantScheme::CompressedTensors {
            bits, group_size, ..
        } => (*bits as usize, group_size.unwrap_or(cols)),
        QuantScheme::Awq { bits, group_size } => (*bits as usize, *group_size),
        QuantScheme::Fp8 { .. } => (32, cols),
    };
    let per = 32 / bits;
    let groups = cols / group.max(1);

    let mut specs = Vec::new();
    for suffix in SUFFIXES {
        let c = input.next();
        if c & 1 == 0 {
            continue;
        }
        let dtype = DTYPES[((c >> 1) & 7) as usize];
        let shape: Vec<usize> = (0..(c >> 4) & 3)
            .map(|_| {
                let d = input.next();
                let candidates = [rows, cols, rows / per, cols / per, groups, 1, rows / 8];
                candidates
                    .get((d >> 5) as usize)
                    .copied()
                    .unwrap_or((d & 31) as usize)
            })
            .collect();
        specs.push((suffix, dtype, shape));
    }

    // Tensor data from the rest of the input, repeated as needed.
    let fill = input.0;
    let mut at = 0usize;
    let mut tensors = BTreeMap::new();
    for (suffix, dtype, shape) in specs {
        let Some(len) = shape
            .iter()
            .try_fold(dtype.type_size(), |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_BYTES)
        else {
            continue;
        };
        let bytes: Vec<u8> = if fill.is_empty() {
            vec![0; len]
        } else {
            (0..len).map(|i| fill[(at + i) % fill.len()]).collect()
        };
        at = (at + len) % fill.len().max(1);
        tensors.insert(format!("{PREFIX}.{suffix}"), (dtype, shape, bytes));
    }

    let source = MemorySource { tensors };
    let linears = QuantizedLinears::new(&source, scheme);
    if let Ok(Some(linear)) = linears.linear(&format!("{PREFIX}.weight"), rows, cols) {
        check(&linear, rows, cols);
        let _ = linear.checkpoint_bytes();
    }
});
