/*
 * A Kiln backend plugin in plain C99: f32 activations, f32 and bf16
 * weights, and the twelve operations a Llama-style model needs (embedding,
 * RMS norms, linear, RoPE, SwiGLU, add, KV writes, paged attention, row
 * gathers, block copies, f32 casts). It declares exactly that through
 * supports(), so the engine refuses, naming the operation, any model that
 * needs more, and `kiln backend check` reports the rest as declined.
 *
 * Build: cc -std=c99 -O2 -shared -fPIC -I ../../plugins/abi/include \
 *           -o libkiln_backend_c.so kiln_c_backend.c -lm
 *
 * Rules it follows (plugins/abi/README.md): every entry returns a status
 * and leaves a message for last_error; nothing is allocated by the host
 * for the plugin or the other way round; a device is used by one thread
 * at a time; buffers live in host memory.
 */

#define _POSIX_C_SOURCE 200809L

#include "kiln_backend.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define THREAD_LOCAL _Thread_local
#else
#define THREAD_LOCAL __thread
#endif

static THREAD_LOCAL char last_error_text[512];

static KilnStatus fail(KilnStatus status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error_text, sizeof last_error_text, format, args);
    va_end(args);
    return status;
}

/* ---- Buffers and weights ------------------------------------------------ */

typedef struct {
    uint64_t bytes;
    unsigned char *data;
} Buffer;

typedef struct {
    uint64_t rows, cols;
    float *values; /* rows * cols, row-major */
} Weight;

typedef struct {
    int unused;
} Device;

static const uint32_t supported_ops[] = {
    KILN_OP_EMBEDDING, KILN_OP_RMS_NORM, KILN_OP_ADD_RMS_NORM, KILN_OP_LINEAR,
    KILN_OP_ROPE,      KILN_OP_SILU_MUL, KILN_OP_ADD,          KILN_OP_KV_WRITE,
    KILN_OP_ATTENTION, KILN_OP_GATHER_ROWS, KILN_OP_COPY_BLOCKS, KILN_OP_CAST,
};

static int op_supported(uint32_t opcode) {
    size_t i;
    for (i = 0; i < sizeof supported_ops / sizeof supported_ops[0]; i++) {
        if (supported_ops[i] == opcode) return 1;
    }
    return 0;
}

static uint64_t numel(const KilnTensor *t) {
    uint64_t n = 1;
    uint32_t i;
    for (i = 0; i < t->rank; i++) n *= t->dims[i];
    return n;
}

/* The tensor's f32 elements, or NULL (with last_error set) when it is absent,
 * not f32, or reaches past its buffer. */
static float *f32s(const KilnTensor *t, const char *what) {
    Buffer *b = (Buffer *)t->buffer;
    if (b == NULL) {
        fail(KILN_INVALID_ARGUMENT, "%s is missing", what);
        return NULL;
    }
    if (t->dtype != KILN_F32) {
        fail(KILN_UNSUPPORTED, "%s is not f32", what);
        return NULL;
    }
    if (t->offset + numel(t) * 4 > b->bytes) {
        fail(KILN_INVALID_ARGUMENT, "%s reaches past its buffer", what);
        return NULL;
    }
    return (float *)(b->data + t->offset);
}

static int32_t *i32s(const KilnTensor *t, const char *what) {
    Buffer *b = (Buffer *)t->buffer;
    if (b == NULL || t->dtype != KILN_I32 || t->offset + numel(t) * 4 > b->bytes) {
        fail(KILN_INVALID_ARGUMENT, "%s must be an i32 tensor inside its buffer", what);
        return NULL;
    }
    return (int32_t *)(b->data + t->offset);
}

static Weight *weight_of(KilnWeight w, const char *what) {
    if (w == NULL) fail(KILN_INVALID_ARGUMENT, "weight %s is missing", what);
    return (Weight *)w;
}

/* ---- Operations (slots as documented in kiln_backend.h) ----------------- */

static KilnStatus op_embedding(const KilnOp *op) {
    const KilnTensor *ids_t = &op->tensors[0], *out_t = &op->tensors[1];
    int32_t *ids = i32s(ids_t, "ids");
    float *out = f32s(out_t, "out");
    Weight *table = weight_of(op->weights[0], "table");
    uint64_t i;
    if (!ids || !out || !table) return KILN_INVALID_ARGUMENT;
    for (i = 0; i < numel(ids_t); i++) {
        if (ids[i] < 0 || (uint64_t)ids[i] >= table->rows) {
            return fail(KILN_INVALID_ARGUMENT, "token id %d outside 0..%llu", ids[i],
                        (unsigned long long)table->rows);
        }
        memcpy(out + i * table->cols, table->values + (uint64_t)ids[i] * table->cols,
               table->cols * sizeof(float));
    }
    return KILN_OK;
}

static void rms_norm_rows(const float *x, const float *gamma, float eps, float *out,
                          uint64_t rows, uint64_t h) {
    uint64_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * h;
        float *o = out + r * h;
        float sum = 0.0f, inv;
        for (i = 0; i < h; i++) sum += xr[i] * xr[i];
        inv = 1.0f / sqrtf(sum / (float)h + eps);
        for (i = 0; i < h; i++) o[i] = xr[i] * inv * gamma[i];
    }
}

static KilnStatus op_rms_norm(const KilnOp *op) {
    const KilnTensor *x_t = &op->tensors[0];
    float *x = f32s(x_t, "x"), *out = f32s(&op->tensors[1], "out");
    Weight *gamma = weight_of(op->weights[0], "gamma");
    if (!x || !out || !gamma) return KILN_INVALID_ARGUMENT;
    if (gamma->cols != x_t->dims[1]) return fail(KILN_INVALID_ARGUMENT, "gamma width");
    rms_norm_rows(x, gamma->values, op->fparams[0], out, x_t->dims[0], x_t->dims[1]);
    return KILN_OK;
}

static KilnStatus op_add_rms_norm(const KilnOp *op) {
    const KilnTensor *x_t = &op->tensors[0];
    float *x = f32s(x_t, "x"), *residual = f32s(&op->tensors[1], "residual");
    float *out = f32s(&op->tensors[2], "out");
    Weight *gamma = weight_of(op->weights[0], "gamma");
    uint64_t i, n = numel(x_t);
    if (!x || !residual || !out || !gamma) return KILN_INVALID_ARGUMENT;
    if (gamma->cols != x_t->dims[1]) return fail(KILN_INVALID_ARGUMENT, "gamma width");
    for (i = 0; i < n; i++) residual[i] += x[i];
    rms_norm_rows(residual, gamma->values, op->fparams[0], out, x_t->dims[0], x_t->dims[1]);
    return KILN_OK;
}

static KilnStatus op_linear(const KilnOp *op) {
    const KilnTensor *x_t = &op->tensors[0], *out_t = &op->tensors[1];
    float *x = f32s(x_t, "x"), *out = f32s(out_t, "out"), *result;
    Weight *w = weight_of(op->weights[0], "weight");
    Weight *bias = (Weight *)op->weights[1];
    int accumulate = op->iparams[0] != 0;
    uint64_t n, k, m, r, j, i;
    if (!x || !out || !w) return KILN_INVALID_ARGUMENT;
    n = x_t->dims[0];
    k = x_t->dims[1];
    m = w->rows;
    if (w->cols != k || out_t->dims[0] != n || out_t->dims[1] != m) {
        return fail(KILN_INVALID_ARGUMENT, "x, W and out do not fit");
    }
    /* Computed aside: x and out may overlap. */
    result = malloc((size_t)(n * m) * sizeof(float) + 1);
    if (!result) return fail(KILN_OUT_OF_MEMORY, "no memory for the linear result");
    for (r = 0; r < n; r++) {
        for (j = 0; j < m; j++) {
            const float *xr = x + r * k, *wr = w->values + j * k;
            float acc = 0.0f;
            for (i = 0; i < k; i++) acc += xr[i] * wr[i];
            if (bias) acc += bias->values[j];
            result[r * m + j] = acc;
        }
    }
    for (i = 0; i < n * m; i++) out[i] = accumulate ? out[i] + result[i] : result[i];
    free(result);
    return KILN_OK;
}

static void rope_rows(float *x, uint64_t rows, uint64_t width, const int32_t *positions,
                      const float *cos_t, const float *sin_t, int64_t head_dim,
                      int64_t rotary_dim, int64_t style) {
    uint64_t r, h, half = (uint64_t)rotary_dim / 2, i;
    for (r = 0; r < rows; r++) {
        const float *c = cos_t + (uint64_t)positions[r] * half;
        const float *s = sin_t + (uint64_t)positions[r] * half;
        for (h = 0; h < width / (uint64_t)head_dim; h++) {
            float *head = x + r * width + h * (uint64_t)head_dim;
            for (i = 0; i < half; i++) {
                uint64_t a = style == KILN_ROPE_NEOX ? i : 2 * i;
                uint64_t b = style == KILN_ROPE_NEOX ? i + half : 2 * i + 1;
                float x1 = head[a], x2 = head[b];
                head[a] = x1 * c[i] - x2 * s[i];
                head[b] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

static KilnStatus op_rope(const KilnOp *op) {
    const KilnTensor *q_t = &op->tensors[0], *k_t = &op->tensors[1];
    const KilnTensor *cos_tensor = &op->tensors[3];
    float *q = f32s(q_t, "q");
    int32_t *positions = i32s(&op->tensors[2], "positions");
    float *cos_t = f32s(cos_tensor, "cos"), *sin_t = f32s(&op->tensors[4], "sin");
    int64_t head_dim = op->iparams[0], rotary_dim = op->iparams[1], style = op->iparams[2];
    uint64_t n, i;
    if (!q || !positions || !cos_t || !sin_t) return KILN_INVALID_ARGUMENT;
    if (head_dim <= 0 || rotary_dim < 0 || rotary_dim > head_dim ||
        (style != KILN_ROPE_NEOX && style != KILN_ROPE_INTERLEAVED)) {
        return fail(KILN_INVALID_ARGUMENT, "bad head_dim, rotary dims or style");
    }
    n = q_t->dims[0];
    for (i = 0; i < n; i++) {
        if (positions[i] < 0 || (uint64_t)positions[i] >= cos_tensor->dims[0]) {
            return fail(KILN_INVALID_ARGUMENT, "position %d outside the RoPE table", positions[i]);
        }
    }
    rope_rows(q, n, q_t->dims[1], positions, cos_t, sin_t, head_dim, rotary_dim, style);
    if (k_t->buffer != NULL) {
        float *k = f32s(k_t, "k");
        if (!k) return KILN_INVALID_ARGUMENT;
        rope_rows(k, n, k_t->dims[1], positions, cos_t, sin_t, head_dim, rotary_dim, style);
    }
    return KILN_OK;
}

static KilnStatus op_elementwise(const KilnOp *op, int silu) {
    const KilnTensor *a_t = &op->tensors[0];
    float *a = f32s(a_t, "a"), *b = f32s(&op->tensors[1], "b");
    float *out = f32s(&op->tensors[2], "out");
    uint64_t i, n = numel(a_t);
    if (!a || !b || !out) return KILN_INVALID_ARGUMENT;
    if (numel(&op->tensors[1]) != n || numel(&op->tensors[2]) != n) {
        return fail(KILN_INVALID_ARGUMENT, "operands differ in size");
    }
    for (i = 0; i < n; i++) {
        float x = a[i];
        out[i] = silu ? x / (1.0f + expf(-x)) * b[i] : x + b[i];
    }
    return KILN_OK;
}

static KilnStatus op_kv_write(const KilnOp *op) {
    const KilnTensor *k_t = &op->tensors[0], *kc_t = &op->tensors[2];
    float *k = f32s(k_t, "k"), *v = f32s(&op->tensors[1], "v");
    float *kc = f32s(kc_t, "k cache"), *vc = f32s(&op->tensors[3], "v cache");
    int32_t *slots = i32s(&op->tensors[4], "slot mapping");
    uint64_t i, width, capacity;
    if (!k || !v || !kc || !vc || !slots) return KILN_INVALID_ARGUMENT;
    width = kc_t->dims[2] * kc_t->dims[3];
    capacity = kc_t->dims[0] * kc_t->dims[1];
    if (k_t->dims[1] != width) return fail(KILN_INVALID_ARGUMENT, "key width");
    for (i = 0; i < k_t->dims[0]; i++) {
        if (slots[i] < 0) continue;
        if ((uint64_t)slots[i] >= capacity) {
            return fail(KILN_INVALID_ARGUMENT, "slot %d outside the cache", slots[i]);
        }
        memcpy(kc + (uint64_t)slots[i] * width, k + i * width, width * sizeof(float));
        memcpy(vc + (uint64_t)slots[i] * width, v + i * width, width * sizeof(float));
    }
    return KILN_OK;
}

static KilnStatus op_attention(const KilnOp *op) {
    const KilnTensor *q_t = &op->tensors[0], *kc_t = &op->tensors[1];
    const KilnTensor *tables_t = &op->tensors[3], *lens_t = &op->tensors[4];
    float *q = f32s(q_t, "q"), *kc = f32s(kc_t, "k cache"), *vc = f32s(&op->tensors[2], "v cache");
    int32_t *tables = i32s(tables_t, "block tables"), *lens = i32s(lens_t, "seq lens");
    int32_t *starts = i32s(&op->tensors[5], "query starts");
    float *out = f32s(&op->tensors[6], "out");
    float scale = op->fparams[0], softcap = op->fparams[1], *scores;
    int64_t heads = op->iparams[0], kv_heads = op->iparams[1], hd = op->iparams[2];
    int64_t block_size = op->iparams[3], window = op->iparams[4];
    uint64_t seqs, max_blocks, width, kv_width, s, blocks;
    if (!q || !kc || !vc || !tables || !lens || !starts || !out) return KILN_INVALID_ARGUMENT;
    if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || hd <= 0 || block_size <= 0) {
        return fail(KILN_INVALID_ARGUMENT, "bad head counts, head_dim or block size");
    }
    seqs = lens_t->dims[0];
    max_blocks = tables_t->dims[1];
    blocks = kc_t->dims[0];
    width = (uint64_t)(heads * hd);
    kv_width = (uint64_t)(kv_heads * hd);
    scores = malloc(((size_t)max_blocks * (size_t)block_size + 1) * sizeof(float));
    if (!scores) return fail(KILN_OUT_OF_MEMORY, "no memory for attention scores");
    for (s = 0; s < seqs; s++) {
        uint64_t first = (uint64_t)starts[s], end = (uint64_t)starts[s + 1];
        uint64_t context = (uint64_t)lens[s], row;
        if (end < first || context < end - first || context > max_blocks * (uint64_t)block_size) {
            free(scores);
            return fail(KILN_INVALID_ARGUMENT, "sequence %llu does not fit its block table",
                        (unsigned long long)s);
        }
        for (row = first; row < end; row++) {
            uint64_t pos = context - (end - first) + (row - first);
            uint64_t lo = window > 0 && pos + 1 > (uint64_t)window ? pos + 1 - (uint64_t)window : 0;
            int64_t h;
            for (h = 0; h < heads; h++) {
                const float *qh = q + row * width + (uint64_t)(h * hd);
                uint64_t column = (uint64_t)(h / (heads / kv_heads) * hd), p;
                float *o = out + row * width + (uint64_t)(h * hd), max = -INFINITY, sum = 0.0f;
                int64_t d;
                for (p = lo; p <= pos; p++) {
                    int32_t block = tables[s * max_blocks + p / (uint64_t)block_size];
                    const float *key;
                    float dot = 0.0f;
                    if (block < 0 || (uint64_t)block >= blocks) {
                        free(scores);
                        return fail(KILN_INVALID_ARGUMENT, "block %d outside the cache", block);
                    }
                    key = kc + ((uint64_t)block * (uint64_t)block_size + p % (uint64_t)block_size) *
                                   kv_width + column;
                    for (d = 0; d < hd; d++) dot += qh[d] * key[d];
                    dot *= scale;
                    if (softcap > 0.0f) dot = softcap * tanhf(dot / softcap);
                    scores[p - lo] = dot;
                    if (dot > max) max = dot;
                }
                for (p = lo; p <= pos; p++) {
                    scores[p - lo] = expf(scores[p - lo] - max);
                    sum += scores[p - lo];
                }
                for (d = 0; d < hd; d++) o[d] = 0.0f;
                for (p = lo; p <= pos; p++) {
                    int32_t block = tables[s * max_blocks + p / (uint64_t)block_size];
                    const float *value =
                        vc + ((uint64_t)block * (uint64_t)block_size + p % (uint64_t)block_size) *
                                 kv_width + column;
                    float weight = scores[p - lo] / sum;
                    for (d = 0; d < hd; d++) o[d] += weight * value[d];
                }
            }
        }
    }
    free(scores);
    return KILN_OK;
}

static KilnStatus op_gather_rows(const KilnOp *op) {
    const KilnTensor *x_t = &op->tensors[0], *idx_t = &op->tensors[1];
    float *x = f32s(x_t, "x"), *out = f32s(&op->tensors[2], "out");
    int32_t *idx = i32s(idx_t, "indices");
    uint64_t i, cols;
    if (!x || !idx || !out) return KILN_INVALID_ARGUMENT;
    cols = x_t->dims[1];
    for (i = 0; i < idx_t->dims[0]; i++) {
        if (idx[i] < 0 || (uint64_t)idx[i] >= x_t->dims[0]) {
            return fail(KILN_INVALID_ARGUMENT, "row %d outside the input", idx[i]);
        }
        memmove(out + i * cols, x + (uint64_t)idx[i] * cols, cols * sizeof(float));
    }
    return KILN_OK;
}

static KilnStatus op_copy_blocks(const KilnOp *op) {
    const KilnTensor *pairs_t = &op->tensors[2];
    int32_t *pairs = i32s(pairs_t, "pairs");
    int c;
    uint64_t i;
    if (!pairs) return KILN_INVALID_ARGUMENT;
    for (c = 0; c < 2; c++) {
        const KilnTensor *cache_t = &op->tensors[c];
        float *cache = f32s(cache_t, "cache");
        uint64_t block = cache_t->dims[1] * cache_t->dims[2] * cache_t->dims[3];
        if (!cache) return KILN_INVALID_ARGUMENT;
        for (i = 0; i < pairs_t->dims[0]; i++) {
            int32_t src = pairs[2 * i], dst = pairs[2 * i + 1];
            if (src < 0 || dst < 0 || (uint64_t)src >= cache_t->dims[0] ||
                (uint64_t)dst >= cache_t->dims[0]) {
                return fail(KILN_INVALID_ARGUMENT, "block pair %d -> %d outside the cache", src, dst);
            }
            memmove(cache + (uint64_t)dst * block, cache + (uint64_t)src * block,
                    block * sizeof(float));
        }
    }
    return KILN_OK;
}

static KilnStatus op_cast(const KilnOp *op) {
    float *in = f32s(&op->tensors[0], "input"), *out = f32s(&op->tensors[1], "out");
    if (!in || !out) return KILN_UNSUPPORTED;
    if (numel(&op->tensors[0]) != numel(&op->tensors[1])) {
        return fail(KILN_INVALID_ARGUMENT, "input and output differ in size");
    }
    memmove(out, in, numel(&op->tensors[0]) * sizeof(float));
    return KILN_OK;
}

static KilnStatus run_op(const KilnOp *op) {
    switch (op->opcode) {
    case KILN_OP_EMBEDDING: return op_embedding(op);
    case KILN_OP_RMS_NORM: return op_rms_norm(op);
    case KILN_OP_ADD_RMS_NORM: return op_add_rms_norm(op);
    case KILN_OP_LINEAR: return op_linear(op);
    case KILN_OP_ROPE: return op_rope(op);
    case KILN_OP_SILU_MUL: return op_elementwise(op, 1);
    case KILN_OP_ADD: return op_elementwise(op, 0);
    case KILN_OP_KV_WRITE: return op_kv_write(op);
    case KILN_OP_ATTENTION: return op_attention(op);
    case KILN_OP_GATHER_ROWS: return op_gather_rows(op);
    case KILN_OP_COPY_BLOCKS: return op_copy_blocks(op);
    case KILN_OP_CAST: return op_cast(op);
    default: return fail(KILN_UNSUPPORTED, "operation %u is not supported by the C backend",
                         op->opcode);
    }
}

/* ---- The device table ---------------------------------------------------- */

static void dev_close(void *dev) { free(dev); }

static KilnStatus dev_memory_info(void *dev, uint64_t *free_bytes, uint64_t *total) {
    long page = sysconf(_SC_PAGESIZE);
    (void)dev;
    *total = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)page;
#ifdef _SC_AVPHYS_PAGES
    *free_bytes = (uint64_t)sysconf(_SC_AVPHYS_PAGES) * (uint64_t)page;
#else
    *free_bytes = *total / 2;
#endif
    return KILN_OK;
}

static KilnStatus dev_alloc_buffer(void *dev, uint64_t bytes, KilnBuffer *out) {
    Buffer *b = malloc(sizeof *b);
    (void)dev;
    if (!b) return fail(KILN_OUT_OF_MEMORY, "no memory for a buffer");
    b->bytes = bytes;
    b->data = calloc((size_t)bytes + 1, 1);
    if (!b->data) {
        free(b);
        return fail(KILN_OUT_OF_MEMORY, "cannot allocate %llu bytes", (unsigned long long)bytes);
    }
    *out = b;
    return KILN_OK;
}

static void dev_free_buffer(void *dev, KilnBuffer buf) {
    Buffer *b = (Buffer *)buf;
    (void)dev;
    if (b) {
        free(b->data);
        free(b);
    }
}

static KilnStatus dev_write_buffer(void *dev, KilnBuffer buf, uint64_t offset, const uint8_t *src,
                                   uint64_t len) {
    Buffer *b = (Buffer *)buf;
    (void)dev;
    if (!b || offset + len > b->bytes) return fail(KILN_INVALID_ARGUMENT, "write outside the buffer");
    if (len) memcpy(b->data + offset, src, (size_t)len);
    return KILN_OK;
}

static KilnStatus dev_read_buffer(void *dev, KilnBuffer buf, uint64_t offset, uint8_t *dst,
                                  uint64_t len) {
    Buffer *b = (Buffer *)buf;
    (void)dev;
    if (!b || offset + len > b->bytes) return fail(KILN_INVALID_ARGUMENT, "read outside the buffer");
    if (len) memcpy(dst, b->data + offset, (size_t)len);
    return KILN_OK;
}

static KilnStatus dev_copy_buffer(void *dev, const KilnBufferCopy *copy) {
    Buffer *s = (Buffer *)copy->src, *d = (Buffer *)copy->dst;
    (void)dev;
    if (!s || !d || copy->src_offset + copy->len > s->bytes || copy->dst_offset + copy->len > d->bytes) {
        return fail(KILN_INVALID_ARGUMENT, "copy outside a buffer");
    }
    memmove(d->data + copy->dst_offset, s->data + copy->src_offset, (size_t)copy->len);
    return KILN_OK;
}

static KilnStatus dev_synchronize(void *dev) {
    (void)dev; /* every operation finished before execute returned */
    return KILN_OK;
}

static float bf16_to_f32(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &wide, sizeof f);
    return f;
}

static KilnStatus dev_prepare_weight(void *dev, const KilnWeightDesc *desc, KilnWeight *out) {
    const KilnWeightPart *data = NULL;
    Weight *w;
    uint64_t n = desc->rows * desc->cols, i;
    uint32_t p;
    (void)dev;
    if (desc->format != KILN_WEIGHT_F32 && desc->format != KILN_WEIGHT_BF16) {
        return fail(KILN_UNSUPPORTED, "weight %s: the C backend takes only f32 and bf16 weights",
                    desc->name ? desc->name : "?");
    }
    for (p = 0; p < desc->n_parts; p++) {
        if (desc->parts[p].role == KILN_PART_DATA) data = &desc->parts[p];
    }
    if (!data || data->len < n * (desc->format == KILN_WEIGHT_F32 ? 4 : 2)) {
        return fail(KILN_INVALID_ARGUMENT, "weight %s has too little data",
                    desc->name ? desc->name : "?");
    }
    w = malloc(sizeof *w);
    if (!w) return fail(KILN_OUT_OF_MEMORY, "no memory for a weight");
    w->rows = desc->rows;
    w->cols = desc->cols;
    w->values = malloc((size_t)n * sizeof(float) + 1);
    if (!w->values) {
        free(w);
        return fail(KILN_OUT_OF_MEMORY, "no memory for weight %s", desc->name ? desc->name : "?");
    }
    if (desc->format == KILN_WEIGHT_F32) {
        memcpy(w->values, data->data, (size_t)n * sizeof(float));
    } else {
        for (i = 0; i < n; i++) {
            uint16_t bits;
            memcpy(&bits, data->data + 2 * i, 2);
            w->values[i] = bf16_to_f32(bits);
        }
    }
    *out = w;
    return KILN_OK;
}

static void dev_release_weight(void *dev, KilnWeight weight) {
    Weight *w = (Weight *)weight;
    (void)dev;
    if (w) {
        free(w->values);
        free(w);
    }
}

static int32_t dev_supports(void *dev, const KilnSupportQuery *query) {
    int weight_ok = query->weight_format == KILN_WEIGHT_NONE ||
                    query->weight_format == KILN_WEIGHT_F32 ||
                    query->weight_format == KILN_WEIGHT_BF16;
    (void)dev;
    return op_supported(query->opcode) && weight_ok && query->act_dtype == KILN_F32;
}

static KilnStatus dev_execute(void *dev, const KilnOp *ops, uint64_t n) {
    uint64_t i;
    (void)dev;
    for (i = 0; i < n; i++) {
        KilnStatus status = run_op(&ops[i]);
        if (status != KILN_OK) return status;
    }
    return KILN_OK;
}

/* Graph entries stay NULL: the host runs this device eagerly. */
static const KilnDeviceVtable device_table = {
    sizeof(KilnDeviceVtable),
    dev_close,
    dev_memory_info,
    dev_alloc_buffer,
    dev_free_buffer,
    dev_write_buffer,
    dev_read_buffer,
    dev_copy_buffer,
    dev_synchronize,
    dev_prepare_weight,
    dev_release_weight,
    dev_supports,
    dev_execute,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* ---- The backend ---------------------------------------------------------- */

static uint32_t backend_device_count(void) { return 1; }

static KilnStatus backend_device_info(uint32_t index, KilnDeviceInfo *out) {
    uint64_t free_bytes, total;
    if (index != 0) return fail(KILN_INVALID_ARGUMENT, "the C backend has one device");
    dev_memory_info(NULL, &free_bytes, &total);
    out->kind = KILN_DEVICE_CPU;
    out->memory_total = total;
    out->memory_free = free_bytes;
    out->capabilities = KILN_CAP_HOST_MEMORY;
    out->compute_capability = 0;
    out->parallelism = 1;
    snprintf((char *)out->name, sizeof out->name, "c0");
    snprintf((char *)out->description, sizeof out->description, "scalar C, f32");
    return KILN_OK;
}

static KilnStatus backend_open_device(uint32_t index, const char *params_json, KilnDevice *out) {
    Device *dev;
    (void)params_json;
    if (index != 0) return fail(KILN_INVALID_ARGUMENT, "the C backend has one device");
    dev = calloc(1, sizeof *dev);
    if (!dev) return fail(KILN_OUT_OF_MEMORY, "no memory for the device");
    out->handle = dev;
    out->vtable = &device_table;
    return KILN_OK;
}

static const char *backend_last_error(void) {
    return last_error_text[0] ? last_error_text : NULL;
}

static const KilnBackendRegistration registration = {
    sizeof(KilnBackendRegistration),
    KILN_ABI_VERSION,
    "c",
    backend_device_count,
    backend_device_info,
    backend_open_device,
    backend_last_error,
    NULL,
};

uint32_t kiln_plugin_abi_version(void) { return KILN_ABI_VERSION; }

int32_t kiln_backend_score(void) { return 1; }

const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *host) {
    (void)host;
    return &registration;
}

const char *kiln_backend_last_error(void) { return backend_last_error(); }
