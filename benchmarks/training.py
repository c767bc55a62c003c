"""Training speed: one optimizer step of the MNIST paper network (1568 input bits -> 3x1024 ->
10, bias bits, dropout; ``--network denoise``: the best denoiser's) on this machine, with the
trainer's ops against the ops they replaced, side by side in one run.

    python benchmarks/training.py [--hidden 1024,1024,1024] [--batch 100] [--steps 40]

``before``: every sign by ``torch.where`` with scalar arguments, round 2's weights as
``ternarize(tanh(W))`` (tanh, sign and the sparsity test each a pass over the weights), Adam's
per-tensor loop. ``now``: what ``bitnn.train`` does (``sign()`` based signs; round 2's weights
as sign(W) forward and tanh'(W) backward in one autograd op; fused Adam). Both compute the same
values and gradients (the tests hold the ops equal); the optimizer may round differently.
Prints the median step time (forward, backward, optimizer step on random +1/-1 batches) per
round and the ratio.

``--contention spin|training``: round 2's step time on a quiet machine and beside one
CPU-bound process (a one-core spin loop, or another training on PyTorch's default threads),
with PyTorch's default thread count and with bitnn's (``bitnn.train.trainer.cpu_threads``).

``--precision`` takes ``bfloat16-torch`` too: bfloat16 with PyTorch's ops in place of the
compiled passes over round 2's weights (``bitnn.train._fused``), to time what they replace;
and ``float32-fast`` (float32 matmuls, round 2's forward by XNOR-popcount, the other fast ops:
``auto`` on CPUs without fast bfloat16).

``--profile``: instead, the profile of the trainer's step side by side with a plain float32
MLP of the same shape (tanh, Adam, cross-entropy, the same batch: what a bitnn step should
cost at most), at each thread count of ``--threads``, and where a bitnn step spends its time
(PyTorch's profiler, self CPU time of each op, grouped: matmuls, binarization and surrogates,
dropout, optimizer, data movement, the rest), for each training precision of ``--precision``
(``float32``, ``bfloat16``: see ``bitnn.train.layers.BitLinear``).

``--floor``: instead, the least a step of each round can cost on this CPU (its float32
matmuls, round 2's XNOR-popcount product on packed bits and Adam's update, each timed alone)
and what an MNIST preset's schedule (the paper preset's 30 + 90 epochs, or ``--preset best``'s
30 + 80 at 3 x 2048 units) takes at that cost, against issue #14's 15 or 30 minutes.

``--epochs N``: instead, whole epochs of the trainer on MNIST (the paper preset, or
``--preset best``, on all 60,000 training images, shift augmentation, its batch or
``--batch``), one of each round per precision, repeated N times interleaved, against one epoch
of the float32 MLP at the same batch on the same input bits; medians, and the preset's whole
schedule at those epoch times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import time
from types import SimpleNamespace

import numpy as np
from mnist import machine  # benchmarks/mnist.py, beside this script

from bitnn.train import layers
from bitnn.train._torch import torch  # loaded by bitnn, with its OpenMP spin setting
from bitnn.train.layers import BitLinear, BitMLP
from bitnn.train.trainer import TrainConfig, Trainer

F = torch.nn.functional

# The networks whose steps are timed (--network): inputs, outputs, biases and dropout of the
# MNIST paper preset and of the speech denoiser's best preset (3-bit codes of 3 x 257 values).
NETWORKS = {
    "mnist": SimpleNamespace(
        n_in=1568, n_out=10, output="scores", bias_kind="bias", dropout=(0.1, 0.2)
    ),
    "denoise": SimpleNamespace(
        n_in=2313, n_out=257, output="bits", bias_kind="threshold", dropout=(0.2, 0.2)
    ),
}
NET = NETWORKS["mnist"]
SPARSITY = 0.0  # --sparsity: the share of absent (zero) weights in the timed bit networks


def _batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 2, (batch, NET.n_in)).float() * 2 - 1
    if NET.output == "bits":
        return x, torch.randint(0, 2, (batch, NET.n_out)).float()
    return x, torch.randint(0, NET.n_out, (batch,))


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if NET.output == "bits":
        return F.binary_cross_entropy_with_logits(out, y)
    return F.cross_entropy(out, y)


def _bit_mlp(hidden, round_: int, precision: str) -> tuple[BitMLP, torch.optim.Optimizer]:
    """The trainer's module and optimizer for NET (seeded)."""
    torch.manual_seed(0)
    cfg = TrainConfig(hidden=hidden, bias_kind=NET.bias_kind, dropout_input=NET.dropout[0],
                      dropout_hidden=NET.dropout[1])  # fmt: skip
    model = BitMLP(NET.n_in, hidden, NET.n_out, NET.bias_kind, "bias", SPARSITY, *NET.dropout,
                   output=NET.output)  # fmt: skip
    model.set_round(round_)
    model.set_precision(precision)
    optimizer = Trainer._make_optimizer(SimpleNamespace(config=cfg, model=model), 1e-3)
    return model, optimizer


class _WhereSign(torch.autograd.Function):
    """The replaced sign activation: torch.where forward, tanh' backward."""

    @staticmethod
    def forward(ctx, z, fused=False):  # type: ignore[override]
        ctx.save_for_backward(z)
        return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(z) ** 2), None


class _WhereTernarize(torch.autograd.Function):
    """The replaced weight binarization: two torch.where passes, straight-through backward."""

    @staticmethod
    def forward(ctx, v, beta):  # type: ignore[override]
        out = torch.where(v >= 0, 1.0, -1.0).to(v.dtype)
        return torch.where(v.abs() < beta, torch.zeros_like(v), out)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


def _before_weight(self: BitLinear) -> torch.Tensor:
    w = self.real(self.weight)
    beta = self.real(torch.tensor(self.absent_below()))  # the paper's beta, on |tanh W|
    return _WhereTernarize.apply(w, beta) if self.binary else w


@contextlib.contextmanager
def before_ops():
    saved = layers.sign_activation, BitLinear.effective_weight
    layers.sign_activation, BitLinear.effective_weight = _WhereSign.apply, _before_weight
    try:
        yield
    finally:
        layers.sign_activation, BitLinear.effective_weight = saved


def step_times(hidden, batch, steps, round_, before: bool, precision="float32") -> float:
    model, optimizer = _bit_mlp(hidden, round_, precision)
    if before:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    x, y = _batch(batch)
    with before_ops() if before else contextlib.nullcontext():
        return median_step(model, optimizer, x, y, steps)


def _median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls, after 3 warm-ups."""
    times = []
    for i in range(repeats + 3):
        t = time.perf_counter()
        fn()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def median_step(model, optimizer, x, y, steps) -> float:
    """Median seconds of a training step (forward, backward, optimizer), after 3 warm-ups."""

    def step():
        loss = _loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _median_ms(step, steps) / 1e3


def _float_mlp(n_in: int, hidden, n_out: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A plain float32 MLP (tanh) of the same shape and PyTorch's default Adam (seeded)."""
    torch.manual_seed(0)
    sizes = [n_in, *hidden]
    mods: list[torch.nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        mods += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    model = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], n_out))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def float_step_times(hidden, batch, steps) -> float:
    """A plain float32 MLP of the same shape: tanh, Adam (PyTorch's default), the same loss."""
    model, optimizer = _float_mlp(NET.n_in, hidden, NET.n_out)
    x, y = _batch(batch)
    return median_step(model, optimizer, x, y, steps)


_GROUPS = [  # (group, substrings of op names), first match wins
    ("matmuls", ("mm", "matmul", "linear", "addmm", "masked_dot")),  # masked_dot: XNOR-popcount
    ("bfloat16 and int8 casts", ("_to_copy", "copy_")),
    ("optimizer", ("adam", "_foreach", "lerp", "sqrt", "addcdiv", "addcmul")),
    ("dropout", ("dropout", "bernoulli", "rand", "uniform")),
    (
        "binarization and surrogates",
        ("sign", "tanh", "where", "abs", "ge", "lt", "clamp", "weight_pass"),
    ),
    (
        "data movement",
        ("copy", "to", "index", "cat", "stack", "view", "reshape", "contiguous"),
    ),
]


def profile_groups(hidden, batch, round_, precision) -> dict[str, float]:
    """Seconds of self CPU time per op group in one trainer step (mean over 20 steps)."""
    from torch.profiler import ProfilerActivity, profile

    model, optimizer = _bit_mlp(hidden, round_, precision)
    x, y = _batch(batch)
    steps = 20
    for i in range(steps + 3):
        if i == 3:
            prof = profile(activities=[ProfilerActivity.CPU])
            prof.__enter__()
        loss = _loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    prof.__exit__(None, None, None)
    groups = {name: 0.0 for name, _ in _GROUPS} | {"the rest": 0.0}
    for ev in prof.key_averages():
        name = ev.key.lower()
        group = next((g for g, keys in _GROUPS if any(k in name for k in keys)), "the rest")
        groups[group] += ev.self_cpu_time_total * 1e-6 / steps
    return groups


@contextlib.contextmanager
def _precision(name: str):
    """A --precision entry: ``float32``, ``bfloat16``, or ``bfloat16-torch`` (bfloat16 with
    PyTorch's ops where bitnn.train._fused would run: what the compiled passes replace)."""
    fused = layers._fused
    if name.endswith("-torch"):
        layers._fused = None
    try:
        yield name.removesuffix("-torch")
    finally:
        layers._fused = fused


def _runs(precisions: list[str]) -> dict[tuple[int, str], str]:
    """(round, precision) -> column name, both rounds per precision."""
    return {(r, p): f"round {r}" + ("" if p == "float32" else f" {p}")
            for p in precisions for r in (1, 2)}  # fmt: skip


def _print_ratio_header(names) -> None:
    print("| threads | float32 MLP | " + " | ".join(names) + " | "
          + " | ".join(f"{n} / float" for n in names) + " |")  # fmt: skip
    print("|---:|---:|" + "---:|" * 2 * len(names))


def _print_ratio_row(threads: int, f: float, t: list[float], show) -> None:
    """One row: the float32 MLP's time f, each run's time and its ratio to f."""
    print(f"| {threads} | {show(f)} | " + " | ".join(show(x) for x in t) + " | "
          + " | ".join(f"{x / f:.2f}x" for x in t) + " |")  # fmt: skip


def profile_main(hidden, batch, steps, threads: list[int], precisions: list[str]) -> None:
    names = _runs(precisions)
    runs = list(names)
    _print_ratio_header(names.values())
    for n in threads:
        torch.set_num_threads(n)
        f = float_step_times(hidden, batch, steps)
        t = []
        for r, p in runs:
            with _precision(p) as precision:
                t.append(step_times(hidden, batch, steps, r, False, precision))
        _print_ratio_row(n, f, t, lambda x: f"{1e3 * x:.1f} ms")
    print()
    torch.set_num_threads(threads[0])
    print(f"Where a step's time goes ({threads[0]} thread(s), self CPU time per step):")
    print()
    rows = {}
    for r, p in runs:
        with _precision(p) as precision:
            rows[(r, p)] = profile_groups(hidden, batch, r, precision)
    print("| ops | " + " | ".join(names.values()) + " |")
    print("|---|" + "---:|" * len(runs))
    for group in rows[runs[0]]:
        print(f"| {group} | " + " | ".join(f"{1e3 * rows[r][group]:.2f} ms" for r in runs) + " |")
    print("| total | " + " | ".join(f"{1e3 * sum(rows[r].values()):.2f} ms" for r in runs) + " |")


def epochs_main(
    threads: list[int], precisions: list[str], repeats: int, batch: int | None = None,
    preset: str = "paper",
) -> None:  # fmt: skip
    """One epoch of each round of an MNIST preset (the trainer itself: all 60,000 images,
    shift augmentation, the preset's batch or ``batch``) at each precision, against one epoch
    of a plain float32 MLP of the same shape and batch on the same input bits (no
    augmentation); and the preset's whole schedule at those epoch times."""
    from bitnn.binarize import binarizer_from_spec
    from bitnn.data.mnist import load_mnist
    from bitnn.train.presets import resolve
    from bitnn.train.trainer import TrainData, to_bipolar

    mnist = load_mnist()
    values, spec = resolve(preset, {"val_fraction": 0.0, "keep": "last"}, None, "mnist")
    values = TrainConfig(**values).to_json()  # with the defaults the preset leaves alone
    if batch is not None:
        values["batch_size"] = batch
    b = binarizer_from_spec(spec).fit(mnist.X_train)
    bits = to_bipolar(b.transform(mnist.X_train))
    data = TrainData(bits, mnist.y_train.astype(np.int64), None, None, 10, "scores",
                     mnist.X_train.astype(np.float32))  # fmt: skip
    hidden = tuple(values["hidden"])
    print(f"{preset} preset: {bits.shape[1]} input bits -> {hidden} -> 10, batch "
          f"{values['batch_size']}, augment_shift {values['augment_shift']}; "
          f"median of {repeats} epochs each")  # fmt: skip
    print()
    names = _runs(precisions)
    runs = list(names)
    schedules = []
    _print_ratio_header(names.values())
    for n in threads:
        torch.set_num_threads(n)
        times: dict = {run: [] for run in runs}
        floats = []
        for _ in range(repeats):  # interleaved: a disturbance does not hit one side only
            floats.append(float_epoch(bits, mnist.y_train, hidden, values["batch_size"]))
            for p in precisions:
                with _precision(p) as precision, contextlib.redirect_stderr(io.StringIO()):
                    cfg = TrainConfig(**{**values, "epochs_round1": 1, "epochs_round2": 1,
                                         "precision": precision, "device": "cpu"})  # fmt: skip
                    trainer = Trainer(cfg, data, b)
                    trainer.run()
                for h in trainer.history:
                    times[(h["round"], p)].append(h["seconds"])
        t = [float(np.median(times[run])) for run in runs]
        _print_ratio_row(n, float(np.median(floats)), t, lambda x: f"{x:.1f} s")
        schedules.append((n, t))
    print()
    e1, e2 = values["epochs_round1"], values["epochs_round2"]
    for n, t in schedules:
        for p in precisions:
            total = e1 * t[runs.index((1, p))] + e2 * t[runs.index((2, p))]
            print(
                f"{n} thread(s), {p}: the preset's {e1} + {e2} epochs at these epoch times: "
                f"{total:.0f} s ({total / 60:.1f} min; a run adds its data and evaluation)"
            )


def float_epoch(bits: np.ndarray, y: np.ndarray, hidden, batch: int) -> float:
    """Seconds of one epoch of the float32 MLP (tanh, Adam, cross-entropy) on +1/-1 bits held
    as int8, shuffled, each batch converted to float32 as the trainer does."""
    model, optimizer = _float_mlp(bits.shape[1], hidden, 10)
    x, yt = torch.from_numpy(bits), torch.from_numpy(y.astype(np.int64))
    start = time.perf_counter()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        loss = F.cross_entropy(model(x[idx].float()), yt[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return time.perf_counter() - start


def floor_parts(hidden, batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds per step of the work no implementation of a step can skip, each part timed
    alone on random data (medians): round 1's float32 matmuls (forward and backward, the float
    MLP's) and the trainer's (the first layer's two products with the -1/0/+1 input bits by
    table lookups, as bitnn.train.layers._SignInputLinear, the rest float32), round 2's
    backward (its forward is the XNOR-popcount product) as float32 matmuls
    and as the trainer's table products (bitnn.engine.compiled.sign_matmul, with the bit planes
    of the -1/0/+1 inputs and of sign(W) made each step), the XNOR-popcount product on packed
    bits (compiled.masked_dot, the operands already packed) and Adam's update of every
    parameter (PyTorch's fused Adam). The schedule counts the trainer's products."""
    from bitnn.engine import compiled

    gen = torch.Generator().manual_seed(0)
    sizes = [NET.n_in, *hidden, NET.n_out]
    xs = [torch.randn(batch, a, generator=gen) for a in sizes[:-1]]
    ws = [torch.randn(b, a, generator=gen) for a, b in itertools.pairwise(sizes)]
    gs = [torch.randn(batch, b, generator=gen) for b in sizes[1:]]

    def forward():
        for x, w in zip(xs, ws, strict=True):
            torch.mm(x, w.t())

    def backward():  # weight gradients; input gradients where the input is not the data
        for i, (x, w, g) in enumerate(zip(xs, ws, gs, strict=True)):
            torch.mm(g.t(), x)
            if i:
                torch.mm(g, w)

    rng = np.random.default_rng(0)
    packed = []
    for x, w, p in zip(xs, ws, (NET.dropout[0],) + (NET.dropout[1],) * len(hidden), strict=True):
        words = -(-x.shape[1] // 64)
        x_bits = rng.integers(0, 2**63, (batch, words), dtype=np.uint64)
        keep = rng.random((batch, x.shape[1])) >= p
        x_mask = np.packbits(np.pad(keep, ((0, 0), (0, 64 * words - x.shape[1]))), axis=1,
                             bitorder="little").view(np.uint64)  # fmt: skip
        w_bits = rng.integers(0, 2**63, (w.shape[0], words), dtype=np.uint64)
        out = np.empty((batch, w.shape[0]), dtype=np.int64)
        packed.append((x_bits, x_mask, keep.sum(1).astype(np.int64), w_bits, out))

    def xnor():
        for x_bits, x_mask, kept, w_bits, out in packed:
            compiled.masked_dot(x_bits, x_mask, kept, w_bits, torch.get_num_threads(), out)

    ternary = []  # dropout's -1/0/+1 inputs, as round 2's backward sees them
    for x, p in zip(xs, (NET.dropout[0],) + (NET.dropout[1],) * len(hidden), strict=True):
        ternary.append(torch.sign(x).mul_(torch.rand(x.shape, generator=gen) >= p).numpy())
    grads = [np.empty(w.shape, np.float32) for w in ws]
    inputs = [np.empty(x.shape, np.float32) for x in xs]

    def tables():  # as bitnn.train.layers._PopcountBitLinear: planes, then the products
        n = torch.get_num_threads()
        for i, (x, w, g) in enumerate(zip(ternary, ws, gs, strict=True)):
            gn = g.numpy()
            compiled.sign_matmul(gn, compiled.sign_planes(x, True, n), grads[i], True, threads=n)
            if i:
                planes = compiled.sign_planes(w.numpy(), False, n)
                compiled.sign_matmul(gn, planes, inputs[i], threads=n)

    out_t = np.empty((ws[0].shape[0], batch), np.float32)

    def round1_trainer():  # the first layer by tables (forward and W's gradient), then matmuls
        n = torch.get_num_threads()
        x0 = ternary[0]
        compiled.sign_matmul(ws[0].numpy(), compiled.sign_planes(np.ascontiguousarray(x0.T),
                             True, n), out_t, threads=n)  # fmt: skip
        compiled.sign_matmul(gs[0].numpy(), compiled.sign_planes(x0, True, n), grads[0], True,
                             threads=n)  # fmt: skip
        for x, w, g in zip(xs[1:], ws[1:], gs[1:], strict=True):
            torch.mm(x, w.t())
            torch.mm(g.t(), x)
            torch.mm(g, w)

    model, optimizer = _bit_mlp(hidden, 2, "float32")
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    parts = {
        "round 1: float32 matmuls (forward and backward)": lambda: (forward(), backward()),
        "round 1: the trainer's (first layer by table products, the rest float32)": (
            round1_trainer
        ),
        "round 2: float32 matmuls (backward)": backward,
        "round 2: table products (backward, the trainer's)": tables,
        "round 2: XNOR-popcount forward (packed operands)": xnor,
        "Adam (fused), all parameters": optimizer.step,
    }
    return {name: _median_ms(fn, repeats) for name, fn in parts.items()}


# issue #14's bounds on each preset's whole training on MNIST (all 60,000 images)
TARGET_SECONDS = {"paper": 900, "best": 1800}


def floor_main(threads: list[int], repeats: int, preset: str = "paper") -> None:
    """An MNIST preset's schedule at its least: its steps (its epochs of all 60,000 images at
    its batch) times the parts of :func:`floor_parts`, against issue #14's bound."""
    from bitnn.train.presets import resolve

    values, _ = resolve(preset, {}, None, "mnist")
    hidden, batch = tuple(values["hidden"]), values["batch_size"]
    e1, e2 = values["epochs_round1"], values["epochs_round2"]
    steps = math.ceil(60000 / batch)
    print(f"{preset} preset: {NET.n_in} input bits -> {hidden} -> {NET.n_out}, batch {batch}, "
          f"{steps} steps an epoch, {e1} + {e2} epochs; median of {repeats} calls of each "
          "part")  # fmt: skip
    print()
    for n in threads:
        torch.set_num_threads(n)
        parts = floor_parts(hidden, batch, repeats)
        _, r1, _, r2, xnor, adam = parts.values()
        print(f"{n} thread(s):")
        print()
        print("| part | ms per step |")
        print("|---|---:|")
        for name, ms in parts.items():
            print(f"| {name} | {ms:.2f} |")
        least = steps * (e1 * (r1 + adam) + e2 * (r2 + xnor + adam)) / 1e3
        print()
        print(f"the schedule's steps take at least {least:.0f} s of these parts alone "
              f"(round 1 {steps * e1 * (r1 + adam) / 1e3:.0f} s, round 2 "
              f"{steps * e2 * (r2 + xnor + adam) / 1e3:.0f} s); issue #14's bound: "
              f"{TARGET_SECONDS[preset]} s")  # fmt: skip
        print()


def _spin() -> None:  # a CPU-bound neighbour on one core (a test run, a compiler)
    while True:
        pass


def _other_training() -> None:  # another PyTorch training on PyTorch's default threads
    while True:
        step_times((1024, 1024, 1024), 100, 50, 2, False)


NEIGHBOURS = {"spin": _spin, "training": _other_training}


def _neighbour(kind: str, started) -> None:
    started.set()
    NEIGHBOURS[kind]()


def contention_main(hidden, batch, steps, neighbour_kind: str, precision: str) -> None:
    """Round-2 step time at ``precision`` (the first of ``--precision``), quiet and beside one
    CPU-bound process, with PyTorch's default thread count (one per core) and with bitnn's
    (``cpu_threads``: the CPUs this process may use, less those busy elsewhere when training
    starts)."""
    import multiprocessing
    import os

    from bitnn.train.trainer import cpu_threads

    cores = len(os.sched_getaffinity(0))
    rows = []
    for label in ("quiet", f"beside {neighbour_kind}"):
        neighbour = None
        if label != "quiet":
            ctx = multiprocessing.get_context("spawn")
            started = ctx.Event()
            neighbour = ctx.Process(target=_neighbour, args=(neighbour_kind, started), daemon=True)
            neighbour.start()
            started.wait(60)  # it has imported torch and begun
            time.sleep(1.0)
        try:
            torch.set_num_threads(cores)  # PyTorch's default, what cpu_threads starts from
            chosen = cpu_threads()
            times = {}
            for name, n in (("PyTorch default", cores), ("bitnn default", chosen)):
                torch.set_num_threads(n)
                with _precision(precision) as p:
                    times[name] = (n, step_times(hidden, batch, steps, 2, False, p))
            rows.append((label, times))
        finally:
            if neighbour is not None:
                neighbour.terminate()
                neighbour.join()
    print(f"round 2 at precision {precision}")
    print()
    print("| machine | PyTorch default (threads, step) | bitnn default (threads, step) |")
    print("|---|---:|---:|")
    for label, t in rows:
        cells = [f"{n}, {1e3 * sec:.1f} ms" for n, sec in t.values()]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    for name in ("PyTorch default", "bitnn default"):
        ratio = rows[1][1][name][1] / rows[0][1][name][1]
        print(f"\n{name}: beside {neighbour_kind} {ratio:.2f}x its quiet step time", end="")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--network", choices=sorted(NETWORKS), default="mnist",
        help="mnist: the MNIST paper network (default widths 1024,1024,1024, batch 100); "
        "denoise: the best denoiser's (2313 input bits -> 257 output bits, threshold units, "
        "dropout 0.2; say --hidden 2048,2048 --batch 512 for its preset)",
    )  # fmt: skip
    p.add_argument("--hidden", default="1024,1024,1024")
    p.add_argument(
        "--batch", type=int, help="steps: 100 unless given; --epochs: the preset's unless given"
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--sparsity", type=float, default=0.0,
        help="steps, --profile: the bit networks' share of absent (zero) weights",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="against float32, and where time goes")
    p.add_argument("--threads", default="1,2", help="--profile, --epochs: thread counts")
    p.add_argument(
        "--precision", default="float32,bfloat16",
        help="--profile, --epochs: precisions to time (float32, float32-fast, bfloat16, "
        "bfloat16-torch); --contention: the first",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=int, metavar="N",
        help="instead, N epochs of each round of an MNIST preset (median) against a float32 "
        "MLP's epoch, and the preset's schedule at those times",
    )  # fmt: skip
    p.add_argument(
        "--preset",
        choices=("paper", "best"),
        default="paper",
        help="--epochs, --floor: the MNIST preset",
    )
    p.add_argument(
        "--floor", action="store_true",
        help="instead, the least a step can cost (its matmuls, XNOR-popcount product and Adam, "
        "each alone) and the MNIST preset's schedule at that cost",
    )  # fmt: skip
    p.add_argument(
        "--contention",
        choices=sorted(NEIGHBOURS),
        help="quiet vs beside a busy process: a 1-core spin loop or another training",
    )
    args = p.parse_args()
    global NET, SPARSITY
    NET, SPARSITY = NETWORKS[args.network], args.sparsity
    hidden = tuple(int(h) for h in args.hidden.split(","))
    epoch_batch, args.batch = args.batch, args.batch or 100
    shape = f"{NET.n_in} -> {args.hidden} -> {NET.n_out}, batch {args.batch}"
    if SPARSITY:
        shape += f", sparsity {SPARSITY}"
    if args.contention:
        print(f"{machine()}, PyTorch {torch.__version__}; {shape}; round 2, median of "
              f"{args.steps} steps")  # fmt: skip
        print()
        precision = args.precision.split(",")[0]
        contention_main(hidden, args.batch, args.steps, args.contention, precision)
        return
    threads = [int(t) for t in args.threads.split(",")]
    precisions = args.precision.split(",")
    if args.floor:
        print(f"{machine()}, PyTorch {torch.__version__}")
        floor_main(threads, args.steps, args.preset)
        return
    if args.epochs:
        print(f"{machine()}, PyTorch {torch.__version__}")
        epochs_main(threads, precisions, args.epochs, epoch_batch, args.preset)
        return
    if args.profile:
        print(f"{machine()}, PyTorch {torch.__version__}; {shape}; median of {args.steps} "
              "steps")  # fmt: skip
        print()
        profile_main(hidden, args.batch, args.steps, threads, precisions)
        return
    print(
        f"{machine()}, {torch.get_num_threads()} torch threads, "
        f"PyTorch {torch.__version__}; {shape}; "
        f"median of {args.steps} steps, before/now interleaved twice"
    )
    print()
    print("| round | before | now | speed-up |")
    print("|---:|---:|---:|---:|")
    for round_ in (1, 2):
        runs = {True: [], False: []}
        for _ in range(2):  # interleaved: a disturbance does not hit one side only
            for before in (True, False):
                runs[before].append(step_times(hidden, args.batch, args.steps, round_, before))
        b, n = float(np.median(runs[True])), float(np.median(runs[False]))
        print(f"| {round_} | {1e3 * b:.1f} ms | {1e3 * n:.1f} ms | {b / n:.2f}x |")


if __name__ == "__main__":
    main()
