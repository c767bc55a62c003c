"""Reading ``(X, y)`` from the user's own files: ``.npz`` (arrays ``X`` and ``y``) or ``.csv``."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from bitnn.errors import InputError


def load_xy(
    path: str | Path,
    label_column: str | None = None,
    require_labels: bool = True,
    n_features: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load features and labels.

    ``.npz``: arrays named ``X`` and ``y``. ``.csv``: numbers, an optional header row; the
    labels are the column named or numbered by ``label_column`` (default: the last column).
    With ``require_labels=False`` a file without labels (npz without ``y``, or a CSV when
    ``label_column="none"``, or a CSV of exactly ``n_features`` columns) gives ``y = None``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such data file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a data file (.npz with arrays X, y, or .csv)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, require_labels)
    if suffix == ".csv":
        return _load_csv(path, label_column, require_labels, n_features)
    raise InputError(f"{path}: data files must be .npz (arrays X, y) or .csv")


def _load_npz(path: Path, require_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if not zipfile.is_zipfile(path):  # np.load would take anything else for a pickle
        raise InputError(
            f"{path} is not a .npz file (a zip archive of arrays); write one with "
            "numpy.savez(path, X=X, y=y), or give a .csv"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.keys())
            if "X" not in names:
                raise InputError(f"{path} has arrays {names}; it needs one named X (and y)")
            X = f["X"]
            y = f["y"] if "y" in names else None
    except InputError:
        raise
    except ValueError:  # object arrays need pickle, which bitnn never uses
        raise InputError(
            f"{path} holds object arrays (Python objects, not numbers), which bitnn does not "
            "load; save plain numeric arrays, e.g. numpy.savez(path, X=X.astype(float), y=y)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is not a readable .npz file: {exc}") from None
    if y is None and require_labels:
        raise InputError(f"{path} has no array named y (the labels)")
    return X, y


def _load_csv(
    path: Path, label_column: str | None, require_labels: bool, n_features: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV text file ({exc})") from None
    if not rows:
        raise InputError(f"{path} is empty")
    header = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        header, rows = rows[0], rows[1:]
    if not rows:
        raise InputError(f"{path} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(f"{path}: row {i + 1} has {len(r)} values, expected {width}")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: every value must be a number; {_first_bad_cell(rows)}") from None
    if label_column == "none" or (
        label_column is None and not require_labels and width == n_features
    ):
        if require_labels:
            raise InputError("labels are needed here; name the label column")
        return table, None
    if label_column is None:
        col = width - 1
    elif header is not None and label_column in header:
        col = header.index(label_column)
    else:
        try:
            col = int(label_column)
        except ValueError:
            raise InputError(f"{path}: no column named {label_column!r}") from None
        if not -width <= col < width:
            raise InputError(f"{path}: label column {col} does not exist ({width} columns)")
        col %= width
    if width < 2:
        raise InputError(f"{path} needs at least one feature column and one label column")
    X = np.delete(table, col, axis=1)
    return X, table[:, col]


def _first_bad_cell(rows: list[list[str]]) -> str:
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            try:
                float(cell)
            except ValueError:
                return f"data row {i + 1}, column {j + 1} holds {cell!r}"
    return "a value is not a number"
