// Device-side sampling: one block per logits row. Greedy is an argmax;
// otherwise top-k / top-p / min-p become one logit threshold (found by
// bisection on block-wide counts and sums), and the token is drawn by the
// Gumbel-max trick with a counter-based hash of (seed, counter, token), so
// a row's draw depends only on its own logits and its own stream.

struct SampleParams {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    u64 seed;
    u64 counter;
    float repetition_penalty;
    u32 adjust_start;
    u32 adjust_count;
    u32 reserved;
};

struct LogitAdjust {
    int token;
    float add_before;
    int repeat;
    float add_after;
};

__device__ __forceinline__ float adjust_value(float x, const LogitAdjust& a, float penalty) {
    float y = x + a.add_before;
    if (a.repeat) y = y > 0.0f ? y / penalty : y * penalty;
    return y + a.add_after;
}

// The raw logit of `token` given its adjusted value (the adjustments are
// undone; a masked token reads as -inf).
__device__ float raw_value(float y, int token, const LogitAdjust* adj, u32 count, float penalty) {
    u32 lo = 0, hi = count;
    while (lo < hi) {
        u32 mid = (lo + hi) / 2;
        if (adj[mid].token < token) lo = mid + 1; else hi = mid;
    }
    if (lo >= count || adj[lo].token != token) return y;
    const LogitAdjust a = adj[lo];
    if (a.add_before == NEG_INF) return NEG_INF;
    float x = y - a.add_after;
    if (a.repeat) x = x > 0.0f ? x * penalty : x / penalty;
    return x - a.add_before;
}

__device__ __forceinline__ void better(float& v, int& i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}

__device__ void block_argmax(float& v, int& i) {
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, i, o);
        better(v, i, v2, i2);
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = threadIdx.x < warps ? sv[threadIdx.x] : NEG_INF;
    i = threadIdx.x < warps ? si[threadIdx.x] : 0x7fffffff;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, v, o);
            int i2 = __shfl_xor_sync(0xffffffffu, i, o);
            better(v, i, v2, i2);
        }
    }
    __shared__ float rv;
    __shared__ int ri;
    if (threadIdx.x == 0) { rv = v; ri = i; }
    __syncthreads();
    v = rv;
    i = ri;
}

__device__ __forceinline__ u64 mix64(u64 x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// Uniform in (0, 1) from (seed, counter, index).
__device__ __forceinline__ float uniform(u64 seed, u64 counter, int index) {
    u64 h = mix64(seed ^ mix64(counter + 0x9e3779b97f4a7c15ull * (u64)(index + 1)));
    return ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

extern "C" __global__ void sample_rows(float* logits, const SampleParams* params, int vocab, int* out_ids,
                                       float* out_logprob, int* top_ids, float* top_logprobs, int num_top,
                                       const LogitAdjust* adjust) {
    int r = blockIdx.x;
    float* x = logits + (i64)r * vocab;
    SampleParams sp = params[r];
    const LogitAdjust* adj = adjust == 0 ? 0 : adjust + sp.adjust_start;
    u32 adj_count = adjust == 0 ? 0 : sp.adjust_count;
    // Raw distribution: max and log-sum-exp for log-probabilities.
    float mx = NEG_INF;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx);
    float se = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) se += __expf(x[i] - mx);
    se = block_sum(se);
    float lse = mx + __logf(se);

    // Top alternatives of the raw distribution, most likely first.
    float prev_v = __int_as_float(0x7f800000);
    int prev_i = -1;
    for (int n = 0; n < num_top; n++) {
        float v = NEG_INF;
        int idx = 0x7fffffff;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float xi = x[i];
            bool after = xi < prev_v || (xi == prev_v && i > prev_i);
            if (after) better(v, idx, xi, i);
        }
        block_argmax(v, idx);
        if (threadIdx.x == 0) {
            top_ids[(i64)r * num_top + n] = idx;
            top_logprobs[(i64)r * num_top + n] = v - lse;
        }
        prev_v = v;
        prev_i = idx;
    }
    // The row's adjustments (each token once, so no two threads touch one entry).
    __syncthreads();
    for (u32 e = threadIdx.x; e < adj_count; e += blockDim.x) {
        int t = adj[e].token;
        if (t >= 0 && t < vocab) x[t] = adjust_value(x[t], adj[e], sp.repetition_penalty);
    }
    __syncthreads();
    if (adj_count > 0) {
        mx = NEG_INF;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
        mx = block_max(mx);
    }

    int chosen;
    if (sp.temperature <= 1e-5f || sp.top_k == 1) {
        float v = NEG_INF;
        int idx = 0x7fffffff;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) better(v, idx, x[i], i);
        block_argmax(v, idx);
        chosen = idx;
    } else {
        float inv_t = 1.0f / sp.temperature;
        float zmax = mx * inv_t;
        float zmin = zmax;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            if (x[i] > NEG_INF) zmin = fminf(zmin, x[i] * inv_t);
        zmin = -block_max(-zmin);
        float tau = zmin;
        if (sp.top_k > 0 && sp.top_k < vocab) {
            float lo = zmin, hi = zmax;
            for (int it = 0; it < 32; it++) {
                float mid = 0.5f * (lo + hi);
                float c = 0.0f;
                for (int i = threadIdx.x; i < vocab; i += blockDim.x) c += (x[i] * inv_t >= mid) ? 1.0f : 0.0f;
                c = block_sum(c);
                if (c >= (float)sp.top_k) lo = mid; else hi = mid;
            }
            tau = lo;
        }
        if (sp.top_p < 1.0f) {
            float total = 0.0f;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                float z = x[i] * inv_t;
                if (z >= tau) total += __expf(z - zmax);
            }
            total = block_sum(total);
            float lo = tau, hi = zmax;
            for (int it = 0; it < 32; it++) {
                float mid = 0.5f * (lo + hi);
                float s = 0.0f;
                for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                    float z = x[i] * inv_t;
                    if (z >= mid) s += __expf(z - zmax);
                }
                s = block_sum(s);
                if (s >= sp.top_p * total) lo = mid; else hi = mid;
            }
            tau = fmaxf(tau, lo);
        }
        if (sp.min_p > 0.0f) tau = fmaxf(tau, zmax + __logf(sp.min_p));
        tau = fminf(tau, zmax);
        float v = NEG_INF;
        int idx = 0x7fffffff;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float z = x[i] * inv_t;
            if (z >= tau) {
                float g = -__logf(-__logf(uniform(sp.seed, sp.counter, i)));
                better(v, idx, z + g, i);
            }
        }
        block_argmax(v, idx);
        chosen = idx;
    }
    if (chosen < 0 || chosen >= vocab) chosen = 0;
    if (threadIdx.x == 0) {
        out_ids[r] = chosen;
        if (out_logprob != 0) out_logprob[r] = raw_value(x[chosen], chosen, adj, adj_count, sp.repetition_penalty) - lse;
    }
}
