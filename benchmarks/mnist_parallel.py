"""Run several ``benchmarks/mnist.py`` configurations side by side within a wall-clock budget.

    python benchmarks/mnist_parallel.py --budget 450 --out out/sweep \\
        "--presets paper" "--presets best --set augment_shift=2" "--presets= --baselines"

Each quoted argument is one run of ``benchmarks/mnist.py`` (its own process and folder
``OUT/runN``). Runs that train a preset are first calibrated: all of them train one epoch per
round at the same time, which measures each one's seconds per epoch under the same contention
as the real runs. Each then gets as many epochs as fit the budget (``--round1-share`` of them
in round 1). Runs that train no preset (float baselines) start with their own options. Ends
with one table over all runs (``OUT/results.md``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def launch(args: list[str], out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / "mnist.py"), *args, "--out", str(out)]
    log = (out / "log.txt").open("w")
    print("$", shlex.join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def trains_a_preset(args: list[str]) -> bool:
    for i, a in enumerate(args):
        if a.startswith("--presets="):
            return bool(a.split("=", 1)[1])
        if a == "--presets":
            return bool(args[i + 1]) if i + 1 < len(args) else True
    return True  # mnist.py's default: paper,best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="options of one benchmarks/mnist.py run, quoted")
    p.add_argument("--budget", type=float, required=True, help="seconds for the real runs")
    p.add_argument("--round1-share", type=float, default=0.4)
    p.add_argument("--margin", type=float, default=1.15, help="safety factor on epoch times")
    p.add_argument("--out", default="out/mnist-parallel")
    a = p.parse_args()
    out = Path(a.out)
    runs = [shlex.split(r) for r in a.runs]
    bnn = [i for i, r in enumerate(runs) if trains_a_preset(r)]

    start = time.perf_counter()
    calib = {i: launch([*runs[i], "--epochs1", "1", "--epochs2", "1"], out / f"calibrate{i}")
             for i in bnn}  # fmt: skip
    for proc in calib.values():
        proc.wait()
    calibration_s = time.perf_counter() - start
    budget = a.budget - calibration_s
    epochs: dict[int, tuple[int, int]] = {}
    for i in bnn:
        results = out / f"calibrate{i}" / "results.json"
        if not results.exists():
            sys.exit(f"calibration of run {i} failed: see {out / f'calibrate{i}' / 'log.txt'}")
        summary = json.loads(results.read_text())
        per_epoch = max(e["seconds"] for r in summary["rows"] for e in r.get("history", []))
        overhead = summary["seconds"] - 2 * per_epoch
        total = max(2, int((budget - overhead) / (per_epoch * a.margin)))
        e1 = max(1, round(a.round1_share * total))
        epochs[i] = (e1, total - e1)
        print(f"run {i}: {per_epoch:.1f} s/epoch, {overhead:.0f} s overhead -> "
              f"{e1}+{total - e1} epochs", flush=True)  # fmt: skip

    procs = []
    for i, r in enumerate(runs):
        extra = ["--epochs1", str(epochs[i][0]), "--epochs2", str(epochs[i][1])] if i in bnn else []
        procs.append(launch([*r, *extra], out / f"run{i}"))
    codes = [proc.wait() for proc in procs]
    done = [out / f"run{i}" / "results.json" for i in range(len(runs))]
    done = [str(f) for f in done if f.exists()]
    if done:
        subprocess.run([sys.executable, str(HERE / "mnist.py"), "--merge", *done,
                        "--write", str(out / "results.md")], check=False)  # fmt: skip
    print(f"exit codes {codes}; {time.perf_counter() - start:.0f} s in all", flush=True)
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
