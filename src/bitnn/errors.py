"""Exceptions a user can cause. Each message says what went wrong and what to do."""


class BitnnError(Exception):
    """Base class of every error bitnn raises on purpose."""


class InputError(BitnnError, ValueError):
    """Data given to bitnn is unusable (shape, dtype, NaN/inf, labels, empty)."""


class NotFittedError(BitnnError, RuntimeError):
    """A binarizer was used before `fit`."""


class ModelFormatError(BitnnError):
    """A model or checkpoint file is truncated, corrupt, of an unknown version, or not ours."""


class DatasetError(BitnnError):
    """A dataset could not be found, fetched or verified."""


class TrainingInterrupted(Exception):  # noqa: N818 - a stop the user asked for, not an error
    """Training stopped on request (Ctrl-C); the checkpoint at ``path`` resumes it."""

    def __init__(self, path: object) -> None:
        super().__init__(f"training stopped; resume it with --resume (checkpoint {path})")
        self.path = path
