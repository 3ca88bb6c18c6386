"""An online learner's state on disk: a header that says what wrote it, then River's pickle.

River estimators are saved the way River supports, with :mod:`pickle`. A
pickle says nothing about what it holds, so a checkpoint starts with two
text lines: a magic line and a JSON header naming the estimator spec (its
dotted path, parameters and classes), the River version, the features it
was fed and how many items it has learned. A checkpoint whose header does
not match what the pipeline asks for is refused with a message that says
why, never silently loaded into a different model.

The file is written with :func:`fogline._files.atomic_write` (temporary
file, fsync, rename), so a crash, ``kill -9`` included, leaves either the
previous checkpoint or the new one. Loading a pickle runs code from it: a
checkpoint is the device's own state, to be kept where only the pipeline
writes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fogline._files import atomic_write
from fogline.errors import ConfigError

MAGIC = b"FOGLINE-ONLINE-STATE 1\n"


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint holds: the estimator spec, the River version, what it has learned.

    >>> header = CheckpointHeader("river.anomaly.HalfSpaceTrees", {"seed": 1}, None, "0.26.1",
    ...                           ["0", "1"], learned=10, saved_at=0.0)
    >>> header.spec_key == header.with_progress(learned=20, saved_at=1.0).spec_key
    True
    """

    estimator: str
    params: Mapping[str, Any]
    classes: list[str] | None
    river: str
    features: list[str]
    learned: int = 0  # items the estimator has learned from (items, or labels)
    saved_at: float = 0.0
    sha256: str = ""  # of the pickle that follows the header

    @property
    def spec_key(self) -> str:
        """The estimator spec as canonical JSON: equal keys, same model."""
        return canonical(
            {"estimator": self.estimator, "params": self.params, "classes": self.classes}
        )

    def with_progress(self, *, learned: int, saved_at: float) -> CheckpointHeader:
        return CheckpointHeader(
            self.estimator,
            self.params,
            self.classes,
            self.river,
            self.features,
            learned,
            saved_at,
        )


def canonical(value: Any) -> str:
    """JSON with sorted keys; what YAML gives (numbers, strings, lists, maps) round-trips.

    >>> canonical({"b": [1, 2], "a": {"y": 1, "x": None}})
    '{"a":{"x":null,"y":1},"b":[1,2]}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def save_checkpoint(path: Path, header: CheckpointHeader, estimator: Any) -> int:
    """Write ``estimator`` under ``header`` to ``path`` atomically; returns the bytes written.

    Raises :class:`ConfigError` when the estimator cannot be pickled (a
    lambda in a pipeline, say).
    """
    try:
        state = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"the online model cannot be pickled, so not checkpointed: {exc}"
        ) from exc
    header = CheckpointHeader(**{**asdict(header), "sha256": hashlib.sha256(state).hexdigest()})
    data = MAGIC + canonical(asdict(header)).encode() + b"\n" + state
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return len(data)


def read_header(path: Path) -> CheckpointHeader:
    """The header of the checkpoint at ``path`` (the pickle is not loaded).

    Raises :class:`ConfigError` when the file is not a fogline checkpoint.
    """
    header, _ = _split(path)
    return header


def load_checkpoint(path: Path, expected: CheckpointHeader) -> tuple[CheckpointHeader, Any]:
    """The header and estimator saved at ``path``, if it was saved for ``expected``'s spec.

    A checkpoint from another estimator, other parameters or classes, other
    features or another River version is refused with a :class:`ConfigError`
    that says which, and how to start afresh.
    """
    header, state = _split(path)
    fresh = f"move {path.name} away to start the model afresh"
    if header.spec_key != expected.spec_key:
        raise ConfigError(
            f"{path} holds the state of {header.estimator} with params {canonical(header.params)}"
            f"{_classes(header)}, but the pipeline asks for {expected.estimator} with params "
            f"{canonical(expected.params)}{_classes(expected)}; {fresh}"
        )
    if header.river != expected.river:
        raise ConfigError(
            f"{path} was saved by River {header.river} and this is River {expected.river}; "
            f"River's pickles are not portable across versions: {fresh}, or install "
            f"river=={header.river}"
        )
    if header.features != expected.features:
        raise ConfigError(
            f"{path} learned from features {_few(header.features)} but the pipeline now feeds "
            f"{_few(expected.features)}; {fresh}"
        )
    if hashlib.sha256(state).hexdigest() != header.sha256:
        raise ConfigError(f"{path}: the saved state does not match its header's sha256; {fresh}")
    try:
        estimator = pickle.loads(state)  # the device's own state (see the module docstring)
    except Exception as exc:
        raise ConfigError(f"{path}: the saved state cannot be loaded: {exc}; {fresh}") from exc
    return header, estimator


def _split(path: Path) -> tuple[CheckpointHeader, bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from exc
    if not data.startswith(MAGIC):
        raise ConfigError(f"{path} is not a fogline online-model checkpoint")
    end = data.find(b"\n", len(MAGIC))
    try:
        fields = json.loads(data[len(MAGIC) : end])
        header = CheckpointHeader(**fields)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: the checkpoint's header is damaged: {exc}") from exc
    return header, data[end + 1 :]


def _classes(header: CheckpointHeader) -> str:
    return "" if header.classes is None else f" and classes {header.classes}"


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return f"[{shown}] ({len(names)})"
