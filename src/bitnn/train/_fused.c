/* Fused passes over round 2's latent weights W for training at precision bfloat16
 * (bitnn.train.layers._ExactBitLinear). PyTorch takes three to four passes over the weights
 * for each of these, and with four layers of millions of weights they cost as much per step
 * as the matmuls; here each is one pass.
 *
 *   signs(W, t)     -> sign(W) as int8 (the forward's exact int8 product) and as bfloat16 (the
 *                      backward's bfloat16 product), +1 where W >= 0 (also -0), else -1, and
 *                      0 where |W| < t (absent weights; t = 0 keeps them all).
 *   tanh_grad(G, W) -> float(G) * (1 - tanh(W)^2): the gradient of sign(tanh(W)) taken
 *                      straight through tanh, from G = dL/dsign in bfloat16.
 *
 * tanh comes from glibc's vector math library (libmvec: AVX-512, AVX2 or SSE variant, the
 * widest the CPU runs), within a few units in the last place of PyTorch's tanh. Single-threaded
 * on purpose: right after a PyTorch op (as in training) a second thread of ours was slower, not
 * faster, most likely competing with PyTorch's OpenMP workers that keep spinning for a while
 * (2 cores, the four MNIST layers' tanh' with cold caches: 2.5 ms on one thread, 4.0 ms on
 * two). Addresses come from Python (bitnn.train.layers checks dtypes, sizes and contiguity);
 * the GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

__m512 _ZGVeN16v_tanhf(__m512);
__m256 _ZGVdN8v_tanhf(__m256);
__m128 _ZGVbN4v_tanhf(__m128);

static float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One tanh_grad loop per vector width: BODY reads LANES elements at wp and gp and writes LANES
 * at op. The last partial vector goes through the same BODY from a zero-padded copy, so every
 * element gets the same tanh. */
#define TANH_GRAD_LOOP(LANES, BODY)                                                            \
    int64_t i = 0;                                                                             \
    for (; i + LANES <= n; i += LANES) {                                                       \
        const float *wp = w + i;                                                               \
        const uint16_t *gp = g + i;                                                            \
        float *op = out + i;                                                                   \
        BODY                                                                                   \
    }                                                                                          \
    if (i < n) {                                                                               \
        float wt[LANES] = {0}, ot[LANES];                                                      \
        uint16_t gt[LANES] = {0};                                                              \
        memcpy(wt, w + i, (size_t)(n - i) * sizeof *w);                                        \
        memcpy(gt, g + i, (size_t)(n - i) * sizeof *g);                                        \
        const float *wp = wt;                                                                  \
        const uint16_t *gp = gt;                                                               \
        float *op = ot;                                                                        \
        BODY                                                                                   \
        memcpy(out + i, ot, (size_t)(n - i) * sizeof *out);                                    \
    }

typedef void (*tanh_grad_fn)(const float *w, const uint16_t *g, float *out, int64_t n);

__attribute__((target("avx512f"))) static void tanh_grad_avx512(const float *w, const uint16_t *g,
                                                                 float *out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    TANH_GRAD_LOOP(16, {
        __m512i g32 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)gp));
        __m512 gv = _mm512_castsi512_ps(_mm512_slli_epi32(g32, 16));
        __m512 t = _ZGVeN16v_tanhf(_mm512_loadu_ps(wp));
        _mm512_storeu_ps(op, _mm512_mul_ps(gv, _mm512_sub_ps(one, _mm512_mul_ps(t, t))));
    })
}

__attribute__((target("avx2"))) static void tanh_grad_avx2(const float *w, const uint16_t *g,
                                                            float *out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    TANH_GRAD_LOOP(8, {
        __m256i g32 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)gp));
        __m256 gv = _mm256_castsi256_ps(_mm256_slli_epi32(g32, 16));
        __m256 t = _ZGVdN8v_tanhf(_mm256_loadu_ps(wp));
        _mm256_storeu_ps(op, _mm256_mul_ps(gv, _mm256_sub_ps(one, _mm256_mul_ps(t, t))));
    })
}

static void tanh_grad_sse(const float *w, const uint16_t *g, float *out, int64_t n) {
    const __m128 one = _mm_set1_ps(1.0f);
    TANH_GRAD_LOOP(4, {
        __m128 gv = _mm_setr_ps(bf16_to_float(gp[0]), bf16_to_float(gp[1]), bf16_to_float(gp[2]),
                                bf16_to_float(gp[3]));
        __m128 t = _ZGVbN4v_tanhf(_mm_loadu_ps(wp));
        _mm_storeu_ps(op, _mm_mul_ps(gv, _mm_sub_ps(one, _mm_mul_ps(t, t))));
    })
}

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

/* __builtin_cpu_supports takes only string literals: one check function per feature */
static int runs_sse(void) { return 1; } /* part of x86-64 */
static int runs_avx2(void) { return __builtin_cpu_init(), __builtin_cpu_supports("avx2"); }
static int runs_avx512(void) { return __builtin_cpu_init(), __builtin_cpu_supports("avx512f"); }

/* The variants, narrowest first; the widest one the CPU runs is used unless a test names one. */
static const struct {
    const char *name;
    int (*runs)(void);
    tanh_grad_fn tanh_grad;
} VARIANTS[] = {
    {"sse", runs_sse, tanh_grad_sse},
    {"avx2", runs_avx2, tanh_grad_avx2},
    {"avx512", runs_avx512, tanh_grad_avx512},
};
#define N_VARIANTS ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

static int supported(int v) { return VARIANTS[v].runs(); }

static PyObject *py_tanh_grad(PyObject *self, PyObject *args) {
    unsigned long long w, g, out;
    long long n;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "KKKL|s", &w, &g, &out, &n, &name)) return NULL;
    int v;
    if (name) {
        for (v = 0; v < N_VARIANTS && strcmp(VARIANTS[v].name, name) != 0; v++) {}
        if (v == N_VARIANTS || !supported(v))
            return PyErr_Format(PyExc_ValueError, "tanh_grad: no variant %s on this CPU", name);
    } else {
        for (v = N_VARIANTS - 1; v > 0 && !supported(v); v--) {}
    }
    Py_BEGIN_ALLOW_THREADS
    VARIANTS[v].tanh_grad((const float *)w, (const uint16_t *)g, (float *)out, n);
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
    {"tanh_grad", py_tanh_grad, METH_VARARGS,
     "out = float(G) * (1 - tanh(W)^2) (addresses, n[, variant]): the widest variant unless named."},
    {"signs", py_signs, METH_VARARGS,
     "sign(W) as int8 and as bfloat16, 0 where |W| < t (addresses, n[, t])."},
    {"variants", py_variants, METH_NOARGS, "The variants this CPU runs, narrowest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }

#else
#error "bitnn.train._fused is written for x86-64 (glibc's libmvec); elsewhere PyTorch's ops run"
#endif
