// Paged attention over block tables, for prefill chunks and decodes alike.
//
// `attention_prefill_*`: one block per (query token, head) of every sequence
// whose query length is > 1; each warp walks keys in a fixed stride with an
// online softmax, and the warps are merged at the end.
// `attention_decode_*`: one block per (sequence, head, partition of
// ATT_PART keys) for sequences with a single query token; partial results go
// to a workspace and `attention_reduce_*` merges the partitions. The split of
// a row depends only on its own context length, so results do not depend on
// what else is in the batch.
//
// Sliding windows: each row loads keys and values from max(0, pos - window
// + 1) on, never before (a decode partition wholly before that returns
// without loading). The host frees the blocks behind a sequence's window
// and passes a placeholder id for them (a valid block, another sequence's
// or garbage, NaN included): weighting such keys by 0 would still poison
// the row, so they must never be loaded.

#define ATT_MAX_HD 256
#define ATT_PART 256

struct AttnParams {
    i64 q_stride;      // elements between query rows (heads * hd)
    int heads, kv_heads, hd, bs;
    int window;        // sliding window, 0 = none
    int max_blocks;    // block-table columns
    int num_seqs;
    int max_parts;     // partitions in the decode grid
    float scale, softcap;
};

__device__ __forceinline__ int find_seq(const int* qsl, int num_seqs, int t) {
    int lo = 0, hi = num_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (qsl[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Accumulate keys [from, to] (inclusive) of one (query, head) into per-warp
// online-softmax state. Lane l holds dims l, l+32, ... of the accumulator.
template <typename T, int WARPS>
__device__ void attend_range(const float* qs, const T* kc, const T* vc, const int* table, const AttnParams& p, int kvh,
                             int from, int to, float* m_out, float* l_out, float* acc_out) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int per_lane = ATT_MAX_HD / 32;
    float acc[per_lane];
    for (int i = 0; i < per_lane; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    for (int j = from + warp; j <= to; j += WARPS) {
        int block = table[j / p.bs];
        i64 base = (((i64)block * p.bs + (j % p.bs)) * p.kv_heads + kvh) * p.hd;
        float s = 0.0f;
        for (int d = lane; d < p.hd; d += 32) s += qs[d] * to_float(kc[base + d]);
        s = warp_sum(s) * p.scale;
        if (p.softcap > 0.0f) s = p.softcap * tanhf(s / p.softcap);
        float m_new = fmaxf(m, s);
        float corr = __expf(m - m_new);
        float e = __expf(s - m_new);
        l = l * corr + e;
        int i = 0;
        for (int d = lane; d < p.hd; d += 32, i++) acc[i] = acc[i] * corr + e * to_float(vc[base + d]);
        m = m_new;
    }
    // Merge the warps through shared memory.
    __shared__ float sm_m[WARPS], sm_l[WARPS];
    __shared__ float sm_acc[WARPS][ATT_MAX_HD];
    if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
    int i = 0;
    for (int d = lane; d < p.hd; d += 32, i++) sm_acc[warp][d] = acc[i];
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, sm_m[w]);
    float L = 0.0f;
    for (int w = 0; w < WARPS; w++) L += (sm_m[w] == NEG_INF) ? 0.0f : sm_l[w] * __expf(sm_m[w] - M);
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < WARPS; w++) a += (sm_m[w] == NEG_INF) ? 0.0f : sm_acc[w][d] * __expf(sm_m[w] - M);
        acc_out[d] = a;
    }
    *m_out = M;
    *l_out = L;
}

template <typename T>
__device__ void attention_prefill(const T* q, const T* kc, const T* vc, const int* tables, const int* seq_lens,
                                  const int* qsl, T* out, AttnParams p) {
    int t = blockIdx.x, h = blockIdx.y;
    int s = find_seq(qsl, p.num_seqs, t);
    int q_len = qsl[s + 1] - qsl[s];
    if (q_len <= 1) return;  // decode rows are handled by attention_decode
    int pos = seq_lens[s] - q_len + (t - qsl[s]);
    int from = p.window > 0 ? max(0, pos - p.window + 1) : 0;
    int kvh = h / (p.heads / p.kv_heads);
    __shared__ float qs[ATT_MAX_HD];
    __shared__ float acc[ATT_MAX_HD];
    __shared__ float ml[2];
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) qs[d] = to_float(q[(i64)t * p.q_stride + (i64)h * p.hd + d]);
    __syncthreads();
    float m, l;
    attend_range<T, 4>(qs, kc, vc, tables + (i64)s * p.max_blocks, p, kvh, from, pos, &m, &l, acc);
    if (threadIdx.x == 0) { ml[0] = m; ml[1] = l; }
    __syncthreads();
    float inv = ml[1] > 0.0f ? 1.0f / ml[1] : 0.0f;
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x)
        out[(i64)t * p.q_stride + (i64)h * p.hd + d] = from_float<T>(acc[d] * inv);
}

// Workspace layout per (seq, head, part): [m, l, acc[hd]].
template <typename T>
__device__ void attention_decode(const T* q, const T* kc, const T* vc, const int* tables, const int* seq_lens,
                                 const int* qsl, float* ws, AttnParams p) {
    int s = blockIdx.x, h = blockIdx.y, part = blockIdx.z;
    if (s >= p.num_seqs) return;
    int q_len = qsl[s + 1] - qsl[s];
    if (q_len != 1) return;
    int t = qsl[s];
    int pos = seq_lens[s] - 1;
    int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
    int from = max(lo, part * ATT_PART), to = min(pos, part * ATT_PART + ATT_PART - 1);
    float* slot = ws + (((i64)s * p.heads + h) * p.max_parts + part) * (p.hd + 2);
    if (from > to) {
        if (threadIdx.x == 0) { slot[0] = NEG_INF; slot[1] = 0.0f; }
        return;
    }
    int kvh = h / (p.heads / p.kv_heads);
    __shared__ float qs[ATT_MAX_HD];
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) qs[d] = to_float(q[(i64)t * p.q_stride + (i64)h * p.hd + d]);
    __syncthreads();
    float m, l;
    attend_range<T, 8>(qs, kc, vc, tables + (i64)s * p.max_blocks, p, kvh, from, to, &m, &l, slot + 2);
    if (threadIdx.x == 0) { slot[0] = m; slot[1] = l; }
}

template <typename T>
__device__ void attention_reduce(const int* seq_lens, const int* qsl, const float* ws, T* out, AttnParams p) {
    int s = blockIdx.x, h = blockIdx.y;
    if (s >= p.num_seqs || qsl[s + 1] - qsl[s] != 1) return;
    int t = qsl[s];
    int parts = (seq_lens[s] + ATT_PART - 1) / ATT_PART;
    const float* base = ws + ((i64)s * p.heads + h) * p.max_parts * (p.hd + 2);
    float M = NEG_INF;
    for (int i = 0; i < parts; i++) M = fmaxf(M, base[i * (p.hd + 2)]);
    float L = 0.0f;
    for (int i = 0; i < parts; i++) {
        float mi = base[i * (p.hd + 2)];
        if (mi != NEG_INF) L += base[i * (p.hd + 2) + 1] * __expf(mi - M);
    }
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < parts; i++) {
            float mi = base[i * (p.hd + 2)];
            if (mi != NEG_INF) a += base[i * (p.hd + 2) + 2 + d] * __expf(mi - M);
        }
        out[(i64)t * p.q_stride + (i64)h * p.hd + d] = from_float<T>(a * inv);
    }
}

#define KILN_ATTENTION(T, S)                                                                                          \
    extern "C" __global__ void attention_prefill_##S(const T* q, const T* kc, const T* vc, const int* tb,            \
                                                     const int* sl, const int* qsl, T* o, AttnParams p) {           \
        attention_prefill<T>(q, kc, vc, tb, sl, qsl, o, p);                                                           \
    }                                                                                                                 \
    extern "C" __global__ void attention_decode_##S(const T* q, const T* kc, const T* vc, const int* tb,             \
                                                    const int* sl, const int* qsl, float* ws, AttnParams p) {        \
        attention_decode<T>(q, kc, vc, tb, sl, qsl, ws, p);                                                           \
    }                                                                                                                 \
    extern "C" __global__ void attention_reduce_##S(const int* sl, const int* qsl, const float* ws, T* o,            \
                                                    AttnParams p) {                                                  \
        attention_reduce<T>(sl, qsl, ws, o, p);                                                                       \
    }

KILN_ATTENTION(float, f32)
KILN_ATTENTION(f16_t, f16)
KILN_ATTENTION(bf16_t, bf16)
