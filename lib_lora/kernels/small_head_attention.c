/*
 * Exact softmax attention for head sizes 4 and 8, fp32, on the CPU.
 *
 * Why: with head sizes this small (tiny models, e.g. the test and benchmark ones) PyTorch's
 * CPU flash attention spends its time in matrix products whose inner dimension is 4 or 8, and
 * its backward is about 3x its forward; this is 2-4x faster there. From head size 16 on,
 * PyTorch's is faster, so callers only send 4 and 8 here. Here one query row at a time meets all keys, 16 keys
 * per vector, with every per-pair quantity (score, probability, dP, dS) kept in registers:
 * forward and backward each make one pass over the keys per query row.
 *
 * Layout: q, o, dq are [batch][nq][heads][d] and k, v, dk, dv are [batch][nk][heads][d]
 * (what a projection's output is before the heads are split, so no transposes are needed);
 * lse is [batch * heads][nq]. A call handles flat heads h0 <= h < h1 (h = b * heads + head),
 * so callers can split heads across threads; every head is computed by one thread, in a fixed
 * order, so results do not depend on the thread count.
 *
 * Written with GCC/Clang vector extensions: 16-float vectors become AVX-512, 2x AVX2 or 4x SSE.
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

#define W 16
typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));
#define INLINE static inline __attribute__((always_inline))

INLINE vf splat(float x) { return (vf){0} + x; }
INLINE vf vmax(vf a, vf b) { vi m = a > b; return (vf)((m & (vi)a) | (~m & (vi)b)); }
INLINE float hsum(vf a) { float s = 0.0f; for (int l = 0; l < W; l++) s += a[l]; return s; }
INLINE float hmax(vf a) { float s = a[0]; for (int l = 1; l < W; l++) s = a[l] > s ? a[l] : s; return s; }

/* 2^x for x <= 0, within about 2 ulp: 2^n * 2^r with n = round(x), |r| <= 1/2, 2^r by its
 * degree-6 Taylor polynomial; below -126 the result is about 1e-38 (no denormals). Scores are
 * kept in base 2 (q is pre-scaled by log2(e)), which saves the range reduction by ln 2. */
INLINE vf vexp2(vf x) {
    x = vmax(x, splat(-126.0f));
    const vf round_shift = splat(12582912.0f);  /* 1.5 * 2^23: adding it rounds to an integer */
    vf n = (x + round_shift) - round_shift;
    vf r = x - n;
    vf p = splat(1.5403530e-4f);                /* (ln 2)^k / k!, k = 6 .. 0 */
    p = p * r + 1.3333558e-3f;
    p = p * r + 9.6181291e-3f;
    p = p * r + 5.5504109e-2f;
    p = p * r + 2.4022651e-1f;
    p = p * r + 6.9314718e-1f;
    p = p * r + 1.0f;
    vi exponent = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)exponent;
}

#define LOG2E 1.44269504f

/* Keys are stored in blocks of W: block jb holds `fields` groups of d vectors (k, v, and in the
 * backward dk, dv), lane l of vector c of a group being channel c of key jb * W + l. One block's
 * data is contiguous, so the streams never sit 4 KiB apart (which stalls loads behind stores). */
INLINE void load_keys(const float *src, size_t stride, vf *blocks, int fields, int field, int n, const int d) {
    for (int j = 0; j < n; j++) {
        float *lane = (float *)(blocks + (size_t)(j / W) * fields * d + field * d) + j % W;
        for (int c = 0; c < d; c++) lane[c * W] = src[j * stride + c];
    }
}

INLINE void store_keys(const vf *blocks, float *dst, size_t stride, int fields, int field, int n, const int d) {
    for (int j = 0; j < n; j++) {
        const float *lane = (const float *)(blocks + (size_t)(j / W) * fields * d + field * d) + j % W;
        for (int c = 0; c < d; c++) dst[j * stride + c] = lane[c * W];
    }
}

/* 0 for real keys, -1e30 for the padding lanes of the last block: added to scores. */
INLINE void padding_bias(vf *bias, int n, int blocks) {
    float *out = (float *)bias;
    for (int j = 0; j < blocks * W; j++) out[j] = j < n ? 0.0f : -1e30f;
}

typedef struct {
    int nq, nk;
    size_t q_stride, k_stride;  /* floats between consecutive rows of one head */
    float scale;
} Shape;

INLINE void forward_head(const float *q, const float *k, const float *v, float *o, float *lse2,
                         Shape sh, const int d, vf *work) {
    const int blocks = (sh.nk + W - 1) / W;
    vf *kv = work, *bias = kv + (size_t)blocks * 2 * d, *scores = bias + blocks;
    memset(kv, 0, sizeof(vf) * (size_t)blocks * 2 * d);
    load_keys(k, sh.k_stride, kv, 2, 0, sh.nk, d);
    load_keys(v, sh.k_stride, kv, 2, 1, sh.nk, d);
    padding_bias(bias, sh.nk, blocks);
    for (int i = 0; i < sh.nq; i++) {
        const float *qi = q + i * sh.q_stride;
        float ql[d];
        vf acc[d];
        for (int c = 0; c < d; c++) { ql[c] = qi[c] * sh.scale * LOG2E; acc[c] = splat(0.0f); }
        vf best = splat(-1e30f);
        for (int jb = 0; jb < blocks; jb++) {  /* pass 1: scores (base 2) and their maximum */
            const vf *kb = kv + (size_t)jb * 2 * d;
            vf s = bias[jb];
            for (int c = 0; c < d; c++) s += ql[c] * kb[c];
            scores[jb] = s;
            best = vmax(best, s);
        }
        const float row_max = hmax(best);
        vf total = splat(0.0f);
        for (int jb = 0; jb < blocks; jb++) {  /* pass 2: probabilities times values */
            const vf *vb = kv + (size_t)jb * 2 * d + d;
            vf p = vexp2(scores[jb] - row_max);
            total += p;
            for (int c = 0; c < d; c++) acc[c] += p * vb[c];
        }
        const float sum = hsum(total), inv = 1.0f / sum;
        float *oi = o + i * sh.q_stride;
        for (int c = 0; c < d; c++) oi[c] = hsum(acc[c]) * inv;
        lse2[i] = row_max + log2f(sum);
    }
}

/* dP = dO V^T, dS = P * (dP - rowsum(dO * O)); dQ = dS K * scale, dK = dS^T Q * scale, dV = P^T dO. */
INLINE void backward_head(const float *q, const float *k, const float *v, const float *o, const float *go,
                          const float *lse2, float *dq, float *dk, float *dv, Shape sh, const int d, vf *work) {
    const int blocks = (sh.nk + W - 1) / W;
    vf *kv = work, *bias = kv + (size_t)blocks * 4 * d;
    memset(kv, 0, sizeof(vf) * (size_t)blocks * 4 * d);
    load_keys(k, sh.k_stride, kv, 4, 0, sh.nk, d);
    load_keys(v, sh.k_stride, kv, 4, 1, sh.nk, d);
    padding_bias(bias, sh.nk, blocks);
    for (int i = 0; i < sh.nq; i++) {
        const float *qi = q + i * sh.q_stride, *gi = go + i * sh.q_stride, *oi = o + i * sh.q_stride;
        float qn[d], ql[d], g[d], delta = 0.0f;
        vf dq_acc[d];
        for (int c = 0; c < d; c++) {
            qn[c] = qi[c] * sh.scale; ql[c] = qn[c] * LOG2E; g[c] = gi[c]; dq_acc[c] = splat(0.0f);
            delta += g[c] * oi[c];
        }
        const float row_lse = lse2[i];
        for (int jb = 0; jb < blocks; jb++) {
            vf *blk = kv + (size_t)jb * 4 * d, *kb = blk, *vb = blk + d, *dkb = blk + 2 * d, *dvb = blk + 3 * d;
            vf s = bias[jb] - row_lse, dp = splat(-delta);
            for (int c = 0; c < d; c++) { s += ql[c] * kb[c]; dp += g[c] * vb[c]; }
            vf p = vexp2(s), ds = p * dp;
            for (int c = 0; c < d; c++) {
                dq_acc[c] += ds * kb[c];
                dkb[c] += ds * qn[c];
                dvb[c] += p * g[c];
            }
        }
        float *dqi = dq + i * sh.q_stride;
        for (int c = 0; c < d; c++) dqi[c] = hsum(dq_acc[c]) * sh.scale;
    }
    store_keys(kv, dk, sh.k_stride, 4, 2, sh.nk, d);
    store_keys(kv, dv, sh.k_stride, 4, 3, sh.nk, d);
}

/* One compiled copy per head size, so the channel loops unroll and stay in registers. */
#define HEAD_SIZES(X) X(4) X(8)
#define DEFINE_FOR(D) \
    static void forward_##D(const float *q, const float *k, const float *v, float *o, float *lse, Shape sh, \
                            vf *work) { forward_head(q, k, v, o, lse, sh, D, work); } \
    static void backward_##D(const float *q, const float *k, const float *v, const float *o, const float *go, \
                             const float *lse, float *dq, float *dk, float *dv, Shape sh, vf *work) { \
        backward_head(q, k, v, o, go, lse, dq, dk, dv, sh, D, work); }
HEAD_SIZES(DEFINE_FOR)

static int supported(int d) {
#define IS_SIZE(D) if (d == D) return 1;
    HEAD_SIZES(IS_SIZE)
    return 0;
}

/* Each calling thread keeps its work buffer: allocating one per call would take fresh pages
 * from the OS each time (large blocks are mmap-ed), and unmapping them from two threads at
 * once stalls both. */
static _Thread_local vf *thread_work = NULL;
static _Thread_local size_t thread_work_count = 0;

static vf *work_vectors(size_t count) {
    if (count > thread_work_count) {
        free(thread_work);
        thread_work = aligned_alloc(sizeof(vf), count * sizeof(vf));
        thread_work_count = thread_work ? count : 0;
    }
    return thread_work;
}

/* The threads a call splits heads over: torch's thread count when the OpenMP runtime is torch's. */
int sha_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Where flat head h (= b * heads + head) starts in a [batch][rows][heads][d] array. */
static size_t head_start(int h, int heads, int rows, int d) {
    return (size_t)(h / heads) * rows * heads * d + (size_t)(h % heads) * d;
}

/* Returns 0 on success, 1 when out of memory, 2 for an unsupported head size. */
int sha_forward(const float *q, const float *k, const float *v, float *o, float *lse,
                int h0, int h1, int heads, int nq, int nk, int d, float scale) {
    if (!supported(d)) return 2;
    const int blocks = (nk + W - 1) / W;
    Shape sh = {nq, nk, (size_t)heads * d, (size_t)heads * d, scale};
    int failed = 0;
    #pragma omp parallel for schedule(static) reduction(|:failed)
    for (int h = h0; h < h1; h++) {
        vf *work = work_vectors((size_t)(2 * d + 2) * blocks);
        if (!work) { failed = 1; continue; }
        const size_t qo = head_start(h, heads, nq, d), ko = head_start(h, heads, nk, d);
        float *row_lse = lse + (size_t)h * nq;
        switch (d) {
#define CALL_FORWARD(D) case D: forward_##D(q + qo, k + ko, v + ko, o + qo, row_lse, sh, work); break;
            HEAD_SIZES(CALL_FORWARD)
        }
    }
    return failed;
}

int sha_backward(const float *q, const float *k, const float *v, const float *o, const float *go,
                 const float *lse, float *dq, float *dk, float *dv,
                 int h0, int h1, int heads, int nq, int nk, int d, float scale) {
    if (!supported(d)) return 2;
    const int blocks = (nk + W - 1) / W;
    Shape sh = {nq, nk, (size_t)heads * d, (size_t)heads * d, scale};
    int failed = 0;
    #pragma omp parallel for schedule(static) reduction(|:failed)
    for (int h = h0; h < h1; h++) {
        vf *work = work_vectors((size_t)(4 * d + 1) * blocks);
        if (!work) { failed = 1; continue; }
        const size_t qo = head_start(h, heads, nq, d), ko = head_start(h, heads, nk, d);
        const float *row_lse = lse + (size_t)h * nq;
        switch (d) {
#define CALL_BACKWARD(D) case D: backward_##D(q + qo, k + ko, v + ko, o + qo, go + qo, row_lse, \
                                              dq + qo, dk + ko, dv + ko, sh, work); break;
            HEAD_SIZES(CALL_BACKWARD)
        }
    }
    return failed;
}
