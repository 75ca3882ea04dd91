//! One forward pass as a list of backend operations, built from the parts
//! of [`DecoderVariant`]: embeddings, each block in its layout (pre-norm,
//! parallel, sandwich, post-norm), attention with its options, the MLP (dense,
//! or a sparse layer's router, shared expert and `OP_MOE`), and the head.

use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::{KilnOp, KilnTensor, KilnWeight};

use super::Decoder;
use super::head::{HeadViews, head_ops};
use super::kv_cache::KvCache;
use super::layer::{DenseMlp, Ffn, LayerWeights, Linear, NormWeights, SparseMoe};
use super::step::BatchViews;
use crate::config::HiddenAct;
use crate::parts::{BlockLayout, Mlp, Norm, QkNorm, Routing};

pub(crate) fn raw(w: &Option<kiln_plugin_abi::safe::Weight>) -> KilnWeight {
    w.as_ref().map_or(KilnWeight::NULL, |w| w.raw())
}

/// The ABI activation kind of a config activation.
pub(crate) fn act_kind(act: HiddenAct) -> i64 {
    match act {
        HiddenAct::Silu => ops::ACT_SILU,
        HiddenAct::GeluTanh => ops::ACT_GELU_TANH,
        HiddenAct::Gelu => ops::ACT_GELU,
        HiddenAct::Relu => ops::ACT_RELU,
    }
}

/// The family's norm of `x` into `out`.
pub(crate) fn norm_op(d: &Decoder, x: KilnTensor, w: &NormWeights, out: KilnTensor) -> KilnOp {
    let eps = d.config.rms_norm_eps;
    match d.variant.norm {
        Norm::Rms => ops::rms_norm(x, w.gamma.raw(), eps, out),
        Norm::Layer { .. } => ops::layer_norm(ops::LayerNorm {
            x,
            gamma: w.gamma.raw(),
            beta: raw(&w.beta),
            eps,
            out,
        }),
    }
}

/// Ops queued for one batch.
pub(crate) struct Graph<'d> {
    pub d: &'d Decoder,
    pub t: BatchViews,
    pub ops: Vec<KilnOp>,
}

impl Graph<'_> {
    fn linear(&mut self, x: KilnTensor, w: &Linear, out: KilnTensor, accumulate: Accumulate) {
        self.ops.push(ops::linear(ops::Linear {
            x,
            weight: w.weight.raw(),
            bias: raw(&w.bias),
            out,
            accumulate,
            decode_rows: self.t.decode_rows,
        }));
    }

    fn norm(&mut self, x: KilnTensor, w: &NormWeights, out: KilnTensor) {
        self.ops.push(norm_op(self.d, x, w, out));
    }

    /// Add a branch into the residual: `write` adds it there itself, or
    /// writes it to `branch` when the family scales it first.
    fn add_to_residual(&mut self, write: impl FnOnce(&mut Self, KilnTensor, Accumulate)) {
        let (residual, branch) = (self.t.residual, self.t.branch);
        match self.d.variant.residual_scale {
            None => write(self, residual, Accumulate::Add),
            Some(f) => {
                write(self, branch, Accumulate::Overwrite);
                self.ops
                    .push(ops::scale(branch, f, residual, Accumulate::Add));
            }
        }
    }

    /// `write` a branch into `branch`, norm it (into `normed`), add it to the residual.
    fn add_normed_to_residual(
        &mut self,
        post: &NormWeights,
        write: impl FnOnce(&mut Self, KilnTensor, Accumulate),
    ) {
        let t = self.t;
        let (branch, normed, residual) = (t.branch, t.normed, t.residual);
        write(self, branch, Accumulate::Overwrite);
        self.norm(branch, post, normed);
        self.ops.push(ops::add(residual, normed, residual));
    }

    /// Add the projection `w` of `x` into the residual.
    fn project_into_residual(&mut self, x: KilnTensor, w: &Linear) {
        self.add_to_residual(|g, out, acc| g.linear(x, w, out, acc));
    }

    pub fn embeddings(&mut self) {
        let d = self.d;
        let t = self.t;
        // An encoder norms the sum into the residual, so it sums in `normed`.
        let (residual, branch) = match &d.embed_norm {
            Some(_) => (t.normed, t.branch),
            None => (t.residual, t.branch),
        };
        self.ops
            .push(ops::embedding(t.ids, d.embed.raw(), residual));
        if let Some(pos) = &d.positions {
            self.ops
                .push(ops::embedding(t.positions, pos.raw(), branch));
            self.ops.push(ops::add(residual, branch, residual));
        }
        if let Some(f) = d.variant.embed_scale {
            self.ops
                .push(ops::scale(residual, f, residual, Accumulate::Overwrite));
        }
        if let Some(norm) = &d.embed_norm {
            self.norm(residual, norm, t.residual);
        }
    }

    pub fn layer(&mut self, layer: &LayerWeights, kv: &KvCache, i: usize) {
        let t = self.t;
        let (residual, normed, normed2) = (t.residual, t.normed, t.normed2);
        fn norm(l: &Option<NormWeights>) -> &NormWeights {
            l.as_ref().expect("the layout loads this norm")
        }
        match self.d.variant.layout {
            BlockLayout::PreNorm => {
                self.norm(residual, norm(&layer.attn_norm), normed);
                self.attention(normed, layer, kv, i);
                self.project_into_residual(t.attn, &layer.o);
                self.norm(residual, norm(&layer.ffn_norm), normed);
                self.add_to_residual(|g, out, acc| g.ffn(normed, &layer.ffn, out, acc));
            }
            BlockLayout::Parallel { shared_norm } => {
                self.norm(residual, norm(&layer.attn_norm), normed);
                let mlp_in = if shared_norm {
                    normed
                } else {
                    self.norm(residual, norm(&layer.ffn_norm), normed2);
                    normed2
                };
                self.attention(normed, layer, kv, i);
                self.project_into_residual(t.attn, &layer.o);
                self.add_to_residual(|g, out, acc| g.ffn(mlp_in, &layer.ffn, out, acc));
            }
            BlockLayout::Sandwich => {
                self.norm(residual, norm(&layer.attn_norm), normed);
                self.attention(normed, layer, kv, i);
                self.add_normed_to_residual(norm(&layer.post_attn_norm), |g, out, acc| {
                    g.linear(t.attn, &layer.o, out, acc)
                });
                self.norm(residual, norm(&layer.ffn_norm), normed);
                self.add_normed_to_residual(norm(&layer.post_ffn_norm), |g, out, acc| {
                    g.ffn(normed, &layer.ffn, out, acc)
                });
            }
            BlockLayout::PostNorm => {
                self.attention(residual, layer, kv, i);
                self.add_normed_to_residual(norm(&layer.post_attn_norm), |g, out, acc| {
                    g.linear(t.attn, &layer.o, out, acc)
                });
                self.add_normed_to_residual(norm(&layer.post_ffn_norm), |g, out, acc| {
                    g.ffn(residual, &layer.ffn, out, acc)
                });
            }
            BlockLayout::PostResidual => {
                // The state moves to `normed` after attention and back after
                // the MLP, so that no norm runs in place.
                self.attention(residual, layer, kv, i);
                self.linear(t.attn, &layer.o, residual, Accumulate::Add);
                self.norm(residual, norm(&layer.post_attn_norm), normed);
                self.ffn(normed, &layer.ffn, normed, Accumulate::Add);
                self.norm(normed, norm(&layer.post_ffn_norm), residual);
            }
        }
    }

    /// q/k/v from `x`, their norms and RoPE, the cache write and attention
    /// into `t.attn` (the output projection is the caller's).
    fn attention(&mut self, x: KilnTensor, layer: &LayerWeights, kv: &KvCache, i: usize) {
        let d = self.d;
        let c = &d.config;
        let v = &d.variant;
        let t = self.t;
        let (q, k, vv, n) = (t.q, t.k, t.v, t.n);
        self.linear(x, &layer.q, q, Accumulate::Overwrite);
        self.linear(x, &layer.k, k, Accumulate::Overwrite);
        self.linear(x, &layer.v, vv, Accumulate::Overwrite);
        let eps = c.rms_norm_eps;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            let hd = c.head_dim as u64;
            let (qv, kv_) = match v.qk_norm {
                // One row per head: the norm runs over each head's values.
                QkNorm::PerHead => (
                    reshape(q, n * c.num_attention_heads as u64, hd),
                    reshape(k, n * c.num_key_value_heads as u64, hd),
                ),
                _ => (q, k),
            };
            self.ops.push(ops::rms_norm(qv, qn.raw(), eps, qv));
            self.ops.push(ops::rms_norm(kv_, kn.raw(), eps, kv_));
        }
        if let Some(rope) = d.rope_for_layer(i) {
            self.ops.push(ops::rope(ops::Rope {
                q,
                k,
                positions: t.positions,
                cos: rope.0,
                sin: rope.1,
                head_dim: c.head_dim as i64,
                rotary_dim: c.rotary_dim as i64,
                style: ops::ROPE_NEOX,
            }));
        }
        let (k_cache, v_cache) = kv.layer_views(i);
        self.ops.push(ops::kv_write(ops::KvWrite {
            k,
            v: vv,
            k_cache,
            v_cache,
            slot_mapping: t.slots,
        }));
        self.ops.push(ops::attention(ops::Attention {
            q,
            k_cache,
            v_cache,
            block_tables: t.block_tables,
            seq_lens: t.seq_lens,
            query_start_loc: t.query_start_loc,
            out: t.attn,
            scale: v.attention_scale,
            softcap: v.attn_softcap.unwrap_or(0.0),
            num_heads: c.num_attention_heads as i64,
            num_kv_heads: c.num_key_value_heads as i64,
            head_dim: c.head_dim as i64,
            block_size: kv.block_size as i64,
            sliding_window: v.layer_windows[i].unwrap_or(0) as i64,
            max_query_len: t.max_query_len,
            max_seq_len: t.max_seq_len,
        }));
    }

    /// The feed-forward block on `x`, written or added into `out`.
    fn ffn(&mut self, x: KilnTensor, ffn: &Ffn, out: KilnTensor, accumulate: Accumulate) {
        match ffn {
            Ffn::Dense(mlp) => self.dense_mlp(x, mlp, out, accumulate),
            Ffn::Sparse(moe) => self.sparse_moe(x, moe, out, accumulate),
        }
    }

    /// A dense MLP: up to its activation in `t.gate` (`[n, inter]` with the
    /// MLP's own inner width), then the down projection into `out`.
    fn dense_mlp(&mut self, x: KilnTensor, mlp: &DenseMlp, out: KilnTensor, acc: Accumulate) {
        let v = &self.d.variant;
        let n = self.t.n;
        let inter = mlp.up.weight.rows();
        let (gate, up) = (reshape(self.t.gate, n, inter), reshape(self.t.up, n, inter));
        let kind = act_kind(v.act);
        match (v.mlp, &mlp.gate) {
            (Mlp::Gated { .. }, Some(g)) => {
                self.linear(x, g, gate, Accumulate::Overwrite);
                self.linear(x, &mlp.up, up, Accumulate::Overwrite);
                self.ops.push(match v.act {
                    HiddenAct::Silu => ops::silu_mul(gate, up, gate),
                    _ => ops::activation(kind, gate, up, gate),
                });
            }
            _ => {
                self.linear(x, &mlp.up, gate, Accumulate::Overwrite);
                self.ops
                    .push(ops::activation(kind, gate, KilnTensor::NONE, gate));
            }
        }
        self.linear(gate, &mlp.down, out, acc);
    }

    /// A sparse layer: router logits into `t.router_logits`, the shared
    /// expert into `t.shared_out` and its gate logit into `t.shared_gate`,
    /// then one `OP_MOE` that routes, runs the experts and adds the shared
    /// term.
    fn sparse_moe(&mut self, x: KilnTensor, moe: &SparseMoe, out: KilnTensor, acc: Accumulate) {
        let experts = self
            .d
            .variant
            .experts
            .as_ref()
            .expect("a sparse layer belongs to a family with experts");
        let t = self.t;
        self.linear(x, &moe.router, t.router_logits, Accumulate::Overwrite);
        let (shared_out, shared_gate) = match &moe.shared {
            None => (KilnTensor::NONE, KilnTensor::NONE),
            Some(shared) => {
                self.dense_mlp(x, &shared.mlp, t.shared_out, Accumulate::Overwrite);
                self.linear(x, &shared.gate, t.shared_gate_pairs, Accumulate::Overwrite);
                self.ops.push(ops::gather_rows(
                    t.shared_gate_column,
                    t.even_rows,
                    t.shared_gate,
                ));
                (t.shared_out, t.shared_gate)
            }
        };
        self.ops.push(ops::moe(ops::Moe {
            x,
            router_logits: t.router_logits,
            out,
            shared_out,
            shared_gate,
            gate_up: moe.experts.gate_up.raw(),
            down: moe.experts.down.raw(),
            num_experts: experts.count as i64,
            top_k: experts.top_k as i64,
            decode_rows: t.decode_rows,
            activation: act_kind(self.d.variant.act),
            routing: match experts.routing {
                Routing::SoftmaxTopK => ops::MOE_ROUTING_SOFTMAX_TOPK,
                Routing::SoftmaxTopKRenormalized => ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
            },
            accumulate: acc,
        }));
    }

    /// Every row's final hidden state, for embeddings: the final norm into
    /// `t.normed` (an encoder's residual already is its output).
    pub fn hidden_states(&mut self) {
        if let Some(final_norm) = &self.d.final_norm {
            let t = self.t;
            self.norm(t.residual, final_norm, t.normed);
        }
    }

    pub fn head(&mut self) {
        let t = self.t;
        let views = HeadViews {
            residual: t.residual,
            indices: t.logits_indices,
            hidden: t.last_hidden,
            normed: t.last_normed,
            logits: t.logits,
            logits_f32: t.logits_f32,
            decode_rows: t.decode_logits_rows,
        };
        head_ops(self.d, views, &mut self.ops);
    }
}

/// The same bytes viewed as `[rows, cols]`.
fn reshape(t: KilnTensor, rows: u64, cols: u64) -> KilnTensor {
    let mut r = t;
    r.dims = [rows, cols, 1, 1];
    r.rank = 2;
    r
}
