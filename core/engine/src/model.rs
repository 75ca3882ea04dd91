//! Opening a model: a Hugging Face directory or a GGUF file becomes a config,
//! a weight source, a tokenizer and a chat template.

use crate::embedding_config::SentenceTransformers;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln_models::config::ModelConfig;
use kiln_models::gguf_weights::GgufWeights;
use kiln_models::parts::DecoderVariant;
use kiln_models::registry::{resolve, resolve_architecture};
use kiln_models::weights::WeightSource;
use kiln_models::weights::gguf::GgufFile;
use kiln_models::weights::quantize::QuantizeAtLoad;
use kiln_models::weights::quantized::{QUANTIZATION_NAMES, QuantScheme};
use kiln_models::weights::safetensors::SafetensorsSource;
use kiln_sampler::TokenDecoder;
use kiln_tokenizer::{ChatTemplate, Tokenizer};

/// Everything start-up needs from the model files.
pub struct ModelFiles {
    /// Display name (directory or file stem).
    pub name: String,
    /// The decoder config.
    pub config: ModelConfig,
    /// Architecture flags.
    pub variant: DecoderVariant,
    /// Family for Ollama's `details.family` (`llama`, `qwen2`, ...).
    pub family: String,
    /// Tensors by name, read lazily (safetensors or GGUF, memory-mapped).
    pub weights: Box<dyn WeightSource>,
    pub tokenizer: Tokenizer,
    /// The chat template (override, or the model's).
    pub chat_template: Option<ChatTemplate>,
    /// EOS ids (config, generation config and tokenizer together).
    pub eos_token_ids: Vec<u32>,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// Quantization label (e.g. `Q4_1`, `GPTQ-4bit-g128`), `None` for float weights.
    pub quantization: Option<String>,
    /// The quantized-safetensors scheme of the Linear weights (`config.json`'s
    /// `quantization_config`).
    pub quant_scheme: Option<QuantScheme>,
    /// Parameter count.
    pub num_parameters: u64,
    /// Parameters one token computes with (a mixture of experts uses k of
    /// its E experts); `num_parameters` for dense models.
    pub num_active_parameters: u64,
    /// Metadata in GGUF key style for Ollama's `/api/show`.
    pub model_info: BTreeMap<String, serde_json::Value>,
    /// The sentence-transformers files beside the weights (embedding models).
    pub sentence_transformers: SentenceTransformers,
}

/// What `ModelFiles::weights` becomes once the backend holds the weights:
/// a source with no tensors, so the checkpoint's file map is gone.
pub struct ReleasedWeights;

impl WeightSource for ReleasedWeights {
    fn tensor(
        &self,
        _name: &str,
    ) -> Result<Option<kiln_models::weights::TensorView<'_>>, kiln_models::weights::WeightError>
    {
        Ok(None)
    }

    fn tensor_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn total_bytes(&self) -> u64 {
        0
    }
}

/// Check `--quantization` against what the checkpoint holds. Errors are
/// one sentence naming both.
pub fn check_quantization(requested: Option<&str>, files: &ModelFiles) -> Result<(), String> {
    let Some(requested) = requested else {
        return Ok(());
    };
    let has = match (&files.quant_scheme, files.format) {
        (Some(s), _) => Some(s.name()),
        (None, "gguf") => Some("gguf"),
        (None, _) => None,
    };
    let known = QUANTIZATION_NAMES.contains(&requested) || requested == "gguf";
    let at_load = QuantizeAtLoad::from_flag(requested).is_some();
    match has {
        Some(h) if h == requested => Ok(()),
        // In-flight quantization of float Linear weights (GGUF files keep
        // their quantized tensors and convert the float ones).
        Some("gguf") | None if at_load => Ok(()),
        Some(h) if at_load => Err(format!(
            "--quantization {requested} quantizes 16/32-bit weights at load; this checkpoint is already {h}"
        )),
        _ if !known => Err(format!(
            "--quantization {requested} is not supported; Kiln runs checkpoints quantized as gguf, {}, and quantizes 16/32-bit ones at load with int8 or fp8",
            QUANTIZATION_NAMES.join(", ")
        )),
        Some(h) => Err(format!(
            "--quantization {requested} does not match the checkpoint, which is {h}; drop the flag or pass --quantization {h}"
        )),
        None => Err(format!(
            "--quantization {requested}: the checkpoint is not quantized (config.json has no quantization_config); drop the flag"
        )),
    }
}

/// Open a model directory or `.gguf` file. Errors are sentences for the user.
pub fn open_model(path: &Path, chat_template_override: Option<&str>) -> Result<ModelFiles, String> {
    if !path.exists() {
        return Err(format!("model path {} does not exist", path.display()));
    }
    let mut files = if path.is_dir() {
        open_hf_dir(path)?
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        open_gguf(path)?
    } else {
        return Err(format!(
            "{} is neither a model directory (with config.json) nor a .gguf file",
            path.display()
        ));
    };
    if let Some(t) = chat_template_override {
        files.chat_template =
            Some(ChatTemplate::from_str_or_file(t).map_err(|e| format!("--chat-template: {e}"))?);
    }
    Ok(files)
}

fn display_name(path: &Path) -> String {
    let stem = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    stem.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn merge_eos(mut ids: Vec<u32>, more: &[u32]) -> Vec<u32> {
    for id in more {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    ids
}

fn open_hf_dir(dir: &Path) -> Result<ModelFiles, String> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        format!(
            "{} is not a model directory: cannot read config.json ({e})",
            dir.display()
        )
    })?;
    let config =
        ModelConfig::from_hf_json(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let quant_scheme = QuantScheme::from_config_json(&text)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let variant = resolve_architecture(&config.architecture, &config)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let weights = SafetensorsSource::open(dir).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::from_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let chat_template = tokenizer.chat_template().cloned();
    let eos_token_ids = merge_eos(config.eos_token_ids.clone(), &tokenizer.eos_token_ids());
    let model_info = model_info(&config, variant.family);
    let sentence_transformers = SentenceTransformers::read(dir, config.hidden_size);
    Ok(ModelFiles {
        name: display_name(dir),
        sentence_transformers,
        family: variant.family.to_string(),
        num_parameters: config.num_parameters(),
        num_active_parameters: config.num_active_parameters(),
        config,
        variant,
        weights: Box::new(weights),
        tokenizer,
        chat_template,
        eos_token_ids,
        format: "safetensors",
        quantization: quant_scheme.as_ref().map(QuantScheme::label),
        quant_scheme,
        model_info,
    })
}

fn open_gguf(path: &Path) -> Result<ModelFiles, String> {
    let gguf = GgufFile::open(path).map_err(|e| e.to_string())?;
    let config = ModelConfig::from_gguf(&gguf).map_err(|e| format!("{}: {e}", path.display()))?;
    let variant = resolve(&config).map_err(|e| format!("{}: {e}", path.display()))?;
    let md = gguf
        .tokenizer_metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(md).map_err(|e| format!("{}: {e}", path.display()))?;
    let chat_template = tokenizer.chat_template().cloned();
    let eos_token_ids = merge_eos(config.eos_token_ids.clone(), &tokenizer.eos_token_ids());
    let family = gguf.architecture().unwrap_or("llama").to_string();
    let quantization = gguf.quantization_label();
    let model_info = model_info(&config, &family);
    let weights = GgufWeights::new(gguf, variant.kind, config.num_hidden_layers);
    Ok(ModelFiles {
        name: display_name(path),
        family,
        num_parameters: config.num_parameters(),
        num_active_parameters: config.num_active_parameters(),
        config,
        variant,
        weights: Box::new(weights),
        tokenizer,
        chat_template,
        eos_token_ids,
        format: "gguf",
        quantization,
        quant_scheme: None,
        model_info,
        sentence_transformers: SentenceTransformers::default(),
    })
}

fn model_info(c: &ModelConfig, family: &str) -> BTreeMap<String, serde_json::Value> {
    use serde_json::json;
    let mut m = BTreeMap::new();
    m.insert("general.architecture".into(), json!(family));
    m.insert("general.parameter_count".into(), json!(c.num_parameters()));
    m.insert(
        format!("{family}.context_length"),
        json!(c.max_position_embeddings),
    );
    m.insert(format!("{family}.embedding_length"), json!(c.hidden_size));
    m.insert(format!("{family}.block_count"), json!(c.num_hidden_layers));
    m.insert(
        format!("{family}.feed_forward_length"),
        json!(c.intermediate_size),
    );
    m.insert(
        format!("{family}.attention.head_count"),
        json!(c.num_attention_heads),
    );
    m.insert(
        format!("{family}.attention.head_count_kv"),
        json!(c.num_key_value_heads),
    );
    m.insert(
        format!("{family}.attention.layer_norm_rms_epsilon"),
        json!(c.rms_norm_eps),
    );
    m.insert(format!("{family}.rope.freq_base"), json!(c.rope_theta));
    m.insert(format!("{family}.vocab_size"), json!(c.vocab_size));
    if let Some(moe) = &c.moe {
        m.insert(format!("{family}.expert_count"), json!(moe.num_experts));
        m.insert(
            format!("{family}.expert_used_count"),
            json!(moe.experts_per_token),
        );
        m.insert(
            format!("{family}.expert_feed_forward_length"),
            json!(moe.expert_intermediate_size),
        );
        if let Some(shared) = moe.shared_expert_intermediate_size {
            m.insert(
                format!("{family}.expert_shared_feed_forward_length"),
                json!(shared),
            );
        }
    }
    m
}

/// The sampler's view of the tokenizer.
pub struct TokenizerDecoder {
    tokenizer: Tokenizer,
}

impl TokenizerDecoder {
    /// Wrap a tokenizer.
    pub fn new(tokenizer: Tokenizer) -> Self {
        TokenizerDecoder { tokenizer }
    }
}

impl TokenDecoder for TokenizerDecoder {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .unwrap_or_default()
    }
    fn is_special(&self, id: u32) -> bool {
        self.tokenizer.is_special(id)
    }
    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }
}

/// Shared tokenizer handle for the sampler.
pub type SharedDecoder = Arc<dyn TokenDecoder>;
