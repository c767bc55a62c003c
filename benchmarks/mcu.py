"""Bitwise networks on microcontrollers against float32 and int8 C of the same shape.

    python benchmarks/mcu.py --write docs/results/mcu.md

For ``models/mnist-small.bnn`` and ``models/mnist-paper.bnn`` on an emulated Cortex-M4 (QEMU
``mps2-an386``) and Cortex-M0 (QEMU ``microbit``): the complete firmware of
``examples/firmware`` (startup, semihosting harness, model; test images are read from the
host) is built with arm-none-eabi-gcc -O2 and run on ``--images`` MNIST test images.
Reported: flash (text + data of the firmware), RAM (data + bss: the harness's image buffer and
model workspace plus a 512 B stack reserve; float needs a larger image buffer), the stack's
measured high-water mark, instructions per inference, the firmware's agreement with its Python
twin and the test error on all 10,000 test images.

Instructions per inference: QEMU runs with ``-icount shift=6`` (every instruction advances
the virtual clock by 64 ns), so the SysTick timer (clocked from the CPU clock) counts
executed instructions. The harness reads SysTick around each ``predict`` call; a loop of
exactly 2,000,000 instructions (``subs``/``bne``) calibrates ticks per instruction, and the
cost of an empty measurement is subtracted.

Baselines (same hidden shape, 784 pixels in, ReLU): a float32 MLP trained here with PyTorch
(Adam, ``--epochs``, seed 0; cached in ``~/.cache/bitnn/mcu``), and its int8 version
quantized after training the way CMSIS-NN's fully connected kernel works: int8 weights with
one scale per layer, int32 biases, activations 0..127 requantized with a fixed-point
multiplier, and on the Cortex-M4 the dual 16-bit multiply-accumulate SMLAD (weights widened
with SXTB16, activations widened once per layer). Their C is written by this script. A
network that does not fit a board's flash (256 KiB on the micro:bit's nRF51822, 4 MiB on
mps2-an386) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bitnn.data.mnist import cache_dir, load_mnist
from bitnn.export.c import export_c
from bitnn.io import load_model

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "examples" / "firmware"
BOARDS = {
    "mps2-an386": ("cortex-m4", 4 << 20, 4 << 20),  # target, flash, RAM
    "microbit": ("cortex-m0", 256 << 10, 16 << 10),
}
MODELS = {"mnist-small": (256, 256), "mnist-paper": (1024, 1024, 1024)}
STACK = 512


# ------------------------------------------------------------------------ float32 baseline


def train_float(X, y, hidden, epochs, seed=0):
    """A float32 MLP 784 -> hidden -> 10 with ReLU (PyTorch); [(W (out, in), b)], cached."""
    path = cache_dir() / "mcu" / f"float-{'-'.join(map(str, hidden))}-e{epochs}-s{seed}.npz"
    if path.exists():
        z = np.load(path)
        return [(z[f"W{i}"], z[f"b{i}"]) for i in range(len(hidden) + 1)]
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    dims = [784, *hidden, 10]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    Xt = torch.from_numpy(X.astype(np.float32) / 255)
    yt = torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        t = time.perf_counter()
        for idx in torch.randperm(len(Xt), generator=g).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()
        print(f"  float {dims}: epoch {epoch + 1}/{epochs} ({time.perf_counter() - t:.0f} s)")
    params = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net[::2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"W{i}": w for i, (w, _) in enumerate(params)},
             **{f"b{i}": b for i, (_, b) in enumerate(params)})  # fmt: skip
    return params


def float_predict(params, X):
    """The float32 twin of the C code (numpy float32; summation order may differ)."""
    a = X.astype(np.float32) / np.float32(255)
    for i, (W, b) in enumerate(params):
        a = a @ W.T.astype(np.float32) + b.astype(np.float32)
        if i < len(params) - 1:
            a = np.maximum(a, 0)
    return a.argmax(1)


# --------------------------------------------------------------------------- int8 baseline


def quantize(params, X_calib):
    """CMSIS-NN style int8: per layer (Wq int8, bias int32, multiplier, shift)."""
    q = []
    s_in = 2.0 / 255  # input activation = pixel >> 1 (0..127)
    a = X_calib.astype(np.float64) / 255
    for i, (W, b) in enumerate(params):
        s_w = float(np.abs(W).max()) / 127
        Wq = np.clip(np.round(W / s_w), -127, 127).astype(np.int8)
        bq = np.round(b / (s_w * s_in)).astype(np.int64)
        a = a @ W.T.astype(np.float64) + b
        if i < len(params) - 1:
            a = np.maximum(a, 0)
            s_out = float(np.percentile(a, 99.99)) / 127
            ratio = s_w * s_in / s_out  # acc * ratio -> next activation, as (m, shift)
            shift = 31 - int(np.ceil(np.log2(ratio)))
            m = round(ratio * 2.0**shift)
            while m >= 2**31:
                shift -= 1
                m = round(ratio * 2.0**shift)
            q.append((Wq, bq, m, shift))
            s_in = s_out
        else:
            q.append((Wq, bq, 0, 0))
    return q


def int8_predict(q, X):
    """The exact integer twin of the int8 C code."""
    a = X.astype(np.int64) >> 1
    for i, (Wq, bq, m, shift) in enumerate(q):
        acc = a @ Wq.T.astype(np.int64) + bq
        if i == len(q) - 1:
            return acc.argmax(1)
        a = np.clip((acc * m + (1 << (shift - 1))) >> shift, 0, 127)
    raise AssertionError


def _c_array(ctype, name, values, per_line=24):
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    rows = ",\n".join(", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line))
    return (
        f"static const {ctype} {name}[{len(flat)}] __attribute__((aligned(4))) = {{\n{rows}\n}};\n"
    )


def int8_c(name, q):
    """C of the int8 network with the model API the harness calls (NAME_predict_u8)."""
    upper = name.upper()
    widest = max(Wq.shape[1] for Wq, *_ in q)
    n_act = max(Wq.shape[0] for Wq, *_ in q[:-1])
    work = widest // 2 + widest // 4 + max(n_act, 10)
    h = (f"#include <stdint.h>\n#define {upper}_FEATURES 784\n#define {upper}_WORK_WORDS {work}\n"
         f"int {name}_predict_u8(const uint8_t *x, uint32_t *work);\n")  # fmt: skip
    c = [f'#include "{name}.h"', "#include <string.h>",
         "#if defined(__ARM_FEATURE_DSP)", "#include <arm_acle.h>", "#endif",
         "typedef int16_t i16a __attribute__((may_alias));"]  # fmt: skip
    for i, (Wq, bq, _, _) in enumerate(q):
        c.append(_c_array("int8_t", f"W{i}", Wq))
        c.append(_c_array("int32_t", f"B{i}", bq))
    c.append(r"""
/* acc[u] = bias[u] + sum_k w[u][k] * a[k]; a is the activation widened to int16 once, in the
   order (a0, a2), (a1, a3) per 4 values, so that SXTB16 of a weight word (and of the word
   rotated by 8) pairs with it and SMLAD adds two products per instruction (as CMSIS-NN). */
static void fc(const int8_t *a, int n_in, i16a *wide, const int8_t *w, const int32_t *bias,
               int32_t *acc, int n_out) {
    for (int k = 0; k < n_in; k += 4) {
        wide[k] = a[k]; wide[k + 1] = a[k + 2]; wide[k + 2] = a[k + 1]; wide[k + 3] = a[k + 3];
    }
    for (int u = 0; u < n_out; u++) {
        const int8_t *wu = w + (long)u * n_in;
        int32_t s = bias[u];
#if defined(__ARM_FEATURE_DSP)
        for (int k = 0; k < n_in; k += 4) {
            uint32_t ww, x02, x13;
            memcpy(&ww, wu + k, 4);
            memcpy(&x02, wide + k, 4);
            memcpy(&x13, wide + k + 2, 4);
            s = __smlad((int16x2_t)x02, __sxtb16((int8x4_t)ww), s);
            s = __smlad((int16x2_t)x13, __sxtb16((int8x4_t)((ww >> 8) | (ww << 24))), s);
        }
#else
        for (int k = 0; k < n_in; k += 4)
            s += wu[k] * wide[k] + wu[k + 2] * wide[k + 1] + wu[k + 1] * wide[k + 2]
                 + wu[k + 3] * wide[k + 3];
#endif
        acc[u] = s;
    }
}

static void requantize(const int32_t *acc, int8_t *out, int n, int32_t m, int shift) {
    for (int u = 0; u < n; u++) {
        int64_t v = ((int64_t)acc[u] * m + ((int64_t)1 << (shift - 1))) >> shift;
        out[u] = (int8_t)(v < 0 ? 0 : v > 127 ? 127 : v);
    }
}
""")
    dims = [q[0][0].shape[1]] + [Wq.shape[0] for Wq, *_ in q]
    body = [  # workspace: [wide: int16 x widest | a: int8 x widest | acc: int32 x n_act]
        f"int {name}_predict_u8(const uint8_t *x, uint32_t *work) {{",
        "    i16a *wide = (i16a *)work;",
        f"    int8_t *a = (int8_t *)(work + {widest // 2});",
        f"    int32_t *acc = (int32_t *)(work + {widest // 2 + widest // 4});",
        "    for (int k = 0; k < 784; k++) a[k] = (int8_t)(x[k] >> 1);",
    ]
    for i, (_, _, m, shift) in enumerate(q):
        body.append(f"    fc(a, {dims[i]}, wide, W{i}, B{i}, acc, {dims[i + 1]});")
        if i < len(q) - 1:
            body.append(f"    requantize(acc, a, {dims[i + 1]}, {m}, {shift});")
    body += [
        "    int best = 0;",
        f"    for (int u = 1; u < {dims[-1]}; u++) if (acc[u] > acc[best]) best = u;",
        "    return best;",
        "}",
    ]
    return h, "\n".join(c + body) + "\n"


def float_c(name, params):
    upper = name.upper()
    widest = max(W.shape[1] for W, _ in params)
    work = 2 * widest + 10
    h = (f"#include <stdint.h>\n#define {upper}_FEATURES 784\n#define {upper}_WORK_WORDS {work}\n"
         f"int {name}_predict_u8(const uint8_t *x, uint32_t *work);\n")  # fmt: skip
    c = [f'#include "{name}.h"', "typedef float f32a __attribute__((may_alias));"]
    for i, (W, b) in enumerate(params):
        for arr, nm in ((W, f"W{i}"), (b, f"B{i}")):
            flat = [repr(float(v)) + "f" for v in np.asarray(arr, np.float32).reshape(-1)]
            rows = ",\n".join(", ".join(flat[j : j + 12]) for j in range(0, len(flat), 12))
            c.append(f"static const float {nm}[{len(flat)}] = {{\n{rows}\n}};")
    c.append(r"""
static void fc(const f32a *a, int n_in, const float *w, const float *bias, f32a *out,
               int n_out, int relu) {
    for (int u = 0; u < n_out; u++) {
        const float *wu = w + (long)u * n_in;
        float s = bias[u];
        for (int k = 0; k < n_in; k++) s += wu[k] * a[k];
        out[u] = relu && s < 0.0f ? 0.0f : s;
    }
}
""")
    dims = [params[0][0].shape[1]] + [W.shape[0] for W, _ in params]
    body = [
        f"int {name}_predict_u8(const uint8_t *x, uint32_t *work) {{",
        f"    f32a *a = (f32a *)work, *b = a + {widest};",
        "    for (int k = 0; k < 784; k++) a[k] = (float)x[k] / 255.0f;",
    ]
    for i in range(len(params)):
        last = i == len(params) - 1
        body.append(f"    fc(a, {dims[i]}, W{i}, B{i}, b, {dims[i + 1]}, {0 if last else 1});")
        if not last:
            body.append("    { f32a *t = a; a = b; b = t; }")
    body += ["    int best = 0;",
             f"    for (int u = 1; u < {dims[-1]}; u++) if (b[u] > b[best]) best = u;",
             "    return best;", "}"]  # fmt: skip
    return h, "\n".join(c + body) + "\n"


# ------------------------------------------------------------------------ build and run


def build(model_dir: Path, name: str, board: str, build_dir: Path):
    """The firmware ELF, or the link error's overflow line when it does not fit."""
    _, flash, ram = BOARDS[board]
    r = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), f"BOARD={board}", f"MODEL={name}",
         f"MODEL_DIR={model_dir}", f"BUILD={build_dir}", f"FLASH_SIZE={flash}",
         f"RAM_SIZE={ram}", f"STACK_SIZE={STACK}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode:
        over = re.search(r"region `(\w+)' overflowed by (\d+) bytes", r.stderr)
        if over:
            return None, f"does not fit: {over.group(1)} overflowed by {int(over.group(2)):,} B"
        raise RuntimeError(r.stderr[-2000:])
    return build_dir / "firmware.elf", ""


def run(elf: Path, board: str, images: np.ndarray):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "img.u8").write_bytes(np.ascontiguousarray(images).tobytes())
        r = subprocess.run(
            ["qemu-system-arm", "-M", board, "-nographic", "-monitor", "none", "-serial",
             "none", "-semihosting-config", "enable=on,target=native,arg=fw,arg=img.u8",
             "-icount", "shift=6", "-kernel", str(elf)],
            capture_output=True, text=True, cwd=tmp, timeout=3600,
        )  # fmt: skip
    lines = (r.stdout + r.stderr).splitlines()
    if r.returncode:
        raise RuntimeError("\n".join(lines[-5:]))
    pred = np.array([int(c) for c in "".join(x[2:] for x in lines if x.startswith("P "))])
    n, ticks, empty, calib = (int(v) for v in next(x for x in lines if x[:2] == "T ").split()[1:])
    stack = int(next(x for x in lines if x[:2] == "S ").split()[1])
    return pred, (ticks - n * empty) / n / (calib / 2e6), stack


def sizes(elf: Path) -> tuple[int, int]:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True)
    text, data, bss = (int(v) for v in out.stdout.splitlines()[1].split()[:3])
    return text + data, data + bss


def measure(kind, model, board, model_dir, name, images, twin_pred, test_error, work):
    elf, why = build(model_dir, name, board, work / f"build-{kind}-{model}-{board}")
    row = {"model": model, "kind": kind, "board": board, "cpu": BOARDS[board][0],
           "test_error": test_error}  # fmt: skip
    if elf is None:
        row["fits"] = False
        row["why"] = why
        print(f"{model} {kind} on {board}: {why}")
        return row
    flash, ram = sizes(elf)
    t = time.perf_counter()
    pred, instr, stack = run(elf, board, images)
    same = int(np.sum(pred == twin_pred[: len(pred)]))
    row.update(fits=True, flash=flash, ram=ram, stack=stack, instructions=round(instr),
               same=same, n=len(pred))  # fmt: skip
    print(f"{model} {kind} on {board}: flash {flash:,} B, RAM {ram:,} B, stack {stack} B, "
          f"{instr:,.0f} instructions/inference, {same}/{len(pred)} = twin "
          f"({time.perf_counter() - t:.0f} s)")  # fmt: skip
    return row


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=1000, help="test images run on each firmware")
    p.add_argument("--baseline-images", type=int, default=100,
                   help="test images for the float32 and int8 firmware (slower)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=10, help="float baseline training epochs")
    p.add_argument("--models", default="mnist-small,mnist-paper")
    p.add_argument("--out", default="out/mcu", help="folder for results.json")
    p.add_argument("--write", help="write the markdown table here")
    p.add_argument("--render", help="only write the table (--write) from this results.json")
    args = p.parse_args()
    if args.render:
        Path(args.write).write_text(markdown(json.loads(Path(args.render).read_text())))
        return
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "make"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install gcc-arm-none-eabi "
                     "libnewlib-arm-none-eabi qemu-system-arm")  # fmt: skip
    d = load_mnist()
    X, y = d.X_test, d.y_test
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            net = load_model(ROOT / "models" / f"{model}.bnn")
            bnn_pred = net.predict(X)
            bnn_err = float(np.mean(bnn_pred != y))
            params = train_float(d.X_train, d.y_train, MODELS[model], args.epochs)
            f_pred = float_predict(params, X)
            q = quantize(params, d.X_train[:2000])
            q_pred = int8_predict(q, X)
            name = model.replace("-", "_")
            for board, (target, _, _) in BOARDS.items():
                mdir = work / f"{model}-{board}-bnn"
                export_c(net, mdir, name, target)
                rows.append(measure("bnn", model, board, mdir, name, X[: args.images],
                                    bnn_pred, bnn_err, work))  # fmt: skip
                for kind, gen, pred, prm in (("int8", int8_c, q_pred, q),
                                             ("float32", float_c, f_pred, params)):  # fmt: skip
                    mdir = work / f"{model}-{board}-{kind}"
                    mdir.mkdir()
                    n_bytes = sum(W.size * (1 if kind == "int8" else 4) for W, *_ in prm)
                    if n_bytes > BOARDS[board][1]:  # no need to compile it to know
                        rows.append({"model": model, "kind": kind, "board": board,
                                     "cpu": target, "fits": False,
                                     "test_error": float(np.mean(pred != y)),
                                     "why": f"does not fit: {n_bytes:,} B of weights > "
                                            f"{BOARDS[board][1] >> 10} KiB flash"})  # fmt: skip
                        print(f"{model} {kind} on {board}: {rows[-1]['why']}")
                        continue
                    h, c = gen(name, prm)
                    (mdir / f"{name}.h").write_text(h)
                    (mdir / f"{name}.c").write_text(c)
                    rows.append(measure(kind, model, board, mdir, name,
                                        X[: args.baseline_images], pred,
                                        float(np.mean(pred != y)), work))  # fmt: skip
    info = {"command": "python benchmarks/mcu.py " + shlex.join(sys.argv[1:]),
            "gcc": subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0],
            "qemu": subprocess.run(["qemu-system-arm", "--version"], capture_output=True,
                                   text=True).stdout.splitlines()[0],
            "machine": platform.platform(), "rows": rows}  # fmt: skip
    (out / "results.json").write_text(json.dumps(info, indent=1))
    if args.write:
        Path(args.write).write_text(markdown(info))
        print(f"wrote {args.write}")


def markdown(info) -> str:
    lines = [
        "# Bitwise networks on microcontrollers",
        "",
        f"Command: `{info['command']}` ({info['gcc']}, -O2; {info['qemu']}).",
        "",
        "Complete firmware of `examples/firmware` (vector table, startup, semihosting harness "
        "and the model; test images are read from the host): flash = text + data, RAM = data "
        f"+ bss including a {STACK} B stack reserve, stack = its measured high-water mark. "
        "Instructions per inference: QEMU `-icount shift=6`, SysTick read around each "
        "prediction, calibrated with a loop of 2,000,000 instructions (see "
        "`benchmarks/mcu.py`). Test error: all 10,000 MNIST test images, from the Python twin "
        "(the bit network's engine; for int8 the exact integer twin; for float32 numpy "
        "float32); *= twin*: firmware predictions equal to the twin's.",
        "",
        "| model | C | core (QEMU board) | flash | RAM | stack | instructions / inference "
        "| = twin | test error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in info["rows"]:
        head = f"| {r['model']} | {r['kind']} | {r['cpu']} ({r['board']}) |"
        err = f"{100 * r['test_error']:.2f}%"
        if not r["fits"]:
            lines.append(f"{head} {r['why']} | | | | | {err} |")
        else:
            lines.append(
                f"{head} {r['flash']:,} B | {r['ram']:,} B | {r['stack']} B | "
                f"{r['instructions']:,} | {r['same']}/{r['n']} | {err} |"
            )
    lines.append("")
    by = {(r["model"], r["kind"], r["board"]): r for r in info["rows"]}
    m4, m0 = (
        by.get(("mnist-small", "bnn", "mps2-an386")),
        by.get(("mnist-small", "bnn", "microbit")),
    )
    if m4 and m0 and m4["fits"] and m0["fits"]:
        lines.append(
            f"- Complete mnist-small firmware: {m4['flash']:,} B (Cortex-M4) and "
            f"{m0['flash']:,} B (Cortex-M0) of flash, at most 65,536 B; {m4['ram']:,} B and "
            f"{m0['ram']:,} B of RAM with the stack reserve, at most 2,048 B; "
            f"{m4['instructions']:,} instructions per inference on the Cortex-M4 (about "
            f"{m4['instructions'] / (256 * 49 + 256 * 8 + 10 * 8):.1f} per 32-bit word of "
            "weights, binarization included)."
        )
    for model in dict.fromkeys(r["model"] for r in info["rows"]):
        b, q = by.get((model, "bnn", "mps2-an386")), by.get((model, "int8", "mps2-an386"))
        if b and q and b["fits"] and q["fits"]:
            lines.append(
                f"- {model} on the Cortex-M4: the bit network takes "
                f"{q['flash'] / b['flash']:.1f}x less flash and "
                f"{q['instructions'] / b['instructions']:.2f}x fewer instructions than int8 "
                "SMLAD C of the same shape."
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
