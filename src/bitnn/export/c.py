"""Export a :class:`BitNetwork` to dependency-free C (C99, no malloc, no floats needed).

``export_c(network, folder, name, target)`` writes ``NAME.h`` and ``NAME.c``. The generated
code uses 32-bit words (bit ``j`` of a vector in word ``j / 32`` at position ``j % 32``, padding
bits 0), constants in the smallest integer type that holds them, no static or global mutable
state (the caller passes a workspace, so every function is reentrant), and a popcount chosen by
the target, so it builds on a microcontroller as well as on a PC. It computes exactly what the
reference engine does (tests compile it and compare bit for bit, on the host and on emulated
Cortex-M4 and Cortex-M0).

API of the generated code (``NAME_`` prefix; ``work`` points to ``NAME_WORK_WORDS`` words)::

    NAME_binarize_u8(const uint8_t *x, uint32_t *bits)   raw uint8 features -> input bits
    NAME_binarize_f32(const float *x, uint32_t *bits)    raw float features -> input bits
    NAME_scores(const uint32_t *bits, int32_t *scores, uint32_t *work)
                                                         classifier: the last layer's scores
    NAME_predict_u8(const uint8_t *x, uint32_t *work) / _f32
                                                         classifier: the class (argmax,
                                                         lowest index on ties)
    NAME_forward_bits(const uint32_t *bits, uint32_t *out, uint32_t *work)
                                                         bit-output networks

The uint8 entry points compare integers (edges rounded up at export, exact for integer inputs).
The float ones compare float32 values as the Python binarizers do, with edges that are normal
numbers (an edge between 0 and the smallest normal float has the same effect on every input
that is not itself subnormal), so they stay exact when the FPU flushes subnormals to zero.
Defining ``NAME_NO_FLOAT`` when compiling ``NAME.c`` leaves the float path (code and edges) out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnn.binarize import edge_code
from bitnn.bits import unpack_bits
from bitnn.errors import InputError
from bitnn.network import BitLayer, BitNetwork

#: target -> default popcount of the generated code (see ``POPCOUNT_KINDS``)
TARGETS = {"host": 1, "cortex-m4": 2, "cortex-m0": 2}
POPCOUNT_KINDS = {0: "SWAR per word", 1: "compiler builtin", 2: "carry-save (Harley-Seal)"}
#: per target: the compiler and flags the sizes are measured with
TARGET_CFLAGS = {
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m0": ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],
    "host": [],
}
#: bytes of stack the generated functions need beyond the workspace, at most (GCC, -O1 and
#: above, 32-bit targets; tests/test_firmware.py checks it with -fstack-usage)
STACK_BYTES = 256
FLT_MIN = float(np.finfo(np.float32).tiny)


def _words32(n_bits: int) -> int:
    return (n_bits + 31) // 32


def _rows_to_u32(words64: np.ndarray, n_bits: int) -> np.ndarray:
    """Rows of 64-bit words -> rows of 32-bit words (same bit order, padding 0)."""
    bits = unpack_bits(words64, n_bits)
    padded = np.zeros((bits.shape[0], _words32(n_bits) * 32), dtype=np.uint8)
    padded[:, :n_bits] = bits
    weights = (1 << np.arange(32, dtype=np.uint64)).astype(np.uint64)
    return (padded.reshape(bits.shape[0], -1, 32).astype(np.uint64) * weights).sum(2)


def _array(ctype: str, name: str, values: np.ndarray, fmt: str = "{}", per_line: int = 8) -> str:
    flat = [fmt.format(int(v)) for v in np.asarray(values).reshape(-1)]
    body = ",\n".join(
        "    " + ", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)
    )
    return f"static const {ctype} {name}[{max(1, len(flat))}] = {{\n{body or '    0'}\n}};\n"


def _unsigned_type(max_value: int) -> str:
    for bits in (8, 16, 32):
        if max_value < (1 << bits):
            return f"uint{bits}_t"
    raise InputError("a constant of the model does not fit in 32 bits")


def _int_table(prefix: str, values: np.ndarray) -> tuple[str, str]:
    """Per-unit integers as ``BASE + DELTA[u]`` with DELTA in the smallest unsigned type.

    Returns (C declarations, C expression of unit ``u`` as int32_t)."""
    v = np.asarray(values, dtype=np.int64)
    lo, hi = int(v.min()), int(v.max())
    if lo < -(2**31) or hi >= 2**31:
        raise InputError("a threshold of the model does not fit in 32 bits")
    if lo == hi:
        return "", f"(int32_t){lo}"
    ctype = _unsigned_type(hi - lo)
    decl = _array(ctype, f"{prefix}", v - lo, per_line=16)
    return decl, f"((int32_t){lo} + (int32_t){prefix}[u])"


def _float_literal(v: float) -> str:
    if v == 0:
        return "0.0f"
    return float(v).hex() + "f"  # exact (C99 hexadecimal floating constant)


def normal_edges(edges: np.ndarray) -> np.ndarray:
    """Edges with the same effect on every non-subnormal float32 input, all normal or 0.

    ``x >= e`` for a positive subnormal ``e`` is ``x > 0``, i.e. ``x >= FLT_MIN`` for normal x;
    for a negative subnormal ``e`` it is ``x >= 0``. Under flush-to-zero the originals would
    compare against 0 instead."""
    e = np.asarray(edges, dtype=np.float32).copy()
    e[(e > 0) & (e < FLT_MIN)] = np.float32(FLT_MIN)
    e[(e < 0) & (e > -FLT_MIN)] = np.float32(0.0)
    return e


def _valid_identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"{name!r} is not a valid C identifier; use letters, digits and _")
    return name


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise InputError(
            f"unsupported target {target!r}; choose one of {', '.join(sorted(TARGETS))}"
        )
    return target


# ---------------------------------------------------------------------------- popcount code

_POPCOUNT = """\
/* Popcount: {pc} = 0 SWAR per word, 1 compiler builtin, 2 carry-save (Harley-Seal) over
   blocks of words, then SWAR (for cores without a popcount instruction, e.g. Cortex-M). */
#ifndef {pc}
#define {pc} {default}
#endif
#if {pc} == 1 && (defined(__GNUC__) || defined(__clang__))
#define POP32(v) ((uint32_t)__builtin_popcount(v))
#else
static inline uint32_t pop32(uint32_t v) {{
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return (((v + (v >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}}
#define POP32(v) pop32(v)
#endif
/* per nibble / byte: the count of its bits (the first steps of the SWAR popcount); HSUM:
   acc + the sum of v's four bytes (each <= 127). On Thumb-2 the masks stay in registers
   (one instruction for a shift and a mask) and USADA8 sums the bytes where the core has it. */
#if {pc} == 2 && defined(__thumb2__) && (defined(__GNUC__) || defined(__clang__)) \\
    && !defined({upper}_NO_ASM)
static inline uint32_t nibbles(uint32_t v) {{
    uint32_t t;
    __asm__("and %[t], %[m1], %[v], lsr #1\\n\\t"
            "sub %[v], %[v], %[t]\\n\\t"
            "and %[t], %[m2], %[v], lsr #2\\n\\t"
            "and %[v], %[v], %[m2]\\n\\t"
            "add %[v], %[v], %[t]"
            : [v] "+r"(v), [t] "=&r"(t) : [m1] "r"(0x55555555u), [m2] "r"(0x33333333u));
    return v;
}}
static inline uint32_t bytes(uint32_t v) {{
    uint32_t t;
    __asm__("and %[t], %[m4], %[v], lsr #4\\n\\t"
            "and %[v], %[v], %[m4]\\n\\t"
            "add %[v], %[v], %[t]"
            : [v] "+r"(v), [t] "=&r"(t) : [m4] "r"(0x0f0f0f0fu));
    return v;
}}
#define BYTES(v) bytes(v)
#else
static inline uint32_t nibbles(uint32_t v) {{
    v = v - ((v >> 1) & 0x55555555u);
    return (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
}}
#define BYTES(v) (((v) & 0x0f0f0f0fu) + (((v) >> 4) & 0x0f0f0f0fu))
#endif
#define NIBBLES(v) nibbles(v)
#if {pc} == 2 && defined(__ARM_FEATURE_SIMD32) && (defined(__GNUC__) || defined(__clang__)) \\
    && !defined({upper}_NO_ASM)
static inline uint32_t hsum(uint32_t v, uint32_t acc) {{
    uint32_t r;
    __asm__("usada8 %0, %1, %2, %3" : "=r"(r) : "r"(v), "r"(0u), "r"(acc));
    return r;
}}
#define HSUM(v, acc) hsum(v, acc)
#else
#define HSUM(v, acc) ((acc) + (((((v) & 0x00ff00ffu) + (((v) >> 8) & 0x00ff00ffu)) \\
    * 0x00010001u) >> 16))
#endif
/* unrolled, the bit positions of a word's features become constants (GCC 8 and later) */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define UNROLL_WORD _Pragma("GCC unroll 32")
#else
#define UNROLL_WORD
#endif
/* carry-save adder: h:l = a + b + c, bit-sliced */
#define CSA(h, l, a, b, c) do {{ uint32_t u_ = (a) ^ (b), c_ = (c); \\
    (h) = ((a) & (b)) | (u_ & c_); (l) = u_ ^ c_; }} while (0)
"""


def _csa_block(p: int, word: str) -> list[str]:
    """Harley-Seal over the next 2**p words (offsets 0..2**p - 1 from the pointers): updates
    the counters c0..c{p-1} and adds the weight-2**p carries to ``total``.

    ``word`` is a format string of the j-th difference word, e.g. ``(x[{j}] ^ w[{j}])``."""
    lines: list[str] = []
    counter = [0]

    def carry(level: int, off: int) -> str:
        counter[0] += 1
        t = f"t{counter[0]}"
        if level == 1:
            a, b = word.format(j=off), word.format(j=off + 1)
            lines.append(f"CSA({t}, c0, c0, {a}, {b});")
        else:
            a = carry(level - 1, off)
            b = carry(level - 1, off + 2 ** (level - 1))
            lines.append(f"CSA({t}, c{level - 1}, c{level - 1}, {a}, {b});")
        return t

    top = carry(p, 0)
    decl = "uint32_t " + ", ".join(f"t{i + 1}" for i in range(counter[0])) + ";"
    return [decl, *lines, f"total += POP32({top});"]


def _asm_csa(h: str, low: str, a: str, b: str) -> list[str]:
    """Thumb-2 carry-save adder: h = carries of low + a + b, low = their sum bits; a is
    overwritten (scratch)."""
    return [
        f"and %[{h}], %[{low}], %[{a}]",
        f"eor %[{low}], %[{low}], %[{a}]",
        f"and %[{a}], %[{low}], %[{b}]",
        f"orr %[{h}], %[{h}], %[{a}]",
        f"eor %[{low}], %[{low}], %[{b}]",
    ]


def _asm_harley_seal(p: int) -> str:
    """The C macro HS{2**p}(x, w, c0, .., c{p-1}, e) (p = 3 or 4): Harley-Seal over 2**p words
    of x ^ w in Thumb-2 assembly (ldrd with post-increment; 51 instructions and 11 registers
    for 8 words, 107 and 13 for 16), for cores without a popcount instruction (Cortex-M3, M4,
    M7, M33). GCC's own schedule of the same C spills registers and loads every word with its
    own instruction (about 9.7 instructions a word instead of 6.7 on the Cortex-M4)."""

    def load(r1: str, r2: str) -> list[str]:
        return [
            "ldrd %[a], %[b], [%[x]], #8",
            f"ldrd %[{r1}], %[{r2}], [%[w]], #8",
            f"eor %[a], %[a], %[{r1}]",
            f"eor %[b], %[b], %[{r2}]",
        ]

    def eights(out: str) -> list[str]:  # 8 words -> the weight-8 carries in register `out`
        return (
            load("c", "d") + _asm_csa("c", "c0", "a", "b")  # c: twos
            + load("d", "p1") + _asm_csa("d", "c0", "a", "b")  # d: twos
            + _asm_csa("p1", "c1", "c", "d")  # p1: fours
            + load("c", "d") + _asm_csa("c", "c0", "a", "b")
            + load("d", "p2") + _asm_csa("d", "c0", "a", "b")
            + _asm_csa("p2", "c1", "c", "d")  # p2: fours
            + _asm_csa(out, "c2", "p1", "p2")
        )  # fmt: skip

    if p == 3:
        body, out_reg = eights("c"), "c"
    else:  # two groups of 8, their carries summed into c3: the weight-16 carries in p1
        body, out_reg = eights("q") + eights("c") + _asm_csa("p1", "c3", "q", "c"), "p1"
    counters = [f"c{i}" for i in range(p)]
    temps = ["a", "b", "c", "d", "p1", "p2"] + (["q"] if p == 4 else [])
    text = " \\\n".join(f'        "{line}\\n\\t"' for line in body)
    ops = [f'[{r}] "+r"({r})' for r in ["x", "w", *counters]]
    ops += [f'[{t}] "=&r"({"e" if t == out_reg else t + "_"})' for t in temps]
    decl = ", ".join(f"{t}_" for t in temps if t != out_reg)
    return (
        f"#define HS{2**p}(x, w, {', '.join(counters)}, e) do {{ uint32_t {decl}; \\\n"
        "    __asm__ volatile( \\\n"
        f"{text} \\\n"
        f"        : {', '.join(ops[:6])}, \\\n"
        f"          {', '.join(ops[6:])} \\\n"
        '        : : "memory"); } while (0)\n'
    )


def _finish(p: int) -> list[str]:
    """total = total * 2**p + sum of popcount(c_i) * 2**i, the counters summed nibble-wise
    (nibble sums stay <= 12), then bytewise, then the four bytes at once."""
    lines = []
    pairs = []
    for i in range(0, p, 2):
        if i + 1 < p:
            lines.append(f"    uint32_t m{i} = NIBBLES(c{i}) + (NIBBLES(c{i + 1}) << 1);")
        else:
            lines.append(f"    uint32_t m{i} = NIBBLES(c{i});")
        pairs.append((i, f"BYTES(m{i})"))
    # bytes <= 24 (c0 + 2 c1) + 4 * 24 (c2 + 2 c3) = 120, summed by HSUM
    expr = " + ".join(f"({b} << {i})" if i else b for i, b in pairs)
    lines.append(f"    total = HSUM({expr}, total << {p});")
    return lines


def _distance_function(words: int, masked: bool, pc: str) -> list[str]:
    """``static uint32_t dist{words}[m](x, w[, m])``: popcount((x ^ w) [& m]) over the words."""
    fname = f"dist{words}{'m' if masked else ''}"
    args = "const uint32_t *x, const uint32_t *w" + (", const uint32_t *m" if masked else "")
    word = "((x[{j}] ^ w[{j}]) & m[{j}])" if masked else "(x[{j}] ^ w[{j}])"
    step = "x += {n}; w += {n};" + (" m += {n};" if masked else "")
    plain = [
        "    uint32_t n = 0;",
        f"    for (uint32_t k = 0; k < {words}u; k++) n += POP32({word.format(j='k')});",
        "    return n;",
    ]
    out = [f"static uint32_t {fname}({args}) {{"]
    p = 4 if words >= 16 and not masked else 3 if words >= 8 else 2 if words >= 4 else 0
    if p == 0:
        return out + plain + ["}", ""]
    block = 2**p
    blocks, tail = divmod(words, block)
    counters = ", ".join(f"c{i} = 0" for i in range(p))
    out += [f"#if {pc} == 2", f"    uint32_t {counters}, total = 0;"]
    asm = f"HS{2**p}" if p >= 3 and not masked else ""
    regs = ", ".join(f"c{i}" for i in range(p))

    def c_blocks() -> list[str]:  # C: the popcount of each block's top carries
        lines = [f"    for (uint32_t k = 0; k < {blocks}u; k++) {{"]
        lines += [f"        {line}" for line in _csa_block(p, word)]
        return [*lines, "        " + step.format(n=f"{block}u"), "    }"]

    def asm_blocks(n: int, indent: str) -> list[str]:  # unrolled up to 3: fewer spills
        one = ["uint32_t e;", f"{asm}(x, w, {regs}, e);", "ne += NIBBLES(e);"]
        if n <= 3:
            return [line for _ in range(n) for line in
                    [f"{indent}{{", *(f"{indent}    {x}" for x in one), f"{indent}}}"]]  # fmt: skip
        loop = [f"{indent}for (uint32_t k = 0; k < {n}u; k++) {{"]
        return [*loop, *(f"{indent}    {x}" for x in one), f"{indent}}}"]

    if asm and blocks <= 30:
        # the top carries' nibble counts over groups of 3 blocks (<= 12), then their bytes
        # (<= 24 a group, 10 groups at most), summed once
        out += [f"#ifdef {asm}", "    uint32_t be = 0;"]
        groups, rest = divmod(blocks, 3)
        for n_groups, n_blocks in ((groups, 3), (1 if rest else 0, rest)):
            if n_groups:
                out += [
                    f"    for (uint32_t g = 0; g < {n_groups}u; g++) {{",
                    "        uint32_t ne = 0;",
                ]
                out += asm_blocks(n_blocks, "        ")
                out += ["        be += BYTES(ne);", "    }"]
        out += ["    total = HSUM(be, 0u);", "#else", *c_blocks(), "#endif"]
    else:
        out += c_blocks()
    out += _finish(p)
    if tail:
        out.append(
            f"    for (uint32_t k = 0; k < {tail}u; k++) total += POP32({word.format(j='k')});"
        )
    out += ["    return total;", "#else", *plain, "#endif", "}", ""]
    return out


# ----------------------------------------------------------------------------- binarizer code


@dataclass
class _Binarizer:
    data_u8: str
    data_f32: str
    cmp_u8: str  # comparison of x[f] with edge j (u8), format fields f, j
    cmp_f32: str
    n_edges: int
    k: int
    direct: bool  # thermometer-like: the comparison bits are the code bits
    codes: np.ndarray


def _binarizer(net: BitNetwork) -> _Binarizer:
    code = edge_code(net.binarizer)
    if code is None:
        raise InputError(
            f"the C export supports threshold, quantile and Lloyd-Max binarizers, "
            f"not {net.binarizer!r} (its bits are not per-feature comparisons)"
        )
    n_edges = code.edges.shape[1]
    if n_edges > 32 or code.k > 8:
        raise InputError("the C export supports at most 32 edges and 8 bits per feature")
    ie = code.int_edges
    # x >= e as the sign bit of a difference (no compare-and-branch): e - 1 - x < 0
    bit = "((uint32_t)((int32_t)EDGES_U8[{i}] - (int32_t)x[{f}]) >> 31)"
    if ie.min() >= 1:  # store e - 1 (x > e - 1)
        u8, cmp_u8 = _array("uint8_t", "EDGES_U8", ie - 1, per_line=16), bit
    else:
        ctype = "uint8_t" if ie.max() <= 255 else "uint16_t"
        u8 = _array(ctype, "EDGES_U8", ie, per_line=16)
        cmp_u8 = bit.replace("(int32_t)EDGES_U8[{i}]", "(int32_t)EDGES_U8[{i}] - 1")
    fl = [_float_literal(v) for v in normal_edges(code.edges).reshape(-1)]
    body = ",\n".join("    " + ", ".join(fl[i : i + 4]) for i in range(0, len(fl), 4))
    f32 = f"static const float EDGES_F32[{max(1, len(fl))}] = {{\n{body}\n}};\n"
    k = code.k
    direct = k == n_edges and code.c0 == 0 and code.flips == tuple(1 << b for b in range(k))
    cmp_f32 = "(uint32_t)(x[{f}] >= EDGES_F32[{i}])"
    return _Binarizer(u8, f32, cmp_u8, cmp_f32, n_edges, k, direct, code.codes)


def _binarize_function(name: str, kind: str, ctype: str, b: _Binarizer, n_feat: int) -> list[str]:
    """Binarize function: per feature, the code of its level, packed into 32-bit words."""
    cmp = b.cmp_u8 if kind == "u8" else b.cmp_f32
    e = b.n_edges
    if b.direct:
        code = " | ".join(f"({cmp.format(f='f', i=f'f * {e}u + {j}u')} << {j})" for j in range(e))
    else:
        level = " + ".join(cmp.format(f="f", i=f"f * {e}u + {j}u") for j in range(e))
        code = f"(uint32_t)CODES[{level}]"
    out = [f"void {name}_binarize_{kind}(const {ctype} *x, uint32_t *bits) {{"]
    k = b.k
    if 32 % k == 0:
        per = 32 // k
        full, rest = divmod(n_feat, per)
        out.append("    uint32_t f = 0;")
        if full:
            out += [
                f"    for (uint32_t wd = 0; wd < {full}u; wd++) {{",
                "        uint32_t acc = 0;",
                "        UNROLL_WORD",
                f"        for (uint32_t j = 0; j < {32}u; j += {k}u, f++) acc |= ({code}) << j;",
                "        bits[wd] = acc;",
                "    }",
            ]
        if rest:
            out += [
                "    {",
                "        uint32_t acc = 0;",
                f"        for (uint32_t j = 0; j < {rest * k}u; j += {k}u, f++)"
                f" acc |= ({code}) << j;",
                f"        bits[{full}] = acc;",
                "    }",
            ]
        else:
            out.append("    (void)f;")
    else:
        out += [
            f"    for (uint32_t i = 0; i < {_words32(n_feat * k)}u; i++) bits[i] = 0;",
            f"    for (uint32_t f = 0; f < {n_feat}u; f++) {{",
            f"        uint32_t c = {code}, u = f * {k}u, s = u & 31u;",
            "        bits[u >> 5] |= c << s;",
            f"        if (s + {k}u > 32u) bits[(u >> 5) + 1] |= c >> (32u - s);",
            "    }",
        ]
    return [*out, "}", ""]


# ------------------------------------------------------------------------------- layer code


def _layer_function(i: int, layer: BitLayer, scores: bool) -> tuple[str, list[str]]:
    """Data and the function of layer i: ``layerI(x, out)`` writing bits or int32 scores."""
    words = _words32(layer.n_in)
    masked = layer.mask is not None
    data = _array("uint32_t", f"L{i}_W", _rows_to_u32(layer.weight, layer.n_in), "0x{:08x}u", 6)
    if masked:
        data += _array("uint32_t", f"L{i}_M", _rows_to_u32(layer.mask, layer.n_in), "0x{:08x}u", 6)
    dist = f"dist{words}{'m' if masked else ''}(x, w{', m' if masked else ''})"
    step = f"w += {words}u;" + (f" m += {words}u;" if masked else "")
    ptrs = [f"    const uint32_t *w = L{i}_W;"]
    if masked:
        ptrs.append(f"    const uint32_t *m = L{i}_M;")
    n = layer.n_out
    if scores:  # score = offset - 2 * mismatches
        offset = layer.n_present.astype(np.int64) - layer.threshold.astype(np.int64)
        decl, expr = _int_table(f"L{i}_OFFSET", offset)
        fn = [
            f"static void layer{i}(const uint32_t *x, int32_t *out) {{",
            *ptrs,
            f"    for (uint32_t u = 0; u < {n}u; u++) {{",
            f"        out[u] = {expr} - 2 * (int32_t){dist};",
            f"        {step}",
            "    }",
            "}",
            "",
        ]
        return data + decl, fn
    # fires iff mismatches <= limit; clipped to [-1, n_present] (same decisions, small range)
    limit = np.clip(layer.popcount_limit.astype(np.int64), -1, layer.n_present)
    decl, expr = _int_table(f"L{i}_LIMIT", limit)
    fn = [
        f"static void layer{i}(const uint32_t *x, uint32_t *out) {{",
        *ptrs,
        "    uint32_t acc = 0;",
        f"    for (uint32_t u = 0; u < {n}u; u++) {{",
        f"        acc |= (uint32_t)((int32_t){dist} <= {expr}) << (u & 31u);",
        "        if ((u & 31u) == 31u) {",
        "            out[u >> 5] = acc;",
        "            acc = 0;",
        "        }",
        f"        {step}",
        "    }",
    ]
    if n % 32:
        fn.append(f"    out[{n // 32}] = acc;")
    return data + decl, [*fn, "}", ""]


# ------------------------------------------------------------------------------------ export


@dataclass
class CExport:
    """The generated files' text and the figures the header states."""

    header: str
    source: str
    work_words: int
    flash_constants: int  # bytes of constant tables on the uint8 path


def generate_c(network: BitNetwork, name: str = "bitnn_model", target: str = "host") -> CExport:
    """The text of ``NAME.h`` and ``NAME.c`` (nothing is written)."""
    name = _valid_identifier(name)
    target = _check_target(target)
    layers = network.layers
    n_in, n_out = network.n_inputs, network.n_outputs
    upper = name.upper()
    has_bin = network.binarizer is not None
    classifier = network.output == "scores"
    b = _binarizer(network) if has_bin else None
    pc = f"{upper}_POPCOUNT"

    hidden = layers[:-1]
    buf_words = max((_words32(ly.n_out) for ly in hidden), default=0)
    n_bufs = min(2, len(hidden))
    in_words = _words32(n_in)
    # work layout: [ping | pong] for scores/forward; predict adds [input bits | scores]
    net_words = n_bufs * buf_words
    predict_words = net_words + (in_words + n_out if classifier and has_bin else 0)
    work_words = max(1, net_words, predict_words)

    h = [
        f"/* {name}: a bitwise neural network exported by bitnn for target {target}.",
        "   Dependency-free C99; reentrant (all state in the caller's workspace). */",
        f"#ifndef {upper}_H",
        f"#define {upper}_H",
        "#include <stdint.h>",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        f"#define {upper}_INPUT_BITS {n_in}",
        f"#define {upper}_INPUT_WORDS {in_words}",
        f"#define {upper}_OUTPUTS {n_out}",
        "/* the workspace every call needs (uint32_t words), and a bound of the stack the",
        "   functions use beyond it (GCC -O1 or above on a 32-bit core) */",
        f"#define {upper}_WORK_WORDS {work_words}",
        f"#define {upper}_WORK_BYTES {4 * work_words}",
        f"#define {upper}_STACK_BYTES {STACK_BYTES}",
    ]
    if has_bin:
        h.append(f"#define {upper}_FEATURES {network.binarizer.n_features_in_}")
        h.append(f"void {name}_binarize_u8(const uint8_t *x, uint32_t *bits);")
        h.append(f"#ifndef {upper}_NO_FLOAT")
        h.append(f"void {name}_binarize_f32(const float *x, uint32_t *bits);")
        h.append("#endif")
    if classifier:
        h.append(f"#define {upper}_CLASSIFIER 1")
        h.append(f"void {name}_scores(const uint32_t *bits, int32_t *scores, uint32_t *work);")
        if has_bin:
            h.append(f"int {name}_predict_u8(const uint8_t *x, uint32_t *work);")
            h.append(f"#ifndef {upper}_NO_FLOAT")
            h.append(f"int {name}_predict_f32(const float *x, uint32_t *work);")
            h.append("#endif")
    else:
        h.append(f"#define {upper}_OUTPUT_WORDS {_words32(n_out)}")
        h.append(f"void {name}_forward_bits(const uint32_t *bits, uint32_t *out, uint32_t *work);")
    h += ["#ifdef __cplusplus", "}", "#endif", f"#endif /* {upper}_H */"]

    c = [
        f"/* {name}: generated by bitnn for target {target}; see {name}.h. */",
        f'#include "{name}.h"',
        "",
        _POPCOUNT.format(pc=pc, default=TARGETS[target], upper=upper),
        f"#if {pc} == 2 && defined(__thumb2__) && (defined(__GNUC__) || defined(__clang__)) \\",
        f"    && !defined({upper}_NO_ASM)",
        _asm_harley_seal(3) + _asm_harley_seal(4) + "#endif",
        "",
    ]
    dists = sorted({(_words32(ly.n_in), ly.mask is not None) for ly in layers})
    for words, masked in dists:
        c += _distance_function(words, masked, pc)
    flash = 0
    for i, layer in enumerate(layers):
        data, fn = _layer_function(i, layer, classifier and i == len(layers) - 1)
        c.append(data)
        c += fn
        flash += 4 * layer.n_out * _words32(layer.n_in) * (2 if layer.mask is not None else 1)
    if b is not None:
        f = network.binarizer.n_features_in_
        c.append(b.data_u8)
        if not b.direct:
            c.append(
                _array(
                    "uint8_t", "CODES", [int(sum(r[j] << j for j in range(b.k))) for r in b.codes]
                )
            )
        c += _binarize_function(name, "u8", "uint8_t", b, f)
        c += [f"#ifndef {upper}_NO_FLOAT", b.data_f32]
        c += _binarize_function(name, "f32", "float", b, f)
        c += ["#endif", ""]

    # the forward pass through the workspace's ping-pong buffers
    body = ["    const uint32_t *h = bits;"]
    for i in range(len(hidden)):
        dest = f"work + {(i % 2) * buf_words}" if i % 2 else "work"
        body.append(f"    layer{i}(h, {dest});")
        body.append(f"    h = {dest};")
    last = len(layers) - 1
    if classifier:
        c.append(f"void {name}_scores(const uint32_t *bits, int32_t *scores, uint32_t *work) {{")
        if not hidden:
            body.append("    (void)work;")
        c += body
        c.append(f"    layer{last}(h, scores);")
        c.append("}\n")
        if b is not None:
            for kind, ctype in (("u8", "uint8_t"), ("f32", "float")):
                if kind == "f32":
                    c.append(f"#ifndef {upper}_NO_FLOAT")
                c.append(
                    f"""int {name}_predict_{kind}(const {ctype} *x, uint32_t *work) {{
    uint32_t *bits = work + {net_words};
    int32_t *scores = (int32_t *)(work + {net_words + in_words});
    int best = 0;
    {name}_binarize_{kind}(x, bits);
    {name}_scores(bits, scores, work);
    for (int u = 1; u < {n_out}; u++)
        if (scores[u] > scores[best]) best = u; /* ties: the lowest index */
    return best;
}}"""
                )
                if kind == "f32":
                    c.append("#endif")
                c.append("")
    else:
        c.append(
            f"void {name}_forward_bits(const uint32_t *bits, uint32_t *out, uint32_t *work) {{"
        )
        if not hidden:
            body.append("    (void)work;")
        c += body
        c.append(f"    layer{last}(h, out);")
        c.append("}\n")
    return CExport("\n".join(h) + "\n", "\n".join(c) + "\n", work_words, flash)


def check_output_folder(folder: Path, name: str) -> None:
    """Refuse a bad name, a file, or a folder holding anything but an earlier export of
    ``name``."""
    _valid_identifier(name)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output {folder} exists and is not a folder; choose a folder")
    if folder.is_dir():
        ours = {f"{name}.h", f"{name}.c"}
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise InputError(
                f"output folder {folder} already holds other files ({shown}); "
                "export into a new or empty folder"
            )


def export_c(
    network: BitNetwork,
    folder: str | Path,
    name: str = "bitnn_model",
    target: str = "host",
) -> list[Path]:
    """Write ``NAME.h`` and ``NAME.c`` into ``folder`` (new, empty, or holding only an earlier
    export of the same name); returns their paths. Every check runs before anything is
    written, and both files are written to temporary names first, then renamed."""
    folder = Path(folder)
    gen = generate_c(network, name, target)  # raises InputError before touching the disk
    check_output_folder(folder, name)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.h", folder / f"{name}.c"]
    tmps = []
    try:
        for path, text in zip(paths, (gen.header, gen.source), strict=True):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
            tmps.append(Path(tmp))
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for tmp, path in zip(tmps, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return paths


# ------------------------------------------------------------------------- toolchain figures


@dataclass
class Sizes:
    """Bytes of the compiled model object, from the toolchain's ``size``."""

    flash: int  # text + data, uint8 path only (NAME_NO_FLOAT)
    flash_with_float: int
    ram_static: int  # data + bss (0: the generated code has no mutable globals)
    work: int  # NAME_WORK_BYTES
    compiler: str


def toolchain_sizes(folder: str | Path, name: str, target: str) -> Sizes | None:
    """Compile ``NAME.c`` for the target (-O2) and read its sections with ``size``; None when
    the compiler is not installed or cannot build for the target."""
    target = _check_target(target)
    prefix = "" if target == "host" else "arm-none-eabi-"
    cc = shutil.which(prefix + "gcc") or (shutil.which("cc") if target == "host" else None)
    size = shutil.which(prefix + "size") or (shutil.which("size") if target == "host" else None)
    if cc is None or size is None:
        return None
    src = Path(folder) / f"{name}.c"
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in ([f"-D{name.upper()}_NO_FLOAT"], []):
            obj = Path(tmp) / "m.o"
            try:
                subprocess.run(
                    [cc, "-std=c99", "-O2", "-ffunction-sections", "-fdata-sections",
                     *TARGET_CFLAGS[target], *extra, "-c", str(src), "-o", str(obj)],
                    check=True, capture_output=True,
                )  # fmt: skip
                r = subprocess.run([size, str(obj)], check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError:  # a compiler that cannot build for it
                return None
            text, data, bss = (int(v) for v in r.stdout.splitlines()[1].split()[:3])
            out.append((text + data, data + bss))
    header = (Path(folder) / f"{name}.h").read_text()
    work = int(re.search(rf"#define {name.upper()}_WORK_BYTES (\d+)", header).group(1))
    return Sizes(out[0][0], out[1][0], out[0][1], work, Path(cc).name)
