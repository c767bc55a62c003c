"""The firmware example on emulated microcontrollers: mnist-small exported for the Cortex-M4
(QEMU mps2-an386) and the Cortex-M0 (QEMU microbit), linked into 64 KiB of flash and 2 KiB of
RAM with -Wall -Wextra -Werror, run on 500 MNIST test images, every class compared with the
Python engine. Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (Debian
packages; .ci/run installs them) and MNIST; skipped with the reason where one is missing."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bitnn.export.c import STACK_BYTES, export_c
from bitnn.io import load_model

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "examples" / "firmware"
MODEL = ROOT / "models" / "mnist-small.bnn"
N_IMAGES = 500
BOARDS = {"mps2-an386": "cortex-m4", "microbit": "cortex-m0"}

missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(missing),
    reason=f"{', '.join(missing)} not installed (apt-get install --no-install-recommends "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)",
)


@pytest.fixture(scope="module")
def mnist_test():
    from bitnn.data.mnist import load_mnist
    from bitnn.errors import DatasetError

    try:
        d = load_mnist()
    except DatasetError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    return np.ascontiguousarray(d.X_test[:N_IMAGES])


def build(tmp: Path, board: str, **make_vars: str) -> Path:
    model_dir = tmp / "model"
    if not model_dir.exists():
        export_c(load_model(MODEL), model_dir, "mnist_small", BOARDS[board])
    build_dir = tmp / f"build-{board}-{len(make_vars)}"
    args = [f"{k}={v}" for k, v in make_vars.items()]
    subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), f"BOARD={board}", "MODEL=mnist_small",
         f"MODEL_DIR={model_dir}", f"BUILD={build_dir}", *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return build_dir / "firmware.elf"


def run(elf: Path, board: str, images: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    r = subprocess.run(
        ["qemu-system-arm", "-M", board, "-nographic", "-monitor", "none", "-serial", "none",
         "-semihosting-config", f"enable=on,target=native,arg=firmware,arg={images.name}",
         "-icount", "shift=6", "-kernel", str(elf)],
        capture_output=True, text=True, timeout=120, cwd=images.parent,
    )  # fmt: skip
    lines = (r.stdout + r.stderr).splitlines()
    assert r.returncode == 0, lines[-5:]
    classes = "".join(line[2:] for line in lines if line.startswith("P "))
    figures = {
        line[0]: [int(v) for v in line.split()[1:]] for line in lines if line[:2] in ("T ", "S ")
    }
    return np.array([int(c) for c in classes]), figures


def sizes(elf: Path) -> tuple[int, int]:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True)
    text, data, bss = (int(v) for v in out.stdout.splitlines()[1].split()[:3])
    return text + data, data + bss


@pytest.mark.parametrize("board", list(BOARDS))
def test_firmware_fits_and_agrees_with_python(tmp_path, board, mnist_test):
    images = tmp_path / "images.u8"
    images.write_bytes(mnist_test.tobytes())
    elf = build(tmp_path, board)  # links only into 64 KiB flash and 2 KiB RAM (stack included)
    flash, ram = sizes(elf)
    assert flash <= 64 * 1024 and ram <= 2 * 1024
    got, figures = run(elf, board, images)
    expected = load_model(MODEL).predict(mnist_test)
    assert len(got) == N_IMAGES
    np.testing.assert_array_equal(got, expected)
    n, ticks, empty, calibration = figures["T"]
    assert n == N_IMAGES and calibration > 0
    instructions = (ticks - n * empty) / n / (calibration / 2e6)
    # the target on the M4; measured: 148,277 (M4) and 237,889 (M0)
    limit = {"mps2-an386": 150_000, "microbit": 250_000}[board]
    assert 20_000 < instructions <= limit
    assert 0 < figures["S"][0] <= 512


def test_float_path_on_the_m4_with_flush_to_zero(tmp_path, mnist_test):
    """predict_f32 on the Cortex-M4's FPU with FPSCR.FZ set (the harness sets it), with the
    edges models saved in format version 1 had: 1.4e-45 (subnormal) where the fitted edge was
    'above 0'. Same bits as 1.0 for pixel values; flushed to 0 they would turn blank pixels on."""
    net = load_model(MODEL)
    edges = net.binarizer.edges_
    edges[edges == 1.0] = np.float32(1.4e-45)
    assert np.sum(edges < 1e-38) > 100
    export_c(net, tmp_path / "model", "mnist_small", "cortex-m4")
    x = mnist_test.astype(np.float32)
    expected = net.predict(x)
    np.testing.assert_array_equal(expected, load_model(MODEL).predict(x))
    images = tmp_path / "images.f32"
    images.write_bytes(x.tobytes())
    elf = build(tmp_path, "mps2-an386", EXTRA_CFLAGS="-DHARNESS_F32", FLASH_SIZE="131072",
                RAM_SIZE="8192")  # fmt: skip
    got, _ = run(elf, "mps2-an386", images)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("board", list(BOARDS))
def test_stack_bound_in_the_header_holds(tmp_path, board):
    """The generated functions' frames, from GCC's -fstack-usage, all together (an upper bound
    of any call chain) stay within NAME_STACK_BYTES."""
    export_c(load_model(MODEL), tmp_path / "model", "mnist_small", BOARDS[board])
    flags = {"mps2-an386": ["-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
             "microbit": ["-mcpu=cortex-m0"]}[board]  # fmt: skip
    subprocess.run(
        ["arm-none-eabi-gcc", "-std=c99", "-O2", "-mthumb", *flags, "-fstack-usage", "-c",
         "mnist_small.c", "-o", "mnist_small.o"],
        cwd=tmp_path / "model", check=True, capture_output=True,
    )  # fmt: skip
    usage = (tmp_path / "model" / "mnist_small.su").read_text()
    frames = [int(m) for m in re.findall(r"\t(\d+)\t(?:static|dynamic)", usage)]
    assert frames and "dynamic" not in usage
    assert sum(frames) <= STACK_BYTES


@pytest.mark.parametrize("masked", [False, True])
def test_every_block_path_on_the_m4(tmp_path, masked):
    """Random widths through the Thumb-2 assembly blocks on the Cortex-M4: 19 words (a
    16-word block and 3 single words), 9 words (an 8-word block and one; with absent
    connections: the C carry-save path), 2 words."""
    from test_export import wide_net

    net, X = wide_net(np.random.default_rng(9), masked=masked)
    export_c(net, tmp_path / "model", "mnist_small", "cortex-m4")  # the harness's model name
    images = tmp_path / "images.u8"
    images.write_bytes(np.ascontiguousarray(X).tobytes())
    elf = build(tmp_path, "mps2-an386", FLASH_SIZE="262144")
    got, _ = run(elf, "mps2-an386", images)
    assert len(got) == len(X) and len(np.unique(got)) > 3
    np.testing.assert_array_equal(got, net.predict(X, "reference"))
