"""Builds the optional C kernels with the system C compiler: bitnn.engine._kernels (the bit
engine) and, on x86-64, bitnn.train._fused (training's compiled passes: tanh, the passes over
round 2's weights, dropout masks).

One object holds every variant (portable, AVX2, AVX-512): each function carries its own
target attribute and the choice is made at run time from the CPU's features, so the build
needs no -march flag and runs on any x86-64. If the compiler is missing the build is skipped
and bitnn runs on its numpy reference engine (with a warning).
"""

import os

from setuptools import Extension, setup

extra = ["-O3", "-std=gnu11", "-Wall", "-Wno-unknown-pragmas", "-fno-strict-aliasing"]
if os.environ.get("BITNN_SANITIZE"):  # used by the sanitizer test: ASan + UBSan build
    extra += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]

setup(
    ext_modules=[
        Extension(
            "bitnn.engine._kernels",
            sources=["src/bitnn/engine/_kernels.c"],
            extra_compile_args=extra,
            extra_link_args=["-pthread"]
            + (["-fsanitize=address,undefined"] if os.environ.get("BITNN_SANITIZE") else []),
            optional=True,
        ),
        Extension(
            "bitnn.train._fused",
            sources=["src/bitnn/train/_fused.c"],
            extra_compile_args=extra,
            extra_link_args=["-pthread"]
            + (["-fsanitize=address,undefined"] if os.environ.get("BITNN_SANITIZE") else []),
            optional=True,
        ),
    ]
)
