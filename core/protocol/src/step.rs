//! The messages of one engine step.
//!
//! One step is: the scheduler sends [`AllocateForStep`] to the block manager
//! and gets [`StepAllocation`] back; it then sends a [`StepPlan`] to the model
//! runner, which answers with [`StepLogits`]; the sampler turns those into a
//! [`StepOutput`] for the scheduler. A request's data crosses to the runner
//! once; afterwards only the tokens of the step and block-table diffs do.
//!
//! | mailbox | message | reply |
//! |---|---|---|
//! | block manager | [`AllocateForStep`] (one per step, batched) | [`StepAllocation`] |
//! | model runner | [`StepPlan`] | [`StepLogits`] |
//! | sampler | [`StepLogits`] | [`StepOutput`] |

use serde::{Deserialize, Serialize};

use crate::{BlockId, FinishReason, SeqId, TokenId};

/// Scheduler → block manager, once per step.
///
/// Processed as: `forks` (so that a parent finishing in the step that
/// forks it still hands its blocks over), then `releases`, then, when every
/// layer of the model slides, the blocks of every sequence that fell behind
/// its window (the KV of every slot granted so far has been computed by
/// now), then `demands` in order. A demand that cannot be met is denied;
/// later `Admit` demands are then denied too (no admission may overtake
/// another: FCFS).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AllocateForStep {
    /// Step counter (for logs and matching replies).
    pub step_id: u64,
    /// Sequences whose blocks return to the pool: finished, aborted, failed
    /// or preempted since the last step.
    pub releases: Vec<SeqId>,
    /// New sequences that share every block of an existing one (`n > 1`);
    /// applied before `releases`.
    pub forks: Vec<Fork>,
    /// What each scheduled sequence needs this step, in priority order.
    pub demands: Vec<BlockDemand>,
}

/// `child` starts as a copy of `parent` that shares its blocks (copy-on-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// Existing sequence.
    pub parent: SeqId,
    /// New sequence, unknown to the block manager until now.
    pub child: SeqId,
}

/// One sequence's need for KV slots this step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDemand {
    /// The sequence that needs the slots.
    pub seq_id: SeqId,
    /// What it needs.
    pub kind: DemandKind,
}

/// The two ways a sequence asks for slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DemandKind {
    /// A sequence that holds no blocks (new, or resumed after preemption).
    /// The block manager first reuses cached blocks for the longest prefix of
    /// `token_ids` it holds (never the whole list: at least the last token is
    /// computed), then allocates slots for up to `max_new_tokens` more.
    Admit {
        /// [num_known_tokens] every token of the sequence so far.
        token_ids: Vec<TokenId>,
        /// Most tokens to compute this step (the scheduler's token budget for it).
        max_new_tokens: u32,
        /// Whether to look up and register prefix-cache blocks.
        use_prefix_cache: bool,
    },
    /// A running sequence appends slots for these tokens.
    Extend {
        /// [num_new_tokens] the tokens computed this step.
        token_ids: Vec<TokenId>,
    },
}

/// Block manager → scheduler: the answer to [`AllocateForStep`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepAllocation {
    /// Echo of the request's step id.
    pub step_id: u64,
    /// One grant per demand, same order.
    pub grants: Vec<BlockGrant>,
    /// Copy-on-write copies the runner must do before computing this step.
    pub copies: Vec<BlockCopy>,
    /// Blocks free for allocation after this step (including cached, evictable ones).
    pub num_free_blocks: u32,
    /// Blocks in the pool.
    pub num_total_blocks: u32,
    /// Prompt tokens looked up in the prefix cache by this step's admissions.
    pub prefix_cache_queries: u32,
    /// Prompt tokens found in the prefix cache by this step's admissions.
    pub prefix_cache_hits: u32,
}

/// The outcome of one [`BlockDemand`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockGrant {
    /// The sequence of the demand this answers.
    pub seq_id: SeqId,
    /// `None` when denied (not enough free blocks); the sequence holds
    /// exactly what it held before.
    pub granted: Option<Granted>,
}

/// Slots granted to one sequence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Granted {
    /// For `Admit`: tokens already in the cache (they are skipped). 0 for `Extend`.
    pub num_cached_tokens: u32,
    /// Tokens to compute this step: for `Admit` at most `max_new_tokens` and at
    /// most what follows the cached prefix; for `Extend` all of them.
    pub num_new_tokens: u32,
    /// Block-table update: keep the first `table_keep` entries of the
    /// sequence's table, then append `new_blocks`.
    pub table_keep: u32,
    /// Blocks appended to the table ([`NO_BLOCK`](crate::NO_BLOCK) for an
    /// `Admit`'s cache hits that already lie behind the sliding window).
    pub new_blocks: Vec<BlockId>,
    /// Leading entries of the sequence's table that are holes after this
    /// grant (blocks behind the sliding window, back in the pool); 0 for
    /// models without a window on every layer.
    #[serde(default)]
    pub table_holes: u32,
}

/// Copy the contents of one KV block into another (all layers, K and V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCopy {
    /// Source block.
    pub src: BlockId,
    /// Destination block.
    pub dst: BlockId,
}

/// Scheduler → model runner: everything computed in one forward pass.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepPlan {
    /// Step counter.
    pub step_id: u64,
    /// Sequences the runner forgets before this step (finished, aborted,
    /// failed, preempted).
    pub dropped: Vec<SeqId>,
    /// Block copies (copy-on-write) done before computing.
    pub block_copies: Vec<BlockCopy>,
    /// The sequences computed in this step.
    pub seqs: Vec<ScheduledSeq>,
}

impl StepPlan {
    /// Tokens computed in this step.
    pub fn num_batched_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.token_ids.len()).sum()
    }

    /// True when there is nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScheduledSeq {
    /// The sequence that runs this step.
    pub seq_id: SeqId,
    /// [num_scheduled_tokens] tokens computed this step: a prompt chunk, a
    /// recomputed history, or the last sampled token.
    pub token_ids: Vec<TokenId>,
    /// Tokens already in the KV cache: the position of `token_ids[0]`.
    pub num_computed_tokens: u32,
    /// Block-table update: keep the first `table_keep` entries, append `new_blocks`.
    pub table_keep: u32,
    /// Blocks appended to the table.
    pub new_blocks: Vec<BlockId>,
    /// The first `table_holes` entries of the table are now holes
    /// ([`NO_BLOCK`](crate::NO_BLOCK)): their blocks fell behind the sliding
    /// window and may already hold another sequence's KV. No row of this
    /// step can see their positions (they all lie before
    /// `num_computed_tokens + 1 − window`).
    #[serde(default)]
    pub table_holes: u32,
    /// Samples drawn from the logits after the last token: 0 for a prefill
    /// chunk that does not reach the end of the known tokens, 1 normally, `n`
    /// when an `n > 1` request forks.
    pub num_samples: u32,
    /// The sequence is an embedding request: `token_ids` is its whole
    /// input, and the runner returns its pooled hidden states instead of
    /// logits (`num_samples` is 0). Its blocks are released after this step.
    #[serde(default)]
    pub embed: bool,
    /// Leading rows of `token_ids` whose logits return to the host for the
    /// request's `prompt_logprobs`: row `j` predicts the prompt token at
    /// position `num_computed_tokens + j + 1`.
    #[serde(default)]
    pub prompt_logprob_rows: u32,
}

/// Everything a device needs to draw one sequence's next token (sent to the
/// model runner next to the [`StepPlan`] for rows with `num_samples == 1`;
/// rows without one get their logits returned and are drawn on the host): the
/// request's parameters, its random stream position and the sparse logit
/// adjustments that its history implies (built by the sampler, which owns the
/// rules; see `kiln_sampler::row_sampling`).
///
/// Order of processing: log-probabilities are taken from the raw row; then
/// each adjustment applies `add_before` (logit bias; `-inf` masks), the
/// repetition penalty when `repeat` is set, then `add_after`
/// (presence/frequency penalties); then temperature, top-k, top-p, min-p and
/// the draw (or the argmax when greedy).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RowSampling {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Top-k (0: off).
    pub top_k: u32,
    /// Top-p (1: off).
    pub top_p: f32,
    /// Min-p (0: off).
    pub min_p: f32,
    /// The sequence's random stream.
    pub seed: u64,
    /// Draws the stream has made (tokens the sequence generated).
    pub counter: u64,
    /// HF-style repetition penalty for adjustments with `repeat` (1: off).
    pub repetition_penalty: f32,
    /// Sparse per-token adjustments, by ascending token id, each token once.
    pub adjustments: Vec<LogitAdjustment>,
    /// Top alternatives to report with log-probabilities (`None`: none, and
    /// no log-probability of the drawn token either).
    pub logprobs: Option<u32>,
    /// The tokens the row may draw (structured outputs); `None`: every token.
    /// Applied after the adjustments: a token outside the mask is `-inf`.
    #[serde(default)]
    pub allowed: Option<TokenMask>,
}

/// A set of token ids as a bitset: token `t` is in the set when bit `t % 32`
/// of `words[t / 32]` is 1. Ids past the last word are not in the set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenMask {
    /// `[ceil(vocab / 32)]` words.
    pub words: Vec<u32>,
}

impl TokenMask {
    /// The empty set over `vocab_size` ids.
    pub fn empty(vocab_size: usize) -> Self {
        TokenMask {
            words: vec![0; vocab_size.div_ceil(32)],
        }
    }

    /// Whether `token` is in the set.
    pub fn contains(&self, token: TokenId) -> bool {
        self.words
            .get(token as usize / 32)
            .is_some_and(|w| w >> (token % 32) & 1 == 1)
    }

    /// Adds `token` (growing the bitset when needed).
    pub fn insert(&mut self, token: TokenId) {
        let word = token as usize / 32;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (token % 32);
    }

    /// Number of tokens in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = TokenId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..32u32)
                .filter(move |b| w >> b & 1 == 1)
                .map(move |b| i as u32 * 32 + b)
        })
    }
}

/// One token's logit adjustment (see [`RowSampling`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LogitAdjustment {
    /// The token whose logit changes.
    pub token: TokenId,
    /// Added first (logit bias, or `-inf` to mask it).
    pub add_before: f32,
    /// Whether the repetition penalty applies (the token is in the prompt or output).
    pub repeat: bool,
    /// Added after the repetition penalty (presence and frequency penalties).
    pub add_after: f32,
}

/// A token drawn on the device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceSample {
    /// The sequence the token was drawn for.
    pub seq_id: SeqId,
    /// The token drawn for `seq_id`.
    pub token_id: TokenId,
    /// Its log-probability under the raw distribution (when asked for).
    pub logprob: Option<f32>,
    /// The most likely tokens of the raw distribution with their log-probabilities.
    pub top_logprobs: Vec<(TokenId, f32)>,
}

/// Model runner → sampler: logits of the rows that sample on the host, and
/// the tokens drawn on the device for the others.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepLogits {
    /// Step counter.
    pub step_id: u64,
    /// One row per sequence with `num_samples > 0`, in plan order.
    pub rows: Vec<LogitsRow>,
    /// Vocabulary size (row length).
    pub vocab_size: usize,
    /// [rows × vocab_size] raw logits, f32, row-major.
    pub logits: Vec<f32>,
    /// Tokens already drawn on the device (rows not in `rows`).
    #[serde(default)]
    pub sampled: Vec<DeviceSample>,
    /// The pooled vectors of the step's embedding sequences.
    #[serde(default)]
    pub embeddings: Vec<SeqEmbedding>,
    /// Logits of the rows asked for by [`ScheduledSeq::prompt_logprob_rows`].
    #[serde(default)]
    pub prompt: Vec<PromptLogits>,
}

/// One sequence's prompt rows of a step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PromptLogits {
    /// The sequence the rows belong to.
    pub seq_id: SeqId,
    /// Position of the first row's token; row `j` predicts the prompt token
    /// at `first_position + j + 1`.
    pub first_position: u32,
    /// `[rows × vocab_size]` raw logits, f32, row-major.
    pub logits: Vec<f32>,
}

/// The pooled hidden states of one embedding sequence (not normalized).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SeqEmbedding {
    /// The sequence that was pooled.
    pub seq_id: SeqId,
    /// `[hidden]` f32.
    pub vector: Vec<f32>,
}

impl StepLogits {
    /// True when nothing was computed for sampling.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.sampled.is_empty()
    }
}

/// Which sequence a logits row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogitsRow {
    /// The sequence that owns the row.
    pub seq_id: SeqId,
    /// Samples to draw (see [`ScheduledSeq::num_samples`]).
    pub num_samples: u32,
}

/// Sampler → scheduler: what each sampling sequence produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepOutput {
    /// Step counter.
    pub step_id: u64,
    /// One entry per sampled token. When a row drew `n` samples, the first
    /// continues the row's sequence and the others start its forks, in the
    /// order of the sequence ids registered for the request.
    pub tokens: Vec<SampledToken>,
}

/// One sampled token and whether its sequence ended with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledToken {
    /// The sequence that gets the token.
    pub seq_id: SeqId,
    /// The token appended to `seq_id`.
    pub token_id: TokenId,
    /// Set when the sequence ended with this token.
    pub finished: Option<FinishReason>,
}
