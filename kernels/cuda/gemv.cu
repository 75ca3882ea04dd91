// Skinny matrix products out[n, m] (+)= x[n, k] · W[m, k]ᵀ for small n
// (decode), reading the weight once per tile of up to 8 tokens.
//
// One warp per output row; each lane walks the row in fixed-size chunks and
// the warp reduces with shuffles. Every token's dot product uses the same
// sequence of operations whatever n is (batch invariance for decode).

#define GEMV_TOKENS 8
#define GEMV_WARPS 8

__device__ __forceinline__ void load8(const float* p, float* v) {
    float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void unpack_bf16x8(uint4 u, float* v) {
    u32 w[4] = {u.x, u.y, u.z, u.w};
    for (int i = 0; i < 4; i++) {
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ void unpack_f16x8(uint4 u, float* v) {
    u32 w[4] = {u.x, u.y, u.z, u.w};
    for (int i = 0; i < 4; i++) {
        v[2 * i] = half_bits_to_float((u16)(w[i] & 0xffffu));
        v[2 * i + 1] = half_bits_to_float((u16)(w[i] >> 16));
    }
}
__device__ __forceinline__ void load8(const bf16_t* p, float* v) { unpack_bf16x8(*(const uint4*)p, v); }
__device__ __forceinline__ void load8(const f16_t* p, float* v) { unpack_f16x8(*(const uint4*)p, v); }

// Weight chunk of 8 values for float formats.
template <int FMT> __device__ __forceinline__ void wload8(const u8* w, i64 idx, float* v);
template <> __device__ __forceinline__ void wload8<FMT_F32>(const u8* w, i64 idx, float* v) { load8(((const float*)w) + idx, v); }
template <> __device__ __forceinline__ void wload8<FMT_BF16>(const u8* w, i64 idx, float* v) { unpack_bf16x8(*(const uint4*)(((const u16*)w) + idx), v); }
template <> __device__ __forceinline__ void wload8<FMT_F16>(const u8* w, i64 idx, float* v) { unpack_f16x8(*(const uint4*)(((const u16*)w) + idx), v); }

template <typename T>
__device__ __forceinline__ void store_out(T* out, i64 idx, float acc, const float* bias, int col, int accumulate) {
    float v = acc;
    if (bias != 0) v = round_to<T>(v) + round_to<T>(bias[col]);
    if (accumulate) v = to_float(out[idx]) + round_to<T>(v);
    out[idx] = from_float<T>(v);
}

// Float weights; requires k % 8 == 0 and 16-byte aligned rows.
template <typename T, int FMT>
__device__ void gemv_float(const T* x, const u8* w, const float* bias, T* out, int n, int m, int k, int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + warp;
    int t0 = blockIdx.y * GEMV_TOKENS;
    if (row >= m) return;
    int nt = min(GEMV_TOKENS, n - t0);
    float acc[GEMV_TOKENS];
    for (int t = 0; t < GEMV_TOKENS; t++) acc[t] = 0.0f;
    for (int c = lane * 8; c < k; c += 32 * 8) {
        float wv[8];
        wload8<FMT>(w, (i64)row * k + c, wv);
        for (int t = 0; t < GEMV_TOKENS; t++) {
            if (t < nt) {
                float xv[8];
                load8(x + (i64)(t0 + t) * k + c, xv);
                float s = 0.0f;
                for (int i = 0; i < 8; i++) s = fmaf(wv[i], xv[i], s);
                acc[t] += s;
            }
        }
    }
    for (int t = 0; t < GEMV_TOKENS; t++) {
        if (t < nt) {
            float s = warp_sum(acc[t]);
            if (lane == 0) store_out<T>(out, (i64)(t0 + t) * m + row, s, bias, row, accumulate);
        }
    }
}

// Quantized weights: 32-weight blocks along k; k % 32 == 0.
template <int FMT> __device__ __forceinline__ void qblock(const u8* w, i64 block, float* v);
template <> __device__ __forceinline__ void qblock<FMT_Q4_0>(const u8* w, i64 block, float* v) {
    const u8* b = w + block * 18;
    float d = half_bits_to_float((u16)(b[0] | (b[1] << 8)));
    for (int j = 0; j < 16; j++) {
        v[j] = d * (float)((b[2 + j] & 15) - 8);
        v[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
    }
}
template <> __device__ __forceinline__ void qblock<FMT_Q4_1>(const u8* w, i64 block, float* v) {
    const u8* b = w + block * 20;
    const u32* q = (const u32*)(b + 4);
    float d = half_bits_to_float(*(const u16*)b);
    float m = half_bits_to_float(*(const u16*)(b + 2));
    for (int i = 0; i < 4; i++) {
        u32 word = q[i];
        for (int j = 0; j < 4; j++) {
            u32 byte = (word >> (8 * j)) & 0xffu;
            v[4 * i + j] = d * (float)(byte & 15u) + m;
            v[4 * i + j + 16] = d * (float)(byte >> 4) + m;
        }
    }
}
template <> __device__ __forceinline__ void qblock<FMT_Q8_0>(const u8* w, i64 block, float* v) {
    const u8* b = w + block * 34;
    float d = half_bits_to_float(*(const u16*)b);
    const u16* q = (const u16*)(b + 2);
    for (int i = 0; i < 16; i++) {
        u16 pair = q[i];
        v[2 * i] = d * (float)(signed char)(pair & 0xffu);
        v[2 * i + 1] = d * (float)(signed char)(pair >> 8);
    }
}

template <typename T, int FMT>
__device__ void gemv_quant(const T* x, const u8* w, const float* bias, T* out, int n, int m, int k, int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + warp;
    int t0 = blockIdx.y * GEMV_TOKENS;
    if (row >= m) return;
    int nt = min(GEMV_TOKENS, n - t0);
    int blocks = k / 32;
    float acc[GEMV_TOKENS];
    for (int t = 0; t < GEMV_TOKENS; t++) acc[t] = 0.0f;
    for (int b = lane; b < blocks; b += 32) {
        float wv[32];
        qblock<FMT>(w, (i64)row * blocks + b, wv);
        for (int t = 0; t < GEMV_TOKENS; t++) {
            if (t < nt) {
                const T* xp = x + (i64)(t0 + t) * k + b * 32;
                float s = 0.0f;
                for (int c = 0; c < 32; c += 8) {
                    float xv[8];
                    load8(xp + c, xv);
                    for (int i = 0; i < 8; i++) s = fmaf(wv[c + i], xv[i], s);
                }
                acc[t] += s;
            }
        }
    }
    for (int t = 0; t < GEMV_TOKENS; t++) {
        if (t < nt) {
            float s = warp_sum(acc[t]);
            if (lane == 0) store_out<T>(out, (i64)(t0 + t) * m + row, s, bias, row, accumulate);
        }
    }
}

#define KILN_GEMV(T, S)                                                                                              \
    extern "C" __global__ void gemv_f32w_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_float<T, FMT_F32>(x, w, b, o, n, m, k, a);                                                              \
    }                                                                                                                \
    extern "C" __global__ void gemv_f16w_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_float<T, FMT_F16>(x, w, b, o, n, m, k, a);                                                              \
    }                                                                                                                \
    extern "C" __global__ void gemv_bf16w_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_float<T, FMT_BF16>(x, w, b, o, n, m, k, a);                                                             \
    }                                                                                                                \
    extern "C" __global__ void gemv_q4_0_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_quant<T, FMT_Q4_0>(x, w, b, o, n, m, k, a);                                                             \
    }                                                                                                                \
    extern "C" __global__ void gemv_q4_1_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_quant<T, FMT_Q4_1>(x, w, b, o, n, m, k, a);                                                             \
    }                                                                                                                \
    extern "C" __global__ void gemv_q8_0_##S(const T* x, const u8* w, const float* b, T* o, int n, int m, int k, int a) { \
        gemv_quant<T, FMT_Q8_0>(x, w, b, o, n, m, k, a);                                                             \
    }

KILN_GEMV(float, f32)
KILN_GEMV(f16_t, f16)
KILN_GEMV(bf16_t, bf16)
