"""Saving is atomic, and what a killed save leaves behind is removed by the next save."""

import signal
import subprocess
import sys

from bitnn.io import atomic_write_bytes

KILLED_SAVE = r"""
import sys, time
from bitnn import io
def hang(fd):  # the payload is written; wait here to be killed mid-save
    print("writing", flush=True)
    time.sleep(600)
io.os.fsync = hang
io.atomic_write_bytes(sys.argv[1], b"x" * (1 << 20))
"""


def test_a_save_killed_with_sigkill_leaves_no_temporary_file_after_the_next_save(tmp_path):
    target = tmp_path / "m.bnn"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "writing\n"
        left = list(tmp_path.glob(".m.bnn.*.tmp"))
        assert len(left) == 1
        # a save in progress (its temporary file locked) is left alone by another save
        atomic_write_bytes(target, b"other")
        assert list(tmp_path.glob(".m.bnn.*.tmp")) == left
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert left[0].stat().st_size == 1 << 20  # what SIGKILL leaves behind
    (tmp_path / ".other.bnn.abcd1234.tmp").write_bytes(b"not ours")  # another target's
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.bnn.abcd1234.tmp", "m.bnn"]
