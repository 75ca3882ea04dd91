#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

/* Generated from kiln-plugin-abi by cbindgen (then tests/header.rs respells what is still Rust); do not edit. Regenerate with KILN_BLESS=1 cargo test -p kiln-plugin-abi --test header. */

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif


// Gather embedding rows: `t0` ids `[n]` i32, `w0` table `[vocab, hidden]`, `t1` out `[n, hidden]`.
#define KILN_OP_EMBEDDING 1

// RMS norm: `t0` x `[n, h]`, `w0` gamma `[1, h]`, `t1` out `[n, h]`, `f0` eps.
#define KILN_OP_RMS_NORM 2

// Residual add then RMS norm: `t0` x `[n, h]`, `t1` residual `[n, h]` (updated
// in place: residual += x), `w0` gamma, `t2` out = norm(residual), `f0` eps.
#define KILN_OP_ADD_RMS_NORM 3

// Linear layer `out = x · Wᵀ (+ bias)`: `t0` x `[n, k]`, `w0` W `[m, k]`,
// `w1` bias `[1, m]` (optional), `t1` out `[n, m]`, `i0` 1 to accumulate
// (`out += ...`, fuses a residual add), else 0; `i1` how many leading rows
// are single-token decode rows (a hint: a backend may compute those rows
// with a different kernel, but each row's result must depend only on that
// row and on whether it is a decode row, never on `n`, so that outputs are
// the same alone and in a batch).
#define KILN_OP_LINEAR 4

// Rotary position embedding in place: `t0` q `[n, heads·hd]`, `t1` k
// `[n, kv_heads·hd]` (optional), `t2` positions `[n]` i32, `t3` cos table
// `[max_pos, rot/2]` f32, `t4` sin table `[max_pos, rot/2]` f32, `i0` head_dim,
// `i1` rotary dims (≤ head_dim), `i2` style: `KILN_ROPE_NEOX` or `KILN_ROPE_INTERLEAVED`.
#define KILN_OP_ROPE 5

// `out = silu(gate) * up`: `t0` gate `[n, i]`, `t1` up `[n, i]`, `t2` out `[n, i]`.
#define KILN_OP_SILU_MUL 6

// Element-wise add: `t0` a, `t1` b, `t2` out (same shapes).
#define KILN_OP_ADD 7

// Write keys and values into the paged cache: `t0` k `[n, kv_heads·hd]`, `t1`
// v `[n, kv_heads·hd]`, `t2` k cache `[blocks, block_size, kv_heads, hd]`, `t3`
// v cache (same), `t4` slot mapping `[n]` i32 (slot = block·block_size +
// offset; negative: skip).
#define KILN_OP_KV_WRITE 8

// Causal attention over the paged cache for a batch of sequences, prefill
// chunks and decodes alike. `t0` q `[n, heads·hd]`, `t1` k cache, `t2` v cache,
// `t3` block tables `[seqs, max_blocks]` i32, `t4` seq lens `[seqs]` i32
// (context length including this step's tokens), `t5` query start offsets
// `[seqs + 1]` i32, `t6` out `[n, heads·hd]`. `f0` scale, `f1` logit soft-cap
// (0: none). `i0` heads, `i1` kv heads, `i2` head_dim, `i3` block_size, `i4`
// sliding window (0: none), `i5` max query length in the batch, `i6` max seq
// len in the batch. Query row `j` of sequence `s` sits at position
// `seq_len[s] - q_len[s] + j` and attends to positions ≤ its own (with a
// window `w`, to positions `p - w + 1 ..= p` only). Every block-table
// entry is a block of the cache, but with a window the entries wholly
// before the window of a sequence's first row are placeholders: the host
// freed those blocks and another sequence may have written anything there,
// NaN included. A backend must never load keys or values outside a row's
// window; weighting them by 0 is not enough (0 × NaN is NaN).
#define KILN_OP_ATTENTION 9

// Select rows: `t0` x `[n, h]`, `t1` indices `[m]` i32, `t2` out `[m, h]`.
#define KILN_OP_GATHER_ROWS 10

// Copy whole KV blocks (copy-on-write): `t0` k cache, `t1` v cache, `t2` pairs `[p, 2]` i32 (src, dst).
#define KILN_OP_COPY_BLOCKS 11

// Device-side sampling: `t0` logits `[m, vocab]` f32 (may be modified),
// `t1` params `[m]` of `KilnSampleParams` (as bytes), `t2` out ids
// `[m]` i32, `t3` out logprob of the sampled token `[m]` f32 (raw
// distribution), `t4` out top ids `[m, N]` i32 and `t5` out top logprobs
// `[m, N]` f32 (optional; the raw distribution's N most likely tokens, most
// likely first, ties to the lower id), `t6` adjustments `[e]` of
// `KilnLogitAdjust` as bytes (optional), `t7` allowed-token
// bitsets `[m, W]` i32 (optional; token `t` of row `r` is allowed when bit
// `t % 32` of word `r·W + t / 32` is set; tokens past `32·W` are not), `i0` N.
//
// Per row (rows flagged `KILN_SAMPLE_SKIP` may be left alone):
// log-probabilities from the raw logits; the row's adjustments; for rows
// flagged `KILN_SAMPLE_MASKED`, every token outside the row's
// bitset set to `-inf`; then greedy (temperature ≤ 1e-5 or top-k 1: the largest logit, lowest id
// on ties) or temperature → top-k → top-p → min-p → a Gumbel-max draw whose
// noise for token `i` is a function of `(seed, counter, i)` only, so a row's
// draw never depends on the other rows.
#define KILN_OP_SAMPLE 12

// Convert dtype: `t0` in, `t1` out (same number of elements).
#define KILN_OP_CAST 13

// Layer norm: `t0` x `[n, h]`, `w0` gamma `[1, h]`, `w1` beta `[1, h]`
// (optional), `t1` out `[n, h]`, `f0` eps: `out = (x − mean) / sqrt(var +
// eps) · gamma (+ beta)`, mean and (biased) variance over the row.
#define KILN_OP_LAYER_NORM 14

// Activation, optionally gated: `t0` x `[n, i]`, `t1` up `[n, i]`
// (optional), `t2` out `[n, i]` (may alias `t0`), `i0` one of the `KILN_ACT_*`
// kinds: `out = act(x)`, or `act(x) · up` with `t1`.
#define KILN_OP_ACTIVATION 15

// Scale: `t0` x, `t1` out (same shape; may alias), `f0` factor, `i0` 1 to
// accumulate (`out += x · f0`), else 0 (`out = x · f0`).
#define KILN_OP_SCALE 16

// Soft-capping: `t0` x, `t1` out (same shape; may alias), `f0` cap `c > 0`:
// `out = c · tanh(x / c)`.
#define KILN_OP_SOFTCAP 17

// Mixture-of-experts feed-forward with top-k routing (Mixtral, Qwen2-MoE,
// Qwen3-MoE): `t0` x `[n, h]`, `t1` router logits `[n, E]`, `t2` out `[n, h]`,
// `t3` shared-expert output `[n, h]` (optional), `t4` shared-expert gate
// logits `[n, 1]` (optional; only with `t3`), `w0` the experts' gate and up
// projections stacked, `[E·2·I, h]` (expert `e`'s gate rows are
// `e·2I .. e·2I+I`, its up rows `e·2I+I .. (e+1)·2I`), `w1` their down
// projections stacked, `[E·h, I]` (expert `e`'s rows `e·h .. (e+1)·h`),
// `i0` E, `i1` k (`1 ≤ k ≤ E`), `i2` decode rows (as `KILN_OP_LINEAR`'s `i1`),
// `i3` the gate's `KILN_ACT_*` kind, `i4` routing: `KILN_MOE_ROUTING_SOFTMAX_TOPK` or
// `KILN_MOE_ROUTING_SOFTMAX_TOPK_RENORM`, `i5` 1 to accumulate (`out +=
// result`), else 0.
//
// Per row: the softmax of the router logits in f32, the k largest
// probabilities (ties to the lower expert id), renormalized to sum 1 with
// `KILN_MOE_ROUTING_SOFTMAX_TOPK_RENORM`; then `result = Σ_j w_j ·
// down_{e_j}(act(gate_{e_j}·x) ⊙ (up_{e_j}·x))` summed in rank order
// (largest weight first), plus the shared output, times
// `sigmoid(t4[row])` when `t4` is given. I is `w0`'s rows over 2E and h
// is `w1`'s rows over E; a backend may refuse sizes its weight layout
// cannot split per expert.
#define KILN_OP_MOE 18

// `KILN_OP_ACTIVATION` kind: `x · sigmoid(x)`.
#define KILN_ACT_SILU 0

// `KILN_OP_ACTIVATION` kind: GELU with the tanh approximation
// (`0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, PyTorch's `approximate="tanh"`).
#define KILN_ACT_GELU_TANH 1

// `KILN_OP_ACTIVATION` kind: exact GELU (`0.5·x·(1 + erf(x/√2))`).
#define KILN_ACT_GELU 2

// `KILN_OP_ACTIVATION` kind: `max(x, 0)`.
#define KILN_ACT_RELU 3

// `KILN_OP_MOE` routing: softmax over all E logits in f32, keep the k largest
// probabilities as they are.
#define KILN_MOE_ROUTING_SOFTMAX_TOPK 0

// `KILN_OP_MOE` routing: as `KILN_MOE_ROUTING_SOFTMAX_TOPK`, then divide the k
// weights by their sum (equal to a softmax over the top-k logits).
#define KILN_MOE_ROUTING_SOFTMAX_TOPK_RENORM 1

// HF / NeoX rotary layout: dimension `i` pairs with `i + rot/2`.
#define KILN_ROPE_NEOX 0

// GPT-J / GGUF layout: dimension `2i` pairs with `2i + 1`.
#define KILN_ROPE_INTERLEAVED 1

// Major version: the host refuses a plugin with another major.
#define KILN_ABI_MAJOR 1

// Minor version. Each minor only appends (see `README.md`, "Versioning"):
//
// - 1.0: the tables; `KILN_OP_EMBEDDING` … `KILN_OP_CAST`; f32, f16 and bf16
//   weights; GGUF Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K; GPTQ, AWQ and
//   INT8; a 32-byte `KilnSampleParams` (temperature … counter).
// - 1.1: `KILN_OP_LINEAR`'s decode-rows hint (`i1`); `KilnSampleParams` grows
//   to 48 bytes (`repetition_penalty`, `adjust_start`, `adjust_count`,
//   `flags` with `KILN_SAMPLE_MASKED` and `KILN_SAMPLE_SKIP`) and
//   `KILN_OP_SAMPLE` takes `KilnLogitAdjust` entries (`t6`) and allowed-token
//   bitsets (`t7`, with `KILN_CAP_SAMPLE_MASK`); GGUF Q2_K, Q3_K, Q5_K,
//   IQ4_NL, IQ4_XS; `KILN_WEIGHT_INT_GROUPS`; `KILN_OP_LAYER_NORM`,
//   `KILN_OP_ACTIVATION`, `KILN_OP_SCALE`, `KILN_OP_SOFTCAP`; `KILN_WEIGHT_NONE`. The host
//   never asks a 1.0 plugin to sample on the device, since its parameter
//   rows have another size.
// - 1.2: `KILN_OP_MOE` (fused mixture-of-experts feed-forward) and its routing
//   modes `KILN_MOE_ROUTING_SOFTMAX_TOPK`, `KILN_MOE_ROUTING_SOFTMAX_TOPK_RENORM`.
// - 1.3: `KILN_WEIGHT_FP8_E4M3` (FP8 E4M3 codes with a scale per row).
#define KILN_ABI_MINOR 3

// `(major << 16) | minor`, what `kiln_plugin_abi_version` returns.
#define KILN_ABI_VERSION ((KILN_ABI_MAJOR << 16) | KILN_ABI_MINOR)

// The oldest version of the current major this host still loads: a plugin
// built against it is read only as far as its tables' `struct_size` go.
#define KILN_ABI_OLDEST_SUPPORTED (KILN_ABI_MAJOR << 16)

// Capability bit: `KILN_OP_SAMPLE` honours `KILN_SAMPLE_MASKED` rows and their
// allowed-token bitset (structured outputs drawn on the device).
#define KILN_CAP_SAMPLE_MASK (1 << 5)

// `KilnSampleParams::flags` bit: the row draws only tokens whose bit is set
// in its row of `KILN_OP_SAMPLE`'s allowed-token bitset (needs `KILN_CAP_SAMPLE_MASK`).
#define KILN_SAMPLE_MASKED (1 << 0)

// `KilnSampleParams::flags` bit: the row is not drawn; its outputs are
// left as they are (a backend may ignore this bit and draw it anyway).
#define KILN_SAMPLE_SKIP (1 << 1)

// Capability bit: the device implements `graph_begin/graph_end/graph_launch`.
#define KILN_CAP_GRAPHS (1 << 0)

// Capability bit: the device implements `KILN_OP_SAMPLE`.
#define KILN_CAP_DEVICE_SAMPLING (1 << 1)

// Capability bit: f16 activations.
#define KILN_CAP_F16 (1 << 2)

// Capability bit: bf16 activations.
#define KILN_CAP_BF16 (1 << 3)

// Capability bit: buffers live in host memory (reads and writes are plain copies).
#define KILN_CAP_HOST_MEMORY (1 << 4)

// Weight flag: asymmetric quantization with zero points.
#define KILN_WEIGHT_FLAG_HAS_ZEROS (1 << 0)

// Weight flag: GPTQ act-order (group index not monotone).
#define KILN_WEIGHT_FLAG_ACT_ORDER (1 << 1)

// Weight flag: GPTQ v1 zero-point convention (stored zero = zero − 1).
#define KILN_WEIGHT_FLAG_GPTQ_V1_ZEROS (1 << 2)

// Tensor slots per operation.
#define KILN_OP_MAX_TENSORS 8

// Status code returned by every fallible ABI call.
typedef int32_t KilnStatus;

// Element type of a tensor.
typedef uint32_t KilnDType;

// Storage format of a weight matrix (its quantization scheme).
typedef uint32_t KilnWeightFormat;

// Role of one part of a weight.
typedef uint32_t KilnPartRole;

// What hardware a device is (`KILN_DEVICE_*`); the host picks defaults
// from it, such as f32 activations on a CPU.
typedef uint32_t KilnDeviceKind;

// Static facts about one device.
typedef struct KilnDeviceInfo {
  // Size of this struct in bytes.
  uint32_t struct_size;
  // `KILN_DEVICE_CPU`, `KILN_DEVICE_GPU` or `KILN_DEVICE_ACCELERATOR`.
  KilnDeviceKind kind;
  // Total memory in bytes.
  uint64_t memory_total;
  // Free memory in bytes at query time.
  uint64_t memory_free;
  // `KILN_CAP_*` bits.
  uint64_t capabilities;
  // Compute capability as `major * 10 + minor` for GPUs, else 0.
  uint32_t compute_capability;
  // Threads (CPU) or streaming multiprocessors (GPU).
  uint32_t parallelism;
  // NUL-terminated short name, e.g. `cpu0`, `cuda0`.
  uint8_t name[64];
  // NUL-terminated description, e.g. the CPU model and ISA, or the GPU name.
  uint8_t description[256];
} KilnDeviceInfo;

// Opaque handle to a device buffer.
typedef void *KilnBuffer;

// A device-to-device copy.
typedef struct KilnBufferCopy {
  // Source buffer.
  KilnBuffer src;
  // Byte offset in the source.
  uint64_t src_offset;
  // Destination buffer.
  KilnBuffer dst;
  // Byte offset in the destination.
  uint64_t dst_offset;
  // Bytes to copy.
  uint64_t len;
} KilnBufferCopy;

// One part of a weight (see `KILN_PART_*`).
typedef struct KilnWeightPart {
  // What this part is.
  KilnPartRole role;
  // Element type of `data` (`KILN_U8` for raw GGUF blocks).
  KilnDType dtype;
  // Number of dimensions used in `dims`.
  uint32_t rank;
  // Shape, outermost first.
  uint64_t dims[4];
  // Host pointer to the bytes.
  const uint8_t *data;
  // Byte length.
  uint64_t len;
} KilnWeightPart;

// A weight matrix `[rows, cols]` (rows = output features, cols = input
// features) in some format. Vectors (norm scales, biases) are `[1, len]`.
typedef struct KilnWeightDesc {
  // Size of this struct in bytes.
  uint32_t struct_size;
  // `KILN_WEIGHT_*`.
  KilnWeightFormat format;
  // Bits per quantized value (GPTQ/AWQ), else 0.
  uint32_t bits;
  // Quantization group size along `cols` (GPTQ/AWQ), else 0.
  uint32_t group_size;
  // Format-specific flags (`KILN_WEIGHT_FLAG_*`).
  uint32_t flags;
  // Output features.
  uint64_t rows;
  // Input features.
  uint64_t cols;
  // `n_parts` parts in host memory, valid only during `prepare_weight`.
  const struct KilnWeightPart *parts;
  // Number of parts.
  uint32_t n_parts;
  // NUL-terminated tensor name for error messages (may be null).
  const char *name;
} KilnWeightDesc;

// Opaque handle to a prepared weight.
typedef void *KilnWeight;

// A question to `supports`.
typedef struct KilnSupportQuery {
  // An `KILN_OP_*` opcode.
  uint32_t opcode;
  // The weight format involved, or `KILN_WEIGHT_NONE`.
  KilnWeightFormat weight_format;
  // The activation dtype.
  KilnDType act_dtype;
} KilnSupportQuery;

// A view of a buffer: contiguous, row-major, up to 4 dimensions.
typedef struct KilnTensor {
  // The buffer (null for an absent optional tensor).
  KilnBuffer buffer;
  // Byte offset of the first element.
  uint64_t offset;
  // Element type.
  KilnDType dtype;
  // Number of dimensions used in `dims`.
  uint32_t rank;
  // Shape, outermost first.
  uint64_t dims[4];
} KilnTensor;

// One operation: an opcode plus fixed slots whose meaning each opcode documents
// (see `ops`). Unused slots are `KilnTensor::NONE`, `KilnWeight::NULL` or 0.
typedef struct KilnOp {
  // An `KILN_OP_*` code.
  uint32_t opcode;
  // Reserved, 0.
  uint32_t flags;
  // Tensor operands.
  struct KilnTensor tensors[KILN_OP_MAX_TENSORS];
  // Weight operands.
  KilnWeight weights[2];
  // Float parameters.
  float fparams[4];
  // Integer parameters.
  int64_t iparams[8];
} KilnOp;

// Opaque handle to a captured graph.
typedef void *KilnGraph;

// The functions of an open device. A device is used by one thread at a time.
typedef struct KilnDeviceVtable {
  // Size of this struct in bytes.
  uint32_t struct_size;
  // Close the device; every buffer, weight and graph must have been released.
  void (*close)(void *dev);
  // Current free and total memory in bytes.
  KilnStatus (*memory_info)(void *dev, uint64_t *free, uint64_t *total);
  // Allocate `bytes` of device memory, zero-filled.
  KilnStatus (*alloc_buffer)(void *dev, uint64_t bytes, KilnBuffer *out);
  // Free a buffer from `alloc_buffer`; the handle is dead afterwards.
  // Returns no status: the host treats the buffer as gone either way.
  void (*free_buffer)(void *dev, KilnBuffer buf);
  // Copy `len` bytes from host memory into the buffer at `offset` (host → device).
  KilnStatus (*write_buffer)(void *dev, KilnBuffer buf, uint64_t offset, const uint8_t *src, uint64_t len);
  // Copy `len` bytes from the buffer at `offset` into host memory (device → host; synchronizes).
  KilnStatus (*read_buffer)(void *dev, KilnBuffer buf, uint64_t offset, uint8_t *dst, uint64_t len);
  // Copy between buffers on the device.
  KilnStatus (*copy_buffer)(void *dev, const struct KilnBufferCopy *copy);
  // Wait until all queued work is done.
  KilnStatus (*synchronize)(void *dev);
  // Upload and prepare a weight (repacking or dequantizing as the device prefers).
  // The host memory in `desc` may be released after the call returns.
  KilnStatus (*prepare_weight)(void *dev, const struct KilnWeightDesc *desc, KilnWeight *out);
  // Release a prepared weight.
  void (*release_weight)(void *dev, KilnWeight weight);
  // 1 when the device can run the query (an opcode with a weight format and
  // activation dtype), else 0.
  int32_t (*supports)(void *dev, const struct KilnSupportQuery *query);
  // Queue `n` operations in order (see `ops`). Work may run
  // asynchronously; `read_buffer` and `synchronize` wait for it.
  KilnStatus (*execute)(void *dev, const struct KilnOp *ops, uint64_t n);
  // Start capturing the operations queued next into a graph. Optional:
  // null means the device has no graphs (the host runs eagerly).
  KilnStatus (*graph_begin)(void *dev);
  // Stop capturing and return the graph. Optional (with `graph_begin`).
  KilnStatus (*graph_end)(void *dev, KilnGraph *out);
  // Replay a captured graph (same buffers, current contents). Optional.
  KilnStatus (*graph_launch)(void *dev, KilnGraph graph);
  // Destroy a captured graph. Optional.
  void (*graph_destroy)(void *dev, KilnGraph graph);
} KilnDeviceVtable;

// One device opened by the host: a handle plus its table.
typedef struct KilnDevice {
  // Plugin-owned state.
  void *handle;
  // The device's functions.
  const struct KilnDeviceVtable *vtable;
} KilnDevice;

// What `kiln_backend_init` returns. Static for the life of the process.
typedef struct KilnBackendRegistration {
  // Size of this struct in bytes.
  uint32_t struct_size;
  // The plugin's `KILN_ABI_VERSION`.
  uint32_t abi_version;
  // NUL-terminated backend name (`cpu`, `cuda`, ...).
  const char *name;
  // Number of devices this backend can open.
  uint32_t (*device_count)(void);
  // Fill `out` for device `index`.
  KilnStatus (*device_info)(uint32_t index, struct KilnDeviceInfo *out);
  // Open device `index` with NUL-terminated JSON parameters (`{}` for defaults;
  // e.g. `{"threads": 2}` for the CPU backend).
  KilnStatus (*open_device)(uint32_t index, const char *params_json, struct KilnDevice *out);
  // NUL-terminated message of the last failure on the calling thread, or null.
  // Valid until the next call into this plugin on the same thread.
  const char *(*last_error)(void);
  // Look up an extension function by NUL-terminated name; null when absent. Optional.
  const void *(*get_proc_address)(const char *name);
} KilnBackendRegistration;

// What the host offers a plugin.
typedef struct KilnHostApi {
  // Size of this struct in bytes.
  uint32_t struct_size;
  // The host's `KILN_ABI_VERSION`.
  uint32_t abi_version;
  // Log a message through the host's logger. `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
  // `target` and `msg` are NUL-terminated UTF-8. May be null (then plugins stay silent).
  void (*log)(int32_t level, const char *target, const char *msg);
} KilnHostApi;

// Per-row sampling parameters for `KILN_OP_SAMPLE` (device-side sampling).
typedef struct KilnSampleParams {
  // Temperature; 0 means greedy.
  float temperature;
  // Top-k (0: off).
  int32_t top_k;
  // Top-p (1: off).
  float top_p;
  // Min-p (0: off).
  float min_p;
  // Seed of this row's random stream.
  uint64_t seed;
  // Counter: how many draws the stream has made (the device derives the
  // random number from `(seed, counter)`, so results do not depend on the batch).
  uint64_t counter;
  // HF-style repetition penalty for adjustments with `repeat` set (1: off).
  float repetition_penalty;
  // First entry of this row's `KilnLogitAdjust` run in the adjustments tensor.
  uint32_t adjust_start;
  // Entries of this row's run (0: none).
  uint32_t adjust_count;
  // `KILN_SAMPLE_*` bits (0: a plain draw).
  uint32_t flags;
} KilnSampleParams;
// Size in bytes (the struct has no padding).
#define KILN_SAMPLE_PARAMS_SIZE 48

// One token's logit adjustment for `KILN_OP_SAMPLE`: `x += add_before`;
// then, when `repeat` is 1, `x = x > 0 ? x / penalty : x * penalty`; then
// `x += add_after`.
typedef struct KilnLogitAdjust {
  // Token id (each at most once per row).
  int32_t token;
  // Added first (logit bias; `-inf` masks the token).
  float add_before;
  // 1 when the repetition penalty applies to the token.
  int32_t repeat;
  // Added last (presence and frequency penalties).
  float add_after;
} KilnLogitAdjust;
// Size in bytes.
#define KILN_LOGIT_ADJUST_SIZE 16

// Type of the exported `kiln_plugin_abi_version` symbol.
typedef uint32_t (*KilnAbiVersionFn)(void);

// Type of the exported `kiln_backend_score` symbol.
typedef int32_t (*KilnScoreFn)(void);

// Type of the exported `kiln_backend_init` symbol: null on failure.
typedef const struct KilnBackendRegistration *(*KilnInitFn)(const struct KilnHostApi *host);

// Type of the optional `kiln_backend_last_error` symbol.
typedef const char *(*KilnLastErrorFn)(void);



// Success.
#define KILN_OK 0

// The operation, format or dtype is not supported by this device.
#define KILN_UNSUPPORTED 1

// The device ran out of memory.
#define KILN_OUT_OF_MEMORY 2

// An argument was invalid (shapes, dtypes, handles).
#define KILN_INVALID_ARGUMENT 3

// Any other failure (including a caught panic).
#define KILN_INTERNAL 4

// 32-bit IEEE float.
#define KILN_F32 0

// 16-bit IEEE float.
#define KILN_F16 1

// bfloat16.
#define KILN_BF16 2

// 32-bit signed integer.
#define KILN_I32 3

// 64-bit signed integer.
#define KILN_I64 4

// 8-bit unsigned integer (also: raw bytes).
#define KILN_U8 5

// 8-bit signed integer.
#define KILN_I8 6

// Plain f32 `[rows, cols]`.
#define KILN_WEIGHT_F32 0

// Plain f16 `[rows, cols]`.
#define KILN_WEIGHT_F16 1

// Plain bf16 `[rows, cols]`.
#define KILN_WEIGHT_BF16 2

// GGUF Q4_0 blocks along `cols` (32 weights / 18 bytes).
#define KILN_WEIGHT_GGUF_Q4_0 10

// GGUF Q4_1 blocks along `cols` (32 weights / 20 bytes).
#define KILN_WEIGHT_GGUF_Q4_1 11

// GGUF Q8_0 blocks along `cols` (32 weights / 34 bytes).
#define KILN_WEIGHT_GGUF_Q8_0 12

// GGUF Q4_K super-blocks along `cols` (256 weights / 144 bytes).
#define KILN_WEIGHT_GGUF_Q4_K 13

// GGUF Q6_K super-blocks along `cols` (256 weights / 210 bytes).
#define KILN_WEIGHT_GGUF_Q6_K 14

// GGUF Q5_0 blocks along `cols`.
#define KILN_WEIGHT_GGUF_Q5_0 15

// GGUF Q5_1 blocks along `cols`.
#define KILN_WEIGHT_GGUF_Q5_1 16

// GGUF Q2_K super-blocks along `cols` (256 weights / 84 bytes).
#define KILN_WEIGHT_GGUF_Q2_K 17

// GGUF Q3_K super-blocks along `cols` (256 weights / 110 bytes).
#define KILN_WEIGHT_GGUF_Q3_K 18

// GGUF Q5_K super-blocks along `cols` (256 weights / 176 bytes).
#define KILN_WEIGHT_GGUF_Q5_K 19

// GGUF IQ4_NL blocks along `cols` (32 weights / 18 bytes).
#define KILN_WEIGHT_GGUF_IQ4_NL 30

// GGUF IQ4_XS super-blocks along `cols` (256 weights / 136 bytes).
#define KILN_WEIGHT_GGUF_IQ4_XS 31

// GPTQ (parts: qweight, qzeros, scales, g_idx; `bits`, `group_size`).
#define KILN_WEIGHT_GPTQ 20

// AWQ GEMM (parts: qweight, qzeros, scales; `bits`, `group_size`).
#define KILN_WEIGHT_AWQ 21

// Per-channel symmetric int8 weights (parts: weight i8 `[rows, cols]`, scales `[rows]`).
#define KILN_WEIGHT_INT8 22

// Integer codes in groups along a row, the form the host gives GPTQ, AWQ
// and compressed-tensors weights to a backend that does not declare their
// checkpoint formats: `W[r, c] = s[r, c / group_size]·(q[r, c] − z[r, c / group_size])`.
// Parts: `KILN_PART_DATA` u8 codes `[rows, cols]` (one code below
// `2^bits` per byte), `KILN_PART_SCALES` f16 or bf16 `[rows, cols / group_size]`,
// `KILN_PART_ZEROS` u8 `[rows, cols / group_size]`, and optionally
// `KILN_PART_GROUP_INDEX` i32 `[cols]`: the input feature each column holds
// (act-order; the backend gathers activations to match). `group_size` is a
// multiple of 32 dividing `cols`; `bits` is 2, 3, 4 or 8.
#define KILN_WEIGHT_INT_GROUPS 23

// FP8 E4M3 weights (`e4m3fn`: no infinities, `0x7F`/`0xFF` are NaN and
// never appear) with one scale per output row:
// `W[r, c] = s[r]·e4m3(q[r, c])`. Parts: `KILN_PART_DATA` u8 codes
// `[rows, cols]`, `KILN_PART_SCALES` f32 `[rows]` (a per-tensor scale is
// the same value on every row). Activations stay in the op's dtype.
#define KILN_WEIGHT_FP8_E4M3 24

// No weight: the `weight_format` of a `KilnSupportQuery` for an
// operation without a weight operand.
#define KILN_WEIGHT_NONE UINT32_MAX

// The main data (raw blocks, packed ints or plain values).
#define KILN_PART_DATA 0

// Dequantization scales, per row or per group (shape and dtype per format).
#define KILN_PART_SCALES 1

// Zero points, one per scale (packed in GPTQ/AWQ `qzeros`, u8 in
// `KILN_WEIGHT_INT_GROUPS`).
#define KILN_PART_ZEROS 2

// Group index per input channel (GPTQ act-order).
#define KILN_PART_GROUP_INDEX 3

// The host's own processor (buffers usually in host memory, see
// `KILN_CAP_HOST_MEMORY`).
#define KILN_DEVICE_CPU 0

// A discrete or integrated GPU.
#define KILN_DEVICE_GPU 1

// Another accelerator.
#define KILN_DEVICE_ACCELERATOR 2

/* The symbols every plugin exports (kiln_backend_last_error is optional). */
uint32_t kiln_plugin_abi_version(void);
int32_t kiln_backend_score(void);
const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *host);
const char *kiln_backend_last_error(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* KILN_BACKEND_H */
