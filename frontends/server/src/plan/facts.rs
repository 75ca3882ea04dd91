//! What `kiln plan` reads from a model: its dimensions and its weight bytes,
//! from a GGUF file (actual tensor sizes), a Hugging Face directory
//! (safetensors headers) or a bare `config.json` (hub listing sizes, the
//! shard index's `total_size`, or parameters × bytes per parameter).

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_hub::{ModelFormat, ResolvedModel};
use kiln_models::config::{ModelConfig, WindowLayout};
use kiln_models::weights::gguf::GgufFile;
use kiln_protocol::FormatBytes;
use serde::Serialize;

use super::math::{ModelShape, WeightSplit};

/// Errors reading a model for planning.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The weights are unreadable.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How the weight bytes were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightOrigin {
    /// Summed from the GGUF tensor table.
    GgufTensors,
    /// Summed from the safetensors headers.
    SafetensorsHeaders,
    /// From the hub's file sizes or the shard index's `total_size`.
    FileSizes,
    /// Parameter count × bytes per parameter (an estimate).
    ParametersTimesDtype,
}

/// A model's dimensions and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// `architectures[0]`.
    pub architecture: String,
    /// Dimensions.
    pub shape: ModelShape,
    /// How the layers slide.
    pub window: WindowLayout,
    /// Parameters (embeddings counted once when tied).
    pub parameters: u64,
    /// Parameters one token computes with (a mixture of experts uses k of
    /// its E experts); `parameters` for dense models.
    pub active_parameters: u64,
    /// Weight bytes.
    pub weights: WeightSplit,
    /// How they were obtained.
    pub weight_origin: WeightOrigin,
    /// `GGUF Q4_1`, `safetensors BF16`, `bfloat16 (estimated)`…
    pub weight_format: String,
    /// The stored bytes of each tensor format (GGUF type or safetensors
    /// dtype), most bytes first; empty when the bytes are estimated.
    pub bytes_by_format: Vec<FormatBytes>,
}

/// Dimensions from a parsed config.
pub fn shape_of(c: &ModelConfig) -> ModelShape {
    ModelShape {
        layers: c.num_hidden_layers,
        hidden_size: c.hidden_size,
        attention_heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        max_position_embeddings: c.max_position_embeddings,
    }
}

/// Read the facts of a resolved model.
pub fn read_facts(model: &ResolvedModel) -> Result<ModelFacts, FactsError> {
    match model.format {
        ModelFormat::Gguf => gguf_facts(&model.path),
        ModelFormat::Directory => directory_facts(&model.path),
        ModelFormat::ConfigFile => config_file_facts(&model.path, model.weight_bytes),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FactsError + '_ {
    move |source| FactsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_config(path: &Path) -> Result<ModelConfig, FactsError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    ModelConfig::from_hf_json(&text).map_err(|e| FactsError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn facts(
    config: &ModelConfig,
    weights: WeightSplit,
    origin: WeightOrigin,
    format: String,
    mut bytes_by_format: Vec<FormatBytes>,
) -> ModelFacts {
    FormatBytes::sort(&mut bytes_by_format);
    ModelFacts {
        architecture: config.architecture.clone(),
        shape: shape_of(config),
        window: config.window_layout(),
        parameters: config.num_parameters(),
        active_parameters: config.num_active_parameters(),
        weights,
        weight_origin: origin,
        weight_format: format,
        bytes_by_format,
    }
}

fn gguf_facts(path: &Path) -> Result<ModelFacts, FactsError> {
    let g = GgufFile::open(path).map_err(|e| FactsError::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let config = ModelConfig::from_gguf(&g).map_err(|e| FactsError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut split = WeightSplit {
        sharded: 0,
        replicated: 0,
    };
    let mut by_format = Vec::new();
    for t in g.tensors() {
        if t.ne.iter().filter(|&&d| d > 1).count() >= 2 {
            split.sharded += t.size;
        } else {
            split.replicated += t.size;
        }
        FormatBytes::tally(&mut by_format, t.dtype.name(), t.size);
    }
    let label = g
        .quantization_label()
        .or_else(|| g.type_counts().first().map(|(d, _)| format!("{d:?}")))
        .unwrap_or_else(|| "unknown".into());
    Ok(facts(
        &config,
        split,
        WeightOrigin::GgufTensors,
        format!("GGUF {label}"),
        by_format,
    ))
}

fn directory_facts(dir: &Path) -> Result<ModelFacts, FactsError> {
    let config_path = dir.join("config.json");
    let config = parse_config(&config_path)?;
    let files = safetensors_files(dir)?;
    if files.is_empty() {
        return Ok(estimated(&config, None));
    }
    let mut split = WeightSplit {
        sharded: 0,
        replicated: 0,
    };
    let mut by_format = Vec::new();
    for f in &files {
        for t in read_safetensors_header(f)? {
            if t.shape.iter().filter(|&&d| d > 1).count() >= 2 {
                split.sharded += t.bytes;
            } else {
                split.replicated += t.bytes;
            }
            FormatBytes::tally(&mut by_format, &t.dtype, t.bytes);
        }
    }
    let dominant = by_format
        .iter()
        .max_by_key(|f| f.bytes)
        .map(|f| f.format.clone())
        .unwrap_or_default();
    Ok(facts(
        &config,
        split,
        WeightOrigin::SafetensorsHeaders,
        format!("safetensors {dominant}"),
        by_format,
    ))
}

fn config_file_facts(path: &Path, listed_bytes: Option<u64>) -> Result<ModelFacts, FactsError> {
    let config = parse_config(path)?;
    let index_total = path
        .parent()
        .map(|d| d.join("model.safetensors.index.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.pointer("/metadata/total_size").and_then(|s| s.as_u64()));
    Ok(estimated(&config, listed_bytes.or(index_total)))
}

/// Bytes per parameter of a checkpoint dtype name.
pub fn dtype_bytes(name: &str) -> Option<u64> {
    match name {
        "float32" | "float" | "F32" => Some(4),
        "float16" | "half" | "bfloat16" | "F16" | "BF16" => Some(2),
        "float8_e4m3fn" | "float8_e5m2" | "int8" | "uint8" | "F8_E4M3" | "F8_E5M2" | "I8"
        | "U8" => Some(1),
        _ => None,
    }
}

/// Norm vectors: two per layer plus the final one.
fn norm_params(c: &ModelConfig) -> u64 {
    (2 * c.num_hidden_layers as u64 + 1) * c.hidden_size as u64
}

/// Weights from a config alone: `known_total` (file sizes) when given, else
/// parameters × bytes of `torch_dtype` (bfloat16 when absent), with
/// `quantization_config.bits` applied to the linear layers plus one 16-bit
/// scale per `group_size` (128 when absent) weights.
fn estimated(c: &ModelConfig, known_total: Option<u64>) -> ModelFacts {
    let dtype = c.torch_dtype.clone().unwrap_or_else(|| "bfloat16".into());
    let bytes = dtype_bytes(&dtype).unwrap_or(2);
    let norms = norm_params(c) * bytes;
    if let Some(total) = known_total {
        let split = WeightSplit {
            sharded: total.saturating_sub(norms),
            replicated: norms.min(total),
        };
        return facts(
            c,
            split,
            WeightOrigin::FileSizes,
            format!("safetensors {dtype}"),
            Vec::new(),
        );
    }
    let params = c.num_parameters();
    let embed = c.vocab_size as u64 * c.hidden_size as u64;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    let linear = params.saturating_sub(embed + head + norm_params(c));
    let quant_bits = c
        .quantization_config
        .as_ref()
        .and_then(|q| q.get("bits"))
        .and_then(|b| b.as_u64());
    let (linear_bytes, format) = match quant_bits {
        Some(bits) => {
            let group = c
                .quantization_config
                .as_ref()
                .and_then(|q| q.get("group_size"))
                .and_then(|g| g.as_u64())
                .filter(|&g| g > 0)
                .unwrap_or(128);
            (
                linear * bits / 8 + linear / group * 2,
                format!("{bits}-bit quantized (estimated)"),
            )
        }
        None => (linear * bytes, format!("{dtype} (estimated)")),
    };
    let split = WeightSplit {
        sharded: linear_bytes + (embed + head) * bytes,
        replicated: norms,
    };
    facts(
        c,
        split,
        WeightOrigin::ParametersTimesDtype,
        format,
        Vec::new(),
    )
}

/// The safetensors files of a directory: the index's shards, else
/// `model.safetensors`, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, FactsError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| FactsError::Weights {
                path: index.clone(),
                reason: format!("invalid JSON: {e}"),
            })?;
        let mut names: Vec<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    out.sort();
    Ok(out)
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTensor {
    /// Dtype name (`BF16`).
    pub dtype: String,
    /// Dimension sizes, outermost first.
    pub shape: Vec<u64>,
    /// Bytes of data.
    pub bytes: u64,
}

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Read a safetensors file's header only (8-byte little-endian length + JSON).
pub fn read_safetensors_header(path: &Path) -> Result<Vec<HeaderTensor>, FactsError> {
    let bad = |reason: String| FactsError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header length {n} is implausible; not a safetensors file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| bad("truncated header".into()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let map = v
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let mut out = Vec::new();
    for (name, t) in map.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let field = |k: &str| {
            t.get(k)
                .ok_or_else(|| bad(format!("tensor {name} has no {k}")))
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let shape: Vec<u64> = field("shape")?
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .unwrap_or_default();
        let offsets: Vec<u64> = field("data_offsets")?
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .unwrap_or_default();
        let [start, end] = offsets[..] else {
            return Err(bad(format!("tensor {name} has malformed data_offsets")));
        };
        if end < start {
            return Err(bad(format!("tensor {name} ends before it starts")));
        }
        out.push(HeaderTensor {
            dtype,
            shape,
            bytes: end - start,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64], u64)]) {
        let mut header = serde_json::Map::new();
        let mut offset = 0;
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let h = serde_json::to_vec(&header).unwrap();
        let mut data = (h.len() as u64).to_le_bytes().to_vec();
        data.extend(h);
        data.extend(vec![0u8; offset as usize]);
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn directory_weights_come_from_headers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
                "num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10,"torch_dtype":"bfloat16"}"#,
        )
        .unwrap();
        write_safetensors(
            &d.path().join("model.safetensors"),
            &[
                ("embed", "BF16", &[10, 8], 160),
                ("norm", "F32", &[8], 32),
                ("proj", "BF16", &[16, 8], 256),
            ],
        );
        let f = directory_facts(d.path()).unwrap();
        assert_eq!(
            f.weights,
            WeightSplit {
                sharded: 416,
                replicated: 32
            }
        );
        assert_eq!(f.weight_origin, WeightOrigin::SafetensorsHeaders);
        assert_eq!(f.weight_format, "safetensors BF16");
        std::fs::write(
            d.path().join("model.safetensors"),
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        )
        .unwrap();
        assert!(
            directory_facts(d.path())
                .unwrap_err()
                .to_string()
                .contains("implausible")
        );
    }

    #[test]
    fn quantized_configs_are_estimated_from_bits() {
        let c = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                "num_attention_heads":4,"vocab_size":100,"torch_dtype":"float16",
                "quantization_config":{"bits":4,"group_size":32,"quant_method":"gptq"}}"#,
        )
        .unwrap();
        let f = estimated(&c, None);
        // linear = per layer 4·64·64 + 3·64·128 = 40960, ×2 layers = 81920 weights
        let linear = 81_920u64;
        assert_eq!(
            f.weights.sharded,
            linear / 2 + linear / 32 * 2 + 2 * 100 * 64 * 2
        );
        assert_eq!(f.weights.replicated, 5 * 64 * 2);
        assert_eq!(f.weight_format, "4-bit quantized (estimated)");
    }
}
