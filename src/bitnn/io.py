"""The model file: a safetensors container, loaded without executing anything.

Layout (the safetensors format, readable by ``safetensors.numpy.load_file``)::

    8 bytes   little-endian u64 N: length of the JSON header
    N bytes   JSON header, space-padded so the data starts at a multiple of 8
    data      the tensors, back to back, in the order of their offsets

The header's ``__metadata__`` holds two strings: ``bitnn`` (our JSON description: format name
and version, network shape, binarizer, provenance) and ``checksum`` (``sha256:`` + hex digest of
the whole file computed with the digest's own 64 characters set to ``0``). So any changed,
missing or extra byte is detected and reported as :class:`ModelFormatError`.

Bit matrices are stored as unpadded bit streams (see :mod:`bitnn.bits`): the file's size is the
model's bit count plus a small header. Saving is atomic: a temporary file in the same folder is
written, fsynced and renamed over the target, so an interrupted save leaves the old file intact.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no stale-temporary cleanup
    fcntl = None  # type: ignore[assignment]

from bitnn.binarize import Binarizer
from bitnn.bits import bitstream_to_words, words_to_bitstream
from bitnn.errors import InputError, ModelFormatError
from bitnn.network import BIAS_KINDS, OUTPUT_KINDS, BitLayer, BitNetwork, threshold_dtype

MODEL_FORMAT = "bitnn-model"
MODEL_VERSION = 1
_MAX_HEADER = 16 << 20
_DTYPES = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_ZERO_DIGEST = "0" * 64


# ---- the container ---------------------------------------------------------------------------


def _header_bytes(
    tensors: dict[str, np.ndarray], description: dict[str, Any], digest: str
) -> bytes:
    header: dict[str, Any] = {
        "__metadata__": {
            "bitnn": json.dumps(description, sort_keys=True, separators=(",", ":")),
            "checksum": "sha256:" + digest,
        }
    }
    offset = 0
    for name, arr in tensors.items():
        header[name] = {
            "dtype": _DTYPE_NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-(8 + len(raw)) % 8)


def encode_container(tensors: dict[str, np.ndarray], description: dict[str, Any]) -> bytes:
    """Serialise named arrays and a JSON-able description into container bytes."""
    arrays = {}
    for name, arr in tensors.items():
        a = np.asarray(arr, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray does not)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dt not in _DTYPE_NAMES:
            raise InputError(f"tensor {name!r} has unsupported dtype {a.dtype}")
        arrays[name] = a.astype(dt, copy=False)
    data = b"".join(a.tobytes() for a in arrays.values())
    header = _header_bytes(arrays, description, _ZERO_DIGEST)
    digest = hashlib.sha256(struct.pack("<Q", len(header)) + header + data).hexdigest()
    header = _header_bytes(arrays, description, digest)
    return struct.pack("<Q", len(header)) + header + data


def decode_container(
    buf: bytes, what: str = "file"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and verify container bytes. Raises :class:`ModelFormatError` on any defect."""
    size = len(buf)
    if size < 8:
        raise ModelFormatError(f"{what} is {size} bytes long: truncated or not a bitnn file")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > _MAX_HEADER or 8 + n > size:
        raise ModelFormatError(
            f"{what}: header length {n} does not fit in a {size}-byte file; "
            "the file is truncated or not a bitnn file"
        )
    header_raw = buf[8 : 8 + n]
    try:
        header = json.loads(header_raw.decode("utf-8"))
        meta = header.pop("__metadata__")
        description = json.loads(meta["bitnn"])
        checksum = meta["checksum"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ModelFormatError(
            f"{what}: the header is not a valid bitnn header (corrupt, or not a bitnn file)"
        ) from None
    if not (isinstance(description, dict) and isinstance(checksum, str)):
        raise ModelFormatError(f"{what}: the header is not a valid bitnn header")
    digest = checksum.removeprefix("sha256:")
    needle = f'"checksum":"sha256:{digest}"'.encode()
    if len(digest) != 64 or header_raw.count(needle) != 1:
        raise ModelFormatError(f"{what}: the checksum field is damaged; the file is corrupt")
    zeroed = header_raw.replace(needle, f'"checksum":"sha256:{_ZERO_DIGEST}"'.encode())
    if hashlib.sha256(buf[:8] + zeroed + buf[8 + n :]).hexdigest() != digest:
        version = description.get("format_version")
        hint = ""
        if isinstance(version, int) and version > MODEL_VERSION:
            hint = f" (it also claims format version {version}, newer than this bitnn reads)"
        raise ModelFormatError(
            f"{what}: checksum mismatch{hint}: the file was changed or damaged after it was "
            "written; re-download or re-export it"
        )
    data = buf[8 + n :]
    entries = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{what}: tensor {name!r} has a malformed entry") from None
        entries.append((begin, stop, name, dtype, shape))
    tensors: dict[str, np.ndarray] = {}
    end = 0
    for begin, stop, name, dtype, shape in sorted(entries):
        count = int(np.prod(shape))
        if begin != end or stop - begin != count * dtype.itemsize or min(shape, default=0) < 0:
            raise ModelFormatError(f"{what}: tensor {name!r} has inconsistent offsets")
        tensors[name] = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
        end = stop
    if end != len(data):
        raise ModelFormatError(f"{what}: {len(data) - end} unexpected bytes after the tensors")
    return tensors, description


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete temporary files that earlier saves to ``name`` left behind when they were killed.

    A save holds an exclusive ``flock`` on its temporary file from creation to rename, and the
    kernel drops it when the process dies (even by SIGKILL): a file we can lock is abandoned.
    """
    if fcntl is None:
        return
    for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink(missing_ok=True)  # still locked by us: no save can be using it
        except OSError:
            pass  # a save in progress holds it (or we may not delete it)
        finally:
            os.close(fd)


def _locked_temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new temporary file beside the target, exclusively locked for the save's lifetime."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)  # a cleanup took it for stale between mkstemp and flock: take another


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: temp file, fsync, rename, fsync folder.

    Temporary files of earlier saves to the same path that were killed (SIGKILL, power loss)
    are removed first."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot save to {path}: folder {folder} does not exist")
    _remove_stale_temporaries(folder, path.name)
    fd, tmp = _locked_temporary(folder, path.name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:  # open (so locked) until renamed
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_container(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    return decode_container(buf, what=str(path))


# ---- the model -------------------------------------------------------------------------------


def model_to_bytes(network: BitNetwork) -> bytes:
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for i, layer in enumerate(network.layers):
        tensors[f"layers.{i}.weight"] = words_to_bitstream(layer.weight, layer.n_in)
        if layer.mask is not None:
            tensors[f"layers.{i}.mask"] = words_to_bitstream(layer.mask, layer.n_in)
        if layer.bias_kind == "bias":
            bias_bits = (layer.threshold < 0).astype(np.uint8)  # bias +1 <=> threshold -1
            tensors[f"layers.{i}.bias"] = np.packbits(bias_bits, bitorder="little")
        elif layer.bias_kind == "threshold":
            tensors[f"layers.{i}.threshold"] = layer.threshold.astype(
                threshold_dtype(layer.threshold)
            )
        layers.append(
            {
                "n_in": layer.n_in,
                "n_out": layer.n_out,
                "bias_kind": layer.bias_kind,
                "masked": layer.mask is not None,
            }
        )
    binarizer = None
    if network.binarizer is not None:
        bmeta, arrays = network.binarizer.to_state()
        for name, arr in arrays.items():
            tensors[f"binarizer.{name}"] = arr
        binarizer = bmeta
    description = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_VERSION,
        "output": network.output,
        "layers": layers,
        "binarizer": binarizer,
        "metadata": network.metadata,
    }
    return encode_container(tensors, description)


def save_model(network: BitNetwork, path: str | os.PathLike[str]) -> int:
    """Save ``network`` atomically; returns the file size in bytes."""
    payload = model_to_bytes(network)
    atomic_write_bytes(path, payload)
    return len(payload)


def _check_version(description: dict[str, Any], what: str) -> None:
    if description.get("format") != MODEL_FORMAT:
        raise ModelFormatError(
            f"{what} is not a bitnn model file (format {description.get('format')!r})"
        )
    version = description.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFormatError(f"{what}: invalid format version {version!r}")
    if version > MODEL_VERSION:
        raise ModelFormatError(
            f"{what} uses model format version {version}, but this bitnn reads up to version "
            f"{MODEL_VERSION}: upgrade bitnn (pip install -U bitnn) to load it"
        )


def model_from_bytes(buf: bytes, what: str = "model") -> BitNetwork:
    tensors, description = decode_container(buf, what)
    _check_version(description, what)
    try:
        layers = []
        for i, spec in enumerate(description["layers"]):
            n_in, n_out, kind = int(spec["n_in"]), int(spec["n_out"]), spec["bias_kind"]
            if kind not in BIAS_KINDS or n_in < 1 or n_out < 1:
                raise ValueError(f"layer {i} is malformed")
            weight = bitstream_to_words(tensors[f"layers.{i}.weight"], n_out, n_in)
            mask = None
            if spec["masked"]:
                mask = bitstream_to_words(tensors[f"layers.{i}.mask"], n_out, n_in)
            if kind == "bias":
                bits = np.unpackbits(tensors[f"layers.{i}.bias"], count=n_out, bitorder="little")
                threshold = np.where(bits == 1, -1, 1)
            elif kind == "threshold":
                threshold = tensors[f"layers.{i}.threshold"]
            else:
                threshold = np.zeros(n_out, dtype=np.int32)
            layers.append(BitLayer(weight, n_in, threshold, mask, kind))
        binarizer = None
        if description["binarizer"] is not None:
            arrays = {
                k.removeprefix("binarizer."): v
                for k, v in tensors.items()
                if k.startswith("binarizer.")
            }
            binarizer = Binarizer.from_state(description["binarizer"], arrays)
        if description["output"] not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {description['output']!r}")
        return BitNetwork(layers, binarizer, description["output"], description["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{what}: the model description is inconsistent: {exc}") from None


def load_model(path: str | os.PathLike[str]) -> BitNetwork:
    """Load a model file. Never executes code; raises :class:`ModelFormatError` on any defect."""
    try:
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such model file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a model file") from None
    return model_from_bytes(buf, what=str(path))
