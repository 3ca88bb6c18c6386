"""The one error tree of fogline.

Every failure that a user can cause or fix is raised as a subclass of
:class:`FoglineError`. Errors from ONNX, ONNX Runtime, OpenVINO, LiteRT,
SQLite and the file system are caught at the boundary where they happen and re-raised
``from`` the original as the most specific class below, so a caller needs
only ``except FoglineError`` and the CLI can print one line and exit 2::

    FoglineError
    ├── ModelError                 a model file cannot be used
    │   ├── ModelFormatError       not a model, truncated, corrupt, unsafe
    │   └── BackendUnavailable     the engine asked for is not installed
    ├── SignatureMismatch          data does not fit the model's inputs
    ├── BatcherError               the micro-batcher did not compute an item
    │   ├── Overloaded             the queue is full and the policy is reject
    │   ├── Dropped                evicted from a full queue by a newer item
    │   ├── DeadlineExceeded       its deadline passed before its batch ran
    │   └── NotRunning             the batcher is not started, or is closed
    ├── DataError                  calibration / eval data cannot be read
    ├── ManifestError              a manifest is malformed or disagrees with its model
    ├── ConfigError                an option value is unknown or out of range
    ├── ModelNotFound              no such model or version (in the repository or loaded)
    ├── ModelNotReady              the model exists but is not loaded, or failed to load
    ├── ItemError                  one stream item cannot be used (corrupt frame, bad row)
    ├── TransportError             a message could not be sent (broker or endpoint down)
    ├── ReleaseRefused             a release failed verification (signature, hash, size, age, expiry)
    ├── OptimizeError              no variant could be built or measured
    └── StoreError                 the results store cannot be opened, read or written
        ├── StoreFormatError       the file is not SQLite, or not a store this version reads
        └── OutboxFull             the outbox is at its limit and its policy is "reject"
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BatcherError",
    "ConfigError",
    "DataError",
    "DeadlineExceeded",
    "Dropped",
    "FoglineError",
    "ItemError",
    "ManifestError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFound",
    "ModelNotReady",
    "NotRunning",
    "OptimizeError",
    "OutboxFull",
    "Overloaded",
    "ReleaseRefused",
    "SignatureMismatch",
    "StoreError",
    "StoreFormatError",
    "TransportError",
]


class FoglineError(Exception):
    """Base of every error fogline raises on purpose."""


class ModelError(FoglineError):
    """A model file cannot be loaded or run."""


class ModelFormatError(ModelError):
    """The file is not a model, or is truncated, corrupt or unsafe to load."""


class BackendUnavailable(ModelError):
    """The engine that was asked for is not installed on this machine."""


class SignatureMismatch(FoglineError):
    """Inputs do not match the model's signature (names, dtypes, shapes)."""


class BatcherError(FoglineError):
    """The micro-batcher did not compute an item (it was refused, evicted or expired)."""


class Overloaded(BatcherError):
    """The batcher's queue is full and its overflow policy is ``reject``."""


class Dropped(BatcherError):
    """The item waited in a full queue and was evicted by a newer one (``drop-oldest``)."""


class DeadlineExceeded(BatcherError):
    """The item's deadline passed before its batch ran, so it was not computed."""


class NotRunning(BatcherError):
    """The batcher is not started yet, or was closed before the item ran."""


class DataError(FoglineError):
    """Calibration or evaluation data cannot be read or is inconsistent."""


class ManifestError(FoglineError):
    """A model manifest is malformed or does not match its model file."""


class ConfigError(FoglineError):
    """An option has a value that fogline does not accept."""


class ModelNotFound(FoglineError):
    """A request or command names a model or version that does not exist."""


class ModelNotReady(FoglineError):
    """The model exists but is not loaded (yet), or its last load failed."""


class ItemError(FoglineError):
    """One item of a stream cannot be used: a corrupt frame, a malformed row.

    The pipeline counts it, logs it with its ``position`` and goes on.
    """

    def __init__(self, message: str, position: str = "") -> None:
        super().__init__(f"{position}: {message}" if position else message)
        self.position = position


class TransportError(FoglineError):
    """A message could not be delivered: the broker or endpoint is down or refused it."""


class ReleaseRefused(FoglineError):
    """A device refused a release: its metadata or files failed verification.

    A bad signature, a file whose hash or size differs from the signed
    metadata, a release older than the active one (a rollback attack), expired
    metadata (a freeze attack) or more bytes than the metadata allows (endless
    data). Not worth retrying as is; the active release stays untouched and the
    message says which check failed.
    """


class OptimizeError(FoglineError):
    """The optimizer could not build or measure any usable variant."""


class StoreError(FoglineError):
    """The results store cannot be opened, read or written (SQLite failed or it is closed)."""


class StoreFormatError(StoreError):
    """The file is not a SQLite database, or not a fogline store this version can read."""


class OutboxFull(StoreError):
    """The outbox holds its limit of pending messages and its policy is ``"reject"``."""
