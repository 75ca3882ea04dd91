// Kiln CUDA kernels: shared definitions.
//
// These sources are compiled at run time by NVRTC (no CUDA headers needed):
// f16 and bf16 are stored as 16-bit integers and converted with PTX / bit
// operations. Every kernel computes in f32 and rounds once per stored value,
// in the same order as the PyTorch reference where that matters.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF __int_as_float(0xff800000)

struct bf16_t { u16 x; };
struct f16_t { u16 x; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16_t v) { return __uint_as_float(((u32)v.x) << 16); }
__device__ __forceinline__ float to_float(f16_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
    return f;
}
__device__ __forceinline__ float half_bits_to_float(u16 bits) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_float(float f);
template <> __device__ __forceinline__ float from_float<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float f) {
    u32 u = __float_as_uint(f);
    bf16_t r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.x = (u16)((u >> 16) | 0x40u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (u16)(u >> 16);
    return r;
}
template <> __device__ __forceinline__ f16_t from_float<f16_t>(float f) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(f));
    return r;
}

// Round a float to the precision of T and back (PyTorch's per-op rounding).
template <typename T> __device__ __forceinline__ float round_to(float f) { return to_float(from_float<T>(f)); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    float t = (threadIdx.x < warps) ? partial[threadIdx.x] : 0.0f;
    if (warp == 0) t = warp_sum(t);
    __shared__ float result;
    if (threadIdx.x == 0) result = t;
    __syncthreads();
    return result;
}

__device__ float block_max(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    float t = (threadIdx.x < warps) ? partial[threadIdx.x] : NEG_INF;
    if (warp == 0) t = warp_max(t);
    __shared__ float result;
    if (threadIdx.x == 0) result = t;
    __syncthreads();
    return result;
}

// Weight formats (same codes as the ABI's KILN_WEIGHT_*).
#define FMT_F32 0
#define FMT_F16 1
#define FMT_BF16 2
#define FMT_Q4_0 10
#define FMT_Q4_1 11
#define FMT_Q8_0 12
#define FMT_Q4_K 13
#define FMT_Q6_K 14
#define FMT_Q5_0 15
#define FMT_Q5_1 16
#define FMT_Q2_K 17
#define FMT_Q3_K 18
#define FMT_Q5_K 19
#define FMT_IQ4_NL 30
#define FMT_IQ4_XS 31

// llama.cpp's kvalues_iq4nl.
__device__ __constant__ signed char IQ4_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                      1,    13,   25,  38,  53,  69,  89,  113};

__device__ __forceinline__ float f16_at(const u8* b) { return half_bits_to_float((u16)(b[0] | (b[1] << 8))); }

// Nibble j of a 16-byte Q4_0-style run: j < 16 low nibbles, then high ones.
__device__ __forceinline__ int nibble_at(const u8* qs, int j) { return j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4); }

// The 6-bit (scale, min) of sub-block j of a Q4_K/Q5_K super-block.
__device__ __forceinline__ void k4_scale_min(const u8* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// One weight of a 256-weight K-quant (or IQ4_XS) super-block `b`, column c
// (llama.cpp's dequantize_row_* arithmetic, as gguf-py computes it).
__device__ __forceinline__ float k_quant_at(const u8* b, int fmt, int c) {
    int n = c / 128, r = c % 128, j = r / 32, l = r % 32;
    switch (fmt) {
    case FMT_Q2_K: {
        int sc = b[c / 16];
        int q = (b[16 + 32 * n + l] >> (2 * j)) & 3;
        float dl = f16_at(b + 80) * (float)(sc & 15), ml = f16_at(b + 82) * (float)(sc >> 4);
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    }
    case FMT_Q3_K: {
        const u8* sc = b + 96;
        int s = c / 16;
        int low = (sc[s % 8] >> (4 * (s / 8))) & 15, high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        int q = ((b[32 + 32 * n + l] >> (2 * j)) & 3) - (((b[l] >> (4 * n + j)) & 1) ? 0 : 4);
        return __fmul_rn(f16_at(b + 108) * (float)((low | (high << 4)) - 32), (float)q);
    }
    case FMT_Q4_K:
    case FMT_Q5_K: {
        int sc, m;
        k4_scale_min(b + 4, c / 32, &sc, &m);
        const u8* qs = b + (fmt == FMT_Q5_K ? 48 : 16);
        int q4 = c % 64, byte = qs[32 * (c / 64) + q4 % 32];
        int q = q4 < 32 ? (byte & 15) : (byte >> 4);
        if (fmt == FMT_Q5_K) q |= ((b[16 + c % 32] >> (c / 32)) & 1) << 4;
        return __fsub_rn(__fmul_rn(f16_at(b) * (float)sc, (float)q), f16_at(b + 2) * (float)m);
    }
    case FMT_Q6_K: {
        int byte = b[64 * n + 32 * (j % 2) + l];
        int low = j < 2 ? (byte & 15) : (byte >> 4);
        int q = (low | (((b[128 + 32 * n + l] >> (2 * j)) & 3) << 4)) - 32;
        return __fmul_rn(f16_at(b + 208) * (float)(signed char)b[192 + c / 16], (float)q);
    }
    case FMT_IQ4_XS: {
        int ib = c / 32;
        int sh = b[2] | (b[3] << 8);
        int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
        return __fmul_rn(f16_at(b) * (float)(ls - 32), (float)IQ4_VALUES[nibble_at(b + 8 + 16 * ib, c % 32)]);
    }
    }
    return 0.0f;
}

// Dequantize weight element (row, col) of a [rows, cols] matrix in `fmt`.
// Quantized rows are runs of 32-weight blocks along cols.
__device__ __forceinline__ float weight_at(const u8* w, int fmt, i64 row, i64 col, i64 cols) {
    switch (fmt) {
    case FMT_F32: return ((const float*)w)[row * cols + col];
    case FMT_F16: return half_bits_to_float(((const u16*)w)[row * cols + col]);
    case FMT_BF16: return __uint_as_float(((u32)((const u16*)w)[row * cols + col]) << 16);
    case FMT_Q4_0: {
        const u8* b = w + (row * (cols / 32) + col / 32) * 18;
        float d = half_bits_to_float((u16)(b[0] | (b[1] << 8)));
        int j = col % 32;
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return d * (float)(q - 8);
    }
    case FMT_Q4_1: {
        const u8* b = w + (row * (cols / 32) + col / 32) * 20;
        float d = half_bits_to_float((u16)(b[0] | (b[1] << 8)));
        float m = half_bits_to_float((u16)(b[2] | (b[3] << 8)));
        int j = col % 32;
        int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return __fadd_rn(__fmul_rn(d, (float)q), m);  // no FMA: as the reference dequantizer rounds
    }
    case FMT_Q8_0: {
        const u8* b = w + (row * (cols / 32) + col / 32) * 34;
        float d = half_bits_to_float((u16)(b[0] | (b[1] << 8)));
        return d * (float)(signed char)b[2 + col % 32];
    }
    case FMT_Q5_0:
    case FMT_Q5_1: {
        int bytes = fmt == FMT_Q5_0 ? 22 : 24, off = fmt == FMT_Q5_0 ? 2 : 4;
        const u8* b = w + (row * (cols / 32) + col / 32) * bytes;
        int j = col % 32;
        u32 qh = b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | ((u32)b[off + 3] << 24);
        int q = nibble_at(b + off + 4, j) | (((qh >> j) & 1) << 4);
        if (fmt == FMT_Q5_0) return f16_at(b) * (float)(q - 16);
        return __fadd_rn(__fmul_rn(f16_at(b), (float)q), f16_at(b + 2));
    }
    case FMT_IQ4_NL: {
        const u8* b = w + (row * (cols / 32) + col / 32) * 18;
        return f16_at(b) * (float)IQ4_VALUES[nibble_at(b + 2, col % 32)];
    }
    case FMT_Q2_K:
    case FMT_Q3_K:
    case FMT_Q4_K:
    case FMT_Q5_K:
    case FMT_Q6_K:
    case FMT_IQ4_XS: {
        int bytes = fmt == FMT_Q2_K ? 84 : fmt == FMT_Q3_K ? 110 : fmt == FMT_Q4_K ? 144 : fmt == FMT_Q5_K ? 176 : fmt == FMT_Q6_K ? 210 : 136;
        return k_quant_at(w + (row * (cols / 256) + col / 256) * bytes, fmt, (int)(col % 256));
    }
    }
    return 0.0f;
}
