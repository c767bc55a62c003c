"""The model file: a safetensors container, loaded without executing anything.

The complete specification is ``docs/format.md``; this module implements it. In short::

    8 bytes   little-endian u64 N: length of the JSON header (8 + N a multiple of 8)
    N bytes   JSON header, space-padded
    data      the tensors, back to back, in the order of their offsets

The header's ``__metadata__`` holds two strings: ``bitnn`` (our JSON description: format name
and version, network shape, binarizer, the few settings inference needs) and ``checksum``
(``sha256:`` + hex digest of the whole file computed with the digest's own 64 characters set
to ``0``). The checksum is verified before any JSON is parsed; then the JSON is parsed with
limits (nesting depth, number size, no NaN/Infinity, no duplicate keys) and every field,
tensor name, dtype, shape, padding bit and value range is checked against the description:
anything the specification does not allow raises :class:`ModelFormatError` naming the field.

Training history and other provenance do not go into the model file: :func:`save_model`
writes them to ``MODEL.json`` beside it (:func:`read_provenance`). Saving is atomic: a
temporary file in the same folder is written, fsynced and renamed over the target.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import operator
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no stale-temporary cleanup
    fcntl = None  # type: ignore[assignment]

from bitnn.binarize import CODES, INPUT_DTYPES, Binarizer
from bitnn.bits import WORD_BITS, WORD_DTYPE, n_words, words_to_bitstream
from bitnn.errors import InputError, ModelFormatError
from bitnn.network import BIAS_KINDS, OUTPUT_KINDS, BitLayer, BitNetwork, threshold_dtype

MODEL_FORMAT = "bitnn-model"
MODEL_VERSION = 2
READ_VERSIONS = (1, 2)
PROVENANCE_FORMAT = "bitnn-provenance"
_MAX_HEADER = 16 << 20  # any container (checkpoints hold their training state in the header)
MAX_MODEL_HEADER = 1 << 16  # a model file's header
MAX_JSON_DEPTH = 16
MAX_INT_DIGITS = 19
MAX_UNITS = 1 << 24  # n_in, n_out, features: at most 16,777,216
MAX_LAYERS = 256
_DTYPES = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
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
_CHECKSUM = re.compile(rb'"checksum":"sha256:([0-9a-f]{64})"')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_FIX = "re-download the file, or save the model again with bitnn (format version 2)"


# ---- strict JSON ---------------------------------------------------------------------------


class _JSONLimitError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONLimitError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _JSONLimitError(f"a number has {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 40:
        raise _JSONLimitError(f"a number has {len(text)} characters (at most 40)")
    value = float(text)
    if not math.isfinite(value):
        raise _JSONLimitError(f"the number {text} is out of range")
    return value


def _parse_constant(text: str) -> Any:
    raise _JSONLimitError(f"{text} is not a number JSON allows")


def parse_json(text: str, what: str, field: str, allow_nan: bool = False) -> Any:
    """Strict JSON: nesting at most ``MAX_JSON_DEPTH`` deep, integers of at most 19 digits,
    finite numbers, no NaN/Infinity (unless ``allow_nan``), no duplicate keys. Any defect is
    a ModelFormatError."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise ModelFormatError(
            f"{what}: {field} nests {deepest} levels deep (at most {MAX_JSON_DEPTH}); {_FIX}"
        )
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_parse_int,
            parse_float=float if allow_nan else _parse_float,
            parse_constant=float if allow_nan else _parse_constant,
        )
    except _JSONLimitError as exc:
        raise ModelFormatError(f"{what}: {field}: {exc}; {_FIX}") from None
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise ModelFormatError(f"{what}: {field} is not valid JSON; {_FIX}") from None


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


def _verify_checksum(buf: bytes, n: int, what: str) -> None:
    """The SHA-256 of the file with its own digest zeroed, checked on the raw bytes: nothing
    in the header is parsed before it matches."""
    header_raw = buf[8 : 8 + n]
    found = _CHECKSUM.findall(header_raw)
    if len(found) != 1 or header_raw.count(b'"checksum"') != 1:
        raise ModelFormatError(
            f"{what}: the checksum field is missing or damaged; the file is corrupt or not a "
            "bitnn file: re-download it"
        )
    digest = found[0]
    zeroed = header_raw.replace(b'"checksum":"sha256:' + digest, b'"checksum":"sha256:' + b"0" * 64)
    if hashlib.sha256(buf[:8] + zeroed + buf[8 + n :]).hexdigest().encode() != digest:
        hint = ""
        claimed = re.search(rb'\\"format_version\\":(\d{1,9})[,}]', header_raw)
        if claimed and int(claimed.group(1)) > MODEL_VERSION:
            hint = (
                f" (it also claims format version {int(claimed.group(1))}, newer than this "
                "bitnn reads)"
            )
        raise ModelFormatError(
            f"{what}: checksum mismatch{hint}: the file was changed or damaged after it was "
            "written; re-download or re-export it"
        )


def decode_container(
    buf: bytes, what: str = "file", max_header: int = _MAX_HEADER, allow_nan: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Verify and parse container bytes. Raises :class:`ModelFormatError` on any defect.

    Tensors are read-only views of ``buf`` (no copy): memory stays the file's size.
    ``allow_nan``: the description may hold NaN/Infinity (a checkpoint's diverged loss)."""
    size = len(buf)
    if size < 8:
        raise ModelFormatError(f"{what} is {size} bytes long: truncated or not a bitnn file")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > max_header or 8 + n > size:
        raise ModelFormatError(
            f"{what}: header length {n} does not fit in a {size}-byte file (at most "
            f"{max_header}); the file is truncated or not a bitnn file"
        )
    if (8 + n) % 8:
        raise ModelFormatError(
            f"{what}: the header ends at byte {8 + n}, not at a multiple of 8; {_FIX}"
        )
    _verify_checksum(buf, n, what)
    try:
        text = buf[8 : 8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{what}: the header is not UTF-8 text; {_FIX}") from None
    if text.rstrip(" ") != text.rstrip():
        raise ModelFormatError(f"{what}: the header is padded with more than spaces; {_FIX}")
    header = parse_json(text, what, "the header")
    meta = header.pop("__metadata__", None) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or set(meta) != {"bitnn", "checksum"}:
        raise ModelFormatError(
            f"{what}: the header is not a valid bitnn header (its __metadata__ must hold "
            "exactly 'bitnn' and 'checksum'); the file is corrupt or not a bitnn file"
        )
    if not isinstance(meta["bitnn"], str):
        raise ModelFormatError(f"{what}: __metadata__.bitnn must be a JSON string; {_FIX}")
    description = parse_json(meta["bitnn"], what, "the description (__metadata__.bitnn)", allow_nan)
    if not isinstance(description, dict):
        raise ModelFormatError(f"{what}: the description must be a JSON object; {_FIX}")
    data = memoryview(buf)[8 + n :]
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFormatError(
                f"{what}: tensor {name!r} must have exactly dtype, shape and data_offsets; {_FIX}"
            )
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not (isinstance(dtype, str) and dtype in _DTYPES):
            raise ModelFormatError(f"{what}: tensor {name!r} has unknown dtype {dtype!r}; {_FIX}")
        ok_shape = isinstance(shape, list) and len(shape) <= 8
        ok_shape = ok_shape and all(type(d) is int and 0 <= d <= size for d in shape)
        ok_off = isinstance(offsets, list) and len(offsets) == 2
        ok_off = ok_off and all(type(o) is int and 0 <= o <= size for o in offsets)
        if not (ok_shape and ok_off):
            raise ModelFormatError(
                f"{what}: tensor {name!r} has a malformed shape or data_offsets; {_FIX}"
            )
        entries.append((offsets[0], offsets[1], name, _DTYPES[dtype], tuple(shape)))
    tensors: dict[str, np.ndarray] = {}
    end = 0
    for begin, stop, name, dtype, shape in sorted(entries):
        count = math.prod(shape)
        if begin != end or stop - begin != count * dtype.itemsize:
            raise ModelFormatError(
                f"{what}: tensor {name!r}: data_offsets [{begin}, {stop}] do not match its "
                f"shape {list(shape)} or the tensor before it; {_FIX}"
            )
        if stop > len(data):
            raise ModelFormatError(
                f"{what}: tensor {name!r} ends after the end of the file; it is truncated"
            )
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
        tensors[name] = arr
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


# ---- the model's metadata: what inference needs, bounded ---------------------------------------

_TEXT_KEYS = {
    "command": 1024,
    "resumed_with": 1024,
    "data": 1024,
    "preset": 64,
    "bitnn_version": 64,
}
_SPEECH_KEYS = ("spectrogram", "level_rms", "mask_majority_frames")  # the last optional
MAX_MAJORITY_FRAMES = 15  # the longest majority vote over frames (bitnn.speech.spectra)


def majority_frames_value(v: Any) -> int | None:
    """``v`` as an int when it is an odd whole number (numpy integers too, not bools) from 1
    to ``MAX_MAJORITY_FRAMES``: a majority vote's length over frames; else None."""
    if isinstance(v, bool | np.bool_):
        return None
    try:
        n = operator.index(v)
    except TypeError:
        return None
    return n if n % 2 and 1 <= n <= MAX_MAJORITY_FRAMES else None


_SPECTROGRAM_INTS = {"rate": (1000, 10**6), "frame": (16, 1 << 20), "hop": (1, 1 << 19)}


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _spectrogram_problem(sp: Any) -> str | None:
    keys = {"rate", "frame", "hop", "window", "context", "floor_percentile"}
    if not isinstance(sp, dict) or set(sp) != keys:
        return f"must be an object with exactly the keys {sorted(keys)}"
    for key, (lo, hi) in _SPECTROGRAM_INTS.items():
        if not _is_int(sp[key], lo, hi):
            return f"{key} must be a whole number from {lo} to {hi}"
    if not _is_int(sp["context"], 0, 8):
        return "context must be a whole number from 0 to 8"
    if not (isinstance(sp["window"], str) and 0 < len(sp["window"]) <= 64):
        return "window must be a window name of at most 64 characters"
    p = sp["floor_percentile"]
    if not (_is_number(p) and 0 <= p < 100):
        return "floor_percentile must be a number from 0 to below 100"
    return None


_KEYWORD_FEATURE_KEYS = {
    "rate",
    "frame",
    "hop",
    "n_bands",
    "n_segments",
    "f_min",
    "trim_db",
    "floor_db",
}
MAX_CLASSES_NAMED = 4096


def _keywords_problem(value: Any) -> str | None:
    """Why ``value`` is not a keyword model's entry (``bitnn.speech.keywords``)."""
    if not isinstance(value, dict) or set(value) != {"features", "classes"}:
        return "must be an object with exactly the keys classes and features"
    f = value["features"]
    if not isinstance(f, dict) or set(f) != _KEYWORD_FEATURE_KEYS:
        return f"features must be an object with exactly the keys {sorted(_KEYWORD_FEATURE_KEYS)}"
    for key, (lo, hi) in _SPECTROGRAM_INTS.items():
        if not _is_int(f[key], lo, hi):
            return f"features.{key} must be a whole number from {lo} to {hi}"
    if not (_is_int(f["n_bands"], 2, 1 << 18) and _is_int(f["n_segments"], 1, 256)):
        return "features.n_bands must be a whole number >= 2 and n_segments one from 1 to 256"
    if not all(_is_number(f[k]) for k in ("f_min", "trim_db", "floor_db")):
        return "features.f_min, trim_db and floor_db must be finite numbers"
    classes = value["classes"]
    if not (
        isinstance(classes, list)
        and 2 <= len(classes) <= MAX_CLASSES_NAMED
        and all(isinstance(c, str) and 0 < len(c) <= 256 for c in classes)
    ):
        return f"classes must be a list of 2 to {MAX_CLASSES_NAMED} names (1-256 characters)"
    return None


def _metadata_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the model file's metadata entry ``key`` (None: it can)."""
    if key in _TEXT_KEYS:
        if not (isinstance(value, str) and len(value) <= _TEXT_KEYS[key]):
            return f"must be a string of at most {_TEXT_KEYS[key]} characters"
        return None
    if key == "speech":
        if not (
            isinstance(value, dict)
            and {"spectrogram", "level_rms"} <= set(value) <= set(_SPEECH_KEYS)
        ):
            return (
                "must be an object with the keys level_rms and spectrogram, and optionally "
                "mask_majority_frames"
            )
        if not (_is_number(value["level_rms"]) and value["level_rms"] > 0):
            return "level_rms must be a positive number"
        if majority_frames_value(value.get("mask_majority_frames", 1)) is None:
            return f"mask_majority_frames must be an odd number from 1 to {MAX_MAJORITY_FRAMES}"
        problem = _spectrogram_problem(value["spectrogram"])
        return None if problem is None else "spectrogram " + problem
    if key == "keywords":
        return _keywords_problem(value)
    known = sorted([*_TEXT_KEYS, "keywords", "speech"])
    return f"is not a key this format knows (known: {known})"


def split_metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(what the model file keeps, provenance for MODEL.json)``: the file keeps the entries
    of the specification's metadata (``docs/format.md``) that are valid; everything else
    (training history, data options, user keys, an overlong command) is provenance."""
    model: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "speech" and isinstance(value, dict):
            inference = {k: value[k] for k in _SPEECH_KEYS if k in value}
            if _metadata_problem(key, inference) is None:
                model[key] = inference
                extra = {k: v for k, v in value.items() if k not in inference}
                if extra:
                    rest[key] = extra
                continue
        if _metadata_problem(key, value) is None:
            model[key] = value
        else:
            rest[key] = value
    return model, rest


# ---- the model -------------------------------------------------------------------------------

_BINARIZER_PARAMS = {
    "threshold": {"threshold"},
    "quantile": {"n_bits", "code"},
    "lloyd-max": {"n_bits", "code", "max_iter"},
    "wta": {"n_hashes", "window", "code", "random_state"},
}
_BINARIZER_TENSORS = {
    "threshold": "thresholds_",
    "quantile": "edges_",
    "lloyd-max": "edges_",
    "wta": "windows_",
}


def _stored_threshold(layer: BitLayer, last_scores: bool) -> np.ndarray:
    """Thresholds as stored: a bit layer's beyond what its units can reach (|t| > n_in + 1)
    are clamped to +-(n_in + 1), which fires exactly as before; a scores layer's must fit."""
    t = layer.threshold.astype(np.int64)
    reach = layer.n_in + 1
    if np.any(np.abs(t) > reach):
        if last_scores:
            raise InputError(
                f"the output layer's thresholds must be within +-{reach} (n_in + 1) to be "
                "saved; they are score offsets, which a classifier does not need that large"
            )
        t = np.clip(t, -reach, reach)
    return t.astype(threshold_dtype(t))


def _model_tensors_and_description(
    network: BitNetwork,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
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
            last_scores = i == len(network.layers) - 1 and network.output == "scores"
            tensors[f"layers.{i}.threshold"] = _stored_threshold(layer, last_scores)
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
        name = _BINARIZER_TENSORS[bmeta["kind"]]
        tensors[f"binarizer.{name}"] = arrays[name]
        binarizer = bmeta
    metadata, provenance = split_metadata(network.metadata)
    description = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_VERSION,
        "output": network.output,
        "layers": layers,
        "binarizer": binarizer,
        "metadata": metadata,
    }
    return tensors, description, provenance


def model_to_bytes(network: BitNetwork) -> bytes:
    """The model file's bytes (provenance not in the model's metadata is left out)."""
    tensors, description, _ = _model_tensors_and_description(network)
    return encode_container(tensors, description)


def provenance_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_model` puts a model's provenance: ``MODEL.json`` beside ``MODEL``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_model(network: BitNetwork, path: str | os.PathLike[str]) -> int:
    """Save ``network`` atomically; returns the model file's size in bytes.

    Metadata the model file does not keep (training history, data options, ...) goes to
    ``MODEL.json`` beside it (see :func:`read_provenance`); a stale one is removed."""
    tensors, description, provenance = _model_tensors_and_description(network)
    payload = encode_container(tensors, description)
    atomic_write_bytes(path, payload)
    side = provenance_path(path)
    if provenance:
        record = {
            "format": PROVENANCE_FORMAT,
            "model": Path(path).name,
            "model_sha256": hashlib.sha256(payload).hexdigest(),
            "metadata": provenance,
        }
        atomic_write_bytes(side, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    elif side.is_file() and _read_provenance_record(side) is not None:
        side.unlink()
    return len(payload)


def _read_provenance_record(side: Path) -> dict[str, Any] | None:
    try:
        if side.stat().st_size > 64 << 20:
            return None
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("format") != PROVENANCE_FORMAT:
        return None
    return record


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance :func:`save_model` wrote beside the model at ``path`` (training
    history, data options, ...), or None when there is none or it belongs to another version
    of the file (its recorded SHA-256 differs)."""
    record = _read_provenance_record(provenance_path(path))
    if record is None or not isinstance(record.get("metadata"), dict):
        return None
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
    return record["metadata"] if record.get("model_sha256") == digest else None


class _Reader:
    """Checks one decoded model file against the specification, field by field."""

    def __init__(self, tensors: dict[str, np.ndarray], what: str, version: int) -> None:
        self.tensors = tensors
        self.what = what
        self.version = version
        self.used: set[str] = set()

    def fail(self, field: str, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.what}: {field} {problem}; {_FIX}")

    def keys(self, obj: Any, field: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(field, "must be a JSON object")
        if set(obj) != keys:
            unknown, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
            raise self.fail(field, f"has unknown keys {unknown} / lacks keys {missing}")
        return obj

    def integer(self, v: Any, field: str, lo: int, hi: int) -> int:
        if not _is_int(v, lo, hi):
            raise self.fail(field, f"must be a whole number from {lo} to {hi}, got {v!r}")
        return v

    def tensor(self, name: str, dtypes: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise self.fail(f"tensor {name!r}", "is missing")
        a = self.tensors[name]
        self.used.add(name)
        if _DTYPE_NAMES[a.dtype] not in dtypes:
            raise self.fail(
                f"tensor {name!r}", f"has dtype {_DTYPE_NAMES[a.dtype]}, must be {'/'.join(dtypes)}"
            )
        if a.shape != shape:
            raise self.fail(f"tensor {name!r}", f"has shape {list(a.shape)}, must be {list(shape)}")
        return a

    def bitstream(self, name: str, rows: int, cols: int) -> np.ndarray:
        """A (rows, cols) bit matrix stored as an unpadded bit stream -> word rows."""
        n_bits = rows * cols
        stream = self.tensor(name, ("U8",), ((n_bits + 7) // 8,))
        if n_bits % 8 and int(stream[-1]) >> (n_bits % 8):
            raise self.fail(f"tensor {name!r}", "has non-zero padding bits after its last bit")
        return _stream_to_words(stream, rows, cols)


def _stream_to_words(stream: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Unpadded row-major bit stream -> ``(rows, n_words(cols))`` words, in chunks of rows so
    that temporaries stay a few MiB whatever the shape."""
    words = n_words(cols)
    out = np.empty((rows, words), dtype=WORD_DTYPE)
    chunk = max(1, (4 << 20) // (words * WORD_BITS))
    padded = np.zeros((min(chunk, rows), words * WORD_BITS), dtype=np.uint8)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        b0, b1 = r0 * cols, r1 * cols
        raw = np.unpackbits(stream[b0 // 8 : (b1 + 7) // 8], bitorder="little")
        bits = raw[b0 % 8 : b0 % 8 + b1 - b0].reshape(r1 - r0, cols)
        block = padded[: r1 - r0]
        block[:, :cols] = bits
        out[r0:r1] = np.packbits(block, axis=1, bitorder="little").view(WORD_DTYPE)
    return out


def _check_version(description: dict[str, Any], what: str) -> int:
    if description.get("format") != MODEL_FORMAT:
        fmt = description.get("format")
        shown = repr(fmt) if isinstance(fmt, str) and len(fmt) <= 64 else "missing or invalid"
        raise ModelFormatError(f"{what} is not a bitnn model file (format {shown})")
    version = description.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFormatError(f"{what}: format_version must be a whole number >= 1; {_FIX}")
    if version > MODEL_VERSION:
        raise ModelFormatError(
            f"{what} uses model format version {version}, but this bitnn reads versions "
            f"{READ_VERSIONS[0]} to {MODEL_VERSION}: upgrade bitnn (pip install -U bitnn) to "
            "load it"
        )
    return version


def _layer(r: _Reader, i: int, spec: Any, v1: bool, last_scores: bool) -> BitLayer:
    field = f"layers[{i}]"
    spec = r.keys(spec, field, {"n_in", "n_out", "bias_kind", "masked"})
    n_in = r.integer(spec["n_in"], f"{field}.n_in", 1, MAX_UNITS)
    n_out = r.integer(spec["n_out"], f"{field}.n_out", 1, MAX_UNITS)
    kind, masked = spec["bias_kind"], spec["masked"]
    if kind not in BIAS_KINDS:
        raise r.fail(f"{field}.bias_kind", f"must be one of {list(BIAS_KINDS)}")
    if type(masked) is not bool:
        raise r.fail(f"{field}.masked", "must be true or false")
    name = f"layers.{i}"
    weight = r.bitstream(f"{name}.weight", n_out, n_in)
    mask = None
    if masked:
        mask = r.bitstream(f"{name}.mask", n_out, n_in)
        if np.any(weight & ~mask):
            raise r.fail(f"tensor '{name}.weight'", "has 1 bits where the mask has 0 (absent)")
    if kind == "bias":
        stream = r.tensor(f"{name}.bias", ("U8",), ((n_out + 7) // 8,))
        if n_out % 8 and int(stream[-1]) >> (n_out % 8):
            raise r.fail(f"tensor '{name}.bias'", "has non-zero padding bits after its last bit")
        bits = np.unpackbits(stream, count=n_out, bitorder="little")
        threshold = 1 - 2 * bits.astype(np.int32)  # bias bit 1 (+1) <=> threshold -1
    elif kind == "threshold":
        dtypes = ("I8", "I16", "I32")
        t = r.tensor(f"{name}.threshold", dtypes, (n_out,))
        reach = n_in + 1
        beyond = np.any(np.abs(t.astype(np.int64)) > reach)
        if beyond and v1 and not last_scores:  # version 1 allowed them: the same bits clamped
            t = np.clip(t.astype(np.int64), -reach, reach)
        elif beyond and v1:
            raise ModelFormatError(
                f"{r.what}: tensor '{name}.threshold' holds score offsets beyond +-{reach}, "
                "which format version 2 cannot express; load this version 1 file with the "
                "bitnn that wrote it (before format version 2) and retrain or re-export it"
            )
        elif beyond:
            raise r.fail(
                f"tensor '{name}.threshold'",
                f"holds thresholds beyond +-{reach} (n_in + 1), which no unit can reach",
            )
        if not v1 and threshold_dtype(t) != t.dtype:
            raise r.fail(
                f"tensor '{name}.threshold'",
                f"is {_DTYPE_NAMES[t.dtype]} but its values need only "
                f"{_DTYPE_NAMES[threshold_dtype(t)]} (the smallest of I8/I16/I32 is required)",
            )
        threshold = np.asarray(t).astype(np.int32)
    else:
        threshold = np.zeros(n_out, dtype=np.int32)
    try:
        return BitLayer(weight, n_in, threshold, mask, kind)
    except InputError as exc:
        raise r.fail(field, f"is inconsistent: {exc}") from None


def _binarizer(r: _Reader, spec: Any, n_bits_out: int, v1: bool) -> Binarizer:
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if not (isinstance(kind, str) and kind in _BINARIZER_PARAMS):
        raise r.fail("binarizer.kind", f"must be one of {sorted(_BINARIZER_PARAMS)}")
    edged = kind in ("quantile", "lloyd-max")
    keys = {"kind", "params", "n_features_in"} | ({"input"} if edged and not v1 else set())
    spec = r.keys(spec, "binarizer", keys)
    params = r.keys(spec["params"], "binarizer.params", _BINARIZER_PARAMS[kind])
    f = r.integer(spec["n_features_in"], "binarizer.n_features_in", 1, MAX_UNITS)
    input_dtype = spec.get("input", "float32")
    if input_dtype not in INPUT_DTYPES:
        raise r.fail("binarizer.input", f"must be one of {list(INPUT_DTYPES)}")
    arrays: dict[str, np.ndarray] = {}
    if kind == "threshold":
        if not _is_number(params["threshold"]):
            raise r.fail("binarizer.params.threshold", "must be a finite number")
        bits = f
        arrays["thresholds_"] = _edges(r, "binarizer.thresholds_", (f,), "float32", v1)
    elif edged:
        n_bits = r.integer(params["n_bits"], "binarizer.params.n_bits", 1, 8)
        if params["code"] not in CODES:
            raise r.fail("binarizer.params.code", f"must be one of {list(CODES)}")
        if kind == "lloyd-max":
            r.integer(params["max_iter"], "binarizer.params.max_iter", 0, 10**6)
        levels = n_bits + 1 if params["code"] == "thermometer" else 2**n_bits
        bits = f * n_bits
        if bits != n_bits_out:
            raise r.fail("binarizer", f"makes {bits} bits but layer 0 takes {n_bits_out}")
        arrays["edges_"] = _edges(r, "binarizer.edges_", (f, levels - 1), input_dtype, v1)
        if v1 and kind == "lloyd-max" and "binarizer.centers_" in r.tensors:
            r.tensor("binarizer.centers_", ("F32",), (f, levels))  # version 1 stored it
    else:
        n_hashes = r.integer(params["n_hashes"], "binarizer.params.n_hashes", 1, MAX_UNITS)
        window = r.integer(params["window"], "binarizer.params.window", 2, f)
        if params["code"] not in ("onehot", "binary"):
            raise r.fail("binarizer.params.code", "must be 'onehot' or 'binary'")
        r.integer(params["random_state"], "binarizer.params.random_state", -(2**63), 2**63 - 1)
        per = window if params["code"] == "onehot" else int(np.ceil(np.log2(window)))
        bits = n_hashes * per
        if bits != n_bits_out:
            raise r.fail("binarizer", f"makes {bits} bits but layer 0 takes {n_bits_out}")
        win = r.tensor("binarizer.windows_", ("I32",), (n_hashes, window))
        if win.size and (win.min() < 0 or win.max() >= f):
            raise r.fail("tensor 'binarizer.windows_'", f"refers to features outside 0..{f - 1}")
        arrays["windows_"] = win
    if bits != n_bits_out:
        raise r.fail("binarizer", f"makes {bits} bits but layer 0 takes {n_bits_out}")
    try:
        return Binarizer.from_state(spec | {"input": input_dtype}, arrays)
    except InputError as exc:
        raise r.fail("binarizer", f"is inconsistent: {exc}") from None


def _edges(r: _Reader, field: str, shape: tuple[int, ...], input_dtype: str, v1: bool):
    name = field
    if input_dtype == "uint8":
        e = r.tensor(name, ("U8", "U16"), shape)
        if e.dtype == np.uint16 and (e.size == 0 or e.max() <= 255):
            raise r.fail(f"tensor {name!r}", "is U16 but its values fit U8 (U8 is required)")
        if e.size and e.max() > 256:
            raise r.fail(f"tensor {name!r}", "holds edges above 256 (uint8 edges are 0..256)")
        out = e.astype(np.float32)
    else:
        e = r.tensor(name, ("F32",), shape)
        if not np.all(np.isfinite(e)):
            raise r.fail(f"tensor {name!r}", "holds NaN or infinite edges")
        out = e.copy()
        sub = (np.abs(out) < np.finfo(np.float32).tiny) & (out != 0)
        if np.any(sub) or np.any(np.signbit(out) & (out == 0)):
            if not v1:
                raise r.fail(f"tensor {name!r}", "holds subnormal edges (or -0.0)")
            from bitnn.binarize import normal_edges

            out = normal_edges(out)  # version 1 stored them; same bits for every normal input
    if out.ndim == 2 and np.any(np.diff(out, axis=1) < 0):
        raise r.fail(f"tensor {name!r}", "is not sorted along each feature")
    return out


def _metadata(r: _Reader, meta: Any, v1: bool) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise r.fail("metadata", "must be a JSON object")
    if v1:  # version 1 kept the training history here: keep what version 2 keeps
        return split_metadata(meta)[0]
    for key, value in meta.items():
        problem = _metadata_problem(key, value)
        if problem is not None:
            raise r.fail(f"metadata.{key}", problem)
    return meta


def model_from_bytes(buf: bytes, what: str = "model") -> BitNetwork:
    """Decode and check a model file's bytes (``docs/format.md``); ModelFormatError on any
    defect, naming the field."""
    tensors, description = decode_container(buf, what, MAX_MODEL_HEADER)
    version = _check_version(description, what)
    v1 = version == 1
    r = _Reader(tensors, what, version)
    keys = {"format", "format_version", "output", "layers", "binarizer", "metadata"}
    r.keys(description, "the description", keys)
    output = description["output"]
    if output not in OUTPUT_KINDS:
        raise r.fail("output", f"must be one of {list(OUTPUT_KINDS)}")
    specs = description["layers"]
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_LAYERS:
        raise r.fail("layers", f"must be a list of 1 to {MAX_LAYERS} layers")
    layers: list[BitLayer] = []
    for i, spec in enumerate(specs):
        last_scores = i == len(specs) - 1 and output == "scores"
        layer = _layer(r, i, spec, v1, last_scores)
        if layers and layers[-1].n_out != layer.n_in:
            raise r.fail(f"layers[{i}].n_in", f"is {layer.n_in}, but layer {i - 1} has "
                         f"{layers[-1].n_out} outputs")  # fmt: skip
        layers.append(layer)
    binarizer = None
    if description["binarizer"] is not None:
        binarizer = _binarizer(r, description["binarizer"], layers[0].n_in, v1)
    metadata = _metadata(r, description["metadata"], v1)
    if "keywords" in metadata and (
        output != "scores" or len(metadata["keywords"]["classes"]) != layers[-1].n_out
    ):
        raise r.fail("metadata.keywords.classes", "must name each of the model's output classes")
    unused = sorted(set(tensors) - r.used)
    if unused:
        raise r.fail(f"tensor {unused[0]!r}", "is not used by the declared layers and binarizer")
    try:
        return BitNetwork(layers, binarizer, output, metadata)
    except InputError as exc:
        raise r.fail("the description", f"is inconsistent: {exc}") from None


def load_model(path: str | os.PathLike[str]) -> BitNetwork:
    """Load a model file. Never executes code; raises :class:`ModelFormatError` on any defect."""
    try:
        size = os.stat(path).st_size
        if size > (1 << 40):
            raise ModelFormatError(f"{path} is {size} bytes: too large to be a model file")
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such model file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a model file") from None
    return model_from_bytes(buf, what=str(path))
