"""The generated C against the reference engine, bit for bit (compiled with the system cc)."""

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
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "m.h"
/* argv[1]: u8 | f32 | bits. Reads rows from stdin, prints one line per row. */
int main(int argc, char **argv) {
    int n = argc > 2 ? atoi(argv[2]) : 0;
    for (int r = 0; r < n; r++) {
#if defined(M_FEATURES) && defined(M_CLASSIFIER)
        if (argv[1][0] == 'u') {
            uint8_t x[M_FEATURES];
            if (fread(x, 1, M_FEATURES, stdin) != M_FEATURES) return 2;
            uint32_t bits[M_INPUT_WORDS];
            int32_t s[M_OUTPUTS];
            m_binarize_u8(x, bits);
            m_scores(bits, s);
            printf("%d", m_predict_u8(x));
            for (int u = 0; u < M_OUTPUTS; u++) printf(" %d", (int)s[u]);
            printf("\n");
            continue;
        }
        if (argv[1][0] == 'f') {
            float x[M_FEATURES];
            if (fread(x, 4, M_FEATURES, stdin) != M_FEATURES) return 2;
            printf("%d\n", m_predict_f32(x));
            continue;
        }
#endif
#ifdef M_OUTPUT_WORDS
        uint32_t bits[M_INPUT_WORDS], out[M_OUTPUT_WORDS];
        if (fread(bits, 4, M_INPUT_WORDS, stdin) != M_INPUT_WORDS) return 2;
        m_forward_bits(bits, out);
        for (int k = 0; k < M_OUTPUT_WORDS; k++) printf("%08x ", (unsigned)out[k]);
        printf("\n");
#endif
    }
    return 0;
}
"""


def build(net, tmp_path):
    export_c(net, tmp_path, "m")
    (tmp_path / "main.c").write_text(HARNESS)
    exe = tmp_path / "run"
    subprocess.run(
        [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic",
         str(tmp_path / "main.c"), str(tmp_path / "m.c"), "-o", str(exe)],
        check=True, capture_output=True,
    )  # fmt: skip
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
