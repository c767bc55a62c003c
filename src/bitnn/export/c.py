"""Export a :class:`BitNetwork` to dependency-free C (C99, no malloc, no floats needed).

``export_c(network, folder, name)`` writes ``NAME.h`` and ``NAME.c``. The generated code uses
32-bit words (bit ``j`` of a vector in word ``j / 32`` at position ``j % 32``, padding bits 0),
static buffers whose sizes are fixed at export time, and a portable popcount, so it builds on a
microcontroller as well as on a PC. It computes exactly what the reference engine does (tests
compile it and compare bit for bit).

API of the generated code (``NAME_`` prefix)::

    NAME_binarize_u8(const uint8_t *x, uint32_t *bits)   raw uint8 features -> input bits
    NAME_binarize_f32(const float *x, uint32_t *bits)    raw float features -> input bits
    NAME_scores(const uint32_t *bits, int32_t *scores)   classifier: last layer's scores
    NAME_predict_u8(const uint8_t *x) / _f32             classifier: the class (argmax,
                                                         lowest index on ties)
    NAME_forward_bits(const uint32_t *bits, uint32_t *out)  bit-output networks

The uint8 entry points compare integers (edges are rounded up at export, exact for integer
inputs); the float ones compare float32 values, as the Python binarizers do.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bitnn.binarize import edge_code
from bitnn.bits import unpack_bits
from bitnn.errors import InputError
from bitnn.io import atomic_write_bytes
from bitnn.network import BitLayer, BitNetwork


def _words32(n_bits: int) -> int:
    return (n_bits + 31) // 32


def _rows_to_u32(words64: np.ndarray, n_bits: int) -> np.ndarray:
    """Rows of 64-bit words -> rows of 32-bit words (same bit order, padding 0)."""
    bits = unpack_bits(words64, n_bits)
    padded = np.zeros((bits.shape[0], _words32(n_bits) * 32), dtype=np.uint8)
    padded[:, :n_bits] = bits
    weights = (1 << np.arange(32, dtype=np.uint64)).astype(np.uint64)
    return (padded.reshape(bits.shape[0], -1, 32).astype(np.uint64) * weights).sum(2)


def _array(ctype: str, name: str, values: np.ndarray, fmt: str = "{}") -> str:
    flat = [fmt.format(int(v)) for v in np.asarray(values).reshape(-1)]
    body = ",\n".join("    " + ", ".join(flat[i : i + 8]) for i in range(0, len(flat), 8))
    return f"static const {ctype} {name}[{max(1, len(flat))}] = {{\n{body or '    0'}\n}};\n"


def _float_array(name: str, values: np.ndarray) -> str:
    flat = [repr(float(v)) + "f" for v in np.asarray(values, dtype=np.float32).reshape(-1)]
    body = ",\n".join("    " + ", ".join(flat[i : i + 6]) for i in range(0, len(flat), 6))
    return f"static const float {name}[{max(1, len(flat))}] = {{\n{body or '    0.0f'}\n}};\n"


def _layer_data(i: int, layer: BitLayer, scores: bool) -> str:
    out = _array("uint32_t", f"L{i}_W", _rows_to_u32(layer.weight, layer.n_in), "0x{:08x}u")
    if layer.mask is not None:
        out += _array("uint32_t", f"L{i}_M", _rows_to_u32(layer.mask, layer.n_in), "0x{:08x}u")
    if scores:  # score = offset - 2 * mismatches
        offset = layer.n_present.astype(np.int64) - layer.threshold
        return out + _array("int32_t", f"L{i}_OFFSET", offset)
    return out + _array("int32_t", f"L{i}_LIMIT", layer.popcount_limit)  # fires iff <= limit


def _binarizer_data(net: BitNetwork) -> tuple[str, int, int]:
    """Edges (float and integer), code transitions; returns (C code, n_edges, bits/feature)."""
    code = edge_code(net.binarizer)
    if code is None:
        raise InputError(
            f"the C export supports threshold, quantile and Lloyd-Max binarizers, "
            f"not {net.binarizer!r}"
        )
    n_edges = code.edges.shape[1]
    if n_edges > 32:
        raise InputError("the C export supports at most 32 edges per feature")
    text = _float_array("EDGES_F32", code.edges)
    text += _array("uint16_t", "EDGES_U8", code.int_edges)
    text += _array("uint32_t", "FLIPS", np.array(code.flips), "0x{:08x}u")
    text += f"#define CODE_C0 0x{code.c0:08x}u\n"
    return text, n_edges, code.k


def _valid_identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"{name!r} is not a valid C identifier; use letters, digits and _")
    return name


def export_c(network: BitNetwork, folder: str | Path, name: str = "bitnn_model") -> list[Path]:
    """Write ``NAME.h`` and ``NAME.c`` into ``folder``; returns their paths."""
    name = _valid_identifier(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = network.layers
    n_in, n_out = network.n_inputs, network.n_outputs
    max_words = max(_words32(ly.n_out) for ly in layers)
    upper = name.upper()
    has_bin = network.binarizer is not None
    classifier = network.output == "scores"

    h = [
        f"/* {name}: a bitwise neural network exported by bitnn. Dependency-free C99. */",
        f"#ifndef {upper}_H",
        f"#define {upper}_H",
        "#include <stdint.h>",
        f"#define {upper}_INPUT_BITS {n_in}",
        f"#define {upper}_INPUT_WORDS {_words32(n_in)}",
        f"#define {upper}_OUTPUTS {n_out}",
    ]
    if has_bin:
        h.append(f"#define {upper}_FEATURES {network.binarizer.n_features_in_}")
        h.append(f"void {name}_binarize_u8(const uint8_t *x, uint32_t *bits);")
        h.append(f"void {name}_binarize_f32(const float *x, uint32_t *bits);")
    if classifier:
        h.append(f"#define {upper}_CLASSIFIER 1")
        h.append(f"void {name}_scores(const uint32_t *bits, int32_t *scores);")
        if has_bin:
            h.append(f"int {name}_predict_u8(const uint8_t *x);")
            h.append(f"int {name}_predict_f32(const float *x);")
    else:
        h.append(f"#define {upper}_OUTPUT_WORDS {_words32(n_out)}")
        h.append(f"void {name}_forward_bits(const uint32_t *bits, uint32_t *out);")
    h.append(f"#endif /* {upper}_H */")

    c = [
        f"/* {name}: generated by bitnn; see {name}.h. */",
        f'#include "{name}.h"',
        "#include <string.h>",
        "",
        "static int popcount32(uint32_t v) { /* portable SWAR popcount */",
        "    v = v - ((v >> 1) & 0x55555555u);",
        "    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);",
        "    return (int)((((v + (v >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24);",
        "}",
        "",
        "/* mismatches between x and unit u's weights over its present connections */",
        "static int32_t mismatches(const uint32_t *x, const uint32_t *w, const uint32_t *m,",
        "                          int words) {",
        "    int32_t n = 0;",
        "    for (int k = 0; k < words; k++) n += popcount32((x[k] ^ w[k]) & (m ? m[k] : ~0u));",
        "    return n;",
        "}",
        "",
    ]
    bits_layers = len(layers) - (1 if classifier else 0)
    if bits_layers:
        c += [
            "static void layer_bits(const uint32_t *x, uint32_t *out, const uint32_t *w,",
            "                       const uint32_t *m, const int32_t *limit, int n_in,",
            "                       int n_out) {",
            "    int words = (n_in + 31) / 32;",
            "    memset(out, 0, sizeof(uint32_t) * (size_t)((n_out + 31) / 32));",
            "    for (int u = 0; u < n_out; u++) {",
            "        const uint32_t *mu = m ? m + (size_t)u * words : 0;",
            "        if (mismatches(x, w + (size_t)u * words, mu, words) <= limit[u])",
            "            out[u / 32] |= 1u << (u % 32);",
            "    }",
            "}",
            "",
        ]
    if classifier:
        c += [
            "static void layer_scores(const uint32_t *x, int32_t *scores, const uint32_t *w,",
            "                         const uint32_t *m, const int32_t *offset, int n_in,",
            "                         int n_out) {",
            "    int words = (n_in + 31) / 32;",
            "    for (int u = 0; u < n_out; u++) {",
            "        const uint32_t *mu = m ? m + (size_t)u * words : 0;",
            "        scores[u] = offset[u] - 2 * mismatches(x, w + (size_t)u * words, mu, words);",
            "    }",
            "}",
            "",
        ]
    for i, layer in enumerate(layers):
        c.append(_layer_data(i, layer, classifier and i == len(layers) - 1))
    if has_bin:
        code, n_edges, k = _binarizer_data(network)
        f = network.binarizer.n_features_in_
        c.append(code)
        c.append(
            f"""/* level bits t (bit j: x >= edge j) -> the feature's k code bits at units f*k.. */
static void put_code(uint32_t *bits, int f, uint32_t t) {{
    for (int b = 0; b < {k}; b++) {{
        uint32_t bit = ((CODE_C0 >> b) & 1u) ^ ((uint32_t)popcount32(t & FLIPS[b]) & 1u);
        int u = f * {k} + b;
        bits[u / 32] |= bit << (u % 32);
    }}
}}
"""
        )
        for kind, ctype, edges in (("u8", "uint8_t", "EDGES_U8"), ("f32", "float", "EDGES_F32")):
            c.append(
                f"""void {name}_binarize_{kind}(const {ctype} *x, uint32_t *bits) {{
    memset(bits, 0, sizeof(uint32_t) * {upper}_INPUT_WORDS);
    for (int f = 0; f < {f}; f++) {{
        uint32_t t = 0;
        for (int j = 0; j < {n_edges}; j++)
            t |= (uint32_t)(x[f] >= {edges}[f * {n_edges} + j]) << j;
        put_code(bits, f, t);
    }}
}}
"""
            )
    # the forward pass through static ping-pong buffers
    body = ["    const uint32_t *h = bits;"]
    if len(layers) > 1:
        body.insert(0, f"    static uint32_t buf[2][{max_words}];")
    for i, layer in enumerate(layers[:-1]):
        m = f"L{i}_M" if layer.mask is not None else "0"
        dims_i = f"{layer.n_in}, {layer.n_out}"
        body.append(f"    layer_bits(h, buf[{i % 2}], L{i}_W, {m}, L{i}_LIMIT, {dims_i});")
        body.append(f"    h = buf[{i % 2}];")
    last = len(layers) - 1
    lm = f"L{last}_M" if layers[-1].mask is not None else "0"
    dims = f"{layers[-1].n_in}, {layers[-1].n_out}"
    if classifier:
        c.append(f"void {name}_scores(const uint32_t *bits, int32_t *scores) {{")
        c += body
        c.append(f"    layer_scores(h, scores, L{last}_W, {lm}, L{last}_OFFSET, {dims});")
        c.append("}\n")
        if has_bin:
            for kind, ctype in (("u8", "uint8_t"), ("f32", "float")):
                c.append(
                    f"""int {name}_predict_{kind}(const {ctype} *x) {{
    uint32_t bits[{upper}_INPUT_WORDS];
    int32_t scores[{n_out}];
    int best = 0;
    {name}_binarize_{kind}(x, bits);
    {name}_scores(bits, scores);
    for (int u = 1; u < {n_out}; u++)
        if (scores[u] > scores[best]) best = u; /* ties: the lowest index */
    return best;
}}
"""
                )
    else:
        c.append(f"void {name}_forward_bits(const uint32_t *bits, uint32_t *out) {{")
        c += body
        c.append(f"    layer_bits(h, out, L{last}_W, {lm}, L{last}_LIMIT, {dims});")
        c.append("}\n")
    paths = [folder / f"{name}.h", folder / f"{name}.c"]
    atomic_write_bytes(paths[0], ("\n".join(h) + "\n").encode())
    atomic_write_bytes(paths[1], ("\n".join(c) + "\n").encode())
    return paths
