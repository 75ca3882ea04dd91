// Skinny matrix products out[n, m] (+)= x[n, k] · W[m, k]ᵀ for the decode
// rows of a step, reading each weight row once per tile of up to 8 tokens.
//
// One warp per output row; lanes walk the row in fixed-size chunks, several
// chunks in flight at once, and the warp reduces with shuffles. Every token's
// dot product is the same sequence of operations whatever n is (batch
// invariance). Grid: x = token tile (fastest, so tiles sharing weight rows run
// together and hit L2), y = block of GEMV_WARPS rows.
//
// Dequantized weights are rounded to the activation type first, as the
// reference does when it dequantizes a checkpoint into that type.

#define GEMV_TOKENS 8
#define GEMV_WARPS 8
#define GEMV_UNROLL 4

__device__ __forceinline__ void unpack_bf16x8(uint4 u, float* v) {
    u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ void unpack_f16x8(uint4 u, float* v) {
    u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[2 * i] = half_bits_to_float((u16)(w[i] & 0xffffu));
        v[2 * i + 1] = half_bits_to_float((u16)(w[i] >> 16));
    }
}
__device__ __forceinline__ void load8(const float* p, float* v) {
    float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const bf16_t* p, float* v) { unpack_bf16x8(*(const uint4*)p, v); }
__device__ __forceinline__ void load8(const f16_t* p, float* v) { unpack_f16x8(*(const uint4*)p, v); }

// Raw storage of 8 consecutive float-format weights, loaded before use.
template <int FMT> struct WRaw8 { uint4 a; };
template <> struct WRaw8<FMT_F32> { float4 a, b; };
template <int FMT> __device__ __forceinline__ void wraw_load(const u8* w, i64 idx, WRaw8<FMT>& r);
template <> __device__ __forceinline__ void wraw_load<FMT_F32>(const u8* w, i64 idx, WRaw8<FMT_F32>& r) {
    const float4* p = (const float4*)(((const float*)w) + idx);
    r.a = p[0];
    r.b = p[1];
}
template <> __device__ __forceinline__ void wraw_load<FMT_BF16>(const u8* w, i64 idx, WRaw8<FMT_BF16>& r) {
    r.a = *(const uint4*)(((const u16*)w) + idx);
}
template <> __device__ __forceinline__ void wraw_load<FMT_F16>(const u8* w, i64 idx, WRaw8<FMT_F16>& r) {
    r.a = *(const uint4*)(((const u16*)w) + idx);
}
template <int FMT> __device__ __forceinline__ void wraw_unpack(const WRaw8<FMT>& r, float* v);
template <> __device__ __forceinline__ void wraw_unpack<FMT_F32>(const WRaw8<FMT_F32>& r, float* v) {
    v[0] = r.a.x; v[1] = r.a.y; v[2] = r.a.z; v[3] = r.a.w; v[4] = r.b.x; v[5] = r.b.y; v[6] = r.b.z; v[7] = r.b.w;
}
template <> __device__ __forceinline__ void wraw_unpack<FMT_BF16>(const WRaw8<FMT_BF16>& r, float* v) { unpack_bf16x8(r.a, v); }
template <> __device__ __forceinline__ void wraw_unpack<FMT_F16>(const WRaw8<FMT_F16>& r, float* v) { unpack_f16x8(r.a, v); }

template <typename T>
__device__ __forceinline__ void store_out(T* out, i64 idx, float acc, const float* bias, int col, int accumulate) {
    float v = acc;
    if (bias != 0) v = round_to<T>(v) + round_to<T>(bias[col]);
    if (accumulate) v = to_float(out[idx]) + round_to<T>(v);
    out[idx] = from_float<T>(v);
}

// acc[t] += dot(w[0..8), x[t][c..c+8)) for the tile's tokens.
template <typename T>
__device__ __forceinline__ void dot8_tokens(const float* wv, const T* x, i64 xoff, int k, int nt, float* acc) {
#pragma unroll
    for (int t = 0; t < GEMV_TOKENS; t++) {
        if (t < nt) {
            float xv[8];
            load8(x + (i64)t * k + xoff, xv);
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) s = fmaf(wv[i], xv[i], s);
            acc[t] += s;
        }
    }
}

template <typename T>
__device__ __forceinline__ void finish_rows(float* acc, int nt, int lane, T* out, i64 base, int m, const float* bias,
                                            int row, int accumulate) {
#pragma unroll
    for (int t = 0; t < GEMV_TOKENS; t++) {
        if (t < nt) {
            float s = warp_sum(acc[t]);
            if (lane == 0) store_out<T>(out, base + (i64)t * m, s, bias, row, accumulate);
        }
    }
}

// Float weights; requires k % 8 == 0 and 16-byte aligned rows.
template <typename T, int FMT>
__device__ void gemv_float(const T* x, const u8* w, const float* bias, T* out, int n, int m, int k, int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.y * GEMV_WARPS + warp;
    int t0 = blockIdx.x * GEMV_TOKENS;
    if (row >= m) return;
    int nt = min(GEMV_TOKENS, n - t0);
    const T* xt = x + (i64)t0 * k;
    const int step = 32 * 8;
    float acc[GEMV_TOKENS];
#pragma unroll
    for (int t = 0; t < GEMV_TOKENS; t++) acc[t] = 0.0f;
    int c = lane * 8;
    for (; c + (GEMV_UNROLL - 1) * step < k; c += GEMV_UNROLL * step) {
        WRaw8<FMT> raw[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) wraw_load<FMT>(w, (i64)row * k + c + u * step, raw[u]);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            float wv[8];
            wraw_unpack<FMT>(raw[u], wv);
            dot8_tokens<T>(wv, xt, c + u * step, k, nt, acc);
        }
    }
    for (; c < k; c += step) {
        WRaw8<FMT> raw;
        wraw_load<FMT>(w, (i64)row * k + c, raw);
        float wv[8];
        wraw_unpack<FMT>(raw, wv);
        dot8_tokens<T>(wv, xt, c, k, nt, acc);
    }
    finish_rows<T>(acc, nt, lane, out, (i64)t0 * m + row, m, bias, row, accumulate);
}

// Quantized weights: 32-weight blocks along k (k % 32 == 0), one block per
// lane per chunk. Raw block bytes are loaded first, decoded when used.
template <int FMT> struct QRaw;
template <> struct QRaw<FMT_Q4_0> { typedef u16 W; W h[9]; };
template <> struct QRaw<FMT_Q4_1> { typedef u32 W; W h[5]; };
template <> struct QRaw<FMT_Q8_0> { typedef u16 W; W h[17]; };
template <int FMT> __device__ __forceinline__ void qraw_load(const u8* w, i64 block, QRaw<FMT>& r) {
    typedef typename QRaw<FMT>::W W;
    const int words = sizeof(r.h) / sizeof(W);
    const W* p = (const W*)(w + block * (i64)sizeof(r.h));
#pragma unroll
    for (int i = 0; i < words; i++) r.h[i] = p[i];
}
template <typename T, int FMT> __device__ __forceinline__ void qraw_decode(const QRaw<FMT>& r, float* v);
template <typename T> __device__ __forceinline__ void qraw_decode(const QRaw<FMT_Q4_0>& r, float* v) {
    float d = half_bits_to_float(r.h[0]);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        u32 two = r.h[1 + i];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            u32 byte = (two >> (8 * j)) & 0xffu;
            v[2 * i + j] = round_to<T>(d * (float)((int)(byte & 15u) - 8));
            v[2 * i + j + 16] = round_to<T>(d * (float)((int)(byte >> 4) - 8));
        }
    }
}
template <typename T> __device__ __forceinline__ void qraw_decode(const QRaw<FMT_Q4_1>& r, float* v) {
    float d = half_bits_to_float((u16)(r.h[0] & 0xffffu));
    float m = half_bits_to_float((u16)(r.h[0] >> 16));
#pragma unroll
    for (int i = 0; i < 4; i++) {
        u32 word = r.h[1 + i];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u32 byte = (word >> (8 * j)) & 0xffu;
            v[4 * i + j] = round_to<T>(__fadd_rn(__fmul_rn(d, (float)(byte & 15u)), m));
            v[4 * i + j + 16] = round_to<T>(__fadd_rn(__fmul_rn(d, (float)(byte >> 4)), m));
        }
    }
}
template <typename T> __device__ __forceinline__ void qraw_decode(const QRaw<FMT_Q8_0>& r, float* v) {
    float d = half_bits_to_float(r.h[0]);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        u32 pair = r.h[1 + i];
        v[2 * i] = round_to<T>(d * (float)(signed char)(pair & 0xffu));
        v[2 * i + 1] = round_to<T>(d * (float)(signed char)(pair >> 8));
    }
}

template <typename T, int FMT>
__device__ __forceinline__ void qblock_tokens(const QRaw<FMT>& raw, const T* xt, i64 xoff, int k, int nt, float* acc) {
    float wv[32];
    qraw_decode<T>(raw, wv);
#pragma unroll
    for (int t = 0; t < GEMV_TOKENS; t++) {
        if (t < nt) {
            const T* xp = xt + (i64)t * k + xoff;
            float s = 0.0f;
#pragma unroll
            for (int c = 0; c < 32; c += 8) {
                float xv[8];
                load8(xp + c, xv);
#pragma unroll
                for (int i = 0; i < 8; i++) s = fmaf(wv[c + i], xv[i], s);
            }
            acc[t] += s;
        }
    }
}

template <typename T, int FMT>
__device__ void gemv_quant(const T* x, const u8* w, const float* bias, T* out, int n, int m, int k, int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.y * GEMV_WARPS + warp;
    int t0 = blockIdx.x * GEMV_TOKENS;
    if (row >= m) return;
    int nt = min(GEMV_TOKENS, n - t0);
    const T* xt = x + (i64)t0 * k;
    int blocks = k / 32;
    i64 row0 = (i64)row * blocks;
    float acc[GEMV_TOKENS];
#pragma unroll
    for (int t = 0; t < GEMV_TOKENS; t++) acc[t] = 0.0f;
    int b = lane;
    for (; b + 32 < blocks; b += 64) {
        QRaw<FMT> r0, r1;
        qraw_load<FMT>(w, row0 + b, r0);
        qraw_load<FMT>(w, row0 + b + 32, r1);
        qblock_tokens<T, FMT>(r0, xt, (i64)b * 32, k, nt, acc);
        qblock_tokens<T, FMT>(r1, xt, (i64)(b + 32) * 32, k, nt, acc);
    }
    for (; b < blocks; b += 32) {
        QRaw<FMT> r0;
        qraw_load<FMT>(w, row0 + b, r0);
        qblock_tokens<T, FMT>(r0, xt, (i64)b * 32, k, nt, acc);
    }
    finish_rows<T>(acc, nt, lane, out, (i64)t0 * m + row, m, bias, row, accumulate);
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
