"""Bit engine benchmark: every engine side by side in one run, medians of repeats.

    python benchmarks/engine.py [--quick] [--write docs/results/engine.md]

Per layer (784->2048, 2048->2048, 2048->10 at batches 1, 64, 1024) and end to end (an MNIST
784-1024-1024-1024-10 network from raw uint8 pixels to classes): numpy float32 matmul (BLAS),
PyTorch float32, the numpy reference engine and each compiled kernel variant. Hidden layers
write packed output bits; the 10-unit layer returns integer scores.

Binary ops count one XNOR and one popcount-add per bit pair (2 ops), as a float32 multiply-add
counts 2 FLOPs. The bound is the CPU's own XOR+POPCNT+ADD rate, measured by running the
kernels' inner step with all operands in registers on every core (``_kernels.peak``).
Engines run in separate blocks with a pause between them, so one library's spinning worker
threads do not steal the cores from the next.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bitnn.bits import pack_signs
from bitnn.engine import compiled, get_engine, reference
from bitnn.network import BitLayer, BitNetwork

PAUSE = 0.3  # seconds between blocks: lets other thread pools go to sleep
ROUNDS = 5


def median_time(fn, min_repeats: int, budget: float) -> float:
    """Median wall time of ``fn`` over at least ``min_repeats`` runs (more within ``budget``)."""
    fn()  # warm-up (lazy layouts, thread start, caches)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget and len(times) < 2000):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    time.sleep(PAUSE)
    return float(np.median(times))


def cpu_description() -> dict[str, str]:
    info = {"model": platform.processor() or "unknown", "mhz": "?", "flags": ""}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and info["model"] in ("unknown", "x86_64", ""):
                info["model"] = value.strip()
            elif key == "cpu MHz" and info["mhz"] == "?":
                info["mhz"] = value.strip()
            elif key == "flags" and not info["flags"]:
                wanted = ("popcnt", "avx2", "avx512f", "avx512_vpopcntdq", "bmi2")
                info["flags"] = " ".join(f for f in value.split() if f in wanted)
    except OSError:
        pass
    return info


def measured_bound(threads: int) -> float | None:
    """Binary ops/s of the in-register XOR+POPCNT+ADD loop on ``threads`` threads."""
    if "avx512" not in compiled.available_variants():
        return None
    iters = 2_000_000
    compiled._kernels.peak(iters // 10, threads)  # warm-up
    times = []
    for _ in range(7):
        t = time.perf_counter()
        pairs = compiled._kernels.peak(iters, threads)
        times.append(time.perf_counter() - t)
    time.sleep(PAUSE)
    return 2 * pairs / float(np.median(times))


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(compiled.thread_limit())
    return torch


def layer_rows(n_in, n_out, batch, engines, torch, quick):
    rng = np.random.default_rng(0)
    w = rng.choice([-1, 1], size=(n_out, n_in))
    last = n_out <= 16
    layer = (
        BitLayer.from_values(w, bias=rng.choice([-1, 1], n_out))
        if last
        else (BitLayer.from_values(w, threshold=rng.integers(-8, 9, n_out)))
    )
    x = pack_signs(rng.choice([-1, 1], size=(batch, n_in)))
    xf = rng.standard_normal((batch, n_in)).astype(np.float32)
    wf = rng.standard_normal((n_in, n_out)).astype(np.float32)
    fns = {"numpy float32 (BLAS)": lambda: xf @ wf}
    if torch is not None:
        xt, wt = torch.from_numpy(xf), torch.from_numpy(wf.T.copy())

        def torch_linear():
            with torch.inference_mode():
                return torch.nn.functional.linear(xt, wt)

        fns["PyTorch float32"] = torch_linear
    big = batch * n_in * n_out > 300e6
    if not (quick and big):
        fns["reference (numpy)"] = (
            reference.layer_scores if last else reference.layer_bits,
            x,
            layer,
        )
    for name in engines:
        eng = get_engine(name)
        fns[f"kernel {name}"] = (eng.layer_scores if last else eng.layer_bits, x, layer)
    return interleaved_medians(fns, quick, slow={"reference (numpy)"} if big else set())


def interleaved_medians(fns, quick, slow=frozenset()):
    """Each engine timed in ROUNDS blocks, the engines taking turns; the median of the block
    medians is reported, so a disturbance during one block does not decide a row."""
    budget = 0.2 if quick else 0.5
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            if name in slow and times[name]:
                continue  # one block is enough for a row that takes seconds
            call = (lambda f=fn: f[0](f[1], f[2])) if isinstance(fn, tuple) else fn
            times[name].append(median_time(call, 1 if name in slow else 3, budget))
    return {name: float(np.median(t)) for name, t in times.items()}


def mnist_network(rng):
    """An MNIST-shaped all-bit network (random weights: speed does not depend on them)."""
    from bitnn.binarize import QuantileBinarizer

    try:
        from bitnn.data.mnist import load_mnist

        pixels = load_mnist().X_test
        source = "MNIST test images"
    except Exception:  # no dataset here: the speed is the same on random pixels
        pixels = rng.integers(0, 256, (10000, 784), dtype=np.uint8)
        source = "random uint8 pixels (MNIST unavailable)"
    binarizer = QuantileBinarizer(2, "thermometer").fit(pixels)
    sizes = [1568, 1024, 1024, 1024, 10]
    layers = [
        BitLayer.from_values(rng.choice([-1, 1], (b, a)), threshold=rng.integers(-8, 9, b))
        for a, b in itertools.pairwise(sizes[:-1])
    ]
    layers.append(
        BitLayer.from_values(rng.choice([-1, 1], (10, 1024)), bias=rng.choice([-1, 1], 10))
    )
    return BitNetwork(layers, binarizer), pixels, source


def end_to_end_rows(engines, torch, quick):
    rng = np.random.default_rng(1)
    net, pixels, source = mnist_network(rng)
    n = pixels.shape[0]
    wf = [rng.standard_normal((a, b)).astype(np.float32) for a, b in
          [(784, 1024), (1024, 1024), (1024, 1024), (1024, 10)]]  # fmt: skip

    def numpy_float():
        h = pixels.astype(np.float32) / 255
        for w in wf[:-1]:
            h = np.maximum(h @ w, 0)
        return np.argmax(h @ wf[-1], axis=1)

    fns = {"numpy float32 (BLAS)": numpy_float}
    if torch is not None:
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
            torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
            torch.nn.Linear(1024, 10),
        ).eval()  # fmt: skip
        xt = torch.from_numpy(pixels)

        def torch_float():
            with torch.inference_mode():
                return model(xt.float() / 255).argmax(1)

        fns["PyTorch float32"] = torch_float
    for name in engines:
        fns[f"kernel {name}"] = lambda name=name: net.predict(pixels, name)
    rows = interleaved_medians(fns, quick)
    sub = pixels[:1000] if quick else pixels[:2000]
    t_ref = median_time(lambda: net.predict(sub, "reference"), 1, 0)
    rows["reference (numpy)"] = t_ref * n / sub.shape[0]  # scaled from a subset
    same = all(
        np.array_equal(net.predict(pixels[:500], name), net.predict(pixels[:500], "reference"))
        for name in engines
    )
    return rows, n, net, source, same


def fmt_time(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter timing budgets (smoke test)")
    p.add_argument("--write", help="also write the markdown report here")
    args = p.parse_args()
    if not compiled.extension_available():
        sys.exit("the compiled kernels are not built; nothing to benchmark")
    engines = compiled.available_variants()
    threads = compiled.thread_limit()
    torch = torch_or_none()
    cpu = cpu_description()
    out: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    bound = measured_bound(threads)
    emit("# Bit engine benchmark")
    emit()
    emit(f"- command: `python benchmarks/engine.py{' --quick' if args.quick else ''}`")
    emit(
        f"- date: {datetime.date.today()}; CPU: {cpu['model']}, {os.cpu_count()} logical "
        f"CPUs, {threads} kernel threads; nominal clock {cpu['mhz']} MHz; flags: {cpu['flags']}"
    )
    versions = f"numpy {np.__version__}"
    if torch is not None:
        versions += f"; PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
    emit(f"- kernel variants here: {', '.join(engines)}; {versions}")
    if bound:
        per_core_cycle = bound / threads / (float(cpu["mhz"]) * 1e6) if cpu["mhz"] != "?" else 0
        emit(
            f"- bound: the kernels' inner step (VPXORQ, VPOPCNTQ, VPADDQ on 512 bits = 1024 "
            f"binary ops per 3 instructions) run with all operands in registers on {threads} "
            f"threads: **{bound / 1e12:.2f} T binary ops/s** ({per_core_cycle:.0f} ops per core "
            f"per nominal cycle, i.e. {per_core_cycle * 3 / 1024:.2f} of those instructions per "
            "cycle at the nominal clock; a core that boosts above it shows more)"
        )
    emit()
    emit("Times are medians. `ops/s` counts 2 binary ops per bit pair (float rows: 2 FLOPs per "
         "multiply-add, the same work). `vs BLAS` = BLAS time / this time.")  # fmt: skip
    emit()
    emit("| layer | batch | engine | time | ops/s | vs BLAS | of bound |")
    emit("|---|---:|---|---:|---:|---:|---:|")
    for n_in, n_out in [(784, 2048), (2048, 2048), (2048, 10)]:
        for batch in (1, 64, 1024):
            rows = layer_rows(n_in, n_out, batch, engines, torch, args.quick)
            ops = 2 * batch * n_in * n_out
            blas = rows["numpy float32 (BLAS)"]
            for name, t in rows.items():
                frac = (
                    f"{100 * ops / t / bound:.0f}%" if bound and name.startswith("kernel") else ""
                )
                emit(f"| {n_in}->{n_out} | {batch} | {name} | {fmt_time(t)} | "
                     f"{ops / t / 1e12:.3f} T | {blas / t:.1f}x | {frac} |")  # fmt: skip
    rows, n, net, source, same = end_to_end_rows(engines, torch, args.quick)
    emit()
    emit(
        f"End to end: {n:,} {source}, raw uint8 pixels -> binarizer (2-bit thermometer, "
        "1568 input bits) -> 1024 -> 1024 -> 1024 -> 10 -> argmax. Float rows: the same "
        f"shape on float32 pixels with ReLU. Kernels agree with the reference: {same}."
    )
    emit()
    emit("| engine | time for the batch | images/s | vs PyTorch float32 |")
    emit("|---|---:|---:|---:|")
    tt = rows.get("PyTorch float32")
    for name, t in rows.items():
        ratio = f"{tt / t:.1f}x" if tt else ""
        emit(f"| {name} | {fmt_time(t)} | {n / t:,.0f} | {ratio} |")
    emit()
    weights_bits = sum(ly.n_in * ly.n_out for ly in net.layers)
    float_bytes = net.float32_bytes()
    bit_bytes = net.parameter_bits() / 8
    emit(
        f"Memory: the network's weights take {weights_bits / 8 / 1024:.1f} KiB as bits "
        f"({bit_bytes / 1024:.1f} KiB with thresholds and biases) against "
        f"{float_bytes / 1024:.1f} KiB as float32: {float_bytes / bit_bytes:.1f}x smaller."
    )
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
