//! The decoder every family runs, built from parts and expressed as backend
//! operations.
//!
//! A family is a [`DecoderVariant`] (which norms, attention options, MLP,
//! block layout, embeddings and head it uses); [`Decoder::load`] uploads the
//! tensors those parts need ([`layer`], through [`loader`]), and each
//! forward pass is an op list built from the same parts ([`graph`]). The
//! KV cache ([`kv_cache`]) and the per-step buffers ([`step`]) are sized
//! from the config. The decoder never names a backend; it queues operations
//! on a [`Device`] through the safe ABI wrapper.

mod bidirectional;
pub mod dtype;
mod experts;
mod graph;
mod head;
mod kv_cache;
mod layer;
mod loader;
mod step;

use kiln_plugin_abi::safe::{AbiError, Buffer, Device, Weight};
use kiln_plugin_abi::{KILN_F32, KilnOp, KilnTensor, ops};

pub use dtype::{ActDType, weight_format};
pub use head::RowHead;
pub use kv_cache::KvCache;
pub use loader::{LoadProgress, WeightSummary};
pub use step::{BatchInputs, StepBuffers, StepCapacity};

use crate::config::{HiddenAct, ModelConfig};
use crate::names::Role;
use crate::parts::{DecoderVariant, Mlp, Norm};
use crate::rope::RopeTables;
use crate::weights::quantize::QuantizeAtLoad;
use crate::weights::quantized::QuantScheme;
use crate::weights::{WeightDType, WeightSource};
use graph::Graph;
use layer::{LayerWeights, NormWeights, load_layer, load_norm};
use loader::{Loader, TensorRef};
use step::BatchViews;

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
    #[error(
        "tensor `{name}` is stored as {dtype:?}, which the {backend} backend cannot run{}",
        runs_elsewhere(*dtype, backend)
    )]
    UnsupportedFormat {
        /// Tensor name.
        name: String,
        /// Its storage type.
        dtype: WeightDType,
        backend: String,
    },
    /// The backend cannot hold a quantized weight (a checkpoint's integer or
    /// FP8 weights, or FP8 from `--quantization fp8`).
    #[error(
        "tensor `{name}` is a {scheme} weight, which the {backend} backend cannot run; \
         the cpu backend runs it"
    )]
    UnsupportedScheme {
        /// Tensor name.
        name: String,
        /// The checkpoint's scheme label.
        scheme: String,
        backend: String,
    },
    /// A sparse layer's experts cannot be stacked into the one weight per
    /// projection the backend runs them from.
    #[error("the experts of layer {layer} cannot be stacked: {reason}")]
    ExpertStack {
        layer: usize,
        /// What stands in the way.
        reason: String,
    },
    /// The backend lacks an operation the model needs.
    #[error("the {backend} backend cannot run {family} models: it lacks the `{op}` operation")]
    MissingOp {
        backend: String,
        family: String,
        /// The operation's name.
        op: &'static str,
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

/// How to prepare the decoder.
pub struct DecoderOptions<'a> {
    /// Activation dtype.
    pub act_dtype: ActDType,
    /// Positions the RoPE tables cover (the served context length).
    pub max_positions: usize,
    /// Progress sink.
    pub progress: Option<&'a mut dyn LoadProgress>,
    /// How the checkpoint's Linear weights are quantized (safetensors
    /// `quantization_config`); `None` for float and GGUF checkpoints.
    pub quantization: Option<QuantScheme>,
    /// Quantize float Linear weights at load (`--quantization int8` or
    /// `fp8`); embeddings, the LM head and vectors stay.
    pub quantize_at_load: Option<QuantizeAtLoad>,
}

/// Where a format the backend refused does run: every type with an ABI
/// weight format runs on the CPU backend.
fn runs_elsewhere(dtype: WeightDType, backend: &str) -> &'static str {
    if backend != "cpu" && dtype::weight_format(dtype).is_some() {
        "; the cpu backend runs it (--backend cpu)"
    } else {
        ""
    }
}

/// One RoPE table pair on the device: `[positions, rotary_dim / 2]` cosines and sines.
struct RopeBuffers {
    cos: Buffer,
    sin: Buffer,
}

/// A decoder whose weights live on a device.
pub struct Decoder {
    config: ModelConfig,
    variant: DecoderVariant,
    act: ActDType,
    embed: Weight,
    /// Learned position embeddings, starting at the row of position 0 (an
    /// encoder's with its token-type-0 row added).
    positions: Option<Weight>,
    /// The norm of the summed embeddings (encoders).
    embed_norm: Option<NormWeights>,
    layers: Vec<LayerWeights>,
    /// `None` for encoders, which have no head.
    final_norm: Option<NormWeights>,
    lm_head: Option<Weight>,
    lm_head_bias: Option<Weight>,
    /// The model's tables, then the local-θ tables when windowed layers use another base.
    ropes: Vec<RopeBuffers>,
    rope_positions: usize,
    summary: WeightSummary,
}

/// The operations beyond the Llama core that `variant` needs.
fn required_ops(variant: &DecoderVariant) -> Vec<u32> {
    let mut v = Vec::new();
    if matches!(variant.norm, Norm::Layer { .. }) {
        v.push(ops::OP_LAYER_NORM);
    }
    if variant.act != HiddenAct::Silu || variant.mlp == Mlp::Plain {
        v.push(ops::OP_ACTIVATION);
    }
    if variant.embed_scale.is_some()
        || variant.residual_scale.is_some()
        || variant.logit_scale.is_some()
    {
        v.push(ops::OP_SCALE);
    }
    if variant.final_softcap.is_some() {
        v.push(ops::OP_SOFTCAP);
    }
    if variant.experts.is_some() {
        v.push(ops::OP_MOE);
    }
    v
}

fn upload_rope(device: &Device, tables: &RopeTables) -> Result<RopeBuffers, DecoderError> {
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (cos, sin) = (bytes(&tables.cos), bytes(&tables.sin));
    let cos_buf = device.alloc(cos.len().max(4) as u64)?;
    device.write(&cos_buf, 0, &cos)?;
    let sin_buf = device.alloc(sin.len().max(4) as u64)?;
    device.write(&sin_buf, 0, &sin)?;
    Ok(RopeBuffers {
        cos: cos_buf,
        sin: sin_buf,
    })
}

impl Decoder {
    /// Upload the weights and RoPE tables to `device`. Refuses, naming the
    /// operation, a backend that lacks one the family needs.
    pub fn load(
        device: &Device,
        source: &dyn WeightSource,
        config: &ModelConfig,
        variant: DecoderVariant,
        options: DecoderOptions<'_>,
    ) -> Result<Decoder, DecoderError> {
        let act = options.act_dtype;
        if let Some(op) = required_ops(&variant)
            .into_iter()
            .find(|&op| !device.supports(op, None, act.abi()))
        {
            return Err(DecoderError::MissingOp {
                backend: device.backend().name(),
                family: variant.family.to_string(),
                op: ops::opcode_name(op),
            });
        }
        let c = config;
        let h = c.hidden_size;
        let mut loader = Loader {
            device,
            act,
            family: variant.kind,
            source,
            progress: options.progress,
            quantization: options.quantization,
            quantize_at_load: options.quantize_at_load,
            done: 0,
            total: source.total_bytes(),
            summary: WeightSummary::default(),
        };
        let embed = loader.matrix(TensorRef::global(Role::Embed), c.vocab_size, h)?;
        let positions = match variant.learned_positions {
            None => None,
            Some(offset) => {
                let view = loader.view(TensorRef::global(Role::Positions))?;
                let rows = view.shape.first().copied().unwrap_or(0);
                let kept: Vec<usize> = (offset.min(rows)..rows).collect();
                let view = loader::select_rows(&view, &kept)?;
                let view = match variant.encoder {
                    true => loader.add_first_row(view, TensorRef::global(Role::TokenTypes), h)?,
                    false => view,
                };
                Some(loader.prepare(view, &[kept.len(), h])?)
            }
        };
        let embed_norm = match variant.encoder {
            true => Some(load_norm(
                &mut loader,
                &variant,
                TensorRef::global(Role::EmbedNorm),
                h,
            )?),
            false => None,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            layers.push(load_layer(&mut loader, &variant, c, i)?);
        }
        let head_ref = TensorRef::global(Role::LmHead);
        let (final_norm, lm_head, lm_head_bias) = if variant.encoder {
            (None, None, None)
        } else {
            let final_norm =
                load_norm(&mut loader, &variant, TensorRef::global(Role::FinalNorm), h)?;
            let lm_head = if c.tie_word_embeddings && loader.find(head_ref)?.is_none() {
                None
            } else {
                Some(loader.matrix(head_ref, c.vocab_size, h)?)
            };
            let bias = loader.bias(head_ref, c.vocab_size, variant.lm_head_bias)?;
            (Some(final_norm), lm_head, bias)
        };
        let mut ropes = Vec::new();
        if variant.has_rope() {
            ropes.push(upload_rope(
                device,
                &RopeTables::for_model(c, options.max_positions),
            )?);
            if let Some(theta) = c.rope_local_theta {
                let local = RopeTables::new(c.rotary_dim, theta, None, options.max_positions);
                ropes.push(upload_rope(device, &local)?);
            }
        }
        Ok(Decoder {
            config: c.clone(),
            variant,
            act,
            embed,
            positions,
            embed_norm,
            layers,
            final_norm,
            lm_head,
            lm_head_bias,
            ropes,
            rope_positions: options.max_positions,
            summary: loader.summary,
        })
    }

    /// The model config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The family's parts.
    pub fn variant(&self) -> &DecoderVariant {
        &self.variant
    }

    /// Activation dtype.
    pub fn act_dtype(&self) -> ActDType {
        self.act
    }

    /// What was uploaded.
    pub fn weight_summary(&self) -> &WeightSummary {
        &self.summary
    }

    /// Positions covered by the RoPE tables.
    pub fn max_positions(&self) -> usize {
        self.rope_positions
    }

    /// Whether the model generates text (encoders only embed).
    pub fn generates(&self) -> bool {
        !self.variant.encoder
    }

    /// Queue one forward pass; afterwards `bufs.logits_f32()` holds
    /// `[inputs.logits_indices.len(), vocab]` f32 logits, and with
    /// `inputs.hidden_states` [`Decoder::read_hidden`] reads every row's
    /// final hidden state.
    pub fn forward(
        &self,
        device: &Device,
        kv: &KvCache,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Result<(), DecoderError> {
        if self.variant.encoder {
            let rows = bidirectional::AttentionRows::of(inputs)?;
            let expanded = rows.inputs(inputs);
            bufs.upload(device, &expanded)?;
            let ops = self.build_ops(kv, bufs, &expanded);
            device.execute(&ops)?;
            return Ok(());
        }
        bufs.upload(device, inputs)?;
        let ops = self.build_ops(kv, bufs, inputs);
        device.execute(&ops)?;
        Ok(())
    }

    /// Copy a batch's index arrays into the step buffers (before replaying a
    /// captured graph of [`Decoder::build_ops`]).
    pub fn upload_inputs(
        &self,
        device: &Device,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Result<(), DecoderError> {
        bufs.upload(device, inputs)
    }

    /// `[rows, hidden]` f32 final hidden states of rows `first..first + rows`
    /// of the last forward pass (which asked for `hidden_states`).
    pub fn read_hidden(
        &self,
        device: &Device,
        bufs: &StepBuffers,
        first: usize,
        rows: usize,
    ) -> Result<Vec<f32>, DecoderError> {
        bufs.read_hidden(device, self.final_norm.is_some(), first, rows)
    }

    /// The operation list of one forward pass (exposed for graph capture).
    pub fn build_ops(
        &self,
        kv: &KvCache,
        bufs: &StepBuffers,
        inputs: &BatchInputs<'_>,
    ) -> Vec<KilnOp> {
        let mut g = Graph {
            d: self,
            t: BatchViews::new(bufs, inputs),
            ops: Vec::with_capacity(self.layers.len() * 16 + 8),
        };
        g.embeddings();
        for (i, layer) in self.layers.iter().enumerate() {
            g.layer(layer, kv, i);
        }
        if inputs.hidden_states {
            g.hidden_states();
        }
        g.head();
        g.ops
    }

    /// The `(cos, sin)` table views layer `i` rotates with, `None` without RoPE.
    fn rope_for_layer(&self, i: usize) -> Option<(KilnTensor, KilnTensor)> {
        let table = self
            .ropes
            .get(usize::from(self.variant.uses_local_rope(i)))
            .or(self.ropes.first())?;
        let dims = [
            self.rope_positions as u64,
            (self.config.rotary_dim / 2) as u64,
        ];
        Some((
            table.cos.view(0, KILN_F32, &dims),
            table.sin.view(0, KILN_F32, &dims),
        ))
    }
}
