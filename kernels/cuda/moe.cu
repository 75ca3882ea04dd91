// Mixture-of-experts feed-forward (OP_MOE), simple over fast: every
// (row, rank) slot runs its own expert as GEMV-style warp dot products over
// the stacked weights, read through `weight_at` (so every weight format the
// backend holds works), then each row combines its k slots in rank order.
// A slot's result depends only on its row, so rows are batch invariant.
//
// Workspace (f32 unless noted), for n rows and k experts per row:
//   choice [n·k] i32 expert ids, rank order; weight [n·k] routing weights;
//   hidden [n·k, I] act(gate)·up; y [n·k, h] each slot's expert output.
// Values are rounded to the activation type where PyTorch stores a tensor
// in it (routing weights, gate and up projections, the activation, the
// product, the expert output).

// Routing, one thread per row: softmax over the E logits in f32, the k
// largest probabilities (ties to the lower id), optionally renormalized.
// Pass j picks the best expert ranked after pass j-1's pick in the order
// (probability descending, id ascending), so no marks are needed.
template <typename T>
__device__ void moe_route(const T* logits, int n, int experts, int k, int renormalize, int* choice, float* weight) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const T* l = logits + (i64)r * experts;
    float mx = NEG_INF;
    for (int e = 0; e < experts; e++) mx = fmaxf(mx, to_float(l[e]));
    float sum = 0.0f;
    for (int e = 0; e < experts; e++) sum += expf(to_float(l[e]) - mx);
    float prev_p = 0.0f, total = 0.0f;
    int prev_e = -1;
    for (int j = 0; j < k; j++) {
        int best = -1;
        float best_p = 0.0f;
        for (int e = 0; e < experts; e++) {
            float p = expf(to_float(l[e]) - mx) / sum;
            bool after = prev_e < 0 || p < prev_p || (p == prev_p && e > prev_e);
            if (after && (best < 0 || p > best_p)) {
                best = e;
                best_p = p;
            }
        }
        if (best < 0) {  // NaN logits rank nothing: keep the expert reads in bounds
            best = j;
            best_p = 0.0f;
        }
        choice[(i64)r * k + j] = best;
        weight[(i64)r * k + j] = best_p;
        total += best_p;
        prev_e = best;
        prev_p = best_p;
    }
    for (int j = 0; j < k; j++) {
        float w = weight[(i64)r * k + j];
        if (renormalize) w = w / total;
        weight[(i64)r * k + j] = round_to<T>(w);
    }
}

// Dot product of weight row `row` ([rows, cols] in `fmt`) with `x`, by one
// warp: lane-strided partial sums, then a fixed shuffle tree. Weights are
// dequantized and rounded to the activation type T first, as the GEMV
// kernels and the reference (a checkpoint dequantized into T) do.
template <typename T, typename X>
__device__ __forceinline__ float warp_dot(const u8* w, int fmt, i64 row, i64 cols, const X* x) {
    int lane = threadIdx.x & 31;
    float acc = 0.0f;
    for (i64 c = lane; c < cols; c += 32)
        acc = fmaf(round_to<T>(weight_at(w, fmt, row, c, cols)), to_float(x[c]), acc);
    return warp_sum(acc);
}

// hidden[s, j] = act(gate_j · x) · (up_j · x) for slot s = blockIdx.x and
// j = blockIdx.y·8 + warp (8 warps per block, `WARPS` in device/moe.rs), where gate_j and up_j are rows e·2I + j and
// e·2I + I + j of the stacked gate_up weight.
template <typename T>
__device__ void moe_gate_up(const T* x, const u8* w, int fmt, const int* choice, int k, int h, int inter, int kind,
                            float* hidden) {
    int s = blockIdx.x, warp = threadIdx.x >> 5;
    int j = blockIdx.y * 8 + warp;
    if (j >= inter) return;
    int row = s / k, e = choice[s];
    const T* xr = x + (i64)row * h;
    i64 base = (i64)e * 2 * inter;
    float gate = round_to<T>(warp_dot<T>(w, fmt, base + j, h, xr));
    float up = round_to<T>(warp_dot<T>(w, fmt, base + inter + j, h, xr));
    if ((threadIdx.x & 31) == 0) hidden[(i64)s * inter + j] = round_to<T>(round_to<T>(activate(kind, gate)) * up);
}

// y[s, c] = down_c · hidden[s] for slot s = blockIdx.x and output column
// c = blockIdx.y·8 + warp (row e·h + c of the stacked down weight).
template <typename T>
__device__ void moe_down(const float* hidden, const u8* w, int fmt, const int* choice, int h, int inter, float* y) {
    int s = blockIdx.x, warp = threadIdx.x >> 5;
    int c = blockIdx.y * 8 + warp;
    if (c >= h) return;
    float v = warp_dot<T>(w, fmt, (i64)choice[s] * h + c, inter, hidden + (i64)s * inter);
    if ((threadIdx.x & 31) == 0) y[(i64)s * h + c] = round_to<T>(v);
}

// out[r] (+)= Σ_j weight_j · y[r·k + j] in rank order, plus the shared
// output (times sigmoid of its gate when given). One block per row.
template <typename T>
__device__ void moe_combine(const float* y, const float* weight, const T* shared, const T* shared_gate, T* out, int k,
                            int h, int accumulate) {
    int r = blockIdx.x;
    float g = 1.0f;
    if (shared_gate != 0) g = round_to<T>(1.0f / (1.0f + expf(-to_float(shared_gate[r]))));
    for (int c = threadIdx.x; c < h; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            i64 s = (i64)r * k + j;
            acc = round_to<T>(acc + round_to<T>(weight[s] * y[s * h + c]));
        }
        if (shared != 0) {
            float sv = to_float(shared[(i64)r * h + c]);
            if (shared_gate != 0) sv = round_to<T>(g * sv);
            acc = round_to<T>(acc + sv);
        }
        i64 o = (i64)r * h + c;
        if (accumulate) acc = to_float(out[o]) + acc;
        out[o] = from_float<T>(acc);
    }
}

#define KILN_MOE(T, S)                                                                                                \
    extern "C" __global__ void moe_route_##S(const T* l, int n, int e, int k, int renorm, int* ch, float* w) {        \
        moe_route<T>(l, n, e, k, renorm, ch, w);                                                                      \
    }                                                                                                                 \
    extern "C" __global__ void moe_gate_up_##S(const T* x, const u8* w, int fmt, const int* ch, int k, int h, int i,  \
                                               int kind, float* hid) {                                                \
        moe_gate_up<T>(x, w, fmt, ch, k, h, i, kind, hid);                                                            \
    }                                                                                                                 \
    extern "C" __global__ void moe_down_##S(const float* hid, const u8* w, int fmt, const int* ch, int h, int i,      \
                                            float* y) {                                                               \
        moe_down<T>(hid, w, fmt, ch, h, i, y);                                                                        \
    }                                                                                                                 \
    extern "C" __global__ void moe_combine_##S(const float* y, const float* w, const T* sh, const T* sg, T* o, int k, \
                                               int h, int acc) {                                                      \
        moe_combine<T>(y, w, sh, sg, o, k, h, acc);                                                                   \
    }

KILN_MOE(float, f32)
KILN_MOE(f16_t, f16)
KILN_MOE(bf16_t, bf16)
