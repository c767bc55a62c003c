from pathlib import Path

import pytest

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


@pytest.fixture(scope="session")
def fsdd():
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD}")
    from bitnn.data.fsdd import load_fsdd

    return load_fsdd(FSDD)
