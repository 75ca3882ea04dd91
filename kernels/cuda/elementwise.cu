// Element-wise and row-wise kernels. One instantiation per activation type
// T in {f32, f16, bf16}: `<name>_f32`, `<name>_f16`, `<name>_bf16`.

// out[t, :] = table[ids[t], :] (dequantized), one block per token.
template <typename T>
__device__ void embedding(const int* ids, const u8* table, int fmt, i64 vocab, i64 hidden, T* out) {
    i64 t = blockIdx.x;
    int id = ids[t];
    if (id < 0 || id >= vocab) id = 0;
    for (i64 j = threadIdx.x; j < hidden; j += blockDim.x) {
        out[t * hidden + j] = from_float<T>(weight_at(table, fmt, id, j, hidden));
    }
}

// RMS norm in f32; the normalized value is rounded to T before the scale
// multiplies it (as the reference does). One block per row.
template <typename T>
__device__ void rms_norm(const T* x, const float* gamma, T* out, i64 h, float eps) {
    i64 r = blockIdx.x;
    const T* xr = x + r * h;
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float v = to_float(xr[j]);
        ss += v * v;
    }
    ss = block_sum(ss);
    float inv = rsqrtf(ss / (float)h + eps);
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float y = round_to<T>(to_float(xr[j]) * inv);
        out[r * h + j] = from_float<T>(y * gamma[j]);
    }
}

// residual += x; out = rms_norm(residual).
template <typename T>
__device__ void add_rms_norm(const T* x, T* residual, const float* gamma, T* out, i64 h, float eps) {
    i64 r = blockIdx.x;
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float v = round_to<T>(to_float(residual[r * h + j]) + to_float(x[r * h + j]));
        residual[r * h + j] = from_float<T>(v);
        ss += v * v;
    }
    ss = block_sum(ss);
    float inv = rsqrtf(ss / (float)h + eps);
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float y = round_to<T>(to_float(residual[r * h + j]) * inv);
        out[r * h + j] = from_float<T>(y * gamma[j]);
    }
}

// Rotary embedding in place. Grid: tokens; threads over (head, pair).
// style 0: pairs (i, i + rot/2); style 1: pairs (2i, 2i + 1).
template <typename T>
__device__ void rope_one(T* x, int heads, int hd, int rot, int style, const float* cos_row, const float* sin_row) {
    int half = rot / 2;
    for (int p = threadIdx.x; p < heads * half; p += blockDim.x) {
        int h = p / half, i = p % half;
        int a = style == 0 ? i : 2 * i;
        int b = style == 0 ? i + half : 2 * i + 1;
        T* base = x + (i64)h * hd;
        float x1 = to_float(base[a]), x2 = to_float(base[b]);
        float c = round_to<T>(cos_row[i]), s = round_to<T>(sin_row[i]);
        float o1 = round_to<T>(x1 * c) + round_to<T>(-x2 * s);
        float o2 = round_to<T>(x2 * c) + round_to<T>(x1 * s);
        base[a] = from_float<T>(o1);
        base[b] = from_float<T>(o2);
    }
}

template <typename T>
__device__ void rope(T* q, T* k, const int* positions, const float* cos, const float* sin, int q_heads, int k_heads,
                     int hd, int rot, int style) {
    i64 t = blockIdx.x;
    int pos = positions[t];
    const float* c = cos + (i64)pos * (rot / 2);
    const float* s = sin + (i64)pos * (rot / 2);
    rope_one<T>(q + t * (i64)q_heads * hd, q_heads, hd, rot, style, c, s);
    if (k != 0) rope_one<T>(k + t * (i64)k_heads * hd, k_heads, hd, rot, style, c, s);
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + __expf(-v)); }

template <typename T>
__device__ void silu_mul(const T* gate, const T* up, T* out, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float s = round_to<T>(silu(to_float(gate[i])));
        out[i] = from_float<T>(s * to_float(up[i]));
    }
}

template <typename T>
__device__ void add(const T* a, const T* b, T* out, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
    }
}

// out[r, :] += bias (after a GEMM).
template <typename T>
__device__ void add_bias(T* out, const float* bias, i64 rows, i64 cols) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += (i64)gridDim.x * blockDim.x) {
        out[i] = from_float<T>(to_float(out[i]) + round_to<T>(bias[i % cols]));
    }
}

template <typename T>
__device__ void cast_to_f32(const T* in, float* out, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        out[i] = to_float(in[i]);
    }
}

template <typename T>
__device__ void gather_rows(const T* x, const int* idx, T* out, i64 cols) {
    i64 r = blockIdx.x;
    const T* src = x + (i64)idx[r] * cols;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = src[j];
}

// cache[slot, :] = k[t, :] for each token with slot >= 0.
template <typename T>
__device__ void kv_write(const T* k, const T* v, T* kc, T* vc, const int* slots, i64 kv_dim) {
    i64 t = blockIdx.x;
    int slot = slots[t];
    if (slot < 0) return;
    for (i64 j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        kc[(i64)slot * kv_dim + j] = k[t * kv_dim + j];
        vc[(i64)slot * kv_dim + j] = v[t * kv_dim + j];
    }
}

// Dequantize a whole [rows, cols] weight into T (scratch for GEMMs).
template <typename T>
__device__ void dequantize(const u8* w, int fmt, i64 rows, i64 cols, T* out) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += (i64)gridDim.x * blockDim.x) {
        out[i] = from_float<T>(weight_at(w, fmt, i / cols, i % cols, cols));
    }
}

// LayerNorm in f32 (mean, then biased variance of the centred row); the
// normalized value is rounded to T before the scale, as in rms_norm. beta may
// be null. One block per row.
template <typename T>
__device__ void layer_norm(const T* x, const float* gamma, const float* beta, T* out, i64 h, float eps) {
    i64 r = blockIdx.x;
    const T* xr = x + r * h;
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) s += to_float(xr[j]);
    float mean = block_sum(s) / (float)h;
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float d = to_float(xr[j]) - mean;
        ss += d * d;
    }
    float inv = rsqrtf(block_sum(ss) / (float)h + eps);
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float y = round_to<T>((to_float(xr[j]) - mean) * inv) * gamma[j];
        if (beta != 0) y = round_to<T>(y) + beta[j];
        out[r * h + j] = from_float<T>(y);
    }
}

// Activation kinds of OP_ACTIVATION (ACT_SILU, ACT_GELU_TANH, ACT_GELU, ACT_RELU).
__device__ __forceinline__ float activate(int kind, float v) {
    switch (kind) {
        case 0: return silu(v);
        case 1: return 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
        case 2: return 0.5f * v * (1.0f + erff(v * 0.7071067812f));
        default: return fmaxf(v, 0.0f);
    }
}

// out = act(x), or act(x) * up when up is non-null.
template <typename T>
__device__ void activation(const T* x, const T* up, T* out, int kind, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float a = activate(kind, to_float(x[i]));
        if (up != 0) a = round_to<T>(a) * to_float(up[i]);
        out[i] = from_float<T>(a);
    }
}

// out = x * f (accumulate 0) or out += x * f (accumulate 1).
template <typename T>
__device__ void scale(const T* x, T* out, float f, int accumulate, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float y = to_float(x[i]) * f;
        if (accumulate) y = to_float(out[i]) + round_to<T>(y);
        out[i] = from_float<T>(y);
    }
}

// out = cap * tanh(x / cap).
template <typename T>
__device__ void softcap(const T* x, T* out, float cap, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        out[i] = from_float<T>(cap * tanhf(to_float(x[i]) / cap));
    }
}

#define KILN_ELEMENTWISE(T, S)                                                                                        \
    extern "C" __global__ void embedding_##S(const int* ids, const u8* table, int fmt, i64 vocab, i64 hidden, T* out) { \
        embedding<T>(ids, table, fmt, vocab, hidden, out);                                                            \
    }                                                                                                                 \
    extern "C" __global__ void rms_norm_##S(const T* x, const float* g, T* out, i64 h, float eps) {                   \
        rms_norm<T>(x, g, out, h, eps);                                                                               \
    }                                                                                                                 \
    extern "C" __global__ void add_rms_norm_##S(const T* x, T* res, const float* g, T* out, i64 h, float eps) {       \
        add_rms_norm<T>(x, res, g, out, h, eps);                                                                      \
    }                                                                                                                 \
    extern "C" __global__ void rope_##S(T* q, T* k, const int* pos, const float* c, const float* s, int qh, int kh,   \
                                        int hd, int rot, int style) {                                                 \
        rope<T>(q, k, pos, c, s, qh, kh, hd, rot, style);                                                             \
    }                                                                                                                 \
    extern "C" __global__ void silu_mul_##S(const T* g, const T* u, T* o, i64 n) { silu_mul<T>(g, u, o, n); }        \
    extern "C" __global__ void add_##S(const T* a, const T* b, T* o, i64 n) { add<T>(a, b, o, n); }                   \
    extern "C" __global__ void add_bias_##S(T* o, const float* b, i64 r, i64 c) { add_bias<T>(o, b, r, c); }          \
    extern "C" __global__ void cast_to_f32_##S(const T* i, float* o, i64 n) { cast_to_f32<T>(i, o, n); }             \
    extern "C" __global__ void gather_rows_##S(const T* x, const int* idx, T* o, i64 c) { gather_rows<T>(x, idx, o, c); } \
    extern "C" __global__ void kv_write_##S(const T* k, const T* v, T* kc, T* vc, const int* s, i64 d) {             \
        kv_write<T>(k, v, kc, vc, s, d);                                                                              \
    }                                                                                                                 \
    extern "C" __global__ void layer_norm_##S(const T* x, const float* g, const float* b, T* out, i64 h, float eps) { \
        layer_norm<T>(x, g, b, out, h, eps);                                                                          \
    }                                                                                                                 \
    extern "C" __global__ void activation_##S(const T* x, const T* u, T* o, int kind, i64 n) {                        \
        activation<T>(x, u, o, kind, n);                                                                              \
    }                                                                                                                 \
    extern "C" __global__ void scale_##S(const T* x, T* o, float f, int acc, i64 n) { scale<T>(x, o, f, acc, n); }     \
    extern "C" __global__ void softcap_##S(const T* x, T* o, float c, i64 n) { softcap<T>(x, o, c, n); }              \
    extern "C" __global__ void dequantize_##S(const u8* w, int fmt, i64 r, i64 c, T* o) { dequantize<T>(w, fmt, r, c, o); }

KILN_ELEMENTWISE(float, f32)
KILN_ELEMENTWISE(f16_t, f16)
KILN_ELEMENTWISE(bf16_t, bf16)
