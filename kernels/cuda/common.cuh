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
    }
    return 0.0f;
}
