"""The generated C against the reference engine, bit for bit (compiled with the system cc)."""

import copy
import re
import shutil
import subprocess

import numpy as np
import pytest

from bitnn.binarize import LloydMaxBinarizer, QuantileBinarizer, ThresholdBinarizer
from bitnn.bits import pack_bits
from bitnn.errors import InputError
from bitnn.export.c import export_c
from bitnn.network import BitLayer, BitNetwork

CC = shutil.which("gcc") or shutil.which("cc")
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "m.h"
/* argv[1]: u8 | f32 | bits. Reads rows from stdin, prints one line per row. */
int main(int argc, char **argv) {
    int n = argc > 2 ? atoi(argv[2]) : 0;
    uint32_t work[M_WORK_WORDS];
    for (int r = 0; r < n; r++) {
#if defined(M_FEATURES) && defined(M_CLASSIFIER)
        if (argv[1][0] == 'u') {
            uint8_t x[M_FEATURES];
            if (fread(x, 1, M_FEATURES, stdin) != M_FEATURES) return 2;
            uint32_t bits[M_INPUT_WORDS];
            int32_t s[M_OUTPUTS];
            m_binarize_u8(x, bits);
            m_scores(bits, s, work);
            printf("%d", m_predict_u8(x, work));
            for (int u = 0; u < M_OUTPUTS; u++) printf(" %d", (int)s[u]);
            printf("\n");
            continue;
        }
        if (argv[1][0] == 'f') {
            float x[M_FEATURES];
            if (fread(x, 4, M_FEATURES, stdin) != M_FEATURES) return 2;
            printf("%d\n", m_predict_f32(x, work));
            continue;
        }
#endif
#ifdef M_OUTPUT_WORDS
        uint32_t bits[M_INPUT_WORDS], out[M_OUTPUT_WORDS];
        if (fread(bits, 4, M_INPUT_WORDS, stdin) != M_INPUT_WORDS) return 2;
        m_forward_bits(bits, out, work);
        for (int k = 0; k < M_OUTPUT_WORDS; k++) printf("%08x ", (unsigned)out[k]);
        printf("\n");
#endif
    }
    return 0;
}
"""


def build(net, tmp_path, flags=(), target="host", cxx=False):
    """Export ``net`` as ``m`` into tmp_path/c and compile the harness with it."""
    export_c(net, tmp_path / "c", "m", target)
    (tmp_path / "main.c").write_text(HARNESS)
    exe = tmp_path / "run"
    obj = tmp_path / "m.o"
    warn = ["-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", *flags, "-I", str(tmp_path / "c")]
    subprocess.run(
        [CC, "-std=c99", *warn, "-c", str(tmp_path / "c" / "m.c"), "-o", str(obj)],
        check=True, capture_output=True,
    )  # fmt: skip
    if cxx:  # the harness as C++: links only with the header's extern "C" guards
        main = tmp_path / "main.cpp"
        main.write_text(HARNESS)
        cmd = [CXX, "-std=c++11", *warn, "-Wno-vla", str(main), str(obj), "-o", str(exe)]
    else:
        cmd = [CC, "-std=c99", *warn, str(tmp_path / "main.c"), str(obj), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def run(exe, mode, rows, payload):
    r = subprocess.run([str(exe), mode, str(rows)], input=payload, capture_output=True, check=True)
    return r.stdout.decode().splitlines()


def random_net(rng, binarizer, n_features, output="scores"):
    n_in = binarizer.n_bits_out_
    w1 = rng.choice([-1, 0, 1], (45, n_in))
    w2 = rng.choice([-1, 1], (33, 45))
    w3 = rng.choice([-1, 1], (7, 33))
    layers = [
        BitLayer.from_values(w1, threshold=rng.integers(-5, 6, 45)),
        BitLayer.from_values(w2, bias=rng.choice([-1, 1], 33)),
        BitLayer.from_values(w3)
        if output == "scores"
        else BitLayer.from_values(w3, threshold=rng.integers(-3, 4, 7)),
    ]
    return BitNetwork(layers, binarizer, output)


@pytest.mark.parametrize(
    "binarizer",
    [
        QuantileBinarizer(2, "thermometer"),
        QuantileBinarizer(3, "binary"),
        LloydMaxBinarizer(2, "gray"),
        ThresholdBinarizer(100.5),
    ],
    ids=repr,
)
def test_exported_classifier_is_bit_exact(tmp_path, binarizer):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (300, 37), dtype=np.uint8)
    X[:, 0] = 0  # a constant feature
    net = random_net(rng, binarizer.fit(X), 37)
    exe = build(net, tmp_path)
    lines = run(exe, "u8", len(X), X.tobytes())
    got = np.array([[int(v) for v in line.split()] for line in lines])
    np.testing.assert_array_equal(got[:, 0], net.predict(X, "reference"))
    np.testing.assert_array_equal(got[:, 1:], net.scores(X, "reference"))
    Xf = (X.astype(np.float32) - 100) / 3
    lines = run(exe, "f32", len(Xf), Xf.tobytes())
    np.testing.assert_array_equal([int(v) for v in lines], net.predict(Xf, "reference"))


def test_exported_bit_network_is_bit_exact(tmp_path):
    rng = np.random.default_rng(1)
    b = QuantileBinarizer(1).fit(rng.standard_normal((50, 70)))
    net = random_net(rng, b, 70, output="bits")
    exe = build(net, tmp_path)
    packed = pack_bits(rng.integers(0, 2, (100, 70), dtype=np.uint8))
    words32 = packed.view("<u4")[:, :3]  # little-endian: the same bits as 32-bit words
    lines = run(exe, "bits", 100, np.ascontiguousarray(words32).tobytes())
    got = np.array([int(line.split()[0], 16) for line in lines], dtype=np.uint64)
    expected = net.forward_packed(packed, "reference")[:, 0]  # 7 output bits, padding 0
    np.testing.assert_array_equal(got, expected)


def test_export_errors(tmp_path):
    from bitnn.binarize import WTAHashBinarizer

    rng = np.random.default_rng(2)
    net = random_net(rng, WTAHashBinarizer(8, 4).fit(rng.standard_normal((10, 20))), 20)
    with pytest.raises(InputError, match="supports"):
        export_c(net, tmp_path)
    with pytest.raises(InputError, match="identifier"):
        export_c(net, tmp_path, "my-model")


def wide_net(rng, n_features=300, masked=True):
    """Widths that use every path of the generated popcount: 600 input bits (19 words: a
    16-word carry-save block and 3 single words), 270 hidden (9 words: 8 + 1, with absent
    connections), 40 hidden (2 words), 10 scores."""
    X = rng.integers(0, 256, (400, n_features), dtype=np.uint8)
    b = QuantileBinarizer(2).fit(X)
    w1 = rng.choice([-1, 1], (270, 2 * n_features))
    w2 = rng.choice([-1, 0, 1] if masked else [-1, 1], (40, 270))
    layers = [
        BitLayer.from_values(w1, threshold=rng.integers(-40, 41, 270)),
        BitLayer.from_values(w2, threshold=rng.integers(-9, 10, 40)),
        BitLayer.from_values(rng.choice([-1, 1], (10, 40)), bias=rng.choice([-1, 1], 10)),
    ]
    return BitNetwork(layers, b), X


@pytest.mark.parametrize("popcount", [0, 1, 2])
def test_every_popcount_is_bit_exact(tmp_path, popcount):
    rng = np.random.default_rng(3)
    net, X = wide_net(rng)
    exe = build(net, tmp_path, [f"-DM_POPCOUNT={popcount}"])
    got = np.array([[int(v) for v in line.split()] for line in run(exe, "u8", len(X), X.tobytes())])
    np.testing.assert_array_equal(got[:, 1:], net.scores(X, "reference"))
    np.testing.assert_array_equal(got[:, 0], net.predict(X, "reference"))


def test_float_path_under_flush_to_zero(tmp_path):
    """Subnormal edges (as released models have, 1.4e-45 for always-blank pixels) must give
    Python's bits when the FPU flushes subnormals to zero (-ffast-math sets FTZ/DAZ on x86)."""
    rng = np.random.default_rng(4)
    net, _ = wide_net(rng, masked=False)
    b = net.binarizer
    tiny = np.float32(1.4e-45)
    b.edges_[:100] = [tiny, 1.0]
    b.edges_[100:150] = [-tiny, tiny]
    b.edges_[150:200] = [-2.0, -tiny]
    X = rng.choice(np.float32([0.0, -0.0, 1.0, 3.0, -1.0, 1e-30, -1e-30, 2.0, 300.0]), (300, 300))
    X = X.astype(np.float32)
    exe = build(net, tmp_path, ["-ffast-math"], cxx=False)
    got = np.array([int(v) for v in run(exe, "f32", len(X), X.tobytes())])
    expected = net.predict(X, "reference")
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(got, expected)
    # the test can fail: edges flushed to 0 (what FTZ/DAZ does to the raw ones) change classes
    flushed = copy.deepcopy(net)
    flushed.binarizer.edges_[np.abs(flushed.binarizer.edges_) < 1e-38] = 0
    assert np.any(flushed.predict(X, "reference") != expected)


def test_header_links_from_cpp_and_float_path_can_be_left_out(tmp_path):
    rng = np.random.default_rng(5)
    net, X = wide_net(rng)
    exe = build(net, tmp_path, cxx=True)
    got = [int(line.split()[0]) for line in run(exe, "u8", 50, X[:50].tobytes())]
    np.testing.assert_array_equal(got, net.predict(X[:50], "reference"))
    src = tmp_path / "c" / "m.c"
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(src)]
    subprocess.run([*cmd, "-DM_NO_FLOAT", "-o", str(tmp_path / "nf.o")], check=True)
    symbols = subprocess.run(["nm", str(tmp_path / "nf.o")], capture_output=True, text=True)
    assert "m_predict_u8" in symbols.stdout and "f32" not in symbols.stdout
    assert (
        "EDGES_F32"
        not in subprocess.run(
            [CC, "-E", "-DM_NO_FLOAT", str(src)], capture_output=True, text=True
        ).stdout
    )


def test_generated_code_fits_the_model():
    """Smallest types for the constants, separate masked and unmasked loops, no mutable
    globals (reentrant), target-chosen popcount."""
    from bitnn.export.c import generate_c

    rng = np.random.default_rng(6)
    net, _ = wide_net(rng)
    src = generate_c(net, "m", "cortex-m0").source
    assert "static const uint8_t EDGES_U8" in src
    assert "static const uint8_t L0_LIMIT" in src  # limits range over less than 256 values
    assert "static const uint32_t L1_M" in src and "dist9m(x, w, m)" in src
    assert "dist19(x, w)" in src and "? m[" not in src
    assert "#define M_POPCOUNT 2" in src
    assert "#define M_POPCOUNT 1" in generate_c(net, "m", "host").source
    code = [line for line in src.splitlines() if not line.startswith("static const")]
    assert not any(line.startswith("static") and "(" not in line for line in code)
    assert 'extern "C"' in generate_c(net, "m").header


def test_export_refuses_bad_requests_without_writing(tmp_path):
    from bitnn.binarize import WTAHashBinarizer

    rng = np.random.default_rng(7)
    net, _ = wide_net(rng)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unsupported target 'cortex-m7'"):
        export_c(net, out, "m", "cortex-m7")
    with pytest.raises(InputError, match="identifier"):
        export_c(net, out, "2m")
    wta = random_net(rng, WTAHashBinarizer(8, 4).fit(rng.standard_normal((10, 20))), 20)
    with pytest.raises(InputError, match="WTAHash"):
        export_c(wta, out, "m")
    assert not out.exists()
    out.mkdir()
    (out / "main.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(InputError, match=r"already holds other files \(main.c\)"):
        export_c(net, out, "m")
    assert sorted(p.name for p in out.iterdir()) == ["main.c"]
    export_c(net, tmp_path / "again", "m")
    export_c(net, tmp_path / "again", "m")  # re-exporting over the same model's files is fine
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["m.c", "m.h"]


def test_export_command_target_and_sizes(tmp_path, capsys):
    from bitnn.cli import main
    from bitnn.io import save_model

    rng = np.random.default_rng(8)
    net, _ = wide_net(rng)
    save_model(net, tmp_path / "n.bnn")
    out = tmp_path / "c"
    assert main(["export", str(tmp_path / "n.bnn"), "-o", str(out), "--target", "cortex-m7"]) == 2
    assert "unsupported target 'cortex-m7'" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(tmp_path / "n.bnn"), "-o", str(out), "--target", "cortex-m0"]) == 0
    printed = capsys.readouterr().out
    if shutil.which("arm-none-eabi-gcc") and shutil.which("arm-none-eabi-size"):
        flash = int(re.search(r"flash ([\d,]+) B", printed).group(1).replace(",", ""))
        weights = 4 * (270 * 19 + 40 * 9 * 2 + 10 * 2)  # words of weights and masks
        assert weights < flash < weights + 4000
    else:
        assert "not measured" in printed
    (out / "main.c").write_text("")
    assert main(["export", str(tmp_path / "n.bnn"), "-o", str(out)]) == 2
    assert "already holds other files" in capsys.readouterr().err
