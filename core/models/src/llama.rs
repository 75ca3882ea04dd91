//! The Llama-family decoder, expressed as backend operations.
//!
//! One decoder serves Llama 2/3/3.x, Mistral, Qwen2, SmolLM2 and TinyLlama:
//! they differ only in config values ([`ModelConfig`]) and a few flags
//! ([`DecoderVariant`]: q/k/v bias, sliding window). The decoder never names a
//! backend; it queues operations on a [`Device`] through the safe ABI wrapper.
//!
//! Per layer: `rms_norm → q,k,v → rope → kv_write → attention → o_proj (+=
//! residual) → rms_norm → gate,up → silu_mul → down (+= residual)`. The last
//! hidden state of each sampling row is gathered, normed and projected to
//! logits.

use kiln_plugin_abi::safe::{AbiError, Buffer, Device, Weight, WeightSpec};
use kiln_plugin_abi::{
    KILN_BF16, KILN_F16, KILN_F32, KILN_I32, KILN_WEIGHT_BF16, KILN_WEIGHT_F16, KILN_WEIGHT_F32,
    KILN_WEIGHT_GGUF_IQ4_NL, KILN_WEIGHT_GGUF_IQ4_XS, KILN_WEIGHT_GGUF_Q2_K, KILN_WEIGHT_GGUF_Q3_K,
    KILN_WEIGHT_GGUF_Q4_0, KILN_WEIGHT_GGUF_Q4_1, KILN_WEIGHT_GGUF_Q4_K, KILN_WEIGHT_GGUF_Q5_0,
    KILN_WEIGHT_GGUF_Q5_1, KILN_WEIGHT_GGUF_Q5_K, KILN_WEIGHT_GGUF_Q6_K, KILN_WEIGHT_GGUF_Q8_0,
    KilnDType, KilnOp, KilnTensor, KilnWeight, KilnWeightFormat, dtype_size, ops,
};

use crate::config::ModelConfig;
use crate::registry::DecoderVariant;
use crate::rope::RopeTables;
use crate::weights::{TensorView, WeightDType, WeightSource};

/// Errors while preparing or running the decoder.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// A tensor the architecture needs is absent.
    #[error("the checkpoint has no tensor `{0}`")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    BadShape {
        /// Tensor name.
        name: String,
        /// Its shape.
        actual: Vec<usize>,
        /// What the config implies.
        expected: Vec<usize>,
    },
    /// The backend cannot hold this tensor's format.
    #[error("tensor `{name}` is stored as {dtype:?}, which the {backend} backend cannot run")]
    UnsupportedFormat {
        /// Tensor name.
        name: String,
        /// Its storage type.
        dtype: WeightDType,
        /// The backend.
        backend: String,
    },
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] AbiError),
    /// The batch does not fit the buffers sized at start-up.
    #[error("batch too large: {0}")]
    BatchTooLarge(String),
}

/// Activation dtype of a decoder on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActDType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
}

impl ActDType {
    /// The ABI dtype.
    pub fn abi(self) -> KilnDType {
        match self {
            ActDType::F32 => KILN_F32,
            ActDType::F16 => KILN_F16,
            ActDType::BF16 => KILN_BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        dtype_size(self.abi())
    }

    /// The `--dtype` spelling.
    pub fn name(self) -> &'static str {
        match self {
            ActDType::F32 => "float32",
            ActDType::F16 => "float16",
            ActDType::BF16 => "bfloat16",
        }
    }
}

/// Map a checkpoint storage type to the ABI weight format.
pub fn weight_format(dtype: WeightDType) -> Option<KilnWeightFormat> {
    Some(match dtype {
        WeightDType::F32 => KILN_WEIGHT_F32,
        WeightDType::F16 => KILN_WEIGHT_F16,
        WeightDType::BF16 => KILN_WEIGHT_BF16,
        WeightDType::Q4_0 => KILN_WEIGHT_GGUF_Q4_0,
        WeightDType::Q4_1 => KILN_WEIGHT_GGUF_Q4_1,
        WeightDType::Q8_0 => KILN_WEIGHT_GGUF_Q8_0,
        WeightDType::Q5_0 => KILN_WEIGHT_GGUF_Q5_0,
        WeightDType::Q5_1 => KILN_WEIGHT_GGUF_Q5_1,
        WeightDType::Q2_K => KILN_WEIGHT_GGUF_Q2_K,
        WeightDType::Q3_K => KILN_WEIGHT_GGUF_Q3_K,
        WeightDType::Q4_K => KILN_WEIGHT_GGUF_Q4_K,
        WeightDType::Q5_K => KILN_WEIGHT_GGUF_Q5_K,
        WeightDType::Q6_K => KILN_WEIGHT_GGUF_Q6_K,
        WeightDType::IQ4_NL => KILN_WEIGHT_GGUF_IQ4_NL,
        WeightDType::IQ4_XS => KILN_WEIGHT_GGUF_IQ4_XS,
        _ => return None,
    })
}

struct LayerWeights {
    attn_norm: Weight,
    q: Weight,
    k: Weight,
    v: Weight,
    q_bias: Option<Weight>,
    k_bias: Option<Weight>,
    v_bias: Option<Weight>,
    o: Weight,
    o_bias: Option<Weight>,
    ffn_norm: Weight,
    gate: Weight,
    up: Weight,
    down: Weight,
    /// `(gate, up, down)` biases (Llama `mlp_bias`).
    mlp_bias: Option<(Weight, Weight, Weight)>,
}

/// Progress of weight preparation, for progress bars.
pub trait LoadProgress {
    /// Called after each tensor with the bytes done so far and in total.
    fn advance(&mut self, done_bytes: u64, total_bytes: u64);
}

impl<F: FnMut(u64, u64)> LoadProgress for F {
    fn advance(&mut self, done_bytes: u64, total_bytes: u64) {
        self(done_bytes, total_bytes)
    }
}

/// How to prepare the decoder.
pub struct DecoderOptions<'a> {
    /// Activation dtype.
    pub act_dtype: ActDType,
    /// Positions the RoPE tables cover (the served context length).
    pub max_positions: usize,
    /// Progress sink.
    pub progress: Option<&'a mut dyn LoadProgress>,
}

/// Facts about the prepared weights, for start-up logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightSummary {
    /// Bytes of checkpoint data uploaded.
    pub bytes: u64,
    /// Tensors uploaded.
    pub tensors: usize,
    /// Storage types and how many tensors use each.
    pub formats: Vec<(String, usize)>,
}

/// A Llama-family decoder whose weights live on a device.
pub struct LlamaDecoder {
    config: ModelConfig,
    variant: DecoderVariant,
    act: ActDType,
    embed: Weight,
    layers: Vec<LayerWeights>,
    final_norm: Weight,
    lm_head: Option<Weight>,
    rope_cos: Buffer,
    rope_sin: Buffer,
    rope_positions: usize,
    summary: WeightSummary,
}

struct Loader<'a, 'p> {
    device: &'a Device,
    act: ActDType,
    source: &'a dyn WeightSource,
    progress: Option<&'p mut dyn LoadProgress>,
    done: u64,
    total: u64,
    summary: WeightSummary,
}

impl<'a> Loader<'a, '_> {
    fn view(&self, name: &str) -> Result<TensorView<'a>, DecoderError> {
        let source: &'a dyn WeightSource = self.source;
        source
            .tensor(name)?
            .ok_or_else(|| DecoderError::MissingTensor(name.to_string()))
    }

    /// Float matrices are stored in the activation dtype when it is 16-bit,
    /// as `--dtype` asks (and as transformers does); vectors and quantized
    /// weights keep their checkpoint form.
    fn cast_floats(&self, view: TensorView<'a>, shape: &[usize]) -> TensorView<'a> {
        let target = match self.act {
            ActDType::F16 => WeightDType::F16,
            ActDType::BF16 => WeightDType::BF16,
            ActDType::F32 => return view,
        };
        let float = matches!(
            view.dtype,
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16
        );
        if shape.len() == 1 && float && view.dtype != target {
            return Self::round_vector(view, target);
        }
        if shape.len() != 2 || !float || view.dtype == target {
            return view;
        }
        let Some(values) = crate::weights::dequant::dequantize_view(&view) else {
            return view;
        };
        let data: Vec<u8> = match target {
            WeightDType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        TensorView {
            dtype: target,
            data: std::borrow::Cow::Owned(data),
            ..view
        }
    }

    /// Vectors (norm scales, biases) stay f32 on the device, but with the
    /// values the 16-bit checkpoint form would hold, as the reference does.
    fn round_vector(view: TensorView<'a>, target: WeightDType) -> TensorView<'a> {
        let Some(values) = crate::weights::dequant::dequantize_view(&view) else {
            return view;
        };
        let round = |v: f32| match target {
            WeightDType::F16 => half::f16::from_f32(v).to_f32(),
            _ => half::bf16::from_f32(v).to_f32(),
        };
        let data: Vec<u8> = values
            .iter()
            .flat_map(|v| round(*v).to_le_bytes())
            .collect();
        TensorView {
            dtype: WeightDType::F32,
            data: std::borrow::Cow::Owned(data),
            ..view
        }
    }

    fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Weight>, DecoderError> {
        if self.source.tensor(name)?.is_none() {
            return Ok(None);
        }
        self.upload(name, shape).map(Some)
    }

    /// Upload a tensor; `shape` is `[rows, cols]` or `[len]`.
    fn upload(&mut self, name: &str, shape: &[usize]) -> Result<Weight, DecoderError> {
        let view = self.cast_floats(self.view(name)?, shape);
        if view.shape != shape {
            return Err(DecoderError::BadShape {
                name: name.to_string(),
                actual: view.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let format = weight_format(view.dtype).ok_or_else(|| DecoderError::UnsupportedFormat {
            name: name.to_string(),
            dtype: view.dtype,
            backend: self.device.backend().name(),
        })?;
        let (rows, cols) = match shape {
            [n] => (1, *n as u64),
            [r, c] => (*r as u64, *c as u64),
            _ => {
                return Err(DecoderError::BadShape {
                    name: name.to_string(),
                    actual: view.shape.clone(),
                    expected: vec![0, 0],
                });
            }
        };
        let weight = self
            .device
            .prepare_weight(&WeightSpec::single(name, format, rows, cols, &view.data))
            .map_err(|e| match e.is_unsupported() {
                true => DecoderError::UnsupportedFormat {
                    name: name.to_string(),
                    dtype: view.dtype,
                    backend: self.device.backend().name(),
                },
                false => DecoderError::Backend(e),
            })?;
        let bytes = view.data.len() as u64;
        self.done += bytes;
        self.summary.bytes += bytes;
        self.summary.tensors += 1;
        let key = format!("{:?}", view.dtype);
        match self.summary.formats.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.summary.formats.push((key, 1)),
        }
        if let Some(p) = self.progress.as_deref_mut() {
            p.advance(self.done, self.total);
        }
        Ok(weight)
    }
}

impl LlamaDecoder {
    /// Upload the weights and RoPE tables to `device`.
    pub fn load(
        device: &Device,
        source: &dyn WeightSource,
        config: &ModelConfig,
        variant: DecoderVariant,
        options: DecoderOptions<'_>,
    ) -> Result<LlamaDecoder, DecoderError> {
        let c = config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let q_dim = c.num_attention_heads * hd;
        let kv_dim = c.num_key_value_heads * hd;
        let mut loader = Loader {
            device,
            act: options.act_dtype,
            source,
            progress: options.progress,
            done: 0,
            total: source.total_bytes(),
            summary: WeightSummary::default(),
        };
        let embed = loader.upload("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let bias = |l: &mut Loader,
                        required: bool,
                        name: &str,
                        n: usize|
             -> Result<Option<Weight>, DecoderError> {
                if required {
                    l.upload(&p(name), &[n]).map(Some)
                } else {
                    l.optional(&p(name), &[n])
                }
            };
            let qkv = variant.qkv_bias;
            let inter = c.intermediate_size;
            let layer = LayerWeights {
                attn_norm: loader.upload(&p("input_layernorm.weight"), &[h])?,
                q: loader.upload(&p("self_attn.q_proj.weight"), &[q_dim, h])?,
                k: loader.upload(&p("self_attn.k_proj.weight"), &[kv_dim, h])?,
                v: loader.upload(&p("self_attn.v_proj.weight"), &[kv_dim, h])?,
                q_bias: bias(&mut loader, qkv, "self_attn.q_proj.bias", q_dim)?,
                k_bias: bias(&mut loader, qkv, "self_attn.k_proj.bias", kv_dim)?,
                v_bias: bias(&mut loader, qkv, "self_attn.v_proj.bias", kv_dim)?,
                o: loader.upload(&p("self_attn.o_proj.weight"), &[h, q_dim])?,
                o_bias: bias(&mut loader, variant.o_proj_bias, "self_attn.o_proj.bias", h)?,
                ffn_norm: loader.upload(&p("post_attention_layernorm.weight"), &[h])?,
                gate: loader.upload(&p("mlp.gate_proj.weight"), &[inter, h])?,
                up: loader.upload(&p("mlp.up_proj.weight"), &[inter, h])?,
                down: loader.upload(&p("mlp.down_proj.weight"), &[h, inter])?,
                mlp_bias: if variant.mlp_bias {
                    Some((
                        loader.upload(&p("mlp.gate_proj.bias"), &[inter])?,
                        loader.upload(&p("mlp.up_proj.bias"), &[inter])?,
                        loader.upload(&p("mlp.down_proj.bias"), &[h])?,
                    ))
                } else {
                    None
                },
            };
            layers.push(layer);
        }
        let final_norm = loader.upload("model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings && source.tensor("lm_head.weight")?.is_none() {
            None
        } else {
            Some(loader.upload("lm_head.weight", &[c.vocab_size, h])?)
        };
        let tables = RopeTables::for_model(c, options.max_positions);
        let (rope_cos, rope_sin) = upload_rope(device, &tables)?;
        Ok(LlamaDecoder {
            config: c.clone(),
            variant,
            act: options.act_dtype,
            embed,
            layers,
            final_norm,
            lm_head,
            rope_cos,
            rope_sin,
            rope_positions: options.max_positions,
            summary: loader.summary,
        })
    }

    /// The model config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Activation dtype.
    pub fn act_dtype(&self) -> ActDType {
        self.act
    }

    /// What was uploaded.
    pub fn weight_summary(&self) -> &WeightSummary {
        &self.summary
    }

    /// Queue one forward pass; afterwards `bufs.logits_f32()` holds
    /// `[inputs.logits_indices.len(), vocab]` f32 logits.
    pub fn forward(
        &self,
        device: &Device,
        kv: &KvCache,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Result<(), DecoderError> {
        bufs.upload(device, inputs)?;
        let ops = self.build_ops(kv, bufs, inputs);
        device.execute(&ops)?;
        Ok(())
    }

    /// Copy a batch's index arrays into the step buffers (before replaying a
    /// captured graph of [`LlamaDecoder::build_ops`]).
    pub fn upload_inputs(
        &self,
        device: &Device,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Result<(), DecoderError> {
        bufs.upload(device, inputs)
    }

    /// The operation list of one forward pass (exposed for graph capture).
    pub fn build_ops(
        &self,
        kv: &KvCache,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Vec<KilnOp> {
        let n = inputs.token_ids.len() as u64;
        let m = inputs.logits_indices.len() as u64;
        let mut ops = Vec::with_capacity(self.layers.len() * 13 + 6);
        let t = BatchViews::new(self, bufs, inputs, n, m);
        ops.push(ops::embedding(t.ids, self.embed.raw(), t.residual));
        for (i, layer) in self.layers.iter().enumerate() {
            self.push_attention(&mut ops, &t, layer, kv, i);
            self.push_mlp(&mut ops, &t, layer);
        }
        self.push_head(&mut ops, &t);
        ops
    }

    fn push_attention(
        &self,
        ops: &mut Vec<KilnOp>,
        t: &BatchViews,
        layer: &LayerWeights,
        kv: &KvCache,
        i: usize,
    ) {
        let c = &self.config;
        let eps = c.rms_norm_eps;
        ops.push(ops::rms_norm(
            t.residual,
            layer.attn_norm.raw(),
            eps,
            t.normed,
        ));
        let proj = |w: &Weight, bias: &Option<Weight>, out: KilnTensor| {
            ops::linear(ops::Linear {
                x: t.normed,
                weight: w.raw(),
                bias: bias.as_ref().map_or(KilnWeight::NULL, Weight::raw),
                out,
                accumulate: ops::Accumulate::Overwrite,
                decode_rows: t.decode_rows,
            })
        };
        ops.push(proj(&layer.q, &layer.q_bias, t.q));
        ops.push(proj(&layer.k, &layer.k_bias, t.k));
        ops.push(proj(&layer.v, &layer.v_bias, t.v));
        ops.push(ops::rope(ops::Rope {
            q: t.q,
            k: t.k,
            positions: t.positions,
            cos: t.rope_cos,
            sin: t.rope_sin,
            head_dim: c.head_dim as i64,
            rotary_dim: c.head_dim as i64,
            style: ops::ROPE_NEOX,
        }));
        let (k_cache, v_cache) = kv.layer_views(i);
        ops.push(ops::kv_write(ops::KvWrite {
            k: t.k,
            v: t.v,
            k_cache,
            v_cache,
            slot_mapping: t.slots,
        }));
        ops.push(ops::attention(ops::Attention {
            q: t.q,
            k_cache,
            v_cache,
            block_tables: t.block_tables,
            seq_lens: t.seq_lens,
            query_start_loc: t.query_start_loc,
            out: t.attn,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            softcap: 0.0,
            num_heads: c.num_attention_heads as i64,
            num_kv_heads: c.num_key_value_heads as i64,
            head_dim: c.head_dim as i64,
            block_size: kv.block_size as i64,
            sliding_window: self.variant.sliding_window.unwrap_or(0) as i64,
            max_query_len: t.max_query_len,
            max_seq_len: t.max_seq_len,
        }));
        ops.push(ops::linear(ops::Linear {
            x: t.attn,
            weight: layer.o.raw(),
            bias: layer.o_bias.as_ref().map_or(KilnWeight::NULL, Weight::raw),
            out: t.residual,
            accumulate: ops::Accumulate::Add,
            decode_rows: t.decode_rows,
        }));
    }

    fn push_mlp(&self, ops: &mut Vec<KilnOp>, t: &BatchViews, layer: &LayerWeights) {
        ops.push(ops::rms_norm(
            t.residual,
            layer.ffn_norm.raw(),
            self.config.rms_norm_eps,
            t.normed,
        ));
        let biases = layer.mlp_bias.as_ref();
        let raw = |b: Option<&Weight>| b.map_or(KilnWeight::NULL, Weight::raw);
        let plain = |w: &Weight, bias: KilnWeight, x: KilnTensor, out: KilnTensor| {
            ops::linear(ops::Linear {
                x,
                weight: w.raw(),
                bias,
                out,
                accumulate: ops::Accumulate::Overwrite,
                decode_rows: t.decode_rows,
            })
        };
        ops.push(plain(
            &layer.gate,
            raw(biases.map(|b| &b.0)),
            t.normed,
            t.gate,
        ));
        ops.push(plain(&layer.up, raw(biases.map(|b| &b.1)), t.normed, t.up));
        ops.push(ops::silu_mul(t.gate, t.up, t.gate));
        ops.push(ops::linear(ops::Linear {
            x: t.gate,
            weight: layer.down.raw(),
            bias: raw(biases.map(|b| &b.2)),
            out: t.residual,
            accumulate: ops::Accumulate::Add,
            decode_rows: t.decode_rows,
        }));
    }

    fn push_head(&self, ops: &mut Vec<KilnOp>, t: &BatchViews) {
        ops.push(ops::gather_rows(
            t.residual,
            t.logits_indices,
            t.last_hidden,
        ));
        ops.push(ops::rms_norm(
            t.last_hidden,
            self.final_norm.raw(),
            self.config.rms_norm_eps,
            t.last_normed,
        ));
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        ops.push(ops::linear(ops::Linear {
            x: t.last_normed,
            weight: head.raw(),
            bias: KilnWeight::NULL,
            out: t.logits,
            accumulate: ops::Accumulate::Overwrite,
            decode_rows: t.decode_logits_rows,
        }));
        if self.act != ActDType::F32 {
            ops.push(ops::cast(t.logits, t.logits_f32));
        }
    }

    /// Positions covered by the RoPE tables.
    pub fn max_positions(&self) -> usize {
        self.rope_positions
    }
}

fn upload_rope(device: &Device, tables: &RopeTables) -> Result<(Buffer, Buffer), DecoderError> {
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cos = bytes(&tables.cos);
    let sin = bytes(&tables.sin);
    let cos_buf = device.alloc(cos.len() as u64)?;
    device.write(&cos_buf, 0, &cos)?;
    let sin_buf = device.alloc(sin.len() as u64)?;
    device.write(&sin_buf, 0, &sin)?;
    Ok((cos_buf, sin_buf))
}

/// The paged KV cache: per layer, keys and values `[blocks, block_size, kv_heads, head_dim]`.
pub struct KvCache {
    layers: Vec<(Buffer, Buffer)>,
    /// Blocks per layer.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: KilnDType,
}

impl KvCache {
    /// Bytes one block takes across all layers (keys and values).
    pub fn bytes_per_block(config: &ModelConfig, block_size: usize, dtype: ActDType) -> u64 {
        2 * config.num_hidden_layers as u64
            * block_size as u64
            * config.num_key_value_heads as u64
            * config.head_dim as u64
            * dtype.size()
    }

    /// Allocate `num_blocks` blocks per layer.
    pub fn allocate(
        device: &Device,
        config: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: ActDType,
    ) -> Result<KvCache, DecoderError> {
        let per_layer = num_blocks as u64
            * block_size as u64
            * (config.num_key_value_heads * config.head_dim) as u64
            * dtype.size();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push((device.alloc(per_layer)?, device.alloc(per_layer)?));
        }
        Ok(KvCache {
            layers,
            num_blocks,
            block_size,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            dtype: dtype.abi(),
        })
    }

    /// The key and value views of layer `i`.
    pub fn layer_views(&self, i: usize) -> (KilnTensor, KilnTensor) {
        let dims = [
            self.num_blocks as u64,
            self.block_size as u64,
            self.kv_heads as u64,
            self.head_dim as u64,
        ];
        let (k, v) = &self.layers[i];
        (k.view(0, self.dtype, &dims), v.view(0, self.dtype, &dims))
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Host-side inputs of one forward pass. All index arrays are i32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchInputs<'a> {
    /// `[n]` token ids.
    pub token_ids: &'a [i32],
    /// `[n]` positions.
    pub positions: &'a [i32],
    /// `[n]` KV slots.
    pub slot_mapping: &'a [i32],
    /// `[seqs]` context lengths after this step.
    pub seq_lens: &'a [i32],
    /// `[seqs + 1]` query row offsets.
    pub query_start_loc: &'a [i32],
    /// `[seqs, blocks_per_seq]` block tables, padded.
    pub block_tables: &'a [i32],
    /// Columns of `block_tables`.
    pub blocks_per_seq: usize,
    /// `[m]` rows whose logits are computed.
    pub logits_indices: &'a [i32],
    /// Longest query in the batch.
    pub max_query_len: usize,
    /// Longest context in the batch.
    pub max_seq_len: usize,
    /// Leading tokens that are single-token decode steps (the batch puts
    /// decoding sequences first); a hint for backends (see `OP_LINEAR`).
    pub decode_rows: usize,
    /// Leading `logits_indices` rows that belong to decode steps.
    pub decode_logits_rows: usize,
}

/// Capacity of the per-step buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCapacity {
    /// Tokens per step (`max_num_batched_tokens`).
    pub max_tokens: usize,
    /// Sequences per step (`max_num_seqs`).
    pub max_seqs: usize,
    /// Block-table columns (`ceil(max_model_len / block_size)`).
    pub max_blocks_per_seq: usize,
}

/// Device buffers reused by every step: inputs and activations, sized once.
pub struct StepBuffers {
    cap: StepCapacity,
    act: ActDType,
    hidden: usize,
    q_dim: usize,
    kv_dim: usize,
    inter: usize,
    vocab: usize,
    ids: Buffer,
    positions: Buffer,
    slots: Buffer,
    seq_lens: Buffer,
    query_start_loc: Buffer,
    block_tables: Buffer,
    logits_indices: Buffer,
    residual: Buffer,
    normed: Buffer,
    q: Buffer,
    k: Buffer,
    v: Buffer,
    attn: Buffer,
    gate: Buffer,
    up: Buffer,
    last_hidden: Buffer,
    last_normed: Buffer,
    logits: Buffer,
    logits_f32: Option<Buffer>,
}

impl StepBuffers {
    /// Allocate buffers for `cap` on `device` for the decoder's shapes.
    pub fn allocate(
        device: &Device,
        decoder: &LlamaDecoder,
        cap: StepCapacity,
    ) -> Result<StepBuffers, DecoderError> {
        let c = &decoder.config;
        let act = decoder.act;
        let (t, s) = (cap.max_tokens as u64, cap.max_seqs as u64);
        let a = act.size();
        let i32s = |n: u64| device.alloc(n.max(1) * 4);
        let acts = |rows: u64, cols: usize| device.alloc((rows * cols as u64 * a).max(1));
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        Ok(StepBuffers {
            cap,
            act,
            hidden: c.hidden_size,
            q_dim,
            kv_dim,
            inter: c.intermediate_size,
            vocab: c.vocab_size,
            ids: i32s(t)?,
            positions: i32s(t)?,
            slots: i32s(t)?,
            seq_lens: i32s(s)?,
            query_start_loc: i32s(s + 1)?,
            block_tables: i32s(s * cap.max_blocks_per_seq as u64)?,
            logits_indices: i32s(s)?,
            residual: acts(t, c.hidden_size)?,
            normed: acts(t, c.hidden_size)?,
            q: acts(t, q_dim)?,
            k: acts(t, kv_dim)?,
            v: acts(t, kv_dim)?,
            attn: acts(t, q_dim)?,
            gate: acts(t, c.intermediate_size)?,
            up: acts(t, c.intermediate_size)?,
            last_hidden: acts(s, c.hidden_size)?,
            last_normed: acts(s, c.hidden_size)?,
            logits: acts(s, c.vocab_size)?,
            logits_f32: match act {
                ActDType::F32 => None,
                _ => Some(device.alloc(s * c.vocab_size as u64 * 4)?),
            },
        })
    }

    /// The capacity these buffers were sized for.
    pub fn capacity(&self) -> StepCapacity {
        self.cap
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> u64 {
        [
            &self.ids,
            &self.positions,
            &self.slots,
            &self.seq_lens,
            &self.query_start_loc,
            &self.block_tables,
            &self.logits_indices,
            &self.residual,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.gate,
            &self.up,
            &self.last_hidden,
            &self.last_normed,
            &self.logits,
        ]
        .iter()
        .map(|b| b.len())
        .sum::<u64>()
            + self.logits_f32.as_ref().map_or(0, Buffer::len)
    }

    fn check(&self, inputs: &BatchInputs<'_>) -> Result<(), DecoderError> {
        let n = inputs.token_ids.len();
        let s = inputs.seq_lens.len();
        let problems = [
            (
                n > self.cap.max_tokens,
                format!("{n} tokens > {}", self.cap.max_tokens),
            ),
            (
                s > self.cap.max_seqs,
                format!("{s} sequences > {}", self.cap.max_seqs),
            ),
            (
                inputs.logits_indices.len() > self.cap.max_seqs,
                format!(
                    "{} logits rows > {}",
                    inputs.logits_indices.len(),
                    self.cap.max_seqs
                ),
            ),
            (
                inputs.blocks_per_seq > self.cap.max_blocks_per_seq,
                format!(
                    "{} blocks per sequence > {}",
                    inputs.blocks_per_seq, self.cap.max_blocks_per_seq
                ),
            ),
            (
                inputs.positions.len() != n || inputs.slot_mapping.len() != n,
                "positions/slots do not match the tokens".to_string(),
            ),
            (
                inputs.query_start_loc.len() != s + 1,
                "query_start_loc must have seqs + 1 entries".to_string(),
            ),
            (
                inputs.block_tables.len() != s * inputs.blocks_per_seq,
                "block_tables must be seqs × blocks_per_seq".to_string(),
            ),
        ];
        match problems.into_iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(DecoderError::BatchTooLarge(msg)),
            None => Ok(()),
        }
    }

    fn upload(&self, device: &Device, inputs: &BatchInputs<'_>) -> Result<(), DecoderError> {
        self.check(inputs)?;
        let put = |buf: &Buffer, data: &[i32]| device.write(buf, 0, bytemuck_i32(data));
        put(&self.ids, inputs.token_ids)?;
        put(&self.positions, inputs.positions)?;
        put(&self.slots, inputs.slot_mapping)?;
        put(&self.seq_lens, inputs.seq_lens)?;
        put(&self.query_start_loc, inputs.query_start_loc)?;
        put(&self.block_tables, inputs.block_tables)?;
        put(&self.logits_indices, inputs.logits_indices)?;
        Ok(())
    }

    /// Read `[rows, vocab]` f32 logits after a forward pass.
    pub fn read_logits(&self, device: &Device, rows: usize) -> Result<Vec<f32>, DecoderError> {
        let mut out = vec![0f32; rows * self.vocab];
        self.read_logits_rows(device, 0, &mut out)?;
        Ok(out)
    }

    /// Copy f32 logits rows `first..first + out.len() / vocab` into `out`.
    pub fn read_logits_rows(
        &self,
        device: &Device,
        first: usize,
        out: &mut [f32],
    ) -> Result<(), DecoderError> {
        let buf = self.logits_f32.as_ref().unwrap_or(&self.logits);
        // SAFETY: f32 has no padding and every byte pattern is a valid f32.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, std::mem::size_of_val(out))
        };
        device.read(buf, (first * self.vocab * 4) as u64, bytes)?;
        Ok(())
    }

    /// `[rows, vocab]` f32 view of the logits (what [`read_logits`](Self::read_logits) reads).
    pub fn logits_view(&self, rows: usize) -> KilnTensor {
        let buf = self.logits_f32.as_ref().unwrap_or(&self.logits);
        buf.view(0, KILN_F32, &[rows as u64, self.vocab as u64])
    }

    /// Vocabulary size (logits row length).
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

fn bytemuck_i32(data: &[i32]) -> &[u8] {
    // SAFETY: i32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Tensor views of one batch over the step buffers.
struct BatchViews {
    ids: KilnTensor,
    positions: KilnTensor,
    slots: KilnTensor,
    seq_lens: KilnTensor,
    query_start_loc: KilnTensor,
    block_tables: KilnTensor,
    logits_indices: KilnTensor,
    residual: KilnTensor,
    normed: KilnTensor,
    q: KilnTensor,
    k: KilnTensor,
    v: KilnTensor,
    attn: KilnTensor,
    gate: KilnTensor,
    up: KilnTensor,
    last_hidden: KilnTensor,
    last_normed: KilnTensor,
    logits: KilnTensor,
    logits_f32: KilnTensor,
    rope_cos: KilnTensor,
    rope_sin: KilnTensor,
    max_query_len: i64,
    max_seq_len: i64,
    decode_rows: u64,
    decode_logits_rows: u64,
}

impl BatchViews {
    fn new(d: &LlamaDecoder, b: &StepBuffers, inputs: &BatchInputs<'_>, n: u64, m: u64) -> Self {
        let act = b.act.abi();
        let s = inputs.seq_lens.len() as u64;
        let half = (d.config.head_dim / 2) as u64;
        let rope_rows = d.rope_positions as u64;
        let logits = b.logits.view(0, act, &[m, b.vocab as u64]);
        BatchViews {
            ids: b.ids.view(0, KILN_I32, &[n]),
            positions: b.positions.view(0, KILN_I32, &[n]),
            slots: b.slots.view(0, KILN_I32, &[n]),
            seq_lens: b.seq_lens.view(0, KILN_I32, &[s]),
            query_start_loc: b.query_start_loc.view(0, KILN_I32, &[s + 1]),
            block_tables: b
                .block_tables
                .view(0, KILN_I32, &[s, inputs.blocks_per_seq as u64]),
            logits_indices: b.logits_indices.view(0, KILN_I32, &[m]),
            residual: b.residual.view(0, act, &[n, b.hidden as u64]),
            normed: b.normed.view(0, act, &[n, b.hidden as u64]),
            q: b.q.view(0, act, &[n, b.q_dim as u64]),
            k: b.k.view(0, act, &[n, b.kv_dim as u64]),
            v: b.v.view(0, act, &[n, b.kv_dim as u64]),
            attn: b.attn.view(0, act, &[n, b.q_dim as u64]),
            gate: b.gate.view(0, act, &[n, b.inter as u64]),
            up: b.up.view(0, act, &[n, b.inter as u64]),
            last_hidden: b.last_hidden.view(0, act, &[m, b.hidden as u64]),
            last_normed: b.last_normed.view(0, act, &[m, b.hidden as u64]),
            logits,
            logits_f32: b
                .logits_f32
                .as_ref()
                .map_or(logits, |buf| buf.view(0, KILN_F32, &[m, b.vocab as u64])),
            rope_cos: d.rope_cos.view(0, KILN_F32, &[rope_rows, half]),
            rope_sin: d.rope_sin.view(0, KILN_F32, &[rope_rows, half]),
            max_query_len: inputs.max_query_len as i64,
            max_seq_len: inputs.max_seq_len as i64,
            decode_rows: inputs.decode_rows.min(n as usize) as u64,
            decode_logits_rows: inputs.decode_logits_rows.min(m as usize) as u64,
        }
    }
}
