import os
import signal
import subprocess
import sysconfig
from pathlib import Path

import pytest

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"

# A test suite started as a background job (`nohup make test &` from a script) inherits SIGINT
# ignored, and so would the commands the Ctrl-C tests start and interrupt: give it Python's
# default handler, which the children get back as SIGINT's default when they start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:  # training in tests on one thread: bit-reproducible, whatever else runs on the machine
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


@pytest.fixture(scope="session")
def fsdd():
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD}")
    from bitnn.data.fsdd import load_fsdd

    return load_fsdd(FSDD)


@pytest.fixture
def sanitized_kernels(tmp_path) -> dict[str, str]:
    """The compiled kernels built with AddressSanitizer and UBSan into ``tmp_path`` (a script
    run there with ``sys.path[0] = tmp_path`` imports them as ``_kernels``); returns the
    environment that preloads ASan. Skips where gcc has no ASan."""
    from bitnn.engine import compiled

    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    if libasan.returncode != 0 or not Path(libasan.stdout.strip()).exists():
        pytest.skip("gcc with AddressSanitizer is not available")
    src = Path(compiled.__file__).with_name("_kernels.c")
    so = tmp_path / ("_kernels" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["gcc", "-O1", "-g", "-std=gnu11", "-fPIC", "-shared", "-pthread",
         "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", f"-I{include}", str(src), "-o", str(so)],
        check=True,
    )  # fmt: skip
    return {
        **os.environ,
        "LD_PRELOAD": libasan.stdout.strip(),
        "ASAN_OPTIONS": "detect_leaks=0",
        "UBSAN_OPTIONS": "print_stacktrace=1",
    }
