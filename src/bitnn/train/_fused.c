/* Fused passes over round 2's latent weights W for training at precision bfloat16 and
 * float32-fast (bitnn.train.layers). PyTorch takes three to four passes over the weights for
 * each of these, and with four layers of millions of weights they cost as much per step as
 * the matmuls; here each is one pass.
 *
 *   signs(W, t)       -> sign(W) as int8 (the forward's exact int8 product) and as bfloat16
 *                        (the backward's bfloat16 product), +1 where W >= 0 (also -0), else
 *                        -1, and 0 where |W| < t (absent weights; t = 0 keeps them all).
 *   signs_float(W, t) -> the same signs as float32 (float32-fast: float32 matmuls), but NaN
 *                        +1 as in float32's PyTorch ops (it is -1 in the int8 path's).
 *   tanh(X)           -> tanh(X): round 1's weight compression and activations at float32-fast
 *                        (on a 1024 x 1568 matrix on an AVX2 CPU: 1.5 ms on one thread, where
 *                        PyTorch's tanh took 5.4 ms on one thread and 2.6 ms on two).
 *   tanh_grad(G, W)   -> float(G) * (1 - tanh(W)^2): the gradient of sign(tanh(W)) taken
 *                        straight through tanh, from G = dL/dsign in bfloat16;
 *                        tanh_grad_float takes G in float32.
 *   pack_signs(X)     -> the rows of X as bits for the engine's XNOR-popcount layer kernel
 *                        (float32-fast's exact round-2 forward): bit j of row r is 1 where
 *                        X[r][j] is not negative (-0 and NaN count as +1, as float32's signs),
 *                        LSB first in 64-bit words; also a mask of X != 0 (the inputs
 *                        dropout kept) and each row's count of those.
 *   weight_pass(W)    -> for float32-fast's popcount forward, in one pass over the latent W
 *                        (rows x cols): its sign bits as pack_signs packs them and
 *                        1 - tanh(W)^2 (the backward multiplies the weight gradient by it:
 *                        tanh_grad's values).
 *   shift_codes(X)    -> a batch of images moved by whole pixels (0 where they come from
 *                        outside) and binarized at once: each pixel's code is the row of a
 *                        +1/-1 table picked by how many of its edges the value reaches (the
 *                        trainer's shift augmentation; PyTorch's pad, two gathers, compare and
 *                        convert take 1.4 ms on a batch of 400 MNIST images, this 0.23 ms).
 *   keep_mask(n, key) -> dropout's keep mask as bytes (1: kept): element i is kept where the
 *                        16-bit slice i % 4 of SplitMix64's output number i / 4 for the key (a
 *                        counter-based generator: element i needs no state but i) is at least a
 *                        threshold, as an int16; the same bits on any thread count. PyTorch's
 *                        CPU generator runs serially: 2.3 ms of a 45 ms round-2 step for the
 *                        four masks of the MNIST paper network at batch 400.
 *   dropout(H, key)   -> keep_mask's bytes and (H * keep) * scale in one pass (keep_mask and
 *                        PyTorch's two products, the same bits, took 0.79 ms for MNIST's
 *                        400 x 1568 input bits on two AVX2 cores, this 0.29 ms);
 *                        dropout_grad(G, keep) -> (G * scale) * keep, its backward.
 *   bipolar(X)        -> whether every value is +1 or -1 (round 1 multiplies the network's
 *                        input bits by table lookups where they are).
 *
 * tanh is bitnn's own vector code (below), within 2.5 units in the last place of the exact
 * tanh, in an AVX2 + FMA variant and an SSE one, the widest the CPU runs. tanh, tanh_grad,
 * tanh_grad_float and weight_pass split large calls over set_threads(n) threads (each part
 * starts at a multiple of 64 elements or at a row, so every element goes through the same
 * vector code and the results are the same bits for any count); keep_mask, dropout and
 * dropout_grad split the same way. Until session 18 the first four ran on one
 * thread: a second one was slower, not faster, next to PyTorch's OpenMP workers spinning after
 * each op (2 cores, the four MNIST layers' tanh' with cold caches: 2.5 ms on one thread, 4.0 ms
 * on two); bitnn.train._torch now shortens that spin (GOMP_SPINCOUNT). Addresses come from
 * Python (bitnn.train.layers checks dtypes, sizes and contiguity); the GIL is released while
 * the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

/* ---- tanh ---------------------------------------------------------------------------------- */
/* tanh and 1 - tanh^2 by one formula in GCC's vector types (8 lanes), the same source in every
 * variant: tanh(a) = -m / (m + 2) for a = |x| (the sign put back after), m = expm1(-2a), a
 * clamped to 10 (tanh is 1 in float32 there; no overflow below). expm1(y) = 2^n (1 + p(r)) - 1
 * for y = n ln2 + r, |r| <= ln2 / 2, with p = r + r^2 q(r), q a degree-4 polynomial fitted to
 * expm1's (relative error 1.7e-8); near 0 (n = 0) m is p itself, so small arguments keep their
 * relative precision. Within 2.5 units in the last place of the exact tanh over all float32
 * from 2^-126 to 12 (glibc's libmvec tanhf, which this replaced, within 1.0), in 0.57 ns a value
 * on one Zen 4 thread against libmvec's 0.92 ns (AVX2 variants, 32K values in cache or 4M
 * not). The avx2 variant fuses the multiply-adds (the compiler contracts a * b + c where the
 * target has FMA); the sse variant rounds them separately (within 3 units), so the two may
 * differ in the last places. */
#pragma GCC diagnostic ignored "-Wpsabi" /* vectors passed by value: always inlined */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
#define INLINE static inline __attribute__((always_inline))

INLINE v8f splat(float f) { return (v8f){0} + f; }
/* Loads and stores of m <= 8 lanes, the rest of a load zero: the last partial vector of an
 * array goes through the same vector code as the others (with m = 8 spelled as a constant the
 * copies are single vector moves). */
INLINE v8f load8(const float *p, int64_t m) {
    v8f v = {0};
    memcpy(&v, p, (size_t)m * sizeof *p);
    return v;
}
INLINE void store8(float *p, v8f v, int64_t m) { memcpy(p, &v, (size_t)m * sizeof *p); }
INLINE v8f load8_bf16(const uint16_t *p, int64_t m) { /* bfloat16: a float32's upper half */
    v8h h = {0};
    memcpy(&h, p, (size_t)m * sizeof *p);
    return (v8f)(__builtin_convertvector(h, v8i) << 16);
}

INLINE v8f tanh8(v8f x) {
    const v8i sign = (v8i){0} + INT32_MIN;
    v8f a = (v8f)((v8i)x & ~sign);
    v8i big = a > 10.0f; /* false for NaN, which stays NaN */
    a = (v8f)((big & (v8i)splat(10.0f)) | (~big & (v8i)a));
    v8f y = a * -2.0f;
    const v8f magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v8f n = (y * 1.44269504f + magic) - magic;
    v8f r = (y - n * 0.693145752f) - n * 1.42860677e-6f; /* ln2 in two parts, n * the first exact */
    v8f q = splat(1.38825225e-3f);
    q = q * r + 8.36651400e-3f;
    q = q * r + 4.16672006e-2f;
    q = q * r + 1.66665435e-1f;
    q = q * r + 4.99999970e-1f;
    v8f p = r + (r * r) * q;                                  /* expm1(r) */
    v8f s = (v8f)((__builtin_convertvector(n, v8i) + 127) << 23); /* 2^n, n in [-29, 0] */
    v8f m = s * p + (s - 1.0f);                               /* s - 1 is exact */
    v8f t = -m / (m + 2.0f);
    return (v8f)(((v8i)t & ~sign) | ((v8i)x & sign));
}

INLINE v8f dtanh8(v8f x) { /* 1 - tanh(x)^2, 0 where tanh rounds to +-1 (as PyTorch's) */
    v8f t = tanh8(x);
    return 1.0f - t * t;
}

/* One set of passes per variant (ATTR: its target): tanh, tanh_grad (G in bfloat16) and
 * tanh_grad_float. EACH8 runs STEP(i, m) on whole vectors, then on the last m < 8 elements. */
#define EACH8(n, STEP)                                                                         \
    int64_t i = 0;                                                                             \
    for (; i + 8 <= n; i += 8) STEP(i, 8);                                                     \
    if (i < n) STEP(i, n - i);
#define TANH_STEP(i, m) store8(out + i, tanh8(load8(x + i, m)), m)
#define TANH_GRAD_STEP(i, m) store8(out + i, load8_bf16(g + i, m) * dtanh8(load8(w + i, m)), m)
#define TANH_GRAD_FLOAT_STEP(i, m) store8(out + i, load8(g + i, m) * dtanh8(load8(w + i, m)), m)
#define TANH_PASSES(V, ATTR)                                                                   \
    ATTR static void tanh_##V(const float *x, float *out, int64_t n) { EACH8(n, TANH_STEP) }  \
    ATTR static void tanh_grad_##V(const float *w, const uint16_t *g, float *out, int64_t n) { \
        EACH8(n, TANH_GRAD_STEP)                                                               \
    }                                                                                          \
    ATTR static void tanh_grad_float_##V(const float *w, const float *g, float *out,           \
                                         int64_t n) {                                          \
        EACH8(n, TANH_GRAD_FLOAT_STEP)                                                         \
    }

TANH_PASSES(sse, )
TANH_PASSES(avx2, __attribute__((target("avx2,fma"))))

typedef void (*tanh_fn)(const float *x, float *out, int64_t n);
typedef void (*tanh_grad_fn)(const float *w, const uint16_t *g, float *out, int64_t n);
typedef void (*tanh_grad_float_fn)(const float *w, const float *g, float *out, int64_t n);

/* Plain loops: the compiler vectorizes them for each target; the results are exact. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void signs_loop(
    const float *w, int8_t *s8, uint16_t *s16, int64_t n, float t) {
    for (int64_t i = 0; i < n; i++) {
        int pos = w[i] >= 0.0f; /* -0 counts as positive, NaN as negative, as torch.ge */
        int absent = __builtin_fabsf(w[i]) < t; /* never for t = 0, nor for NaN */
        s8[i] = absent ? 0 : pos ? 1 : -1;
        s16[i] = absent ? 0 : pos ? 0x3F80 : 0xBF80; /* bfloat16 0, +1, -1 */
    }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static void signs_float_loop(
    const float *w, float *out, int64_t n, float t) {
    for (int64_t i = 0; i < n; i++) /* NaN +1 here, as PyTorch's sign-based float32 path */
        out[i] = __builtin_fabsf(w[i]) < t ? 0.0f : w[i] < 0.0f ? -1.0f : 1.0f;
}

/* ---- pack_signs ---------------------------------------------------------------------------- */

/* Bits of s[0..n) (n <= 64): sign bit !(v < 0), mask bit v != 0 (NaN: present). */
static inline void pack_tail(const float *s, int64_t n, uint64_t *b, uint64_t *m) {
    uint64_t bw = 0, mw = 0;
    for (int64_t j = 0; j < n; j++) {
        bw |= (uint64_t)!(s[j] < 0.0f) << j;
        mw |= (uint64_t)(s[j] != 0.0f) << j;
    }
    *b = bw;
    *m = mw;
}

typedef void (*pack_fn)(const float *src, int64_t rows, int64_t cols, uint64_t *bits,
                        uint64_t *mask, int64_t *counts);

/* One pack loop per variant: FULL sets b and m from the 64 floats at s + 64 * k (the row's
 * last partial word goes through pack_tail). */
#define PACK_LOOP(FULL)                                                                        \
    int64_t words = (cols + 63) / 64;                                                          \
    for (int64_t r = 0; r < rows; r++) {                                                       \
        const float *s = src + r * cols;                                                       \
        int64_t count = 0;                                                                     \
        for (int64_t k = 0; k < words; k++) {                                                  \
            uint64_t b = 0, m = 0;                                                             \
            if (cols - 64 * k >= 64)                                                           \
                FULL                                                                           \
            else                                                                               \
                pack_tail(s + 64 * k, cols - 64 * k, &b, &m);                                  \
            bits[r * words + k] = b;                                                           \
            mask[r * words + k] = m;                                                           \
            count += __builtin_popcountll(m);                                                  \
        }                                                                                      \
        counts[r] = count;                                                                     \
    }

static void pack_portable(const float *src, int64_t rows, int64_t cols, uint64_t *bits,
                          uint64_t *mask, int64_t *counts) {
    PACK_LOOP({ pack_tail(s + 64 * k, 64, &b, &m); })
}

/* 8 floats per compare, their sign bits by movemask: 64 bits from 8 loads. */
__attribute__((target("avx2,popcnt"))) static void pack_avx2(const float *src, int64_t rows,
                                                             int64_t cols, uint64_t *bits,
                                                             uint64_t *mask, int64_t *counts) {
    const __m256 zero = _mm256_setzero_ps();
    PACK_LOOP({
        for (int c = 0; c < 8; c++) {
            __m256 v = _mm256_loadu_ps(s + 64 * k + 8 * c);
            uint64_t nb = (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NLT_UQ));
            uint64_t nm = (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
            b |= nb << (8 * c);
            m |= nm << (8 * c);
        }
    })
}

/* ---- weight_pass --------------------------------------------------------------------------- */

/* One loop per variant. Each 64-weight word goes through BODY from src (the weights,
 * or a zero-padded copy of a row's last partial word), which sets LANES sign bits in b at c
 * (!(w < 0)) and LANES values 1 - tanh(w)^2 at dst + c; the padding's bits are cleared and only
 * the row's own values copied out. */
#define WEIGHT_PASS_LOOP(LANES, BODY)                                                         \
    int64_t words = (cols + 63) / 64;                                                          \
    for (int64_t r = 0; r < rows; r++) {                                                       \
        for (int64_t k = 0; k < words; k++) {                                                  \
            int64_t j0 = 64 * k, n = cols - j0 < 64 ? cols - j0 : 64;                          \
            float wbuf[64], dbuf[64];                                                          \
            const float *src = w + r * cols + j0;                                              \
            float *dst = dtanh + r * cols + j0;                                                \
            if (n < 64) {                                                                      \
                memset(wbuf, 0, sizeof wbuf);                                                  \
                memcpy(wbuf, src, (size_t)n * sizeof *w);                                      \
                src = wbuf;                                                                    \
                dst = dbuf;                                                                    \
            }                                                                                  \
            uint64_t b = 0;                                                                    \
            for (int c = 0; c < 64; c += LANES) BODY                                           \
            if (n < 64) {                                                                      \
                b &= (1ULL << n) - 1;                                                          \
                memcpy(dtanh + r * cols + j0, dbuf, (size_t)n * sizeof *w);                    \
            }                                                                                  \
            bits[r * words + k] = b;                                                           \
        }                                                                                      \
    }

typedef void (*weight_pass_fn)(const float *w, int64_t rows, int64_t cols, uint64_t *bits,
                               float *dtanh);

static void weight_pass_sse(const float *w, int64_t rows, int64_t cols, uint64_t *bits,
                            float *dtanh) {
    WEIGHT_PASS_LOOP(8, {
        v8f v = load8(src + c, 8);
        v8i neg = v < 0.0f;
        store8(dst + c, dtanh8(v), 8);
        for (int l = 0; l < 8; l++) b |= (uint64_t)(neg[l] == 0) << (c + l);
    })
}

__attribute__((target("avx2,fma"))) static void weight_pass_avx2(const float *w, int64_t rows,
                                                                  int64_t cols, uint64_t *bits,
                                                                  float *dtanh) {
    WEIGHT_PASS_LOOP(8, {
        v8f v = load8(src + c, 8);
        store8(dst + c, dtanh8(v), 8);
        b |= (uint64_t)_mm256_movemask_ps((__m256)~(v < 0.0f)) << c;
    })
}

/* __builtin_cpu_supports takes only string literals: one check function per feature */
static int runs_sse(void) { return 1; } /* part of x86-64 */
static int runs_avx2(void) {
    return __builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* The variants, narrowest first; the widest one the CPU runs is used unless a test names one. */
static const struct {
    const char *name;
    int (*runs)(void);
    tanh_fn tanh;
    tanh_grad_fn tanh_grad;
    tanh_grad_float_fn tanh_grad_float;
    pack_fn pack;
    weight_pass_fn weight_pass;
} VARIANTS[] = {
    {"sse", runs_sse, tanh_sse, tanh_grad_sse, tanh_grad_float_sse, pack_portable,
     weight_pass_sse},
    {"avx2", runs_avx2, tanh_avx2, tanh_grad_avx2, tanh_grad_float_avx2, pack_avx2,
     weight_pass_avx2},
};
#define N_VARIANTS ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

static int supported(int v) { return VARIANTS[v].runs(); }

/* The variant named (ValueError if this CPU lacks it), else the widest this CPU runs; -1 on
 * error. */
static int pick_variant(const char *name, const char *what) {
    int v;
    if (name) {
        for (v = 0; v < N_VARIANTS && strcmp(VARIANTS[v].name, name) != 0; v++) {}
        if (v == N_VARIANTS || !supported(v)) {
            PyErr_Format(PyExc_ValueError, "%s: no variant %s on this CPU", what, name);
            return -1;
        }
        return v;
    }
    for (v = N_VARIANTS - 1; v > 0 && !supported(v); v--) {}
    return v;
}

/* ---- splitting a call over threads --------------------------------------------------------- */

static int fused_threads = 1; /* set_threads(n): training sets PyTorch's thread count */
#define MAX_PARTS 64
#define MIN_PART 65536 /* elements: below this a thread's start costs more than it saves */

typedef struct split_job split_job;
struct split_job {
    void (*run)(const split_job *, int64_t lo, int64_t hi); /* elements (rows) lo..hi-1 */
    int v;
    const void *in1, *in2;
    void *out1, *out2;
    int64_t cols;
};

typedef struct {
    const split_job *job;
    int64_t lo, hi;
} split_part;

static void *split_thread(void *arg) {
    split_part *p = arg;
    p->job->run(p->job, p->lo, p->hi);
    return NULL;
}

/* Runs job over 0..n-1 in up to fused_threads parts of at least MIN_PART elements (each row
 * counts as `per` elements), part boundaries at multiples of `align`; part 0 on this thread,
 * and a part whose thread does not start runs here too. */
static void run_split(const split_job *job, int64_t n, int64_t align, int64_t per) {
    int64_t units = (n + align - 1) / align, most = n * per / MIN_PART;
    int parts = fused_threads < MAX_PARTS ? fused_threads : MAX_PARTS;
    if (most < parts) parts = most < 1 ? 1 : (int)most;
    if (units < parts) parts = units < 1 ? 1 : (int)units;
    split_part part[MAX_PARTS];
    pthread_t thread[MAX_PARTS];
    int started[MAX_PARTS] = {0};
    for (int i = 0; i < parts; i++) {
        int64_t lo = units * i / parts * align, hi = units * (i + 1) / parts * align;
        part[i] = (split_part){job, lo < n ? lo : n, hi < n ? hi : n};
    }
    for (int i = 1; i < parts; i++)
        started[i] = pthread_create(&thread[i], NULL, split_thread, &part[i]) == 0;
    job->run(job, part[0].lo, part[0].hi);
    for (int i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(thread[i], NULL);
        else
            job->run(job, part[i].lo, part[i].hi);
    }
}

static void run_tanh(const split_job *j, int64_t lo, int64_t hi) {
    VARIANTS[j->v].tanh((const float *)j->in1 + lo, (float *)j->out1 + lo, hi - lo);
}

static void run_tanh_grad(const split_job *j, int64_t lo, int64_t hi) {
    VARIANTS[j->v].tanh_grad((const float *)j->in1 + lo, (const uint16_t *)j->in2 + lo,
                             (float *)j->out1 + lo, hi - lo);
}

static void run_tanh_grad_float(const split_job *j, int64_t lo, int64_t hi) {
    VARIANTS[j->v].tanh_grad_float((const float *)j->in1 + lo, (const float *)j->in2 + lo,
                                   (float *)j->out1 + lo, hi - lo);
}

static void run_weight_pass(const split_job *j, int64_t lo, int64_t hi) {
    int64_t cols = j->cols, words = (cols + 63) / 64;
    VARIANTS[j->v].weight_pass((const float *)j->in1 + lo * cols, hi - lo, cols,
                               (uint64_t *)j->out1 + lo * words, (float *)j->out2 + lo * cols);
}

typedef struct {
    split_job base; /* first: run_split passes a split_job; in1: h or NULL, out1: the mask */
    uint64_t key;
    int threshold;
    float scale;
} keep_job;

typedef uint64_t v4u64 __attribute__((vector_size(32)));
typedef int16_t v16i16 __attribute__((vector_size(32)));
typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef float v16f __attribute__((vector_size(64)));

/* SplitMix64's output function (Steele, Lea and Flood 2014), lane by lane: output number c of
 * the generator started at key is mix64(key + (c + 1) * golden gamma). */
INLINE v4u64 mix64x4(v4u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Keep bytes for the m <= 16 elements from i (4 outputs of the generator, counters z) and, with
 * h, out = (h * keep) * scale (keep as 1.0f or 0.0f: PyTorch's h * mask * scale bit for bit, -0
 * and NaN included), in vector types; h is padded with zeros past m. */
INLINE void dropout16(const keep_job *k, int64_t i, v4u64 z, size_t m) {
    /* int16 slice l of output c is element 4c + l */
    v16i16 kept = ((v16i16)mix64x4(z) >= (int16_t)k->threshold) & 1;
    v16u8 bytes = __builtin_convertvector(kept, v16u8);
    memcpy((uint8_t *)k->base.out1 + i, &bytes, m);
    if (k->base.in1) {
        v16f v = {0};
        memcpy(&v, (const float *)k->base.in1 + i, m * sizeof(float));
        v = v * __builtin_convertvector(kept, v16f) * k->scale;
        memcpy((float *)k->base.out2 + i, &v, m * sizeof(float));
    }
}

/* keep_mask's and dropout's elements lo..hi-1 (lo a multiple of 64): 16 at a time, then the
 * last m < 16 through the same code. */
__attribute__((target_clones("avx2", "default"))) static void run_dropout(const split_job *j,
                                                                          int64_t lo,
                                                                          int64_t hi) {
    const keep_job *k = (const keep_job *)j;
    const uint64_t gamma = 0x9e3779b97f4a7c15ULL;
    v4u64 z = (v4u64){1, 2, 3, 4} * gamma + k->key + (uint64_t)(lo / 4) * gamma;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16, z += 4 * gamma) dropout16(k, i, z, 16);
    if (i < hi) dropout16(k, i, z, (size_t)(hi - i));
}

/* keep_mask(out, n, key, threshold): address of n bytes */
static PyObject *py_keep_mask(PyObject *self, PyObject *args) {
    unsigned long long out, key;
    long long n;
    int threshold;
    if (!PyArg_ParseTuple(args, "KLKi", &out, &n, &key, &threshold)) return NULL;
    keep_job job = {{run_dropout, 0, NULL, NULL, (void *)out, NULL, 0}, key, threshold, 1.0f};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job.base, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* dropout(h, keep, out, n, key, threshold, scale): addresses of float32 n, n bytes and float32
 * n: keep_mask's bytes and out = (h * keep) * scale, in one pass. */
static PyObject *py_dropout(PyObject *self, PyObject *args) {
    unsigned long long h, keep, out, key;
    long long n;
    int threshold;
    float scale;
    if (!PyArg_ParseTuple(args, "KKKLKif", &h, &keep, &out, &n, &key, &threshold, &scale))
        return NULL;
    keep_job job = {{run_dropout, 0, (const void *)h, NULL, (void *)keep, (void *)out, 0}, key,
                    threshold, scale};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job.base, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* dropout's backward, out = (g * scale) * keep (PyTorch's order for h * mask * scale) */
__attribute__((target_clones("avx2", "default"))) static void run_dropout_grad(
    const split_job *j, int64_t lo, int64_t hi) {
    const float *g = j->in1, scale = ((const keep_job *)j)->scale;
    const uint8_t *keep = j->in2;
    float *out = j->out1;
    for (int64_t i = lo; i < hi; i++) out[i] = g[i] * scale * (float)keep[i];
}

/* dropout_grad(g, keep, out, n, scale): addresses of float32 n, n bytes and float32 n */
static PyObject *py_dropout_grad(PyObject *self, PyObject *args) {
    unsigned long long g, keep, out;
    long long n;
    float scale;
    if (!PyArg_ParseTuple(args, "KKKLf", &g, &keep, &out, &n, &scale)) return NULL;
    keep_job job = {{run_dropout_grad, 0, (const void *)g, (const void *)keep, (void *)out, NULL,
                     0}, 0, 0, scale};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job.base, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* bipolar(x, n): whether every value of float32 x is +1 or -1 (the network's input bits) */
__attribute__((target_clones("avx2", "default"))) static int all_bipolar(const float *x,
                                                                         int64_t n) {
    int other = 0;
    for (int64_t i = 0; i < n; i++) other |= __builtin_fabsf(x[i]) != 1.0f; /* NaN too */
    return !other;
}

static PyObject *py_bipolar(PyObject *self, PyObject *args) {
    unsigned long long x;
    long long n;
    if (!PyArg_ParseTuple(args, "KL", &x, &n)) return NULL;
    int yes;
    Py_BEGIN_ALLOW_THREADS
    yes = all_bipolar((const float *)x, n);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(yes);
}

/* set_threads(n): the most threads the split calls use (n >= 1) */
static PyObject *py_set_threads(PyObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "set_threads needs at least 1 thread");
        return NULL;
    }
    fused_threads = n;
    Py_RETURN_NONE;
}

/* The arguments of tanh_grad and tanh_grad_float: (w, g, out, n[, variant]); the variant's
 * index, or -1 with the Python error set. */
static int parse_tanh_grad(PyObject *args, const char *what, unsigned long long addr[3],
                           long long *n) {
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "KKKL|s", &addr[0], &addr[1], &addr[2], n, &name)) return -1;
    return pick_variant(name, what);
}

/* tanh(x, out, n[, variant]): addresses of float32 n (x) and n (out). */
static PyObject *py_tanh(PyObject *self, PyObject *args) {
    unsigned long long x, out;
    long long n;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "KKL|s", &x, &out, &n, &name)) return NULL;
    int v = pick_variant(name, "tanh");
    if (v < 0) return NULL;
    split_job job = {run_tanh, v, (const void *)x, NULL, (void *)out, NULL, 0};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_tanh_grad(PyObject *self, PyObject *args) {
    unsigned long long a[3];
    long long n;
    int v = parse_tanh_grad(args, "tanh_grad", a, &n);
    if (v < 0) return NULL;
    split_job job = {run_tanh_grad, v, (const void *)a[0], (const void *)a[1], (void *)a[2], NULL,
                     0};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_tanh_grad_float(PyObject *self, PyObject *args) {
    unsigned long long a[3];
    long long n;
    int v = parse_tanh_grad(args, "tanh_grad_float", a, &n);
    if (v < 0) return NULL;
    split_job job = {run_tanh_grad_float, v, (const void *)a[0], (const void *)a[1], (void *)a[2],
                     NULL, 0};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job, n, 64, 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_signs(PyObject *self, PyObject *args) {
    unsigned long long w, s8, s16;
    long long n;
    float t = 0.0f;
    if (!PyArg_ParseTuple(args, "KKKL|f", &w, &s8, &s16, &n, &t)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    signs_loop((const float *)w, (int8_t *)s8, (uint16_t *)s16, n, t);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_signs_float(PyObject *self, PyObject *args) {
    unsigned long long w, out;
    long long n;
    float t = 0.0f;
    if (!PyArg_ParseTuple(args, "KKL|f", &w, &out, &n, &t)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    signs_float_loop((const float *)w, (float *)out, n, t);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The arguments of pack_signs and weight_pass: (src, rows, cols, out1, out2[, out3][, variant]),
 * addresses and sizes (out3 with `three` outputs: pack_signs); the variant's index, or -1 with
 * the Python error set. */
static int parse_rows_call(PyObject *args, const char *what, int three,
                           unsigned long long addr[4], long long *rows, long long *cols) {
    const char *name = NULL;
    int ok = three ? PyArg_ParseTuple(args, "KLLKKK|s", &addr[0], rows, cols, &addr[1],
                                        &addr[2], &addr[3], &name)
                     : PyArg_ParseTuple(args, "KLLKK|s", &addr[0], rows, cols, &addr[1],
                                        &addr[2], &name);
    return ok ? pick_variant(name, what) : -1;
}

/* pack_signs(src, rows, cols, bits, mask, counts[, variant]): addresses of float32
 * rows x cols, uint64 rows x ceil(cols / 64) (twice) and int64 rows. */
static PyObject *py_pack_signs(PyObject *self, PyObject *args) {
    unsigned long long a[4];
    long long rows, cols;
    int v = parse_rows_call(args, "pack_signs", 1, a, &rows, &cols);
    if (v < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    VARIANTS[v].pack((const float *)a[0], rows, cols, (uint64_t *)a[1], (uint64_t *)a[2],
                     (int64_t *)a[3]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* weight_pass(w, rows, cols, bits, dtanh[, variant]): addresses of float32 rows x cols, uint64
 * rows x ceil(cols / 64) and float32 rows x cols. */
static PyObject *py_weight_pass(PyObject *self, PyObject *args) {
    unsigned long long a[4];
    long long rows, cols;
    int v = parse_rows_call(args, "weight_pass", 0, a, &rows, &cols);
    if (v < 0) return NULL;
    split_job job = {run_weight_pass, v, (const void *)a[0], NULL, (void *)a[1], (void *)a[2],
                     cols};
    Py_BEGIN_ALLOW_THREADS
    run_split(&job, rows, 1, cols);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* shift_codes(x, b, h, w, shifts, edges, n_edges, codes, k, out): addresses of float32 b x (h *
 * w) images, int64 b x 2 shifts (down, right), float32 (h * w) x n_edges edges per pixel,
 * float32 (n_edges + 1) x k codes and float32 b x (h * w * k) out. out's pixel p of image i is
 * codes[#{e: moved >= edges[p][e]}], moved[r][c] = x[i][r - down][c - right] (0 outside):
 * the same float32 comparisons as PyTorch's, so the same bits. Thermometer codes (``ordered``:
 * code row l is +1 in its first l places, the edges ascending) are the comparisons
 * themselves: each moved value is repeated k times and compared with its k edges in one
 * loop the compiler vectorizes; other codes count the edges reached and copy the code row. */
static void shift_codes(const float *x, int64_t b, int64_t h, int64_t w, const int64_t *shifts,
                        const float *edges, int64_t n_edges, const float *codes, int64_t k,
                        int ordered, float *restrict out, float *restrict row) {
    for (int64_t i = 0; i < b; i++) {
        const float *img = x + i * h * w;
        int64_t down = shifts[2 * i], right = shifts[2 * i + 1];
        int64_t c0 = right > 0 ? right : 0, c1 = right < 0 ? w + right : w; /* inside: [c0, c1) */
        for (int64_t r = 0; r < h; r++) {
            int64_t src_r = r - down;
            float *o = out + (i * h + r) * w * k;
            const float *e = edges + r * w * n_edges;
            /* the moved row, each value k times (k = 2 spelled out: MNIST's 2-bit codes) */
            memset(row, 0, (size_t)(w * k) * sizeof(float));
            if (src_r >= 0 && src_r < h) {
                const float *src = img + src_r * w;
                if (k == 2)
                    for (int64_t c = c0; c < c1; c++) row[2 * c] = row[2 * c + 1] = src[c - right];
                else
                    for (int64_t c = c0; c < c1; c++)
                        for (int64_t j = 0; j < k; j++) row[c * k + j] = src[c - right];
            }
            if (ordered) {
                for (int64_t q = 0; q < w * k; q++) o[q] = row[q] >= e[q] ? 1.0f : -1.0f;
                continue;
            }
            for (int64_t c = 0; c < w; c++) {
                int64_t level = 0;
                for (int64_t j = 0; j < n_edges; j++) level += row[c * k] >= e[c * n_edges + j];
                for (int64_t j = 0; j < k; j++) o[c * k + j] = codes[level * k + j];
            }
        }
    }
}

/* shift_codes(x, b, h, w, shifts, edges, n_edges, codes, k, ordered, out) */
static PyObject *py_shift_codes(PyObject *self, PyObject *args) {
    unsigned long long x, shifts, edges, codes, out;
    long long b, h, w, n_edges, k;
    int ordered;
    if (!PyArg_ParseTuple(args, "KLLLKKLKLpK", &x, &b, &h, &w, &shifts, &edges, &n_edges,
                          &codes, &k, &ordered, &out))
        return NULL;
    if (b < 0 || h < 1 || w < 1 || n_edges < 0 || k < 1 || (ordered && n_edges != k)) {
        PyErr_SetString(PyExc_ValueError, "shift_codes: sizes out of range");
        return NULL;
    }
    float *row = PyMem_RawMalloc((size_t)(w * k) * sizeof(float));
    if (!row) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    shift_codes((const float *)x, b, h, w, (const int64_t *)shifts, (const float *)edges,
                n_edges, (const float *)codes, k, ordered, (float *)out, row);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(row);
    Py_RETURN_NONE;
}

static PyObject *py_variants(PyObject *self, PyObject *noargs) {
    PyObject *list = PyList_New(0);
    for (int v = 0; list && v < N_VARIANTS; v++) {
        if (!supported(v)) continue;
        PyObject *name = PyUnicode_FromString(VARIANTS[v].name);
        if (!name || PyList_Append(list, name) < 0) Py_CLEAR(list);
        Py_XDECREF(name);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"tanh", py_tanh, METH_VARARGS,
     "out = tanh(x) (addresses, n[, variant]): the widest variant unless named."},
    {"tanh_grad", py_tanh_grad, METH_VARARGS,
     "out = float(G) * (1 - tanh(W)^2) (addresses, n[, variant]): the widest variant unless named."},
    {"tanh_grad_float", py_tanh_grad_float, METH_VARARGS,
     "tanh_grad with G in float32 (addresses, n[, variant])."},
    {"signs", py_signs, METH_VARARGS,
     "sign(W) as int8 and as bfloat16, 0 where |W| < t (addresses, n[, t])."},
    {"signs_float", py_signs_float, METH_VARARGS,
     "sign(W) as float32, 0 where |W| < t (addresses, n[, t])."},
    {"pack_signs", py_pack_signs, METH_VARARGS,
     "Sign bits, nonzero bits and their counts of float32 rows (addresses, "
     "sizes[, variant])."},
    {"weight_pass", py_weight_pass, METH_VARARGS,
     "Sign bits and 1 - tanh(W)^2 of W's rows (addresses, sizes[, variant])."},
    {"shift_codes", py_shift_codes, METH_VARARGS,
     "Images moved by whole pixels and binarized: +1/-1 codes by edge count (addresses, "
     "sizes)."},
    {"keep_mask", py_keep_mask, METH_VARARGS,
     "Dropout's keep mask as bytes from a counter-based generator (address, n, key, threshold)."},
    {"dropout", py_dropout, METH_VARARGS,
     "keep_mask's bytes and (h * keep) * scale in one pass (addresses, n, key, threshold, "
     "scale)."},
    {"dropout_grad", py_dropout_grad, METH_VARARGS,
     "(g * scale) * keep: dropout's backward (addresses, n, scale)."},
    {"bipolar", py_bipolar, METH_VARARGS,
     "Whether every value of float32 x is +1 or -1 (address, n)."},
    {"set_threads", py_set_threads, METH_VARARGS,
     "The most threads tanh, tanh_grad(_float), weight_pass, keep_mask, dropout and "
     "dropout_grad split a call over."},
    {"variants", py_variants, METH_NOARGS, "The variants this CPU runs, narrowest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }

#else
#error "bitnn.train._fused is written for x86-64; elsewhere PyTorch's ops run"
#endif
