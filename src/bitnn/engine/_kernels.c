/* Compiled bit kernels for bitnn: fused XNOR/AND/popcount/threshold layers and input
 * binarization, in three variants chosen at run time from the CPU's features:
 *   0 portable  plain C, 64-bit popcount (the POPCNT instruction where the CPU has it)
 *   1 avx2      256-bit XOR + nibble-table popcount (vpshufb) + vpsadbw
 *   2 avx512    512-bit XOR/ternlog + VPOPCNTQ, compare straight into output bits
 * The numpy reference engine (reference.py) is the definition; tests hold every variant
 * bit-exact to it. Python validates shapes and dtypes; this file re-checks buffer sizes so a
 * wrong call raises instead of reading out of bounds.
 *
 * Weight layout ("quads"): output units are padded to a multiple of 32 and stored as
 * w[q][k][32]: for quad q (units 32q..32q+31) and input word k, the 32 units' words are
 * contiguous, so one 512-bit load holds word k of 8 units and no horizontal sums are needed.
 * Padding units have weight 0, mask 0 and limit -1, so they never fire.
 *
 * Masks: a unit's (absent weights, in the quads' layout) or, for training's round-2 products,
 * an input row's (dropout's zeros: one word per input word, broadcast over the units; the
 * portable and AVX2 variants), whose count each row's scores get as their offset.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define BITNN_X86 1
#include <immintrin.h>
#endif

enum { V_PORTABLE = 0, V_AVX2 = 1, V_AVX512 = 2 };
enum { MODE_BITS = 0, MODE_SCORES = 1 };
#define QUAD 32

typedef struct {
    const uint64_t *x;   /* B x K input words */
    const uint64_t *w;   /* Q x K x 32 */
    const uint64_t *m;   /* same layout, or NULL: all present */
    const uint64_t *xm;  /* B x K: a mask per input row (training's dropout), or NULL */
    const int64_t *lim;  /* Q*32: bits mode: fire iff count <= lim; scores: score = lim - 2*count */
    const int64_t *xoff; /* B, with xm: added to row r's scores (its mask's count), else NULL */
    int64_t B, K, Q, n_out, out_words;
    int mode;
    uint64_t *out_bits;  /* B x out_words, zero-initialised by the caller */
    int64_t *out_scores; /* B x n_out: int64, so no threshold the format allows can overflow */
} layer_args;

/* Work is cut into items: (row block, quad). A worker runs items [begin, end). */
typedef void (*layer_fn)(const layer_args *a, int64_t q0, int64_t q1, int64_t r0, int64_t r1);

static inline void emit_counts(const layer_args *a, int64_t r, int64_t q, const int64_t *c) {
    /* c: 32 mismatch counts for units 32q..32q+31 */
    const int64_t *lim = a->lim + q * QUAD;
    if (a->mode == MODE_BITS) {
        uint32_t bits = 0;
        for (int l = 0; l < QUAD; l++) bits |= (uint32_t)(c[l] <= lim[l]) << l;
        memcpy((char *)(a->out_bits + r * a->out_words) + 4 * q, &bits, 4);
    } else {
        int64_t base = q * QUAD, row = a->xoff ? a->xoff[r] : 0;
        int64_t *out = a->out_scores + r * a->n_out;
        for (int l = 0; l < QUAD && base + l < a->n_out; l++) out[base + l] = row + lim[l] - 2 * c[l];
    }
}

/* ---- portable ------------------------------------------------------------------------------ */

/* 2 rows x 2 units per pass: the 4 accumulators, the loaded words and the pointers all fit in
 * the 16 general registers (more accumulators spill to memory and halve the speed). The mask
 * test is a compile-time constant after inlining, so each case gets its own loop. */
enum { NO_MASK = 0, UNIT_MASK = 1, ROW_MASK = 2 };

static inline __attribute__((always_inline)) void portable_block(const layer_args *a, int64_t q, int l0,
                                                                 int64_t r, int rows, int masked,
                                                                 int64_t *c0, int64_t *c1) {
    const int64_t K = a->K;
    const uint64_t *wq = a->w + q * K * QUAD + l0;
    const uint64_t *mq = masked == UNIT_MASK ? a->m + q * K * QUAD + l0 : NULL;
    const uint64_t *x0 = a->x + r * K, *x1 = a->x + (r + rows - 1) * K;
    const uint64_t *xm0 = masked == ROW_MASK ? a->xm + r * K : NULL;
    const uint64_t *xm1 = masked == ROW_MASK ? a->xm + (r + rows - 1) * K : NULL;
    int64_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int64_t k = 0; k < K; k++) {
        const uint64_t *wk = wq + k * QUAD;
        uint64_t w0 = wk[0], w1 = wk[1], a0 = x0[k], a1 = x1[k];
        if (masked == UNIT_MASK) {
            const uint64_t *mk = mq + k * QUAD;
            uint64_t m0 = mk[0], m1 = mk[1];
            s00 += __builtin_popcountll((a0 ^ w0) & m0);
            s01 += __builtin_popcountll((a0 ^ w1) & m1);
            s10 += __builtin_popcountll((a1 ^ w0) & m0);
            s11 += __builtin_popcountll((a1 ^ w1) & m1);
        } else if (masked == ROW_MASK) {
            uint64_t m0 = xm0[k], m1 = xm1[k];
            s00 += __builtin_popcountll((a0 ^ w0) & m0);
            s01 += __builtin_popcountll((a0 ^ w1) & m0);
            s10 += __builtin_popcountll((a1 ^ w0) & m1);
            s11 += __builtin_popcountll((a1 ^ w1) & m1);
        } else {
            s00 += __builtin_popcountll(a0 ^ w0);
            s01 += __builtin_popcountll(a0 ^ w1);
            s10 += __builtin_popcountll(a1 ^ w0);
            s11 += __builtin_popcountll(a1 ^ w1);
        }
    }
    c0[l0] = s00, c0[l0 + 1] = s01;
    c1[l0] = s10, c1[l0 + 1] = s11;
}

static inline __attribute__((always_inline)) void portable_body(const layer_args *a, int64_t q0,
                                                                int64_t q1, int64_t r0, int64_t r1) {
    int64_t c0[QUAD], c1[QUAD];
    for (int64_t r = r0; r < r1; r += 2) {
        int rows = r + 1 < r1 ? 2 : 1; /* a last odd row is computed twice, emitted once */
        for (int64_t q = q0; q < q1; q++) {
            if (a->m)
                for (int l0 = 0; l0 < QUAD; l0 += 2) portable_block(a, q, l0, r, rows, UNIT_MASK, c0, c1);
            else if (a->xm)
                for (int l0 = 0; l0 < QUAD; l0 += 2) portable_block(a, q, l0, r, rows, ROW_MASK, c0, c1);
            else
                for (int l0 = 0; l0 < QUAD; l0 += 2) portable_block(a, q, l0, r, rows, NO_MASK, c0, c1);
            emit_counts(a, r, q, c0);
            if (rows == 2) emit_counts(a, r + 1, q, c1);
        }
    }
}

static void layer_portable_generic(const layer_args *a, int64_t q0, int64_t q1, int64_t r0, int64_t r1) {
    portable_body(a, q0, q1, r0, r1);
}

#ifdef BITNN_X86
__attribute__((target("popcnt"))) static void layer_portable_popcnt(const layer_args *a, int64_t q0,
                                                                     int64_t q1, int64_t r0, int64_t r1) {
    portable_body(a, q0, q1, r0, r1);
}

/* ---- AVX2 ---------------------------------------------------------------------------------- */

/* Byte-wise popcount of v (each byte 0..8) with the nibble table in lut. */
__attribute__((target("avx2"))) static inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* One row x 16 units (4 vectors) per pass: 4 byte counters, 4 lane accumulators and the
 * constants fit the 16 vector registers (8 vectors per pass spill and run at half speed).
 * The mask is the units' (mq, loaded with the weights) or the row's (xmr, one broadcast). */
__attribute__((target("avx2,popcnt"))) static inline __attribute__((always_inline)) void avx2_half(
    const layer_args *a, const uint64_t *xr, const uint64_t *wq, const uint64_t *mq, const uint64_t *xmr,
    int64_t *c) {
    const int64_t K = a->K;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1,
                                         2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i acc[4], bytes[4];
    for (int i = 0; i < 4; i++) acc[i] = zero;
    for (int64_t k0 = 0; k0 < K; k0 += 31) { /* byte counters hold 31 words (<= 248) */
        int64_t k1 = k0 + 31 < K ? k0 + 31 : K;
        for (int i = 0; i < 4; i++) bytes[i] = zero;
        for (int64_t k = k0; k < k1; k++) {
            __m256i xb = _mm256_set1_epi64x((long long)xr[k]);
            __m256i rm = xmr ? _mm256_set1_epi64x((long long)xmr[k]) : zero;
            const __m256i *wk = (const __m256i *)(wq + k * QUAD);
            for (int i = 0; i < 4; i++) {
                __m256i v = _mm256_xor_si256(xb, _mm256_loadu_si256(wk + i));
                if (mq) v = _mm256_and_si256(v, _mm256_loadu_si256((const __m256i *)(mq + k * QUAD) + i));
                if (xmr) v = _mm256_and_si256(v, rm);
                bytes[i] = _mm256_add_epi8(bytes[i], popcnt_bytes(v, lut, low));
            }
        }
        for (int i = 0; i < 4; i++) acc[i] = _mm256_add_epi64(acc[i], _mm256_sad_epu8(bytes[i], zero));
    }
    for (int i = 0; i < 4; i++) _mm256_storeu_si256((__m256i *)(c + 4 * i), acc[i]);
}

__attribute__((target("avx2,popcnt"))) static void layer_avx2(const layer_args *a, int64_t q0,
                                                              int64_t q1, int64_t r0, int64_t r1) {
    const int64_t K = a->K;
    int64_t c[QUAD];
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *xr = a->x + r * K;
        for (int64_t q = q0; q < q1; q++) {
            const uint64_t *wq = a->w + q * K * QUAD;
            if (a->m) {
                const uint64_t *mq = a->m + q * K * QUAD;
                avx2_half(a, xr, wq, mq, NULL, c);
                avx2_half(a, xr, wq + 16, mq + 16, NULL, c + 16);
            } else if (a->xm) {
                const uint64_t *xmr = a->xm + r * K;
                avx2_half(a, xr, wq, NULL, xmr, c);
                avx2_half(a, xr, wq + 16, NULL, xmr, c + 16);
            } else {
                avx2_half(a, xr, wq, NULL, NULL, c);
                avx2_half(a, xr, wq + 16, NULL, NULL, c + 16);
            }
            emit_counts(a, r, q, c);
        }
    }
}

/* ---- AVX-512 ------------------------------------------------------------------------------- */

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,bmi2,popcnt")))

/* R rows x one quad (4 vectors of 8 units): R*4 accumulators; weights loaded once per word. */
#define DEFINE_AVX512_TILE(R)                                                                      \
    AVX512_TARGET static inline __attribute__((always_inline)) void avx512_tile_##R(             \
        const layer_args *a, int64_t r, int64_t q) {                                             \
        const int64_t K = a->K;                                                                  \
        const uint64_t *wq = a->w + q * K * QUAD;                                                \
        const uint64_t *mq = a->m ? a->m + q * K * QUAD : NULL;                                  \
        const uint64_t *xr = a->x + r * K;                                                       \
        __m512i acc[R][4];                                                                       \
        for (int i = 0; i < R; i++)                                                              \
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_si512();                      \
        if (mq) {                                                                                \
            for (int64_t k = 0; k < K; k++) {                                                    \
                __m512i w[4], m[4];                                                              \
                for (int j = 0; j < 4; j++) {                                                    \
                    w[j] = _mm512_loadu_si512(wq + k * QUAD + 8 * j);                            \
                    m[j] = _mm512_loadu_si512(mq + k * QUAD + 8 * j);                            \
                }                                                                                \
                for (int i = 0; i < R; i++) {                                                    \
                    __m512i xb = _mm512_set1_epi64((long long)xr[i * K + k]);                    \
                    for (int j = 0; j < 4; j++) /* (x ^ w) & m in one instruction */             \
                        acc[i][j] = _mm512_add_epi64(                                            \
                            acc[i][j], _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(xb, w[j], m[j], 0x28))); \
                }                                                                                \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t k = 0; k < K; k++) {                                                    \
                __m512i w[4];                                                                    \
                for (int j = 0; j < 4; j++) w[j] = _mm512_loadu_si512(wq + k * QUAD + 8 * j);    \
                for (int i = 0; i < R; i++) {                                                    \
                    __m512i xb = _mm512_set1_epi64((long long)xr[i * K + k]);                    \
                    for (int j = 0; j < 4; j++)                                                  \
                        acc[i][j] = _mm512_add_epi64(acc[i][j],                                  \
                                                     _mm512_popcnt_epi64(_mm512_xor_si512(xb, w[j]))); \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        const int64_t *lim = a->lim + q * QUAD;                                                  \
        if (a->mode == MODE_BITS) {                                                              \
            for (int i = 0; i < R; i++) {                                                        \
                uint32_t bits = 0;                                                               \
                for (int j = 0; j < 4; j++)                                                      \
                    bits |= (uint32_t)_mm512_cmple_epi64_mask(acc[i][j], _mm512_loadu_si512(lim + 8 * j)) \
                            << (8 * j);                                                          \
                memcpy((char *)(a->out_bits + (r + i) * a->out_words) + 4 * q, &bits, 4);        \
            }                                                                                    \
        } else {                                                                                 \
            for (int i = 0; i < R; i++) {                                                        \
                int64_t c[QUAD];                                                                 \
                for (int j = 0; j < 4; j++) _mm512_storeu_si512(c + 8 * j, acc[i][j]);           \
                emit_counts(a, r + i, q, c);                                                     \
            }                                                                                    \
        }                                                                                        \
    }

DEFINE_AVX512_TILE(1)
DEFINE_AVX512_TILE(4)
DEFINE_AVX512_TILE(6)

AVX512_TARGET static void layer_avx512(const layer_args *a, int64_t q0, int64_t q1, int64_t r0, int64_t r1) {
    /* Rows in blocks of at most 256 KiB of input (they stay in L2); within a block, quads
     * outer: one quad's weights (K * 256 bytes) stay in L1 while the block's rows pass. */
    int64_t block = (256 * 1024 / 8) / a->K;
    block = block < 6 ? 6 : block - block % 6;
    for (int64_t b0 = r0; b0 < r1; b0 += block) {
        int64_t b1 = b0 + block < r1 ? b0 + block : r1;
        for (int64_t q = q0; q < q1; q++) {
            int64_t r = b0;
            /* 6 rows x 4 vectors = 24 accumulators fit the 32 registers beside the weights;
             * with a mask (4 more registers) 4 rows do. */
            if (!a->m)
                for (; r + 6 <= b1; r += 6) avx512_tile_6(a, r, q);
            for (; r + 4 <= b1; r += 4) avx512_tile_4(a, r, q);
            for (; r < b1; r++) avx512_tile_1(a, r, q);
        }
    }
}
#endif /* BITNN_X86 */

/* ---- CPU features and the kernel table ----------------------------------------------------- */

static int cpu_has(int variant) {
#ifdef BITNN_X86
    __builtin_cpu_init();
    if (variant == V_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    if (variant == V_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("bmi2");
#endif
    return variant == V_PORTABLE;
}

static layer_fn layer_kernel(int variant) {
#ifdef BITNN_X86
    if (variant == V_AVX512) return layer_avx512;
    if (variant == V_AVX2) return layer_avx2;
    if (__builtin_cpu_supports("popcnt")) return layer_portable_popcnt;
#endif
    return layer_portable_generic;
}

/* ---- input binarization -------------------------------------------------------------------- */
/* Per feature f and edge j: t_j = (x_f >= edge[j][f]). Output bit b of feature f (at unit f*k+b)
 * is c0_b XOR (XOR of t_j over j in flips_b): exact for any code over sorted edges, since the
 * t_j are nested. Thresholds are float32, or for uint8 input the integer edges ceil(edge)
 * clipped to 255 plus a "never" bit per edge and feature for edges above 255. */

typedef struct {
    const void *x;         /* B rows of F, uint8 or float32, row r at r * row_stride elements */
    int is_u8;
    const void *thr;       /* E x F_pad (uint8 for u8 input, float32 otherwise) */
    const uint64_t *never; /* u8 input: E x F_pad/64 bits, edge j of feature f unreachable */
    int64_t B, F, F_pad, E, k, out_words, row_stride;
    const uint64_t *flips; /* k masks over the E edges */
    uint64_t c0;           /* bit b: code bit b at level 0 */
    uint64_t *out;         /* B x out_words, zero-initialised */
    atomic_int bad;        /* set when a float input is NaN or infinite */
} bin_args;

typedef void (*bin_fn)(bin_args *a, int64_t r0, int64_t r1);

static inline __attribute__((always_inline)) void bin_portable_body(bin_args *a, int64_t r0, int64_t r1) {
    const int64_t chunks = a->F_pad / 64;
    for (int64_t r = r0; r < r1; r++) {
        uint64_t *out = a->out + r * a->out_words;
        for (int64_t f = 0; f < a->F; f++) {
            uint64_t t = 0;
            if (a->is_u8) {
                uint8_t v = ((const uint8_t *)a->x)[r * a->row_stride + f];
                const uint8_t *thr = (const uint8_t *)a->thr;
                for (int64_t j = 0; j < a->E; j++) {
                    uint64_t never = (a->never[j * chunks + f / 64] >> (f % 64)) & 1;
                    t |= (uint64_t)(v >= thr[j * a->F_pad + f] && !never) << j;
                }
            } else {
                float v = ((const float *)a->x)[r * a->row_stride + f];
                if (!__builtin_isfinite(v)) atomic_store(&a->bad, 1);
                const float *thr = (const float *)a->thr;
                for (int64_t j = 0; j < a->E; j++) t |= (uint64_t)(v >= thr[j * a->F_pad + f]) << j;
            }
            for (int64_t b = 0; b < a->k; b++) {
                uint64_t bit = ((a->c0 >> b) & 1) ^ (__builtin_popcountll(t & a->flips[b]) & 1);
                int64_t u = f * a->k + b;
                out[u >> 6] |= bit << (u & 63);
            }
        }
    }
}

static void bin_portable_generic(bin_args *a, int64_t r0, int64_t r1) { bin_portable_body(a, r0, r1); }

#ifdef BITNN_X86
__attribute__((target("popcnt"))) static void bin_portable_popcnt(bin_args *a, int64_t r0, int64_t r1) {
    bin_portable_body(a, r0, r1);
}

/* 64 features at a time: edge masks t_j by vector compares (64 bytes, or 4 x 16 floats), code
 * bits by XOR of masks, then pdep spreads each code bit to every k-th position of the k output
 * words of the chunk (64 features x k bits = k whole words, for any k <= 8). In word w, code
 * bit b holds the features i with 64w <= i*k + b < 64w + 64: a run i_lo..i_lo+count-1, whose
 * bits pdep puts at offset i_lo*k + b - 64w, stride k. */
AVX512_TARGET static void bin_avx512(bin_args *a, int64_t r0, int64_t r1) {
    const int64_t k = a->k, F = a->F, E = a->E, FP = a->F_pad, chunks = FP / 64;
    int64_t lo[8][8];
    uint64_t low[8][8], spread[8][8];
    for (int64_t w = 0; w < k; w++) {
        for (int64_t b = 0; b < k; b++) {
            int64_t first = (64 * w - b + k - 1) / k, last = (64 * w + 63 - b) / k;
            if (first < 0) first = 0;
            if (last > 63) last = 63;
            int64_t count = last >= first ? last - first + 1 : 0;
            lo[w][b] = first;
            low[w][b] = count == 64 ? ~0ULL : (1ULL << count) - 1;
            spread[w][b] = 0;
            for (int64_t m = 0; m < count; m++) spread[w][b] |= 1ULL << ((first + m) * k + b - 64 * w);
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        uint64_t *out = a->out + r * a->out_words;
        for (int64_t c = 0; c * 64 < F; c++) {
            int64_t f0 = c * 64, n = F - f0 < 64 ? F - f0 : 64;
            uint64_t valid = n == 64 ? ~0ULL : (1ULL << n) - 1;
            uint64_t t[64], v[8];
            if (a->is_u8) {
                __m512i x = _mm512_maskz_loadu_epi8(valid, (const uint8_t *)a->x + r * a->row_stride + f0);
                const uint8_t *thr = (const uint8_t *)a->thr + f0;
                for (int64_t j = 0; j < E; j++)
                    t[j] = _mm512_cmpge_epu8_mask(x, _mm512_loadu_si512(thr + j * FP)) &
                           ~a->never[j * chunks + c];
            } else {
                const float *xs = (const float *)a->x + r * a->row_stride + f0;
                const float *thr = (const float *)a->thr + f0;
                __m512 xq[4];
                for (int q = 0; q < 4; q++) {
                    xq[q] = _mm512_maskz_loadu_ps((__mmask16)(valid >> (16 * q)), xs + 16 * q);
                    /* x - x is 0 for finite x and NaN for NaN or infinity */
                    if (_mm512_cmp_ps_mask(_mm512_sub_ps(xq[q], xq[q]), _mm512_setzero_ps(), _CMP_NEQ_UQ))
                        atomic_store(&a->bad, 1);
                }
                for (int64_t j = 0; j < E; j++) {
                    t[j] = 0;
                    for (int q = 0; q < 4; q++)
                        t[j] |= (uint64_t)_mm512_cmp_ps_mask(xq[q], _mm512_loadu_ps(thr + j * FP + 16 * q),
                                                             _CMP_GE_OQ)
                                << (16 * q);
                }
            }
            for (int64_t b = 0; b < k; b++) {
                uint64_t acc = ((a->c0 >> b) & 1) ? ~0ULL : 0;
                for (uint64_t fl = a->flips[b]; fl; fl &= fl - 1) acc ^= t[__builtin_ctzll(fl)];
                v[b] = acc & valid;
            }
            for (int64_t w = 0; w < k; w++) {
                int64_t word = c * k + w;
                if (word >= a->out_words) break;
                uint64_t acc = 0;
                for (int64_t b = 0; b < k; b++)
                    acc |= _pdep_u64((v[b] >> lo[w][b]) & low[w][b], spread[w][b]);
                out[word] = acc;
            }
        }
    }
}
#endif

static bin_fn bin_kernel(int variant, int64_t k) {
#ifdef BITNN_X86
    if (variant == V_AVX512 && k >= 1 && k <= 8) return bin_avx512;
    if (__builtin_cpu_supports("popcnt")) return bin_portable_popcnt;
#endif
    (void)variant;
    (void)k;
    return bin_portable_generic;
}

/* ---- a small persistent thread pool -------------------------------------------------------- */
/* Workers spin briefly after each job (back-to-back layer calls are common) and then sleep on
 * a condition variable. One job at a time; a caller that finds the pool busy runs alone. */

#define MAX_THREADS 64
#define SPIN_NS 200000

typedef struct {
    void (*run)(void *ctx, int part, int nparts);
    void *ctx;
    int nparts;
} job_t;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;  /* guards start/stop and sleeping */
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;   /* one job at a time */
static pthread_t pool_threads[MAX_THREADS];
static int pool_size = 0; /* workers started (excluding the caller) */
static job_t pool_job;
static atomic_uint pool_gen = 0;
static atomic_int pool_done = 0;
static int pool_sleeping = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#ifdef BITNN_X86
    _mm_pause();
#endif
}

static unsigned pool_start_gen[MAX_THREADS + 1];

static void *pool_worker(void *arg) {
    int id = (int)(intptr_t)arg; /* 1..pool_size */
    unsigned seen = pool_start_gen[id]; /* the generation before its first job */
    for (;;) {
        int64_t start = now_ns();
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool_gen, memory_order_acquire)) == seen) {
            cpu_relax();
            if (++spins % 1024 == 0 && now_ns() - start > SPIN_NS) {
                pthread_mutex_lock(&pool_mu);
                pool_sleeping++;
                while (atomic_load(&pool_gen) == seen) pthread_cond_wait(&pool_cv, &pool_mu);
                pool_sleeping--;
                pthread_mutex_unlock(&pool_mu);
                start = now_ns();
            }
        }
        seen = gen;
        job_t job = pool_job;
        if (id < job.nparts) job.run(job.ctx, id, job.nparts);
        atomic_fetch_add_explicit(&pool_done, 1, memory_order_release);
    }
    return NULL;
}

static int available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return 1;
}

static int max_threads = 0; /* 0: not decided yet */

static int thread_limit(void) {
    if (max_threads == 0) {
        int n = available_cpus();
        const char *env = getenv("BITNN_THREADS");
        if (env && atoi(env) > 0) n = atoi(env);
        max_threads = n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : n);
    }
    return max_threads;
}

static void pool_reset_after_fork(void) {
    /* The child has only the forking thread: forget the workers and start new ones lazily. */
    pool_size = 0;
    pool_sleeping = 0;
    atomic_store(&pool_done, 0);
    pthread_mutex_init(&pool_mu, NULL);
    pthread_mutex_init(&job_mu, NULL);
    pthread_cond_init(&pool_cv, NULL);
}

static int pool_ensure(int workers) {
    while (pool_size < workers) {
        pool_start_gen[pool_size + 1] = atomic_load(&pool_gen);
        if (pthread_create(&pool_threads[pool_size], NULL, pool_worker, (void *)(intptr_t)(pool_size + 1)) != 0)
            break;
        pthread_detach(pool_threads[pool_size]);
        pool_size++;
    }
    return pool_size;
}

/* Run job parts 0..nparts-1, part 0 on the calling thread. */
static void pool_run(void (*run)(void *, int, int), void *ctx, int nparts) {
    if (nparts > 1 && pthread_mutex_trylock(&job_mu) == 0) {
        int workers = pool_ensure(nparts - 1);
        if (workers > 0) {
            int parts = workers + 1 < nparts ? workers + 1 : nparts;
            pool_job.run = run;
            pool_job.ctx = ctx;
            pool_job.nparts = parts;
            atomic_store(&pool_done, 0);
            pthread_mutex_lock(&pool_mu);
            atomic_fetch_add_explicit(&pool_gen, 1, memory_order_release);
            if (pool_sleeping) pthread_cond_broadcast(&pool_cv);
            pthread_mutex_unlock(&pool_mu);
            run(ctx, 0, parts);
            while (atomic_load_explicit(&pool_done, memory_order_acquire) < workers) cpu_relax();
            pthread_mutex_unlock(&job_mu);
            return;
        }
        pthread_mutex_unlock(&job_mu);
    }
    run(ctx, 0, 1);
}

/* ---- splitting work ------------------------------------------------------------------------ */

typedef struct {
    layer_fn fn;
    const layer_args *a;
} layer_job;

static void run_layer_part(void *ctx, int part, int nparts) {
    layer_job *j = ctx;
    const layer_args *a = j->a;
    /* Split over quads (each thread keeps its share of the weights in its own cache) when there
     * are enough, else over rows. */
    if (a->Q >= nparts * 2 || a->B < nparts) {
        int64_t q0 = a->Q * part / nparts, q1 = a->Q * (part + 1) / nparts;
        if (q1 > q0) j->fn(a, q0, q1, 0, a->B);
    } else {
        int64_t r0 = a->B * part / nparts, r1 = a->B * (part + 1) / nparts;
        if (r1 > r0) j->fn(a, 0, a->Q, r0, r1);
    }
}

typedef struct {
    bin_fn fn;
    bin_args *a;
} bin_job;

static void run_bin_part(void *ctx, int part, int nparts) {
    bin_job *j = ctx;
    int64_t r0 = j->a->B * part / nparts, r1 = j->a->B * (part + 1) / nparts;
    if (r1 > r0) j->fn(j->a, r0, r1);
}

/* Below this many bit pairs a call runs on one thread: waking others costs more. */
#define PARALLEL_MIN_BITS (1LL << 21)

static int choose_threads(int64_t work_bits, int requested) {
    int limit = thread_limit();
    if (requested > 0 && requested < limit) limit = requested;
    if (work_bits < PARALLEL_MIN_BITS) return 1;
    return limit;
}


/* ---- float-by-sign products: training's round-2 gradients --------------------------------- */
/* sign_matmul: C = A S for a float32 A (M x K, any strides, times alpha) and S of +-1 or of
 * -1/0/+1 values, given as bit planes: byte (c, n) of plane P holds bits r = 0..7 for S[8c + r][n]
 * (rows of ceil(K/8) x N bytes, K's last partial byte padded with anything). With only P, S is
 * +1 where the bit is set and -1 elsewhere; with Q too, S = P - Q (dropout's zeros where both
 * bits are clear). Round 2's gradients at float32-fast multiply the real-valued output gradient
 * by a layer's sign(W) (for the input gradient) and by its -1/0/+1 inputs (for W's).
 *
 * Each product goes by tables ("four Russians"): for 8 rows of C (one vector of lanes) and 8
 * values of k, the 256 sums +-A[m][8c] +- ... +- A[m][8c + 7] (with Q: the 256 subset sums) are
 * tabulated once in 255 vector additions; then every column n adds the row its byte picks (with
 * Q: adds P's row and subtracts Q's), one addition where a matmul does 8 multiply-adds. Four
 * groups of 8 k are tabulated at a time (32 KB): each pass over a block's column sums then adds
 * four rows, so the sums, which are too many for L1, travel half as often as with two. On a Zen
 * 4, 400 x 1024 by 1024 x 1024 on two threads, +-1 / -1/0/+1 operands: groups of 1, 2, 3, 4, 8,
 * 16: 2.85/4.14, 2.49/3.77, 2.36/3.66, 2.29/3.57, 2.11/3.58, 2.85/5.55 ms (one thread, two
 * groups: 4.3 ms against float32 sgemm's 10.9 for +-1, 7.1 against 11.1 for -1/0/+1). The
 * group size does not change the order of the additions, so results are the same bits.
 *
 * The same source in both variants (GCC vector types: additions lane by lane, in one order), so
 * AVX2 and portable results are bit for bit equal; they differ from a matmul's in rounding
 * order only. */
typedef float v8f __attribute__((vector_size(32), aligned(32)));
#define SMM_GROUP 4

typedef struct {
    const float *a;
    int64_t sam, sak; /* A[m][k] = a[m * sam + k * sak] */
    int64_t M, K, N;
    const uint8_t *p, *q; /* planes, ceil(K/8) x N bytes; q NULL: +-1 */
    float alpha;
    const float *mul; /* NULL, or M x N row-major: C is multiplied by it elementwise */
    float *c;         /* M x N, row-major */
    atomic_int failed;
} smm_args;

static inline __attribute__((always_inline)) void smm_table(v8f *t, const v8f *a, int subsets) {
    v8f s = {0};
    if (!subsets)
        for (int r = 0; r < 8; r++) s -= a[r]; /* every bit clear: -a0 - ... - a7 */
    t[0] = s;
    for (int r = 0; r < 8; r++) {
        v8f v = subsets ? a[r] : a[r] + a[r]; /* setting bit r turns -a_r into +a_r */
        for (int i = 0, h = 1 << r; i < h; i++) t[i + h] = t[i] + v;
    }
}

static inline __attribute__((always_inline)) void smm_body(smm_args *a, int64_t b0, int64_t b1) {
    const int64_t K = a->K, N = a->N, K8 = (K + 7) / 8;
    v8f *ap = aligned_alloc(32, (size_t)K8 * 8 * sizeof(v8f));
    v8f *tab = aligned_alloc(32, (size_t)SMM_GROUP * 256 * sizeof(v8f));
    v8f *acc = aligned_alloc(32, (size_t)(N > 0 ? N : 1) * sizeof(v8f));
    if (!ap || !tab || !acc) {
        atomic_store(&a->failed, 1);
        b1 = b0;
    }
    for (int64_t b = b0; b < b1; b++) {
        const int64_t m0 = 8 * b, lanes = a->M - m0 < 8 ? a->M - m0 : 8;
        /* this block's 8 rows of alpha * A, k by k (lanes over m), zero past M and K */
        for (int64_t k = 0; k < K8 * 8; k++)
            for (int l = 0; l < 8; l++)
                ap[k][l] = k < K && l < lanes ? a->alpha * a->a[(m0 + l) * a->sam + k * a->sak] : 0.0f;
        memset(acc, 0, (size_t)N * sizeof(v8f));
        for (int64_t c0 = 0; c0 < K8; c0 += SMM_GROUP) {
            const int nc = K8 - c0 < SMM_GROUP ? (int)(K8 - c0) : SMM_GROUP;
            for (int c = 0; c < nc; c++) smm_table(tab + 256 * c, ap + 8 * (c0 + c), a->q != NULL);
            const uint8_t *p = a->p + c0 * N, *q = a->q ? a->q + c0 * N : NULL;
            int64_t n = 0;
            for (; n + 8 <= N; n += 8) { /* 8 columns: 8 independent sums */
                v8f s0 = acc[n], s1 = acc[n + 1], s2 = acc[n + 2], s3 = acc[n + 3];
                v8f s4 = acc[n + 4], s5 = acc[n + 5], s6 = acc[n + 6], s7 = acc[n + 7];
                for (int c = 0; c < nc; c++) {
                    const v8f *t = tab + 256 * c;
                    const uint8_t *pc = p + c * N + n;
                    s0 += t[pc[0]], s1 += t[pc[1]], s2 += t[pc[2]], s3 += t[pc[3]];
                    s4 += t[pc[4]], s5 += t[pc[5]], s6 += t[pc[6]], s7 += t[pc[7]];
                    if (q) {
                        const uint8_t *qc = q + c * N + n;
                        s0 -= t[qc[0]], s1 -= t[qc[1]], s2 -= t[qc[2]], s3 -= t[qc[3]];
                        s4 -= t[qc[4]], s5 -= t[qc[5]], s6 -= t[qc[6]], s7 -= t[qc[7]];
                    }
                }
                acc[n] = s0, acc[n + 1] = s1, acc[n + 2] = s2, acc[n + 3] = s3;
                acc[n + 4] = s4, acc[n + 5] = s5, acc[n + 6] = s6, acc[n + 7] = s7;
            }
            for (; n < N; n++)
                for (int c = 0; c < nc; c++) {
                    acc[n] += tab[256 * c + p[c * N + n]];
                    if (q) acc[n] -= tab[256 * c + q[c * N + n]];
                }
        }
        for (int64_t l = 0; l < lanes; l++) {
            float *row = a->c + (m0 + l) * N;
            const float *mul = a->mul ? a->mul + (m0 + l) * N : NULL;
            if (mul)
                for (int64_t n = 0; n < N; n++) row[n] = acc[n][l] * mul[n];
            else
                for (int64_t n = 0; n < N; n++) row[n] = acc[n][l];
        }
    }
    free(ap);
    free(tab);
    free(acc);
}

static void smm_portable(smm_args *a, int64_t b0, int64_t b1) { smm_body(a, b0, b1); }
#ifdef BITNN_X86
__attribute__((target("avx2"))) static void smm_avx2(smm_args *a, int64_t b0, int64_t b1) { smm_body(a, b0, b1); }
#endif

typedef struct {
    void (*fn)(smm_args *, int64_t, int64_t);
    smm_args *a;
} smm_job;

static void run_smm_part(void *ctx, int part, int nparts) {
    smm_job *j = ctx;
    int64_t blocks = (j->a->M + 7) / 8, b0 = blocks * part / nparts, b1 = blocks * (part + 1) / nparts;
    if (b1 > b0) j->fn(j->a, b0, b1);
}

/* sign_planes: S (K x N float32, row-major) as sign_matmul's planes: with Q, P's bit where
 * S > 0 and Q's where S < 0 (0, -0 and NaN: neither); without, P's bit where S is not negative
 * (-0 and NaN count as +1, as sign(W) does in training) */
typedef struct {
    const float *s;
    int64_t K, N;
    uint8_t *p, *q;
} planes_args;

static void run_planes_part(void *ctx, int part, int nparts) {
    planes_args *a = ctx;
    int64_t K8 = (a->K + 7) / 8, c0 = K8 * part / nparts, c1 = K8 * (part + 1) / nparts, N = a->N;
    for (int64_t c = c0; c < c1; c++) {
        uint8_t *p = a->p + c * N, *q = a->q ? a->q + c * N : NULL;
        memset(p, 0, (size_t)N);
        if (q) memset(q, 0, (size_t)N);
        for (int r = 0; r < 8 && 8 * c + r < a->K; r++) {
            const float *row = a->s + (8 * c + r) * N;
            if (q)
                for (int64_t n = 0; n < N; n++) {
                    p[n] |= (uint8_t)((row[n] > 0.0f) << r);
                    q[n] |= (uint8_t)((row[n] < 0.0f) << r);
                }
            else
                for (int64_t n = 0; n < N; n++) p[n] |= (uint8_t)(!(row[n] < 0.0f) << r);
        }
    }
}

/* ---- the CPU's XOR + popcount + add bound, measured ---------------------------------------- */
/* The layer kernel's inner step with every operand already in registers: 4 inputs x 4 weight
 * vectors, 16 accumulators, 3 instructions per 512 bit pairs. Nothing is loaded, so its rate
 * is the compute bound the benchmark compares the kernels with. */
#ifdef BITNN_X86
AVX512_TARGET static uint64_t peak_avx512(int64_t iters) {
    __m512i x[4], w[4], acc[16];
    for (int i = 0; i < 4; i++) {
        x[i] = _mm512_set1_epi64(0x0123456789abcdefLL * (i + 1));
        w[i] = _mm512_set1_epi64(0x7edcba9876543210LL ^ (i * 0x1111));
    }
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_si512();
    for (int64_t it = 0; it < iters; it++) {
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                acc[4 * i + j] = _mm512_add_epi64(acc[4 * i + j], _mm512_popcnt_epi64(_mm512_xor_si512(x[i], w[j])));
        /* tell the compiler the operands change, so nothing is hoisted out of the loop */
        __asm__ volatile("" : "+v"(w[0]), "+v"(w[1]), "+v"(w[2]), "+v"(w[3]));
    }
    __m512i sum = acc[0];
    for (int i = 1; i < 16; i++) sum = _mm512_add_epi64(sum, acc[i]);
    return (uint64_t)_mm512_reduce_add_epi64(sum);
}
#endif

typedef struct {
    int64_t iters;
    atomic_ullong sink;
} peak_job;

static void run_peak_part(void *ctx, int part, int nparts) {
    (void)part;
    (void)nparts;
    peak_job *j = ctx;
#ifdef BITNN_X86
    atomic_fetch_add(&j->sink, peak_avx512(j->iters));
#else
    (void)j;
#endif
}

/* peak(iters, threads) -> bit pairs processed (per thread: iters * 16 * 512) */
static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    long long iters;
    int threads;
    if (!PyArg_ParseTuple(args, "Li", &iters, &threads)) return NULL;
    if (!cpu_has(V_AVX512)) {
        PyErr_SetString(PyExc_ValueError, "the peak loop needs AVX-512 VPOPCNTDQ");
        return NULL;
    }
    int n = threads < 1 ? 1 : (threads > thread_limit() ? thread_limit() : threads);
    peak_job job = {iters, 0};
    Py_BEGIN_ALLOW_THREADS pool_run(run_peak_part, &job, n);
    Py_END_ALLOW_THREADS
    (void)atomic_load(&job.sink);
    return PyLong_FromLongLong((long long)iters * 16 * 512 * n);
}

/* ---- Python glue --------------------------------------------------------------------------- */

/* a * b * c * d in int64, or -1 if the product overflows (every factor is >= 0). Buffer sizes
 * are computed with it, so a huge batch argument cannot wrap around and pass the size check. */
static int64_t size_product(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t ab, abc, abcd;
    if (a < 0 || b < 0 || c < 0 || d < 0 || __builtin_mul_overflow(a, b, &ab) ||
        __builtin_mul_overflow(ab, c, &abc) || __builtin_mul_overflow(abc, d, &abcd) || abcd > PY_SSIZE_T_MAX)
        return -1;
    return abcd;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, int64_t need, const char *what) {
    if (need < 0) {
        PyErr_Format(PyExc_ValueError, "%s buffer size overflows: the dimensions are too large", what);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0) return -1;
    if ((int64_t)view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s buffer holds %zd bytes, needs %zd", what, view->len, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_variant(int variant) {
    if (variant < V_PORTABLE || variant > V_AVX512 || !cpu_has(variant)) {
        PyErr_Format(PyExc_ValueError, "kernel variant %d is not available on this CPU", variant);
        return -1;
    }
    return 0;
}

/* layer(variant, x, w, m_or_None, lim, B, K, Q, n_out, mode, out, threads[, row_mask, row_offset])
 * row_mask: B x K words, each input row's own mask (training's dropout), with row_offset (B
 * int64, added to the row's scores); only without m, and not in the avx512 variant (training
 * there keeps the rows as the kernel's units, whose masks its tiles load with the weights). */
static PyObject *py_layer(PyObject *self, PyObject *args) {
    int variant, mode, threads;
    PyObject *xo, *wo, *mo, *lo, *oo, *xmo = Py_None, *xoo = Py_None;
    long long B, K, Q, n_out;
    if (!PyArg_ParseTuple(args, "iOOOOLLLLiOi|OO", &variant, &xo, &wo, &mo, &lo, &B, &K, &Q, &n_out, &mode, &oo,
                          &threads, &xmo, &xoo))
        return NULL;
    if (check_variant(variant)) return NULL;
    if (B < 0 || K < 1 || Q < 1 || n_out < 1 || n_out / QUAD + (n_out % QUAD != 0) > Q || (mode != MODE_BITS && mode != MODE_SCORES)) {
        PyErr_SetString(PyExc_ValueError, "invalid layer dimensions or mode");
        return NULL;
    }
    int have_m = mo != Py_None, have_xm = xmo != Py_None;
    if (have_xm != (xoo != Py_None) || (have_xm && (have_m || variant == V_AVX512 || mode != MODE_SCORES))) {
        PyErr_SetString(PyExc_ValueError,
                        "row masks come with row offsets, in scores mode, without unit masks, in the portable or avx2 variant");
        return NULL;
    }
    int64_t out_words = n_out / 64 + (n_out % 64 != 0);
    Py_buffer xb, wb, mb, xmb, xob, lb, ob;
    if (get_buffer(xo, &xb, 0, size_product(B, K, 8, 1), "input")) return NULL;
    if (get_buffer(wo, &wb, 0, size_product(Q, K, QUAD, 8), "weight")) goto fail_x;
    if (have_m && get_buffer(mo, &mb, 0, size_product(Q, K, QUAD, 8), "mask")) goto fail_w;
    if (have_xm && get_buffer(xmo, &xmb, 0, size_product(B, K, 8, 1), "row mask")) goto fail_m;
    if (have_xm && get_buffer(xoo, &xob, 0, size_product(B, 8, 1, 1), "row offset")) goto fail_xm;
    if (get_buffer(lo, &lb, 0, size_product(Q, QUAD, 8, 1), "limit")) goto fail_xo;
    if (get_buffer(oo, &ob, 1, size_product(B, mode == MODE_BITS ? out_words : n_out, 8, 1), "output")) goto fail_l;
    layer_args a = {xb.buf, wb.buf, have_m ? mb.buf : NULL, have_xm ? xmb.buf : NULL, lb.buf,
                    have_xm ? xob.buf : NULL, B, K, Q, n_out, out_words, mode,
                    mode == MODE_BITS ? ob.buf : NULL, mode == MODE_SCORES ? ob.buf : NULL};
    layer_job job = {layer_kernel(variant), &a};
    int64_t work = size_product(B, K, 64, n_out); /* buffers are real: no overflow, but stay safe */
    int nthreads = choose_threads(work < 0 ? INT64_MAX : work, threads);
    if (B > 0) {
        Py_BEGIN_ALLOW_THREADS pool_run(run_layer_part, &job, nthreads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&ob);
    PyBuffer_Release(&lb);
    if (have_xm) PyBuffer_Release(&xob);
    if (have_xm) PyBuffer_Release(&xmb);
    if (have_m) PyBuffer_Release(&mb);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&xb);
    Py_RETURN_NONE;
fail_l:
    PyBuffer_Release(&lb);
fail_xo:
    if (have_xm) PyBuffer_Release(&xob);
fail_xm:
    if (have_xm) PyBuffer_Release(&xmb);
fail_m:
    if (have_m) PyBuffer_Release(&mb);
fail_w:
    PyBuffer_Release(&wb);
fail_x:
    PyBuffer_Release(&xb);
    return NULL;
}

/* binarize(variant, x, is_u8, thr, never_or_None, B, F, F_pad, E, k, flips, c0, out, threads,
 *          row_stride) -> bad (bool); row r of x starts row_stride >= 0 elements after row r-1
 *          (rows may overlap: a sliding window over frames) */
static PyObject *py_binarize(PyObject *self, PyObject *args) {
    int variant, is_u8, threads;
    PyObject *xo, *to, *no, *fo, *oo;
    long long B, F, F_pad, E, k, row_stride;
    unsigned long long c0;
    if (!PyArg_ParseTuple(args, "iOiOOLLLLLOKOiL", &variant, &xo, &is_u8, &to, &no, &B, &F, &F_pad, &E, &k,
                          &fo, &c0, &oo, &threads, &row_stride))
        return NULL;
    if (check_variant(variant)) return NULL;
    if (B < 0 || F < 1 || F_pad < F || F_pad % 64 || E < 1 || E > 64 || k < 1 || k > 64 ||
        row_stride < 0 || (is_u8 && no == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "invalid binarizer dimensions");
        return NULL;
    }
    int64_t bits_out = size_product(F, k, 1, 1);
    if (bits_out < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid binarizer dimensions: F * k overflows");
        return NULL;
    }
    int64_t out_words = bits_out / 64 + (bits_out % 64 != 0);
    Py_buffer xb, tb, nb, fb, ob;
    /* the last row ends (B - 1) * row_stride + F elements in */
    int64_t span = B == 0 ? 0 : size_product(B - 1, row_stride, 1, 1);
    int64_t x_bytes = span < 0 || span > INT64_MAX - F ? -1 : size_product(B == 0 ? 0 : span + F, is_u8 ? 1 : 4, 1, 1);
    if (get_buffer(xo, &xb, 0, x_bytes, "input")) return NULL;
    if (get_buffer(to, &tb, 0, size_product(E, F_pad, is_u8 ? 1 : 4, 1), "thresholds")) goto fail_x;
    if (is_u8 && get_buffer(no, &nb, 0, size_product(E, F_pad / 64, 8, 1), "never")) goto fail_t;
    if (get_buffer(fo, &fb, 0, size_product(k, 8, 1, 1), "flips")) goto fail_n;
    if (get_buffer(oo, &ob, 1, size_product(B, out_words, 8, 1), "output")) goto fail_f;
    bin_args a = {xb.buf, is_u8, tb.buf, is_u8 ? nb.buf : NULL, B, F, F_pad, E, k, out_words, row_stride,
                  fb.buf, c0, ob.buf, 0};
    bin_job job = {bin_kernel(variant, k), &a};
    int64_t work = size_product(B, F, E, 64);
    int nthreads = choose_threads(work < 0 ? INT64_MAX : work, threads);
    if (B > 0) {
        Py_BEGIN_ALLOW_THREADS pool_run(run_bin_part, &job, nthreads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&ob);
    PyBuffer_Release(&fb);
    if (is_u8) PyBuffer_Release(&nb);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&xb);
    return PyBool_FromLong(atomic_load(&a.bad));
fail_f:
    PyBuffer_Release(&fb);
fail_n:
    if (is_u8) PyBuffer_Release(&nb);
fail_t:
    PyBuffer_Release(&tb);
fail_x:
    PyBuffer_Release(&xb);
    return NULL;
}

/* sign_matmul(variant, a, sam, sak, M, K, N, p, q_or_None, alpha, mul_or_None, out, threads):
 * out (M x N float32) = alpha * A S, times mul (M x N float32) elementwise if given; a is a
 * float32 buffer read at a[m * sam + k * sak] (strides in elements, >= 0) */
static PyObject *py_sign_matmul(PyObject *self, PyObject *args) {
    int variant, threads;
    long long sam, sak, M, K, N;
    float alpha;
    PyObject *ao, *po, *qo, *mo, *oo;
    if (!PyArg_ParseTuple(args, "iOLLLLLOOfOOi", &variant, &ao, &sam, &sak, &M, &K, &N, &po, &qo, &alpha, &mo,
                          &oo, &threads))
        return NULL;
    if (check_variant(variant) || variant == V_AVX512) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "sign_matmul runs the portable or avx2 variant");
        return NULL;
    }
    if (M < 0 || K < 1 || N < 0 || sam < 0 || sak < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid sign_matmul dimensions or strides");
        return NULL;
    }
    int have_q = qo != Py_None, have_mul = mo != Py_None;
    int64_t last = M == 0 ? 0 : size_product(M - 1, sam, 1, 1), lastk = size_product(K - 1, sak, 1, 1);
    int64_t a_len = last < 0 || lastk < 0 || last > INT64_MAX - lastk - 1 ? -1 : last + lastk + 1;
    Py_buffer ab, pb, qb, mb, ob;
    if (get_buffer(ao, &ab, 0, M == 0 ? 0 : size_product(a_len, 4, 1, 1), "a")) return NULL;
    if (get_buffer(po, &pb, 0, size_product((K + 7) / 8, N, 1, 1), "p")) goto fail_a;
    if (have_q && get_buffer(qo, &qb, 0, size_product((K + 7) / 8, N, 1, 1), "q")) goto fail_p;
    if (have_mul && get_buffer(mo, &mb, 0, size_product(M, N, 4, 1), "mul")) goto fail_q;
    if (get_buffer(oo, &ob, 1, size_product(M, N, 4, 1), "output")) goto fail_mul;
    smm_args a = {ab.buf, sam, sak, M, K, N, pb.buf, have_q ? qb.buf : NULL, alpha, have_mul ? mb.buf : NULL,
                  ob.buf, 0};
    smm_job job = {smm_portable, &a};
#ifdef BITNN_X86
    if (variant == V_AVX2) job.fn = smm_avx2;
#endif
    int64_t work = size_product(M, K, N, 1);
    int nthreads = choose_threads(work < 0 ? INT64_MAX : work, threads);
    if (nthreads > (M + 7) / 8) nthreads = (int)((M + 7) / 8);
    if (M > 0 && N > 0) {
        Py_BEGIN_ALLOW_THREADS pool_run(run_smm_part, &job, nthreads < 1 ? 1 : nthreads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&ob);
    if (have_mul) PyBuffer_Release(&mb);
    if (have_q) PyBuffer_Release(&qb);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&ab);
    if (atomic_load(&a.failed)) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail_mul:
    if (have_mul) PyBuffer_Release(&mb);
fail_q:
    if (have_q) PyBuffer_Release(&qb);
fail_p:
    PyBuffer_Release(&pb);
fail_a:
    PyBuffer_Release(&ab);
    return NULL;
}

/* sign_planes(s, K, N, p, q_or_None, threads): see run_planes_part */
static PyObject *py_sign_planes(PyObject *self, PyObject *args) {
    int threads;
    long long K, N;
    PyObject *so, *po, *qo;
    if (!PyArg_ParseTuple(args, "OLLOOi", &so, &K, &N, &po, &qo, &threads)) return NULL;
    if (K < 0 || N < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid sign_planes dimensions");
        return NULL;
    }
    int have_q = qo != Py_None;
    Py_buffer sb, pb, qb;
    if (get_buffer(so, &sb, 0, size_product(K, N, 4, 1), "s")) return NULL;
    if (get_buffer(po, &pb, 1, size_product((K + 7) / 8, N, 1, 1), "p")) goto fail_s;
    if (have_q && get_buffer(qo, &qb, 1, size_product((K + 7) / 8, N, 1, 1), "q")) goto fail_p;
    planes_args a = {sb.buf, K, N, pb.buf, have_q ? qb.buf : NULL};
    int64_t work = size_product(K, N, 64, 1);
    int nthreads = choose_threads(work < 0 ? INT64_MAX : work, threads);
    if (nthreads > (K + 7) / 8) nthreads = (int)((K + 7) / 8);
    if (K > 0 && N > 0) {
        Py_BEGIN_ALLOW_THREADS pool_run(run_planes_part, &a, nthreads < 1 ? 1 : nthreads);
        Py_END_ALLOW_THREADS
    }
    if (have_q) PyBuffer_Release(&qb);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&sb);
    Py_RETURN_NONE;
fail_p:
    PyBuffer_Release(&pb);
fail_s:
    PyBuffer_Release(&sb);
    return NULL;
}

static PyObject *py_available(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    const char *names[] = {"portable", "avx2", "avx512"};
    for (int v = V_PORTABLE; v <= V_AVX512; v++)
        if (cpu_has(v)) {
            PyObject *s = PyUnicode_FromString(names[v]);
            PyList_Append(out, s);
            Py_DECREF(s);
        }
    return out;
}

static PyObject *py_threads(PyObject *self, PyObject *noargs) { return PyLong_FromLong(thread_limit()); }

static PyMethodDef methods[] = {
    {"layer", py_layer, METH_VARARGS, "Fused bit layer on packed inputs."},
    {"binarize", py_binarize, METH_VARARGS, "Edge binarizer: raw inputs to packed bits."},
    {"sign_matmul", py_sign_matmul, METH_VARARGS, "Float matrix times a +-1 or -1/0/+1 bit-plane matrix."},
    {"sign_planes", py_sign_planes, METH_VARARGS, "A float matrix's signs as sign_matmul's bit planes."},
    {"available", py_available, METH_NOARGS, "Kernel variants this CPU runs."},
    {"threads", py_threads, METH_NOARGS, "Most threads a call uses."},
    {"peak", py_peak, METH_VARARGS, "Run the in-register XOR+popcount+add loop (AVX-512)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "bitnn compiled bit kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    pthread_atfork(NULL, NULL, pool_reset_after_fork);
    return PyModule_Create(&module);
}
