"""The roles of a pipeline and their typed specs.

Each role has one small runtime interface and one pydantic spec base:

=============  ===============================  ==========================================
role           runtime interface                spec base (YAML ``type:`` picks the class)
=============  ===============================  ==========================================
source         ``Source.read(stop)`` → items    :class:`SourceSpec` (``output()``, ``build``)
preprocess     ``Stage(item)`` → item or None   :class:`PreprocessSpec` (``output(given)``)
postprocess    ``Stage(item)`` → item or None   :class:`PostprocessSpec` (``check(sig)``)
sink           ``Sink.write(results)``          :class:`SinkSpec`
outbox         ``OutboxTransport.send(m)``      :class:`TransportSpec`
=============  ===============================  ==========================================

Specs check everything they can before anything starts: a preprocessing
spec maps the :class:`ArraySpec` it is given to the one it produces (raising
:class:`ConfigError` when it cannot take it), so a chain that does not end
in the model's input signature is refused at load time. Paths in a spec are
resolved against the YAML file's folder (``context={"base": folder}``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo
from pydantic.functional_validators import AfterValidator

from fogline.errors import ConfigError
from fogline.model import Signature
from fogline.pipeline._item import Corrupt, Item
from fogline.store import Result

QueuePolicy = Literal["block", "drop-oldest", "drop-newest"]
QUEUE_POLICIES: tuple[QueuePolicy, ...] = ("block", "drop-oldest", "drop-newest")


# --- what flows: the shape of an item's data, known before anything runs ---------------------


@dataclass(frozen=True)
class ArraySpec:
    """What an item's ``data`` looks like: shape (``None`` = unknown dim), dtype, layout.

    ``shape=None`` means the rank itself is unknown; ``dtype=None`` unknown
    dtype. ``layout`` is ``"HWC"``, ``"CHW"`` or ``None`` (not an image).

    >>> ArraySpec((None, None, 3), "uint8", "HWC").describe()
    '(?, ?, 3) uint8 HWC'
    """

    shape: tuple[int | None, ...] | None
    dtype: str | None
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None:
            object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        shape = "(?)" if self.shape is None else _shape_text(self.shape)
        parts = [shape, self.dtype or "any dtype"]
        if self.layout:
            parts.append(self.layout)
        return " ".join(parts)


def _shape_text(shape: Sequence[int | str | None]) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


# --- runtime roles -------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """Yields items (or :class:`Corrupt` markers) until exhausted or ``stop`` is set.

    ``read`` runs on the source's own thread; it must return soon after
    ``stop`` is set, and release what it opened when it returns.
    """

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]: ...


@runtime_checkable
class Stage(Protocol):
    """One processing step: returns the item (changed or new), or ``None`` to hold it back.

    ``None`` means the stage consumed the item without passing anything on
    (a sliding window that is not full yet). A bad item raises
    :class:`~fogline.errors.ItemError`; the runner counts it and goes on.
    """

    def __call__(self, item: Item) -> Item | None: ...


@runtime_checkable
class Sink(Protocol):
    """Takes finished results, a batch at a time; ``close`` is optional."""

    def write(self, results: Sequence[Result]) -> None: ...


# --- specs ---------------------------------------------------------------------------------------


def _resolve(value: Path, info: ValidationInfo, key: str = "base") -> Path:
    context = info.context or {}
    base = context.get(key, context.get("base"))
    try:
        path = value.expanduser()
    except RuntimeError:  # "~someone/x" for a user this machine does not have
        raise ValueError(f"{str(value)[:200]!r}: no such user's home folder") from None
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return path


def _resolve_output(value: Path, info: ValidationInfo) -> Path:
    return _resolve(value, info, "outputs")


def existing(what: str) -> AfterValidator:
    """A validator: the path, resolved against the spec's folder, must exist (``no such {what}``)."""

    def check(value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        try:
            found = path.exists()
        except OSError as exc:  # a name too long, a loop of links, no permission
            raise ValueError(
                f"cannot look for {what} {str(path)[:200]!r}: {exc.strerror}"
            ) from None
        if not found:
            raise ValueError(f"no such {what}: {path}")
        return path

    return AfterValidator(check)


#: A path resolved against the spec's folder that must exist at load time.
ExistingPath = Annotated[Path, existing("file or folder")]
#: An output (need not exist yet): resolved against the output folder when one is given
#: (``fogline run --output-dir``; a fleet agent runs a read-only release so), else the spec's.
OutputPath = Annotated[Path, AfterValidator(_resolve_output)]


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    #: Optional modules this step needs at run time (checked by ``plan``), e.g. ``("cv2",)``.
    needs: ClassVar[tuple[str, ...]] = ()


class SourceSpec(Spec):
    """A source: its ``type``, optional ``name`` (the items' source id), pacing and queue.

    ``rate`` caps items per second (the runner paces); ``policy`` says what
    a full queue does: ``block`` the source (files and replays: nothing is
    skipped) or ``drop-oldest`` / ``drop-newest`` (live feeds, where a stale
    frame is worthless). ``queue`` is that queue's size (default: 64 for
    ``block``, half a batch for the others, which bounds a live item's wait).
    """

    type: str
    name: str | None = None
    rate: float | None = None
    policy: QueuePolicy = "block"
    queue: int | None = Field(default=None, ge=1)
    max_items: int | None = Field(default=None, ge=1)

    #: What ``policy`` defaults to for this kind of source (cameras: drop-oldest).
    live: ClassVar[bool] = False

    def output(self) -> ArraySpec:
        """The :class:`ArraySpec` of the ``data`` this source's items carry."""
        raise NotImplementedError

    def build(self, name: str) -> Source:
        """The runtime source; ``name`` is the source id its items carry."""
        raise NotImplementedError

    def probe(self) -> None:
        """At check time, what only this machine can tell (a port to bind is free); optional."""


class PreprocessSpec(Spec):
    """A preprocessing step (before the model)."""

    type: str

    def output(self, given: ArraySpec) -> ArraySpec:
        """What the step produces from ``given``; :class:`ConfigError` if it cannot take it."""
        raise NotImplementedError

    def build(self) -> Stage:
        raise NotImplementedError


class PostprocessSpec(Spec):
    """A post-processing step (after the model): reads ``item.outputs``, writes ``item.result``."""

    type: str

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        """Check against the model's outputs; return the result keys known after this step.

        ``produced`` holds the keys earlier steps made; a step that needs one
        that is not there raises :class:`ConfigError`.
        """
        raise NotImplementedError

    def build(self, outputs: Signature) -> Stage:
        raise NotImplementedError


class SinkSpec(Spec):
    """A sink: ``name`` (rules refer to it), a ``when`` condition, and its own bounded queue."""

    type: str
    name: str | None = None
    when: str | None = None
    queue: int = 1024
    policy: QueuePolicy = "block"

    def build(self) -> Sink:
        raise NotImplementedError

    def probe(self) -> None:
        """At check time, what only this machine can tell (a port to bind is free); optional."""


class TransportSpec(Spec):
    """Where the outbox delivers: a :class:`fogline.store.OutboxTransport` factory."""

    type: str

    def build(self) -> Any:
        """A :class:`fogline.store.OutboxTransport` (with an optional ``close``)."""
        raise NotImplementedError


def check_fits(
    given: ArraySpec, *, rank: int | None = None, layout: str | None = None, what: str
) -> None:
    """Raise :class:`ConfigError` unless ``given`` has ``rank`` / ``layout`` (when known)."""
    if rank is not None and given.rank is not None and given.rank != rank:
        raise ConfigError(f"{what} needs rank-{rank} data, but gets {given.describe()}")
    if layout is not None and given.layout is not None and given.layout != layout:
        raise ConfigError(f"{what} needs {layout} data, but gets {given.describe()}")
