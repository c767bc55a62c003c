"""Fuzz the model loader with mutated model files; write the counts.

    python benchmarks/format_fuzz.py [--mutants N] [--seed S] [--out docs/results/format-fuzz.md]

Five small base models (every layer kind, masks, all binarizer kinds and codes, uint8 and
float32 inputs, score and bit outputs) are mutated: random byte changes, truncations and
appended or inserted bytes, random files, structured edits of the header's and description's
JSON with the checksum recomputed (values replaced by others of any type, keys dropped or
added, numbers moved, raw characters inserted), and edits of the tensors with the checksum
recomputed (data bits, dtypes, shapes, offsets, extra and missing tensors). Each mutant is
loaded with ``bitnn.io.model_from_bytes``. Counted:

- refused: a ModelFormatError (the only exception type allowed);
- unexpected: any other exception (a crash);
- loaded: then the network runs on fixed inputs with the reference and the compiled engine,
  ``bitnn info``'s summary is computed, and the predictions are compared with an independent
  reader of docs/format.md (``tests/test_format_spec.py``, numpy only) on the same bytes.
  "bent": the engines disagree, the summary fails, or bitnn computes something else than what
  the file says; loaded mutants that predict like the original, and those that predict
  otherwise because the file (checksum recomputed) now specifies another network, are counted
  apart.

The requirement: unexpected = 0 and bent = 0.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bitnn import io
from bitnn.binarize import (
    LloydMaxBinarizer,
    QuantileBinarizer,
    ThresholdBinarizer,
    WTAHashBinarizer,
)
from bitnn.errors import ModelFormatError
from bitnn.network import BitLayer, BitNetwork

ROOT = Path(__file__).resolve().parent.parent


def _spec_reader():
    spec = importlib.util.spec_from_file_location("format_spec", ROOT / "tests/test_format_spec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEC = _spec_reader()


# ---- base models ------------------------------------------------------------------------------


def _layers(rng: np.random.Generator, n_in: int, kinds: list[tuple[int, str, bool]]):
    layers = []
    for n_out, kind, sparse in kinds:
        w = rng.choice([-1, 0, 1] if sparse else [-1, 1], (n_out, n_in))
        if kind == "bias":
            layers.append(BitLayer.from_values(w, bias=rng.choice([-1, 1], n_out)))
        elif kind == "threshold":
            layers.append(BitLayer.from_values(w, threshold=rng.integers(-n_in, n_in + 1, n_out)))
        else:
            layers.append(BitLayer.from_values(w))
        n_in = n_out
    return layers


def base_models() -> list[tuple[str, bytes, np.ndarray]]:
    """``(name, file bytes, fixed inputs)`` of the models that are mutated."""
    rng = np.random.default_rng(0)
    out = []
    x = rng.standard_normal((200, 10)).astype(np.float32)
    b = QuantileBinarizer(2, "thermometer").fit(x)
    net = BitNetwork(
        _layers(rng, 20, [(9, "bias", False), (7, "threshold", True), (3, "none", False)]), b
    )
    out.append(("quantile-float-scores", net, x[:64]))
    xu = rng.integers(0, 256, (200, 12), dtype=np.uint8)
    xu[:, 0] = 255  # a constant feature at the top: an edge of 256 (U16 edges)
    b = QuantileBinarizer(3, "gray").fit(xu)
    net = BitNetwork(_layers(rng, 36, [(11, "threshold", False), (5, "bias", True)]), b)
    out.append(("quantile-uint8-gray", net, xu[:64]))
    b = ThresholdBinarizer(0.25).fit(x)
    net = BitNetwork(_layers(rng, 10, [(13, "none", True), (6, "threshold", False)]), b, "bits")
    out.append(("threshold-bits", net, x[:64]))
    b = LloydMaxBinarizer(2, "binary").fit(x)
    net = BitNetwork(_layers(rng, 20, [(8, "threshold", False)]), b, "bits")
    out.append(("lloyd-max-binary-bits", net, x[:64]))
    b = WTAHashBinarizer(6, 4, "binary").fit(x)
    net = BitNetwork(_layers(rng, 12, [(5, "bias", False)]), b, "scores")
    out.append(("wta-scores", net, x[:64]))
    return [(name, io.model_to_bytes(net), X) for name, net, X in out]


# ---- mutations --------------------------------------------------------------------------------

VALUES = [0, 1, -1, 2, 3, 7, 8, 9, 10, 11, 63, 64, 65, 255, 256, 257, 2**31, 2**63, 10**30,
          -(10**30), True, False, None, 0.5, -0.0, 1e-45, 1e308, "", "x", "bias", "threshold",
          "none", "scores", "bits", "thermometer", "gray", "binary", "onehot", "uint8", "float32",
          "quantile", "lloyd-max", "wta", "bitnn-model", "U8", "U16", "I8", "I16", "I32", "F32",
          "I64", "F64", "BOOL", [], {}, [1, 2], [0, 0], {"a": 1}, "__HUGE__", "__INF__",
          "__NAN__", "__DEEP__"]  # fmt: skip
KEYS = ["n_in", "n_out", "bias_kind", "masked", "kind", "params", "input", "n_bits", "code",
        "format", "format_version", "output", "layers", "binarizer", "metadata", "command",
        "speech", "training", "dtype", "shape", "data_offsets", "extra", "__metadata__",
        "layers.0.threshold", "layers.1.mask", "binarizer.centers_"]  # fmt: skip
SPECIAL = {
    '"__HUGE__"': "9" * 5000,
    '"__INF__"': "Infinity",
    '"__NAN__"': "NaN",
    '"__DEEP__"': "[" * 3000 + "]" * 3000,
}


def _dumps(obj, rng) -> str:
    text = json.dumps(obj, separators=(",", ":"), sort_keys=bool(rng.integers(2)))
    for token, raw in SPECIAL.items():
        text = text.replace(token, raw)
    return text


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _edit_json(obj, rng):
    paths = list(_paths(obj))
    path = paths[rng.integers(len(paths))]
    if not path:
        return obj
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    op = rng.random()
    value = parent[last]
    if op < 0.5:
        parent[last] = VALUES[rng.integers(len(VALUES))]
    elif op < 0.65:
        del parent[last]
    elif op < 0.8:
        target = parent if isinstance(parent, dict) else obj
        if isinstance(target, dict):
            target[KEYS[rng.integers(len(KEYS))]] = VALUES[rng.integers(len(VALUES))]
    elif type(value) is int:
        parent[last] = int(value + rng.choice([-1, 1, 8, -8, 64])) * int(rng.choice([1, 1, 2, -1]))
    elif isinstance(value, list):
        parent[last] = value + value[:1] if rng.random() < 0.5 else value[:-1]
    else:
        parent[last] = VALUES[rng.integers(len(VALUES))]
    return obj


def seal(header: bytes, data: bytes) -> bytes:
    """Pad the header, then recompute the checksum (as a writer would)."""
    header += b" " * (-(8 + len(header)) % 8)
    raw = struct.pack("<Q", len(header)) + header + data
    key = b'"checksum":"sha256:'
    at = raw.find(key)
    if at < 0:
        return raw
    zeroed = raw[: at + len(key)] + b"0" * 64 + raw[at + len(key) + 64 :]
    digest = hashlib.sha256(zeroed).hexdigest().encode()
    return raw[: at + len(key)] + digest + raw[at + len(key) + 64 :]


def _split(buf: bytes):
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    return header, json.loads(header["__metadata__"]["bitnn"]), buf[8 + n :]


def _join(header, description, data, rng) -> bytes:
    header["__metadata__"]["bitnn"] = _dumps(description, rng)
    header["__metadata__"]["checksum"] = "sha256:" + "0" * 64
    return seal(_dumps(header, rng).encode(), data)


def mutate(base: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    r = rng.random()
    if r < 0.22:
        b = bytearray(base)
        for _ in range(rng.integers(1, 9)):
            b[rng.integers(len(b))] = rng.integers(256)
        return "bytes", bytes(b)
    if r < 0.30:
        return "truncated", base[: rng.integers(len(base))]
    if r < 0.35:
        extra = rng.integers(0, 256, rng.integers(1, 65), dtype=np.uint8).tobytes()
        at = rng.integers(len(base) + 1)
        return "inserted", base[:at] + extra + base[at:]
    if r < 0.38:
        n = int(rng.integers(0, 2 * len(base)))
        head = base[:8] if rng.random() < 0.5 else b""
        return "random", head + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    header, description, data = _split(base)
    if r < 0.70:
        return "json", _join(header, _edit_json(description, rng), data, rng)
    if r < 0.80:
        meta = header.pop("__metadata__")
        header = _edit_json(header, rng)
        header["__metadata__"] = meta
        return "tensor entries", _join(header, description, data, rng)
    if r < 0.88:
        text = _dumps(description, rng)
        at = int(rng.integers(len(text) + 1))
        chars = '{}[]",:0123456789-.eE \\ux'
        if rng.random() < 0.5:
            text = text[:at] + chars[rng.integers(len(chars))] + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
        header["__metadata__"]["bitnn"] = text
        header["__metadata__"]["checksum"] = "sha256:" + "0" * 64
        return "raw description text", seal(
            json.dumps(header, separators=(",", ":")).encode(), data
        )
    # tensor data, with the checksum recomputed
    d = bytearray(data)
    if rng.random() < 0.7 and d:
        for _ in range(rng.integers(1, 4)):
            d[rng.integers(len(d))] ^= 1 << int(rng.integers(8))
    else:
        names = [k for k in header if k != "__metadata__"]
        name = names[rng.integers(len(names))]
        begin, end = header[name]["data_offsets"]
        if rng.random() < 0.5:  # retype as another dtype of the same byte count
            sizes = {"U8": 1, "I8": 1, "U16": 2, "I16": 2, "I32": 4, "F32": 4}
            dt = list(sizes)[rng.integers(len(sizes))]
            count = (end - begin) // sizes[dt]
            header[name]["dtype"], header[name]["shape"] = dt, [count]
            d = d[: begin + count * sizes[dt]] + d[end:]
            shift = (end - begin) - count * sizes[dt]
            for other in names:
                b0, b1 = header[other]["data_offsets"]
                if b0 >= end:
                    header[other]["data_offsets"] = [b0 - shift, b1 - shift]
            header[name]["data_offsets"] = [begin, begin + count * sizes[dt]]
        else:  # an extra tensor, carrying any payload
            payload = rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
            header[KEYS[rng.integers(len(KEYS))] + "x" * int(rng.integers(2))] = {
                "dtype": "U8",
                "shape": [len(payload)],
                "data_offsets": [len(d), len(d) + len(payload)],
            }
            d += payload
    return "tensor data", _join(header, description, bytes(d), rng)


# ---- the oracle -------------------------------------------------------------------------------


def _inputs(net: BitNetwork, X: np.ndarray) -> np.ndarray:
    if net.binarizer is None:
        return np.random.default_rng(1).integers(0, 2, (32, net.n_inputs), dtype=np.uint8)
    if X.shape[1] != net.binarizer.n_features_in_:
        X = np.random.default_rng(1).standard_normal((32, net.binarizer.n_features_in_))
        return X.astype(np.float32) * 2
    return X


def _run(net: BitNetwork, X: np.ndarray, engine: str) -> np.ndarray:
    if net.binarizer is None:
        from bitnn.bits import pack_bits, unpack_bits

        out = net.forward_packed(pack_bits(X), engine)
        return np.argmax(out, axis=1) if net.output == "scores" else unpack_bits(out, net.n_outputs)
    return net.predict(X, engine)


def check(mutant: bytes, original: np.ndarray, X: np.ndarray) -> str:
    """The outcome of loading one mutant (see the module docstring)."""
    from bitnn.cli import model_summary

    try:
        net = io.model_from_bytes(mutant)
    except ModelFormatError:
        return "refused"
    except Exception as exc:  # counting every other type is the point
        return f"unexpected {type(exc).__name__}"
    try:
        X = _inputs(net, X)
        ref = _run(net, X, "reference")
        fast = _run(net, X, "auto")
        model_summary(net)
        description, tensors = SPEC.read_model(mutant)
        spec = SPEC.forward(description, tensors, X)
    except Exception as exc:  # any type: counted
        return f"bent: {type(exc).__name__} after loading"
    if not np.array_equal(ref, fast):
        return "bent: engines disagree"
    if not np.array_equal(ref, spec):
        return "bent: bitnn differs from the specification"
    same = ref.shape == original.shape and np.array_equal(ref, original)
    return "loaded, same predictions" if same else "loaded, another network the file specifies"


def fuzz(n: int, seed: int = 0, progress: bool = False) -> tuple[Counter, Counter, float]:
    """``(outcomes, outcomes by mutation kind, seconds)`` for ``n`` mutants."""
    bases = [(name, buf, X, _run(io.model_from_bytes(buf), X, "reference")) for name, buf, X in
             base_models()]  # fmt: skip
    rng = np.random.default_rng(seed)
    outcomes: Counter = Counter()
    by_kind: Counter = Counter()
    start = time.perf_counter()
    for i in range(n):
        _, buf, X, original = bases[i % len(bases)]
        kind, mutant = mutate(buf, rng)
        while mutant == buf:  # an edit that changed nothing is not a mutant: draw again
            kind, mutant = mutate(buf, rng)
        outcome = check(mutant, original, X)
        outcomes[outcome] += 1
        by_kind[kind, outcome] += 1
        if progress and (i + 1) % 5000 == 0:
            print(f"{i + 1:,} mutants, {time.perf_counter() - start:.0f} s: {dict(outcomes)}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return outcomes, by_kind, time.perf_counter() - start


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mutants", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args()
    outcomes, by_kind, seconds = fuzz(args.mutants, args.seed, progress=True)
    bad = sum(v for k, v in outcomes.items() if k.startswith(("unexpected", "bent")))
    lines = [
        "# Model-file fuzz",
        "",
        f"`python benchmarks/format_fuzz.py --mutants {args.mutants} --seed {args.seed}`"
        f" (bitnn format version {io.MODEL_VERSION}; {_cpu()}, one process, {seconds:.0f} s).",
        "",
        "| outcome | mutants |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in sorted(outcomes.items())],
        f"| **total** | **{sum(outcomes.values()):,}** |",
        "",
        f"Crashes and unexpected exception types, and loaded files that predict differently "
        f"from what they specify or between engines: **{bad}**.",
        "",
        "Five small base models (all layer kinds, masks, every binarizer kind, uint8 and "
        "float32 inputs, score and bit outputs) were mutated in turn: random bytes, "
        "truncations, inserted bytes, random files (checksum not recomputed: refused by it), "
        "and edits of the JSON (values of any type, dropped and added keys, raw characters) "
        "and of the tensors (data bits, dtypes, extra payload tensors) with the checksum "
        "recomputed. A mutant that loads is run on fixed inputs with the reference and the "
        "compiled engine, summarised as `bitnn info` does, and compared with an independent "
        "numpy reader of docs/format.md (`tests/test_format_spec.py`) on the same bytes. "
        '"another network the file specifies": the recomputed checksum makes the edit a valid '
        "file (flipped weight bits, another code, `bits` for `scores`); bitnn computes "
        "exactly what that file specifies.",
        "",
        "By mutation:",
        "",
        "| mutation | outcome | mutants |",
        "|---|---|---:|",
        *[f"| {k} | {o} | {v:,} |" for (k, o), v in sorted(by_kind.items())],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
