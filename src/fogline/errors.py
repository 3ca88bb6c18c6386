"""The one error tree of fogline.

Every failure that a user can cause or fix is raised as a subclass of
:class:`FoglineError`. Errors from ONNX, ONNX Runtime, OpenVINO, LiteRT and
the file system are caught at the boundary where they happen and re-raised
``from`` the original as the most specific class below, so a caller needs
only ``except FoglineError`` and the CLI can print one line and exit 2::

    FoglineError
    ├── ModelError                 a model file cannot be used
    │   ├── ModelFormatError       not a model, truncated, corrupt, unsafe
    │   └── BackendUnavailable     the engine asked for is not installed
    ├── SignatureMismatch          data does not fit the model's inputs
    ├── DataError                  calibration / eval data cannot be read
    ├── ManifestError              a manifest is malformed or disagrees with its model
    ├── ConfigError                an option value is unknown or out of range
    └── OptimizeError              no variant could be built or measured
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "DataError",
    "FoglineError",
    "ManifestError",
    "ModelError",
    "ModelFormatError",
    "OptimizeError",
    "SignatureMismatch",
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


class DataError(FoglineError):
    """Calibration or evaluation data cannot be read or is inconsistent."""


class ManifestError(FoglineError):
    """A model manifest is malformed or does not match its model file."""


class ConfigError(FoglineError):
    """An option has a value that fogline does not accept."""


class OptimizeError(FoglineError):
    """The optimizer could not build or measure any usable variant."""
