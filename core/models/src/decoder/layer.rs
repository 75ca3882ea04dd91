//! One decoder layer's weights, loaded by role as the family's parts say:
//! which norms exist, whether q/k/v and gate/up are fused, which biases a
//! family carries.

use kiln_plugin_abi::safe::Weight;

use super::DecoderError;
use super::experts::{ExpertDims, ExpertStacks, load_experts};
use super::loader::{Loader, TensorRef, select_rows, transpose};
use crate::config::ModelConfig;
use crate::names::Role;
use crate::parts::{BlockLayout, DecoderVariant, Mlp, Norm, QkNorm, QkvLayout};
use crate::weights::TensorView;

/// A norm's scale and optional shift.
pub(crate) struct NormWeights {
    pub gamma: Weight,
    pub beta: Option<Weight>,
}

/// A projection and its optional bias.
pub(crate) struct Linear {
    pub weight: Weight,
    pub bias: Option<Weight>,
}

pub(crate) struct LayerWeights {
    pub attn_norm: Option<NormWeights>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<Weight>,
    pub k_norm: Option<Weight>,
    pub post_attn_norm: Option<NormWeights>,
    pub ffn_norm: Option<NormWeights>,
    pub post_ffn_norm: Option<NormWeights>,
    pub ffn: Ffn,
}

/// A dense MLP's projections.
pub(crate) struct DenseMlp {
    /// Absent for plain (ungated) MLPs.
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
}

/// The feed-forward block of a layer.
pub(crate) enum Ffn {
    Dense(Box<DenseMlp>),
    Sparse(Box<SparseMoe>),
}

/// A sparse layer: router, stacked experts, and the shared expert when the
/// family has one.
pub(crate) struct SparseMoe {
    /// `[E, h]`.
    pub router: Linear,
    pub experts: ExpertStacks,
    pub shared: Option<SharedExpert>,
}

/// Qwen2-MoE's always-on expert and its sigmoid gate.
pub(crate) struct SharedExpert {
    pub mlp: DenseMlp,
    /// `[2, h]`: the gate row twice (see `shared_expert_gate`).
    pub gate: Linear,
}

/// Widths a layer's tensors are checked against.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub hidden: usize,
    pub q: usize,
    pub kv: usize,
    pub inter: usize,
    pub head_dim: usize,
    pub heads: usize,
}

impl Dims {
    pub fn of(c: &ModelConfig) -> Dims {
        Dims {
            hidden: c.hidden_size,
            q: c.num_attention_heads * c.head_dim,
            kv: c.num_key_value_heads * c.head_dim,
            inter: c.intermediate_size,
            head_dim: c.head_dim,
            heads: c.num_attention_heads,
        }
    }
}

pub(crate) fn load_norm(
    l: &mut Loader<'_, '_>,
    v: &DecoderVariant,
    t: TensorRef,
    len: usize,
) -> Result<NormWeights, DecoderError> {
    Ok(NormWeights {
        gamma: l.vector(t, len, v.norm_weight_offset)?,
        beta: match v.norm {
            Norm::Layer { bias: true } => l.bias(t, len, true)?,
            _ => None,
        },
    })
}

struct LayerLoader<'l, 'a, 'p> {
    l: &'l mut Loader<'a, 'p>,
    v: &'l DecoderVariant,
    i: usize,
    d: Dims,
}

impl<'a> LayerLoader<'_, 'a, '_> {
    fn at(&self, role: Role) -> TensorRef {
        TensorRef::layer(role, self.i)
    }

    fn norm(&mut self, role: Role) -> Result<NormWeights, DecoderError> {
        load_norm(self.l, self.v, self.at(role), self.d.hidden)
    }

    /// A `[rows, cols]` projection (transposed from Conv1D form when the family stores it so).
    fn linear(
        &mut self,
        role: Role,
        rows: usize,
        cols: usize,
        bias: bool,
    ) -> Result<Linear, DecoderError> {
        let t = self.at(role);
        let weight = if self.v.transposed_linears {
            self.l.transposed(t, rows, cols)?
        } else {
            self.l.matrix(t, rows, cols)?
        };
        Ok(Linear {
            weight,
            bias: self.l.bias(t, rows, bias)?,
        })
    }

    /// The whole `[rows, cols]` fused matrix and its bias as stored, before splitting.
    fn fused(
        &self,
        role: Role,
        rows: usize,
        cols: usize,
    ) -> Result<(TensorView<'a>, Option<TensorView<'a>>), DecoderError> {
        let t = self.at(role);
        let view = self.l.view(t)?;
        let view = if self.v.transposed_linears {
            transpose(view, rows, cols)?
        } else {
            view
        };
        Ok((view, self.l.find(t.bias())?))
    }

    /// Rows `range` of a fused matrix (and its bias) as one projection.
    fn split(
        &mut self,
        fused: &(TensorView<'a>, Option<TensorView<'a>>),
        rows: &[usize],
        cols: usize,
    ) -> Result<Linear, DecoderError> {
        let weight = self
            .l
            .prepare(select_rows(&fused.0, rows)?, &[rows.len(), cols])?;
        let bias = match &fused.1 {
            Some(b) => Some(self.l.prepare(select_rows(b, rows)?, &[rows.len()])?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }

    fn qkv(&mut self) -> Result<(Linear, Linear, Linear), DecoderError> {
        let (h, q, kv, hd) = (self.d.hidden, self.d.q, self.d.kv, self.d.head_dim);
        let bias = self.v.qkv_bias;
        match self.v.qkv_layout {
            QkvLayout::Separate => Ok((
                self.linear(Role::Q, q, h, bias)?,
                self.linear(Role::K, kv, h, bias)?,
                self.linear(Role::V, kv, h, bias)?,
            )),
            QkvLayout::Fused => {
                let fused = self.fused(Role::Qkv, q + 2 * kv, h)?;
                let range = |a: usize, n: usize| (a..a + n).collect::<Vec<_>>();
                Ok((
                    self.split(&fused, &range(0, q), h)?,
                    self.split(&fused, &range(q, kv), h)?,
                    self.split(&fused, &range(q + kv, kv), h)?,
                ))
            }
            QkvLayout::FusedPerHead => {
                // Rows are [heads][3][head_dim]: part p of head j starts at (3j + p)·hd.
                let fused = self.fused(Role::Qkv, 3 * q, h)?;
                let heads = self.d.heads;
                let part = |p: usize| {
                    (0..heads)
                        .flat_map(|j| ((3 * j + p) * hd)..((3 * j + p + 1) * hd))
                        .collect::<Vec<_>>()
                };
                Ok((
                    self.split(&fused, &part(0), h)?,
                    self.split(&fused, &part(1), h)?,
                    self.split(&fused, &part(2), h)?,
                ))
            }
        }
    }

    fn ffn(&mut self) -> Result<Ffn, DecoderError> {
        let Some(x) = self.v.experts.as_ref().filter(|x| x.on_layer(self.i)) else {
            return Ok(Ffn::Dense(Box::new(self.mlp()?)));
        };
        let (h, count) = (self.d.hidden, x.count);
        let router = self.linear(Role::Router, count, h, false)?;
        let dims = ExpertDims {
            count,
            inter: x.intermediate,
            hidden: h,
        };
        let experts = load_experts(self.l, self.i, dims)?;
        let shared = match x.shared_intermediate {
            None => None,
            Some(s) => Some(SharedExpert {
                mlp: DenseMlp {
                    gate: Some(self.linear(Role::SharedGate, s, h, false)?),
                    up: self.linear(Role::SharedUp, s, h, false)?,
                    down: self.linear(Role::SharedDown, h, s, false)?,
                },
                gate: self.shared_expert_gate()?,
            }),
        };
        Ok(Ffn::Sparse(Box::new(SparseMoe {
            router,
            experts,
            shared,
        })))
    }

    /// The shared expert's gate row (`[1, h]`; GGUF stores it as `[h]`),
    /// stored twice as a `[2, h]` matrix: the ABI reads a one-row weight as
    /// a vector, so the graph computes two equal logits per token and keeps
    /// the first.
    fn shared_expert_gate(&mut self) -> Result<Linear, DecoderError> {
        let h = self.d.hidden;
        let view = self.l.view(self.at(Role::SharedExpertGate))?;
        if view.num_elements() != h {
            return Err(DecoderError::BadShape {
                name: view.name.clone(),
                actual: view.shape.clone(),
                expected: vec![1, h],
            });
        }
        let twice = [view.data.as_ref(), view.data.as_ref()].concat();
        let view = TensorView {
            shape: vec![2, h],
            data: std::borrow::Cow::Owned(twice),
            ..view
        };
        Ok(Linear {
            weight: self.l.prepare(view, &[2, h])?,
            bias: None,
        })
    }

    fn mlp(&mut self) -> Result<DenseMlp, DecoderError> {
        let (h, i, bias) = (self.d.hidden, self.d.inter, self.v.mlp_bias);
        let (gate, up) = match self.v.mlp {
            Mlp::Plain => (None, self.linear(Role::Up, i, h, bias)?),
            Mlp::Gated { fused: false } => (
                Some(self.linear(Role::Gate, i, h, bias)?),
                self.linear(Role::Up, i, h, bias)?,
            ),
            Mlp::Gated { fused: true } => {
                let fused = self.fused(Role::GateUp, 2 * i, h)?;
                let gate = self.split(&fused, &(0..i).collect::<Vec<_>>(), h)?;
                let up = self.split(&fused, &(i..2 * i).collect::<Vec<_>>(), h)?;
                (Some(gate), up)
            }
        };
        let down = self.linear(Role::Down, h, i, bias)?;
        Ok(DenseMlp { gate, up, down })
    }

    fn qk_norms(&mut self) -> Result<(Option<Weight>, Option<Weight>), DecoderError> {
        let (q_len, k_len) = match self.v.qk_norm {
            QkNorm::None => return Ok((None, None)),
            QkNorm::PerHead => (self.d.head_dim, self.d.head_dim),
            QkNorm::Whole => (self.d.q, self.d.kv),
        };
        let offset = self.v.norm_weight_offset;
        Ok((
            Some(self.l.vector(self.at(Role::QNorm), q_len, offset)?),
            Some(self.l.vector(self.at(Role::KNorm), k_len, offset)?),
        ))
    }
}

/// Load layer `i`.
pub(crate) fn load_layer(
    l: &mut Loader<'_, '_>,
    v: &DecoderVariant,
    c: &ModelConfig,
    i: usize,
) -> Result<LayerWeights, DecoderError> {
    let mut ll = LayerLoader {
        l,
        v,
        i,
        d: Dims::of(c),
    };
    let (pre_attn, post_attn, pre_ffn, post_ffn) = match v.layout {
        BlockLayout::PreNorm | BlockLayout::Parallel { shared_norm: false } => {
            (true, false, true, false)
        }
        BlockLayout::Parallel { shared_norm: true } => (true, false, false, false),
        BlockLayout::Sandwich => (true, true, true, true),
        BlockLayout::PostNorm | BlockLayout::PostResidual => (false, true, false, true),
    };
    let attn_norm = pre_attn.then(|| ll.norm(Role::AttnNorm)).transpose()?;
    let (q, k, vv) = ll.qkv()?;
    let (q_norm, k_norm) = ll.qk_norms()?;
    let (h, q_dim) = (ll.d.hidden, ll.d.q);
    let o = ll.linear(Role::O, h, q_dim, v.o_proj_bias)?;
    let post_attn_norm = post_attn.then(|| ll.norm(Role::PostAttnNorm)).transpose()?;
    let ffn_norm = pre_ffn.then(|| ll.norm(Role::FfnNorm)).transpose()?;
    let ffn = ll.ffn()?;
    let post_ffn_norm = post_ffn.then(|| ll.norm(Role::PostFfnNorm)).transpose()?;
    Ok(LayerWeights {
        attn_norm,
        q,
        k,
        v: vv,
        o,
        q_norm,
        k_norm,
        post_attn_norm,
        ffn_norm,
        post_ffn_norm,
        ffn,
    })
}
