"""Training speed: one optimizer step of the MNIST paper network (1568 input bits -> 3x1024 ->
10, bias bits, dropout) on this machine, with the trainer's ops against the ops they replaced,
side by side in one run.

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

``--profile``: instead, the profile of the trainer's step side by side with a plain float32
MLP of the same shape (tanh, Adam, cross-entropy, the same batch: what a bitnn step should
cost at most), at each thread count of ``--threads``, and where a bitnn step spends its time
(PyTorch's profiler, self CPU time of each op, grouped: matmuls, binarization and surrogates,
dropout, optimizer, data movement, the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from mnist import machine  # benchmarks/mnist.py, beside this script

from bitnn.train import layers
from bitnn.train.layers import BitLinear, BitMLP
from bitnn.train.trainer import TrainConfig, Trainer


class _WhereSign(torch.autograd.Function):
    """The replaced sign activation: torch.where forward, tanh' backward."""

    @staticmethod
    def forward(ctx, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(z) ** 2)


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
    return _WhereTernarize.apply(w, self.beta()) if self.binary else w


@contextlib.contextmanager
def before_ops():
    saved = layers.sign_activation, BitLinear.effective_weight
    layers.sign_activation, BitLinear.effective_weight = _WhereSign.apply, _before_weight
    try:
        yield
    finally:
        layers.sign_activation, BitLinear.effective_weight = saved


def step_times(hidden, batch, steps, round_, before: bool) -> float:
    torch.manual_seed(0)
    cfg = TrainConfig(hidden=hidden, bias_kind="bias", dropout_input=0.1, dropout_hidden=0.2)
    model = BitMLP(1568, hidden, 10, "bias", "bias", 0.0, 0.1, 0.2)
    model.set_round(round_)
    if before:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    else:  # the trainer's own optimizer
        optimizer = Trainer._make_optimizer(SimpleNamespace(config=cfg, model=model), 1e-3)
    x = torch.randint(0, 2, (batch, 1568)).float() * 2 - 1
    y = torch.randint(0, 10, (batch,))
    with before_ops() if before else contextlib.nullcontext():
        return median_step(model, optimizer, x, y, steps)


def median_step(model, optimizer, x, y, steps) -> float:
    """Median seconds of a training step (forward, backward, optimizer), after 3 warm-ups."""
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def float_step_times(hidden, batch, steps) -> float:
    """A plain float32 MLP of the same shape: tanh, Adam (PyTorch's default), cross-entropy."""
    torch.manual_seed(0)
    sizes = [1568, *hidden]
    mods: list[torch.nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        mods += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    model = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 2, (batch, 1568)).float() * 2 - 1
    y = torch.randint(0, 10, (batch,))
    return median_step(model, optimizer, x, y, steps)


_GROUPS = [  # (group, substrings of op names), first match wins
    ("matmuls", ("mm", "matmul", "linear", "addmm")),
    ("optimizer", ("adam", "_foreach", "lerp", "sqrt", "addcdiv", "addcmul")),
    ("dropout", ("dropout", "bernoulli", "rand")),
    ("binarization and surrogates", ("sign", "tanh", "where", "abs", "ge", "lt", "clamp")),
    ("data movement", ("copy", "to", "index", "cat", "stack", "view", "reshape", "contiguous")),
]


def profile_groups(hidden, batch, round_) -> dict[str, float]:
    """Seconds of self CPU time per op group in one trainer step (median over 20 steps)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    cfg = TrainConfig(hidden=hidden, bias_kind="bias", dropout_input=0.1, dropout_hidden=0.2)
    model = BitMLP(1568, hidden, 10, "bias", "bias", 0.0, 0.1, 0.2)
    model.set_round(round_)
    optimizer = Trainer._make_optimizer(SimpleNamespace(config=cfg, model=model), 1e-3)
    x = torch.randint(0, 2, (batch, 1568)).float() * 2 - 1
    y = torch.randint(0, 10, (batch,))
    steps = 20
    for i in range(steps + 3):
        if i == 3:
            prof = profile(activities=[ProfilerActivity.CPU])
            prof.__enter__()
        loss = F.cross_entropy(model(x), y)
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


def profile_main(hidden, batch, steps, threads: list[int]) -> None:
    print("| threads | float32 MLP | bitnn round 1 | bitnn round 2 | round 1 / float | "
          "round 2 / float |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for n in threads:
        torch.set_num_threads(n)
        f = float_step_times(hidden, batch, steps)
        r1 = step_times(hidden, batch, steps, 1, False)
        r2 = step_times(hidden, batch, steps, 2, False)
        print(f"| {n} | {1e3 * f:.1f} ms | {1e3 * r1:.1f} ms | {1e3 * r2:.1f} ms | "
              f"{r1 / f:.2f}x | {r2 / f:.2f}x |")  # fmt: skip
    print()
    torch.set_num_threads(threads[0])
    print(f"Where a step's time goes ({threads[0]} thread(s), self CPU time per step):")
    print()
    rows = {r: profile_groups(hidden, batch, r) for r in (1, 2)}
    print("| ops | round 1 | round 2 |")
    print("|---|---:|---:|")
    for group in rows[1]:
        print(f"| {group} | {1e3 * rows[1][group]:.2f} ms | {1e3 * rows[2][group]:.2f} ms |")
    total = {r: sum(v.values()) for r, v in rows.items()}
    print(f"| total | {1e3 * total[1]:.2f} ms | {1e3 * total[2]:.2f} ms |")


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


def contention_main(hidden, batch, steps, neighbour_kind: str) -> None:
    """Round-2 step time, quiet and beside one CPU-bound process, with PyTorch's default
    thread count (one per core) and with bitnn's (``cpu_threads``: the CPUs this process may
    use, less those busy elsewhere when training starts)."""
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
                times[name] = (n, step_times(hidden, batch, steps, 2, False))
            rows.append((label, times))
        finally:
            if neighbour is not None:
                neighbour.terminate()
                neighbour.join()
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
    p.add_argument("--hidden", default="1024,1024,1024")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--profile", action="store_true", help="against float32, and where time goes")
    p.add_argument("--threads", default="1,2", help="--profile: thread counts to time")
    p.add_argument(
        "--contention",
        choices=sorted(NEIGHBOURS),
        help="quiet vs beside a busy process: a 1-core spin loop or another training",
    )
    args = p.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.contention:
        print(f"{machine()}, PyTorch {torch.__version__}; 1568 -> {args.hidden} -> 10, batch "
              f"{args.batch}; round 2, median of {args.steps} steps")  # fmt: skip
        print()
        contention_main(hidden, args.batch, args.steps, args.contention)
        return
    if args.profile:
        print(f"{machine()}, PyTorch {torch.__version__}; 1568 -> {args.hidden} -> 10, batch "
              f"{args.batch}; median of {args.steps} steps")  # fmt: skip
        print()
        profile_main(hidden, args.batch, args.steps, [int(t) for t in args.threads.split(",")])
        return
    print(
        f"{machine()}, {torch.get_num_threads()} torch threads, "
        f"PyTorch {torch.__version__}; 1568 -> {args.hidden} -> 10, batch {args.batch}; "
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
