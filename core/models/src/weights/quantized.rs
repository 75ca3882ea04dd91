//! Quantized safetensors checkpoints: GPTQ, AWQ and compressed-tensors
//! integer weights, read from their on-disk packing into one canonical form.
//!
//! Every scheme here stores a Linear `W[out, in]` as small unsigned integer
//! codes in groups along the input dimension, each group with a scale and a
//! zero point: `W[n, k] = s[n, g(k)] · (q[n, k] − z[n, g(k)])`. They differ
//! only in how the codes are packed into int32 words (GPTQ along the input
//! dimension, AWQ along the output dimension with an interleave,
//! compressed-tensors along the input dimension in `[out, in]` orientation),
//! in the zero-point convention (GPTQ v1 stores `z − 1`), and in GPTQ's
//! act-order (`g_idx` maps each input column to its group in any order).
//! [`IntLinear`] is the common form a backend receives as
//! `KILN_WEIGHT_INT_GROUPS`: one code per byte, 16-bit scales and one zero
//! per group, and, for act-order, the permutation that makes every group a
//! run of consecutive columns.
//!
//! FP8 checkpoints (compressed-tensors `float-quantized`, `quant_method:
//! "fp8"`) keep their E4M3 codes and per-tensor or per-channel scales
//! instead ([`Fp8Linear`], `KILN_WEIGHT_FP8_E4M3`).

use kiln_plugin_abi::safe::{AbiResult, Device, Weight, WeightPartSpec, WeightSpec};
use kiln_plugin_abi::{
    KILN_BF16, KILN_F16, KILN_I32, KILN_PART_DATA, KILN_PART_GROUP_INDEX, KILN_PART_SCALES,
    KILN_PART_ZEROS, KILN_U8, KILN_WEIGHT_INT_GROUPS,
};

use super::fp8::Fp8Linear;
use super::{TensorView, WeightDType, WeightError, WeightSource};

/// How a checkpoint's Linear weights are quantized (`quantization_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantScheme {
    /// GPTQ (`quant_method: "gptq"`).
    Gptq {
        /// Bits per code.
        bits: u32,
        /// Columns per group; `None` for one group per row (`-1`).
        group_size: Option<usize>,
        /// Zero points are stored minus one (the v1 on-disk format, the default).
        v1_zeros: bool,
    },
    /// AWQ GEMM (`quant_method: "awq"`, `version: "gemm"`).
    Awq {
        /// Bits per code (4).
        bits: u32,
        /// Columns per group.
        group_size: usize,
    },
    /// compressed-tensors `pack-quantized` (W4A16/W8A16) or `int-quantized`
    /// (W8A8 weights, here run with 16-bit activations).
    CompressedTensors {
        /// Bits per weight code.
        bits: u32,
        /// Columns per group; `None` for one scale per output channel.
        group_size: Option<usize>,
        /// `int-quantized`: plain int8 `weight` tensors.
        int_quantized: bool,
        /// Symmetric (no zero-point tensors).
        symmetric: bool,
    },
    /// FP8 E4M3 weights with a per-tensor or per-channel `weight_scale`
    /// (read from the scale's shape), run with 16/32-bit activations.
    Fp8 {
        /// Which configuration declared it.
        config: Fp8Config,
    },
}

/// The `quantization_config` an FP8 checkpoint comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Config {
    /// compressed-tensors `format: "float-quantized"` (llm-compressor's
    /// FP8 and FP8_DYNAMIC schemes).
    CompressedTensors,
    /// `quant_method: "fp8"` (vLLM's and transformers' own).
    Fp8,
}

/// vLLM's `--quantization` names of the schemes Kiln reads.
pub const QUANTIZATION_NAMES: [&str; 4] = ["gptq", "awq", "compressed-tensors", "fp8"];

impl QuantScheme {
    /// vLLM's `--quantization` name of the scheme.
    pub fn name(&self) -> &'static str {
        match self {
            QuantScheme::Gptq { .. } => "gptq",
            QuantScheme::Awq { .. } => "awq",
            QuantScheme::CompressedTensors { .. }
            | QuantScheme::Fp8 {
                config: Fp8Config::CompressedTensors,
            } => "compressed-tensors",
            QuantScheme::Fp8 {
                config: Fp8Config::Fp8,
            } => "fp8",
        }
    }

    /// A short label for logs and `/api/show` (`GPTQ-4bit-g128`).
    pub fn label(&self) -> String {
        let g = |g: Option<usize>| g.map_or("channel".to_string(), |g| format!("g{g}"));
        match self {
            QuantScheme::Gptq {
                bits, group_size, ..
            } => format!("GPTQ-{bits}bit-{}", g(*group_size)),
            QuantScheme::Awq { bits, group_size } => format!("AWQ-{bits}bit-g{group_size}"),
            QuantScheme::CompressedTensors {
                bits,
                group_size,
                int_quantized,
                ..
            } => {
                let kind = if *int_quantized { "W8A8" } else { "W" };
                if *int_quantized {
                    format!("compressed-tensors-{kind}")
                } else {
                    format!("compressed-tensors-W{bits}A16-{}", g(*group_size))
                }
            }
            QuantScheme::Fp8 {
                config: Fp8Config::CompressedTensors,
            } => "compressed-tensors-FP8".into(),
            QuantScheme::Fp8 {
                config: Fp8Config::Fp8,
            } => "FP8".into(),
        }
    }

    /// The scheme of a `config.json`, `None` when it has no
    /// `quantization_config`. Errors name the field.
    pub fn from_config_json(text: &str) -> Result<Option<QuantScheme>, String> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("config.json is not valid JSON: {e}"))?;
        let Some(q) = v.get("quantization_config") else {
            return Ok(None);
        };
        QuantScheme::from_quantization_config(q).map(Some)
    }

    /// Parse a `quantization_config` object.
    pub fn from_quantization_config(q: &serde_json::Value) -> Result<QuantScheme, String> {
        let method = q
            .get("quant_method")
            .and_then(|m| m.as_str())
            .ok_or("quantization_config has no quant_method")?;
        let int = |key: &str| q.get(key).and_then(|v| v.as_i64());
        let text = |key: &str| q.get(key).and_then(|v| v.as_str());
        let group = |g: Option<i64>| -> Result<Option<usize>, String> {
            match g {
                None | Some(-1) => Ok(None),
                Some(g) if g > 0 && g % 32 == 0 => Ok(Some(g as usize)),
                Some(g) => Err(format!(
                    "quantization_config.group_size {g} is not supported (a multiple of 32, or -1)"
                )),
            }
        };
        match method {
            "gptq" => {
                let bits = int("bits")
                    .or(int("w_bit"))
                    .ok_or("quantization_config.bits is missing")?;
                if ![2, 4, 8].contains(&bits) {
                    return Err(format!(
                        "quantization_config.bits {bits} is not supported for GPTQ (2, 4 or 8)"
                    ));
                }
                let format = text("checkpoint_format")
                    .or(text("format"))
                    .unwrap_or("gptq");
                let v1_zeros = match format {
                    "gptq" => true,
                    "gptq_v2" => false,
                    other => {
                        return Err(format!(
                            "quantization_config.checkpoint_format {other:?} is not supported (gptq or gptq_v2)"
                        ));
                    }
                };
                Ok(QuantScheme::Gptq {
                    bits: bits as u32,
                    group_size: group(int("group_size").or(int("q_group_size")))?,
                    v1_zeros,
                })
            }
            "awq" => {
                let bits = int("bits").or(int("w_bit")).unwrap_or(4);
                if bits != 4 {
                    return Err(format!(
                        "quantization_config.bits {bits} is not supported for AWQ (4)"
                    ));
                }
                let version = text("version").or(text("format")).unwrap_or("gemm");
                if !version.eq_ignore_ascii_case("gemm") {
                    return Err(format!(
                        "quantization_config.version {version:?} is not supported (AWQ GEMM only)"
                    ));
                }
                let group_size = group(int("group_size").or(int("q_group_size")))?
                    .ok_or("quantization_config.group_size must be set for AWQ")?;
                Ok(QuantScheme::Awq {
                    bits: 4,
                    group_size,
                })
            }
            "compressed-tensors" => compressed_tensors(q, group),
            "fp8" => fp8_method(q),
            other => Err(format!(
                "quantization method {other:?} is not supported; Kiln reads {}",
                QUANTIZATION_NAMES.join(", ")
            )),
        }
    }
}

/// `quant_method: "fp8"`: per-tensor or per-channel E4M3 weights; the
/// activation scheme (dynamic or static) only concerns activations, which
/// Kiln keeps in 16/32 bits.
fn fp8_method(q: &serde_json::Value) -> Result<QuantScheme, String> {
    if q.get("weight_block_size").is_some_and(|b| !b.is_null()) {
        return Err(
            "quantization_config.weight_block_size: block-wise FP8 scales are not supported \
             (Kiln reads per-tensor and per-channel weight_scale)"
                .into(),
        );
    }
    match q.get("fmt").and_then(|f| f.as_str()).unwrap_or("e4m3") {
        "e4m3" => Ok(QuantScheme::Fp8 {
            config: Fp8Config::Fp8,
        }),
        other => Err(format!(
            "quantization_config.fmt {other:?} is not supported (e4m3)"
        )),
    }
}

/// The one `config_groups.*.weights` object of a compressed-tensors config.
fn compressed_tensors_weights(q: &serde_json::Value) -> Result<&serde_json::Value, String> {
    let groups = q
        .get("config_groups")
        .and_then(|g| g.as_object())
        .ok_or("quantization_config.config_groups is missing")?;
    if groups.len() != 1 {
        return Err(format!(
            "quantization_config.config_groups has {} groups; Kiln reads one scheme for all Linear layers",
            groups.len()
        ));
    }
    groups
        .values()
        .next()
        .and_then(|g| g.get("weights"))
        .ok_or_else(|| "quantization_config.config_groups.*.weights is missing".into())
}

/// compressed-tensors `float-quantized`: 8-bit float weights, one scale per
/// tensor or per output channel. Input activations (dynamic per token or
/// static) are not emulated: they stay in 16/32 bits.
fn compressed_tensors_fp8(weights: &serde_json::Value) -> Result<QuantScheme, String> {
    let field = |key: &str| weights.get(key).and_then(|v| v.as_str());
    if field("type") != Some("float") {
        return Err("config_groups.*.weights.type must be \"float\" for float-quantized".into());
    }
    match weights.get("num_bits").and_then(|b| b.as_i64()) {
        Some(8) => {}
        other => {
            return Err(format!(
                "config_groups.*.weights.num_bits {other:?} is not supported for float-quantized (8)"
            ));
        }
    }
    match field("strategy").unwrap_or("tensor") {
        "tensor" | "channel" => Ok(QuantScheme::Fp8 {
            config: Fp8Config::CompressedTensors,
        }),
        other => Err(format!(
            "config_groups.*.weights.strategy {other:?} is not supported for float-quantized \
             (tensor or channel)"
        )),
    }
}

fn compressed_tensors(
    q: &serde_json::Value,
    group: impl Fn(Option<i64>) -> Result<Option<usize>, String>,
) -> Result<QuantScheme, String> {
    let format = q
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or("quantization_config.format is missing")?;
    let weights = compressed_tensors_weights(q)?;
    if format == "float-quantized" {
        return compressed_tensors_fp8(weights);
    }
    let bits = weights
        .get("num_bits")
        .and_then(|b| b.as_i64())
        .ok_or("config_groups.*.weights.num_bits is missing")?;
    if weights.get("type").and_then(|t| t.as_str()) != Some("int") {
        return Err("config_groups.*.weights.type must be \"int\"".into());
    }
    let symmetric = weights
        .get("symmetric")
        .and_then(|s| s.as_bool())
        .unwrap_or(true);
    let strategy = weights
        .get("strategy")
        .and_then(|s| s.as_str())
        .unwrap_or("channel");
    let group_size = match strategy {
        "channel" => None,
        "group" => group(weights.get("group_size").and_then(|g| g.as_i64()))?,
        other => {
            return Err(format!(
                "config_groups.*.weights.strategy {other:?} is not supported (channel or group)"
            ));
        }
    };
    match (format, bits) {
        ("pack-quantized", 4 | 8) => Ok(QuantScheme::CompressedTensors {
            bits: bits as u32,
            group_size,
            int_quantized: false,
            symmetric,
        }),
        ("int-quantized", 8) if symmetric => Ok(QuantScheme::CompressedTensors {
            bits: 8,
            group_size,
            int_quantized: true,
            symmetric,
        }),
        (f, b) => Err(format!(
            "compressed-tensors format {f:?} with {b}-bit weights is not supported \
             (pack-quantized 4/8-bit, or symmetric int-quantized 8-bit)"
        )),
    }
}

/// A Linear weight in the canonical integer-group form.
#[derive(Debug, Clone, PartialEq)]
pub struct IntLinear {
    /// Bits per code (2, 4 or 8).
    pub bits: u32,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Columns per group (after `perm`, groups are runs of this many columns).
    pub group: usize,
    /// `[rows, cols]` unsigned codes, one per byte, in `perm` order.
    pub codes: Vec<u8>,
    /// `[rows, cols / group]` scale bits.
    pub scales: Vec<u16>,
    /// The scales are bf16 (else f16).
    pub bf16_scales: bool,
    /// `[rows, cols / group]` zero points (true zeros, not GPTQ v1's `z − 1`).
    pub zeros: Vec<u8>,
    /// Input feature of each packed column (act-order), `None` for the identity.
    pub perm: Option<Vec<u32>>,
    /// Bytes the checkpoint stores for this Linear.
    pub checkpoint_bytes: u64,
}

/// A tensor's int32 words (safetensors stores them little-endian).
fn words(view: &TensorView<'_>) -> Result<Vec<u32>, String> {
    if view.dtype != WeightDType::I32 {
        return Err(format!("is {}, expected I32 packed words", view.dtype));
    }
    Ok(view
        .data
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Scale tensor values as 16-bit bits: F16/BF16 as stored, F32 when it
/// converts to f16 (or else bf16) without changing any value.
fn scale_bits(view: &TensorView<'_>) -> Result<(Vec<u16>, bool), String> {
    let u16s = |d: &[u8]| -> Vec<u16> {
        d.chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    };
    match view.dtype {
        WeightDType::F16 => Ok((u16s(&view.data), false)),
        WeightDType::BF16 => Ok((u16s(&view.data), true)),
        WeightDType::F32 => {
            let vals: Vec<f32> = view
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if vals.iter().all(|&v| half::f16::from_f32(v).to_f32() == v) {
                Ok((
                    vals.iter()
                        .map(|&v| half::f16::from_f32(v).to_bits())
                        .collect(),
                    false,
                ))
            } else if vals.iter().all(|&v| half::bf16::from_f32(v).to_f32() == v) {
                Ok((
                    vals.iter()
                        .map(|&v| half::bf16::from_f32(v).to_bits())
                        .collect(),
                    true,
                ))
            } else {
                Err("holds f32 scales that are neither f16 nor bf16 values; Kiln keeps 16-bit scales".into())
            }
        }
        other => Err(format!("is {other}, expected F16, BF16 or F32 scales")),
    }
}

fn expect_shape(view: &TensorView<'_>, shape: &[usize]) -> Result<(), String> {
    if view.shape != shape {
        return Err(format!(
            "has shape {:?}, the config implies {:?}",
            view.shape, shape
        ));
    }
    Ok(())
}

/// Field `i` of `bits` bits of a little-endian packed word sequence.
#[inline]
fn field(words: &[u32], i: usize, bits: u32) -> u8 {
    let per = (32 / bits) as usize;
    ((words[i / per] >> (bits as usize * (i % per))) & ((1 << bits) - 1)) as u8
}

/// The act-order permutation of a GPTQ `g_idx`: `None` when every column
/// is in group `k / group` already; else the stable sort of the columns by
/// group, which must give every group exactly `group` columns.
fn act_order(g_idx: &[i32], group: usize, groups: usize) -> Result<Option<Vec<u32>>, String> {
    if g_idx
        .iter()
        .enumerate()
        .all(|(k, &g)| g as usize == k / group)
    {
        return Ok(None);
    }
    let mut counts = vec![0usize; groups];
    for &g in g_idx {
        if g < 0 || g as usize >= groups {
            return Err(format!("g_idx holds group {g} outside 0..{groups}"));
        }
        counts[g as usize] += 1;
    }
    if let Some(g) = counts.iter().position(|&c| c != group) {
        return Err(format!(
            "g_idx gives group {g} {} columns, not the group size {group}",
            counts[g]
        ));
    }
    let mut perm: Vec<u32> = (0..g_idx.len() as u32).collect();
    perm.sort_by_key(|&k| g_idx[k as usize]);
    Ok(Some(perm))
}

/// Reorder each row's codes into `perm` order.
fn permute_codes(codes: &mut [u8], cols: usize, perm: &[u32]) {
    let mut row = vec![0u8; cols];
    for r in codes.chunks_exact_mut(cols) {
        row.copy_from_slice(r);
        for (o, &k) in r.iter_mut().zip(perm) {
            *o = row[k as usize];
        }
    }
}

/// Transpose `[a, b]` row-major to `[b, a]`.
fn transpose<T: Copy + Default>(v: &[T], a: usize, b: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    for i in 0..a {
        for j in 0..b {
            out[j * a + i] = v[i * b + j];
        }
    }
    out
}

/// AWQ's nibble order: nibble `i` of a word holds column `AWQ_ORDER[i]` of its 8.
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Reads quantized Linear weights of one scheme from a weight source.
pub struct QuantizedLinears<'a> {
    source: &'a dyn WeightSource,
    scheme: QuantScheme,
}

impl<'a> QuantizedLinears<'a> {
    /// Read `scheme` weights from `source`.
    pub fn new(source: &'a dyn WeightSource, scheme: QuantScheme) -> Self {
        QuantizedLinears { source, scheme }
    }

    /// The Linear whose float weight would be `weight_name` (`….weight`) as
    /// `[rows, cols]`, or `None` when the checkpoint stores it unquantized
    /// (embeddings, norms, an ignored `lm_head`).
    pub fn linear(
        &self,
        weight_name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<QuantizedLinear>, WeightError> {
        let Some(prefix) = weight_name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let get = |suffix: &str| self.source.tensor(&format!("{prefix}.{suffix}"));
        let fail = |tensor: &str, why: String| {
            WeightError::format(
                format!("{} checkpoint", self.scheme.label()),
                format!("tensor `{prefix}.{tensor}` {why}"),
            )
        };
        match &self.scheme {
            QuantScheme::Gptq {
                bits,
                group_size,
                v1_zeros,
            } => {
                let Some(qweight) = get("qweight")? else {
                    return Ok(None);
                };
                let group = group_size.unwrap_or(cols);
                gptq(GptqParts {
                    bits: *bits,
                    rows,
                    cols,
                    group,
                    v1_zeros: *v1_zeros,
                    qweight: &qweight,
                    qzeros: &get("qzeros")?.ok_or_else(|| fail("qzeros", "is missing".into()))?,
                    scales: &get("scales")?.ok_or_else(|| fail("scales", "is missing".into()))?,
                    g_idx: get("g_idx")?.as_ref(),
                })
                .map(|l| Some(QuantizedLinear::Int(l)))
                .map_err(|(t, why)| fail(t, why))
            }
            QuantScheme::Awq { bits, group_size } => {
                let Some(qweight) = get("qweight")? else {
                    return Ok(None);
                };
                awq(
                    *bits,
                    rows,
                    cols,
                    *group_size,
                    &qweight,
                    &get("qzeros")?.ok_or_else(|| fail("qzeros", "is missing".into()))?,
                    &get("scales")?.ok_or_else(|| fail("scales", "is missing".into()))?,
                )
                .map(|l| Some(QuantizedLinear::Int(l)))
                .map_err(|(t, why)| fail(t, why))
            }
            QuantScheme::CompressedTensors {
                bits,
                group_size,
                int_quantized,
                symmetric,
            } => {
                let packed = if *int_quantized {
                    get("weight")?.filter(|w| w.dtype == WeightDType::I8)
                } else {
                    get("weight_packed")?
                };
                let Some(packed) = packed else {
                    return Ok(None);
                };
                let scale = get("weight_scale")?
                    .ok_or_else(|| fail("weight_scale", "is missing".into()))?;
                let zero = if *symmetric {
                    None
                } else {
                    Some(
                        get("weight_zero_point")?
                            .ok_or_else(|| fail("weight_zero_point", "is missing".into()))?,
                    )
                };
                compressed(CtParts {
                    bits: *bits,
                    rows,
                    cols,
                    group: group_size.unwrap_or(cols),
                    int_quantized: *int_quantized,
                    packed: &packed,
                    scale: &scale,
                    zero: zero.as_ref(),
                })
                .map(|l| Some(QuantizedLinear::Int(l)))
                .map_err(|(t, why)| fail(t, why))
            }
            QuantScheme::Fp8 { .. } => {
                // Layers the config ignores (the LM head) stay 16/32-bit.
                let Some(weight) = get("weight")?.filter(|w| w.dtype == WeightDType::F8_E4M3)
                else {
                    return Ok(None);
                };
                let scale = get("weight_scale")?
                    .ok_or_else(|| fail("weight_scale", "is missing".into()))?;
                Fp8Linear::from_checkpoint(&weight, &scale, rows, cols)
                    .map(|l| Some(QuantizedLinear::Fp8(l)))
                    .map_err(|(t, why)| fail(t, why))
            }
        }
    }
}

/// A quantized checkpoint's Linear weight, in the form a backend receives.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizedLinear {
    /// Integer codes in groups (`KILN_WEIGHT_INT_GROUPS`).
    Int(IntLinear),
    /// FP8 E4M3 codes with row scales (`KILN_WEIGHT_FP8_E4M3`).
    Fp8(Fp8Linear),
}

impl QuantizedLinear {
    /// Hand the weight to a device in its format.
    pub fn prepare(&self, device: &Device, name: &str) -> AbiResult<Weight> {
        match self {
            QuantizedLinear::Int(l) => l.prepare(device, name),
            QuantizedLinear::Fp8(l) => l.prepare(device, name),
        }
    }

    /// Bytes the weight took in the checkpoint.
    pub fn checkpoint_bytes(&self) -> u64 {
        match self {
            QuantizedLinear::Int(l) => l.checkpoint_bytes,
            QuantizedLinear::Fp8(l) => l.checkpoint_bytes,
        }
    }
}

type PartResult = Result<IntLinear, (&'static str, String)>;

struct GptqParts<'v, 'a> {
    bits: u32,
    rows: usize,
    cols: usize,
    group: usize,
    v1_zeros: bool,
    qweight: &'v TensorView<'a>,
    qzeros: &'v TensorView<'a>,
    scales: &'v TensorView<'a>,
    g_idx: Option<&'v TensorView<'a>>,
}

/// GPTQ: `qweight [cols·bits/32, rows]` packed along the input dimension,
/// `qzeros [groups, rows·bits/32]` packed along the output dimension,
/// `scales [groups, rows]`, optional `g_idx [cols]`.
fn gptq(p: GptqParts<'_, '_>) -> PartResult {
    let GptqParts {
        bits,
        rows,
        cols,
        group,
        v1_zeros,
        ..
    } = p;
    let per = (32 / bits) as usize;
    if !cols.is_multiple_of(group) || !cols.is_multiple_of(per) || !rows.is_multiple_of(per) {
        return Err((
            "qweight",
            format!("[{rows}, {cols}] does not split into groups of {group} and {per}-code words"),
        ));
    }
    let groups = cols / group;
    expect_shape(p.qweight, &[cols / per, rows]).map_err(|e| ("qweight", e))?;
    expect_shape(p.qzeros, &[groups, rows / per]).map_err(|e| ("qzeros", e))?;
    expect_shape(p.scales, &[groups, rows]).map_err(|e| ("scales", e))?;
    let qw = words(p.qweight).map_err(|e| ("qweight", e))?;
    let qz = words(p.qzeros).map_err(|e| ("qzeros", e))?;
    let (scales_t, bf16_scales) = scale_bits(p.scales).map_err(|e| ("scales", e))?;
    let mask = (1u32 << bits) - 1;
    // Code of (n, k) is field k % per of word (k / per, n).
    let mut codes = vec![0u8; rows * cols];
    for k in 0..cols {
        let shift = bits as usize * (k % per);
        let row = &qw[(k / per) * rows..(k / per + 1) * rows];
        for (n, w) in row.iter().enumerate() {
            codes[n * cols + k] = ((w >> shift) & mask) as u8;
        }
    }
    let zeros_t: Vec<u8> = (0..groups * rows)
        .map(|i| {
            let (g, n) = (i / rows, i % rows);
            let z = field(&qz[g * (rows / per)..], n, bits) as u32;
            (if v1_zeros { (z + 1) & mask } else { z }) as u8
        })
        .collect();
    let perm = match p.g_idx {
        None => None,
        Some(g) => {
            expect_shape(g, &[cols]).map_err(|e| ("g_idx", e))?;
            let g_idx: Vec<i32> = words(g)
                .map_err(|e| ("g_idx", e))?
                .into_iter()
                .map(|w| w as i32)
                .collect();
            act_order(&g_idx, group, groups).map_err(|e| ("g_idx", e))?
        }
    };
    if let Some(perm) = &perm {
        permute_codes(&mut codes, cols, perm);
    }
    let checkpoint_bytes = [p.qweight, p.qzeros, p.scales]
        .iter()
        .chain(p.g_idx.iter())
        .map(|v| v.data.len() as u64)
        .sum();
    Ok(IntLinear {
        bits,
        rows,
        cols,
        group,
        codes,
        scales: transpose(&scales_t, groups, rows),
        bf16_scales,
        zeros: transpose(&zeros_t, groups, rows),
        perm,
        checkpoint_bytes,
    })
}

/// AWQ GEMM: `qweight [cols, rows/8]` and `qzeros [groups, rows/8]` packed
/// along the output dimension with [`AWQ_ORDER`], `scales [groups, rows]`;
/// zeros are stored as they are.
fn awq(
    bits: u32,
    rows: usize,
    cols: usize,
    group: usize,
    qweight: &TensorView<'_>,
    qzeros: &TensorView<'_>,
    scales: &TensorView<'_>,
) -> PartResult {
    if !cols.is_multiple_of(group) || !rows.is_multiple_of(8) {
        return Err((
            "qweight",
            format!("[{rows}, {cols}] does not split into groups of {group} and 8-code words"),
        ));
    }
    let groups = cols / group;
    expect_shape(qweight, &[cols, rows / 8]).map_err(|e| ("qweight", e))?;
    expect_shape(qzeros, &[groups, rows / 8]).map_err(|e| ("qzeros", e))?;
    expect_shape(scales, &[groups, rows]).map_err(|e| ("scales", e))?;
    let qw = words(qweight).map_err(|e| ("qweight", e))?;
    let qz = words(qzeros).map_err(|e| ("qzeros", e))?;
    let (scales_t, bf16_scales) = scale_bits(scales).map_err(|e| ("scales", e))?;
    let unpack = |w: &[u32], r: usize, n: usize| -> u8 {
        let word = w[r * (rows / 8) + n / 8];
        let nibble = AWQ_ORDER.iter().position(|&c| c == n % 8).unwrap_or(0);
        ((word >> (4 * nibble)) & 15) as u8
    };
    let mut codes = vec![0u8; rows * cols];
    for k in 0..cols {
        for n in 0..rows {
            codes[n * cols + k] = unpack(&qw, k, n);
        }
    }
    let zeros: Vec<u8> = (0..rows * groups)
        .map(|i| unpack(&qz, i % groups, i / groups))
        .collect();
    Ok(IntLinear {
        bits,
        rows,
        cols,
        group,
        codes,
        scales: transpose(&scales_t, groups, rows),
        bf16_scales,
        zeros,
        perm: None,
        checkpoint_bytes: (qweight.data.len() + qzeros.data.len() + scales.data.len()) as u64,
    })
}

struct CtParts<'v, 'a> {
    bits: u32,
    rows: usize,
    cols: usize,
    group: usize,
    int_quantized: bool,
    packed: &'v TensorView<'a>,
    scale: &'v TensorView<'a>,
    zero: Option<&'v TensorView<'a>>,
}

/// compressed-tensors: `weight_packed [rows, cols·bits/32]` (int32 words
/// packed along the input dimension, codes offset by `2^(bits−1)`) or an
/// int8 `weight [rows, cols]`; `weight_scale [rows, groups]`; optional
/// `weight_zero_point [rows, groups]` (signed, relative to the offset).
fn compressed(p: CtParts<'_, '_>) -> PartResult {
    let CtParts {
        bits,
        rows,
        cols,
        group,
        ..
    } = p;
    if !cols.is_multiple_of(group) {
        return Err((
            "weight_scale",
            format!("group size {group} does not divide in_features {cols}"),
        ));
    }
    let groups = cols / group;
    let offset = 1u32 << (bits - 1);
    let codes: Vec<u8> = if p.int_quantized {
        expect_shape(p.packed, &[rows, cols]).map_err(|e| ("weight", e))?;
        p.packed
            .data
            .iter()
            .map(|&b| (b as i8 as i32 + 128) as u8)
            .collect()
    } else {
        let per = (32 / bits) as usize;
        if !cols.is_multiple_of(per) {
            return Err((
                "weight_packed",
                format!("in_features {cols} is not a whole number of {per}-code words"),
            ));
        }
        expect_shape(p.packed, &[rows, cols / per]).map_err(|e| ("weight_packed", e))?;
        let w = words(p.packed).map_err(|e| ("weight_packed", e))?;
        (0..rows * cols)
            .map(|i| field(&w[(i / cols) * (cols / per)..], i % cols, bits))
            .collect()
    };
    let scale_name = "weight_scale";
    expect_shape(p.scale, &[rows, groups]).map_err(|e| (scale_name, e))?;
    let (scales, bf16_scales) = scale_bits(p.scale).map_err(|e| (scale_name, e))?;
    let zeros: Vec<u8> = match p.zero {
        None => vec![offset as u8; rows * groups],
        Some(z) => {
            expect_shape(z, &[rows, groups]).map_err(|e| ("weight_zero_point", e))?;
            let signed: Vec<i32> = match z.dtype {
                WeightDType::I8 => z.data.iter().map(|&b| b as i8 as i32).collect(),
                WeightDType::I32 => words(z)
                    .map_err(|e| ("weight_zero_point", e))?
                    .into_iter()
                    .map(|w| w as i32)
                    .collect(),
                other => {
                    return Err((
                        "weight_zero_point",
                        format!("is {other}, expected I8 or I32"),
                    ));
                }
            };
            signed
                .into_iter()
                .map(|z| {
                    u8::try_from(z + offset as i32).map_err(|_| {
                        (
                            "weight_zero_point",
                            format!("zero point {z} is outside the {bits}-bit range"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let checkpoint_bytes = [Some(p.packed), Some(p.scale), p.zero]
        .iter()
        .flatten()
        .map(|v| v.data.len() as u64)
        .sum();
    Ok(IntLinear {
        bits,
        rows,
        cols,
        group,
        codes,
        scales,
        bf16_scales,
        zeros,
        perm: None,
        checkpoint_bytes,
    })
}

impl IntLinear {
    /// Hand the weight to a device as `KILN_WEIGHT_INT_GROUPS`.
    pub fn prepare(&self, device: &Device, name: &str) -> AbiResult<Weight> {
        let scale_bytes: Vec<u8> = self.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let perm_bytes: Option<Vec<u8>> = self
            .perm
            .as_ref()
            .map(|p| p.iter().flat_map(|i| i.to_le_bytes()).collect());
        let groups = (self.cols / self.group) as u64;
        let (rows, cols) = (self.rows as u64, self.cols as u64);
        let mut parts = vec![
            WeightPartSpec {
                role: KILN_PART_DATA,
                dtype: KILN_U8,
                dims: vec![rows, cols],
                data: &self.codes,
            },
            WeightPartSpec {
                role: KILN_PART_SCALES,
                dtype: if self.bf16_scales {
                    KILN_BF16
                } else {
                    KILN_F16
                },
                dims: vec![rows, groups],
                data: &scale_bytes,
            },
            WeightPartSpec {
                role: KILN_PART_ZEROS,
                dtype: KILN_U8,
                dims: vec![rows, groups],
                data: &self.zeros,
            },
        ];
        if let Some(p) = &perm_bytes {
            parts.push(WeightPartSpec {
                role: KILN_PART_GROUP_INDEX,
                dtype: KILN_I32,
                dims: vec![cols],
                data: p,
            });
        }
        device.prepare_weight(&WeightSpec {
            name,
            format: KILN_WEIGHT_INT_GROUPS,
            rows,
            cols,
            bits: self.bits,
            group_size: self.group as u32,
            flags: 0,
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn view(name: &str, dtype: WeightDType, shape: &[usize], data: Vec<u8>) -> TensorView<'static> {
        TensorView {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data: Cow::Owned(data),
        }
    }

    fn i32s(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn f16s(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    }

    /// Pack `values` (each below 2^bits) LSB first into words of 32/bits fields.
    fn pack(values: &[u8], bits: u32) -> Vec<u32> {
        let per = (32 / bits) as usize;
        values
            .chunks(per)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u32, |w, (i, &v)| w | (v as u32) << (bits as usize * i))
            })
            .collect()
    }

    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u32) -> u8 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as u8
        }
    }

    #[test]
    fn gptq_unpacks_codes_zeros_and_act_order() {
        let (rows, cols, group, bits) = (16usize, 64usize, 32usize, 4u32);
        let mut rng = Lcg(5);
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.below(16)).collect(); // [n, k]
        let zeros: Vec<u8> = (0..rows * 2).map(|_| rng.below(16)).collect(); // [n, g]
        // qweight [k/8, n]: words along k for each n.
        let mut qweight = vec![0u32; cols / 8 * rows];
        for n in 0..rows {
            let col: Vec<u8> = (0..cols).map(|k| codes[n * cols + k]).collect();
            for (i, w) in pack(&col, bits).into_iter().enumerate() {
                qweight[i * rows + n] = w;
            }
        }
        // qzeros [g, n/8] with v1's z − 1.
        let mut qzeros = Vec::new();
        for g in 0..2 {
            let zs: Vec<u8> = (0..rows)
                .map(|n| zeros[n * 2 + g].wrapping_sub(1) & 15)
                .collect();
            qzeros.extend(pack(&zs, bits));
        }
        let scales: Vec<f32> = (0..2 * rows).map(|i| 0.01 * (i + 1) as f32).collect(); // [g, n]
        // Act-order: column k belongs to group (k % 2).
        let g_idx: Vec<u32> = (0..cols as u32).map(|k| k % 2).collect();
        let lin = gptq(GptqParts {
            bits,
            rows,
            cols,
            group,
            v1_zeros: true,
            qweight: &view(
                "qweight",
                WeightDType::I32,
                &[cols / 8, rows],
                i32s(&qweight),
            ),
            qzeros: &view("qzeros", WeightDType::I32, &[2, rows / 8], i32s(&qzeros)),
            scales: &view("scales", WeightDType::F16, &[2, rows], f16s(&scales)),
            g_idx: Some(&view("g_idx", WeightDType::I32, &[cols], i32s(&g_idx))),
        })
        .unwrap();
        let perm = lin.perm.clone().expect("act-order permutation");
        assert_eq!(&perm[..4], &[0, 2, 4, 6]);
        assert_eq!(perm[32], 1);
        for n in 0..rows {
            for (i, &k) in perm.iter().enumerate() {
                assert_eq!(lin.codes[n * cols + i], codes[n * cols + k as usize]);
            }
            for g in 0..2 {
                assert_eq!(
                    lin.zeros[n * 2 + g],
                    zeros[n * 2 + g],
                    "zero of row {n} group {g}"
                );
                let s = half::f16::from_bits(lin.scales[n * 2 + g]).to_f32();
                assert_eq!(s, half::f16::from_f32(scales[g * rows + n]).to_f32());
            }
        }
        assert!(!lin.bf16_scales);
    }

    #[test]
    fn awq_undoes_the_interleave() {
        let (rows, cols, group) = (16usize, 32usize, 32usize);
        let mut rng = Lcg(9);
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.below(16)).collect(); // [n, k]
        let interleave = |vals: &[u8]| -> u32 {
            (0..8).fold(0u32, |w, i| w | (vals[AWQ_ORDER[i]] as u32) << (4 * i))
        };
        let mut qweight = Vec::new(); // [k, n/8]
        for k in 0..cols {
            for c in 0..rows / 8 {
                let vals: Vec<u8> = (0..8).map(|j| codes[(8 * c + j) * cols + k]).collect();
                qweight.push(interleave(&vals));
            }
        }
        let zeros: Vec<u8> = (0..rows).map(|_| rng.below(16)).collect();
        let qzeros: Vec<u32> = zeros.chunks(8).map(interleave).collect();
        let lin = awq(
            4,
            rows,
            cols,
            group,
            &view(
                "qweight",
                WeightDType::I32,
                &[cols, rows / 8],
                i32s(&qweight),
            ),
            &view("qzeros", WeightDType::I32, &[1, rows / 8], i32s(&qzeros)),
            &view("scales", WeightDType::F16, &[1, rows], f16s(&[0.5; 16])),
        )
        .unwrap();
        assert_eq!(lin.codes, codes);
        assert_eq!(lin.zeros, zeros);
        assert_eq!(lin.perm, None);
    }

    #[test]
    fn compressed_tensors_offsets_and_int8() {
        let (rows, cols) = (2usize, 16usize);
        let q: Vec<i8> = (0..32).map(|i| (i % 16) as i8 - 8).collect();
        let stored: Vec<u8> = q.iter().map(|&v| (v as i32 + 8) as u8).collect();
        let packed: Vec<u32> = stored.chunks(cols).flat_map(|row| pack(row, 4)).collect();
        let lin = compressed(CtParts {
            bits: 4,
            rows,
            cols,
            group: cols,
            int_quantized: false,
            packed: &view(
                "weight_packed",
                WeightDType::I32,
                &[rows, cols / 8],
                i32s(&packed),
            ),
            scale: &view(
                "weight_scale",
                WeightDType::BF16,
                &[rows, 1],
                vec![0x80, 0x3f, 0x00, 0x40],
            ),
            zero: None,
        })
        .unwrap();
        assert_eq!(lin.codes, stored);
        assert_eq!(lin.zeros, vec![8, 8]);
        assert!(lin.bf16_scales);
        // int-quantized: int8 weights become codes q + 128 with zero 128.
        let w: Vec<u8> = vec![0x80, 0xff, 0x00, 0x7f];
        let lin = compressed(CtParts {
            bits: 8,
            rows: 1,
            cols: 4,
            group: 4,
            int_quantized: true,
            packed: &view("weight", WeightDType::I8, &[1, 4], w),
            scale: &view("weight_scale", WeightDType::F16, &[1, 1], f16s(&[0.25])),
            zero: None,
        });
        // A group of 4 is not a multiple of 32 only for the kernels; the
        // unpacker itself accepts it.
        let lin = lin.unwrap();
        assert_eq!(lin.codes, vec![0, 127, 128, 255]);
        assert_eq!(lin.zeros, vec![128]);
    }

    #[test]
    fn configs_name_the_bad_field() {
        let parse = |s: &str| QuantScheme::from_config_json(s);
        assert_eq!(parse(r#"{"hidden_size": 8}"#), Ok(None));
        assert_eq!(
            parse(
                r#"{"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true}}"#
            ),
            Ok(Some(QuantScheme::Gptq {
                bits: 4,
                group_size: Some(128),
                v1_zeros: true
            }))
        );
        assert_eq!(
            parse(
                r#"{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true, "version": "gemm"}}"#
            ),
            Ok(Some(QuantScheme::Awq {
                bits: 4,
                group_size: 64
            }))
        );
        let e = parse(
            r#"{"quantization_config": {"quant_method": "gptq", "bits": 5, "group_size": 128}}"#,
        )
        .unwrap_err();
        assert!(e.contains("bits 5"), "{e}");
        let e = parse(
            r#"{"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 100}}"#,
        )
        .unwrap_err();
        assert!(e.contains("group_size 100"), "{e}");
        let e = parse(r#"{"quantization_config": {"quant_method": "hqq"}}"#).unwrap_err();
        assert!(e.contains("\"hqq\"") && e.contains("gptq"), "{e}");
        let ct = r#"{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", "group_size": 32}}}}}"#;
        assert_eq!(
            parse(ct),
            Ok(Some(QuantScheme::CompressedTensors {
                bits: 4,
                group_size: Some(32),
                int_quantized: false,
                symmetric: true
            }))
        );
    }

    #[test]
    fn fp8_configs_and_their_refusals() {
        let parse = |s: &str| QuantScheme::from_config_json(s);
        let ct = |strategy: &str| {
            format!(
                r#"{{"quantization_config": {{"quant_method": "compressed-tensors", "format": "float-quantized",
                "config_groups": {{"group_0": {{"targets": ["Linear"],
                "weights": {{"num_bits": 8, "type": "float", "symmetric": true, "strategy": "{strategy}", "dynamic": false}},
                "input_activations": {{"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}}}},
                "ignore": ["lm_head"]}}}}"#
            )
        };
        let ct_fp8 = QuantScheme::Fp8 {
            config: Fp8Config::CompressedTensors,
        };
        assert_eq!(parse(&ct("channel")), Ok(Some(ct_fp8.clone())));
        assert_eq!(parse(&ct("tensor")), Ok(Some(ct_fp8.clone())));
        assert_eq!(ct_fp8.name(), "compressed-tensors");
        let e = parse(&ct("block")).unwrap_err();
        assert!(e.contains("strategy \"block\""), "{e}");
        let hf =
            r#"{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}"#;
        let fp8 = parse(hf).unwrap().unwrap();
        assert_eq!((fp8.name(), fp8.label().as_str()), ("fp8", "FP8"));
        let e = parse(
            r#"{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("quantization_config.weight_block_size:"),
            "{e}"
        );
    }

    #[test]
    fn act_order_groups_must_have_the_group_size() {
        let g_idx = [0, 0, 0, 1];
        assert!(
            act_order(&g_idx, 2, 2)
                .unwrap_err()
                .contains("group 0 3 columns")
        );
        assert_eq!(act_order(&[0, 0, 1, 1], 2, 2).unwrap(), None);
        assert!(
            act_order(&[0, 5, 1, 1], 2, 2)
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn shapes_that_disagree_with_the_config_are_refused() {
        let e = awq(
            4,
            16,
            32,
            32,
            &view("qweight", WeightDType::I32, &[32, 1], vec![0; 128]),
            &view("qzeros", WeightDType::I32, &[1, 2], vec![0; 8]),
            &view("scales", WeightDType::F16, &[1, 16], vec![0; 32]),
        )
        .unwrap_err();
        assert_eq!(e.0, "qweight");
        assert!(
            e.1.contains("[32, 1]") && e.1.contains("[32, 2]"),
            "{}",
            e.1
        );
    }
}
