"""What controller and devices say during a federated run: rounds down, chunked updates up.

Three more topics under each device's ``{prefix}/devices/{device_id}/``, so
the one pattern ACL still lets a device read only its own and write only its
own:

=============  ==========  =====  ========  =================================================
topic          direction   QoS    retained  body
=============  ==========  =====  ========  =================================================
``fl-round``   controller  1      yes       frame: :class:`RoundTask` + the global model
``fl-ack``     controller  1      yes       :class:`UpdateAck`: which chunks are stored
``fl-update``  device      1      no        frame: :class:`UpdateChunk` + a piece of the update
=============  ==========  =====  ========  =================================================

A *frame* is one MQTT payload: the header as one line of JSON, a newline,
then the binary body (:func:`encode_frame`, :func:`decode_frame`), so the
model and updates travel as bytes, not base64.

Resuming: the round and the acknowledgement are retained, so a device that
reconnects (or restarts) reads at once which round is open and which of its
chunks the controller already stored, and sends only the rest. The
controller stores a chunk before it acknowledges it; an update is complete
when every chunk is stored and the whole matches its ``sha256``. A device
that cannot take part (not eligible: busy, on battery) says so with a
``decline`` instead of chunks, so the round need not wait for it.

>>> task = RoundTask(run="r1", round=3, task="fogline.examples:digits_task",
...                  deadline=1e9, model_sha256="0" * 64, model_size=10)
>>> header, body = decode_frame(encode_frame(task, b"weights"), RoundTask)
>>> header.round, body
(3, b'weights')
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fogline.protocol._fleet import DEVICE_ID_PATTERN, DeviceId

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FL_TOPIC_KINDS",
    "STAGES",
    "RoundTask",
    "RunSpec",
    "SecAggSettings",
    "UpdateAck",
    "UpdateChunk",
    "decode_frame",
    "encode_frame",
]

#: The statuses of a federated run that is not over (picked up again after a restart).
ACTIVE_RUN_STATUSES = ("running", "stopping", "finishing")
#: The device topics of a federated run (see the module docstring).
FL_TOPIC_KINDS = ("fl-round", "fl-ack", "fl-update")
#: How an update's change is encoded (:func:`fogline.federated.encode_update`).
UPDATE_ENCODING = "f16-delta-deflate"
#: How the global model is encoded (:func:`fogline.federated.encode_weights`).
MODEL_ENCODING = "npz"

Sha256 = str
_HEX = r"^[0-9a-f]{64}$"

M = TypeVar("M", bound=BaseModel)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


#: The stages of a round under secure aggregation, in order (``train`` alone without it).
STAGES = ("train", "shares", "mask", "unmask")
Stage = Literal["train", "shares", "mask", "unmask"]


class SecAggSettings(_Message):
    """A round's secure aggregation, as every sampled device must know it (SecAgg+ style).

    The device sends ``[w * change, w]`` with ``w = min(1, examples / scale)``,
    each coordinate clipped to ``clip`` and quantized to ``bits`` bits; the
    controller learns only the sum, and it needs ``threshold`` devices to the end.
    """

    num_clients: int = Field(ge=2)
    dimension: int = Field(ge=1)
    clip: float = Field(gt=0)
    bits: int = Field(ge=8, le=62)
    threshold: int = Field(ge=2)
    round_id: str
    scale: float = Field(default=1000.0, gt=0)


class RoundTask(_Message):
    """One round offered to one device: train the attached global model and send the change.

    ``task`` is the ``module:function`` the device's learner release must
    declare; ``deadline`` (Unix time) is when the controller stops waiting;
    ``config`` is the strategy's per-round settings (``epochs``, ``mu``).
    """

    run: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=1)
    task: str = Field(min_length=3)
    deadline: float
    config: dict[str, float] = Field(default_factory=dict)
    model_sha256: Sha256 = Field(pattern=_HEX)
    model_size: int = Field(ge=0)
    model_encoding: Literal["npz"] = "npz"
    chunk_bytes: int = Field(default=65536, ge=1024)
    #: Under secure aggregation: which stage this message opens, and its settings. The
    #: body is the model for ``train``; for the later stages, what that stage needs
    #: (every device's keys, this device's sealed shares, whom to unmask).
    stage: Stage = "train"
    secagg: SecAggSettings | None = None

    @field_validator("deadline")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("the deadline must be a finite time")
        return value


class UpdateChunk(_Message):
    """One piece of a device's update (or its ``decline`` of the round).

    The update's whole length ``size`` and ``sha256`` ride on every chunk, so
    the controller can check it whichever chunk arrives last.
    """

    device_id: DeviceId
    run: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=1)
    kind: Literal["chunk", "decline", "secagg"] = "chunk"
    stage: Literal["keys", "shares", "mask", "unmask"] | None = None  # of a secagg message
    index: int = Field(default=0, ge=0)
    total: int = Field(default=1, ge=1, le=100_000)
    size: int = Field(default=0, ge=0)
    sha256: Sha256 | None = Field(default=None, pattern=_HEX)
    encoding: Literal["f16-delta-deflate"] = "f16-delta-deflate"
    num_examples: int = Field(default=0, ge=0)
    loss: float | None = None
    train_seconds: float = Field(default=0.0, ge=0)
    bytes_down: int = Field(default=0, ge=0)
    reason: str | None = Field(default=None, max_length=500)


class UpdateAck(_Message):
    """The controller's answer to a device's update, retained: what it stored, or why not.

    ``status``: ``partial`` (``received`` lists the stored chunk indices),
    ``accepted`` (complete, checked, counted), ``refused`` (``reason`` says
    why; do not resend), ``closed`` (the round ended before it was complete).
    """

    run: str
    round: int = Field(ge=1)
    status: Literal["partial", "accepted", "refused", "closed"]
    received: list[int] = Field(default_factory=list)
    reason: str | None = None


def encode_frame(header: BaseModel, body: bytes = b"") -> bytes:
    """One payload: ``header`` as a line of JSON, a newline, ``body``."""
    return header.model_dump_json().encode() + b"\n" + body


def decode_frame(payload: bytes, model: type[M]) -> tuple[M, bytes]:
    """The header (validated as ``model``) and the body of a frame; ValueError when malformed."""
    line, newline, body = payload.partition(b"\n")
    if not newline:
        raise ValueError("a frame is a JSON header line, a newline and a body; no newline found")
    try:
        return model.model_validate_json(line), body
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


class RunSpec(_Message):
    """A federated run as the operator asks for it (``fogline fl start``, ``POST /api/fl/runs``).

    ``task`` is the ``module:function`` of the model and the operator's
    validation set (its ``test`` split); devices train on their own data
    through a ``learner`` release that names the same task. ``release`` is
    the name of the model release the run ends in. The gate refuses a model
    whose validation accuracy is below the newest release of that name by
    more than ``max_drop`` (or below ``min_accuracy``); ``then="canary"``
    deploys what passed with the fleet's rollout (its ``canary_*`` options).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    release: str = Field(pattern=DEVICE_ID_PATTERN)
    group: str = "default"
    rounds: int = Field(default=10, ge=1, le=100_000)
    strategy: str = "fedavg"
    min_clients: int = Field(default=2, ge=1)
    fraction: float = Field(default=1.0, gt=0, le=1)
    deadline: float = Field(default=60.0, gt=0, description="seconds a round waits for updates")
    local_epochs: int = Field(default=1, ge=1)
    dp_noise: float | None = Field(default=None, gt=0)
    dp_clip: float | None = Field(default=None, gt=0)
    dp_delta: float = Field(default=1e-5, gt=0, lt=1)
    epsilon_budget: float | None = Field(default=None, gt=0)
    secagg: bool = False
    #: FedBuff-style: an update that arrives after its round closed is folded into the next
    #: aggregate, its change weighed by (1 + staleness) ** -0.5, up to ``max_staleness`` rounds.
    asynchronous: bool = False
    max_staleness: int = Field(default=3, ge=1)
    secagg_bits: int = Field(default=16, ge=8, le=62)
    secagg_clip: float = Field(default=8.0, gt=0)
    max_drop: float = Field(default=0.01, ge=0, le=1)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    version: str | None = None
    then: Literal["canary"] | None = None
    canary_min_accuracy: float | None = Field(default=None, ge=0, le=1)
    canary_bake: float = Field(default=30.0, ge=0)
    seed: int | None = None

    @model_validator(mode="after")
    def _together(self) -> RunSpec:
        if (self.dp_noise is None) != (self.dp_clip is None):
            raise ValueError("--dp-noise and --dp-clip go together")
        if self.epsilon_budget is not None and self.dp_noise is None:
            raise ValueError("--epsilon-budget needs --dp-noise and --dp-clip")
        if self.secagg and self.asynchronous:
            raise ValueError(
                "--async folds late updates in one by one, and --secagg gives only the sum "
                "of a round's: use one or the other"
            )
        if self.secagg and self.dp_noise is not None:
            raise ValueError(
                "--secagg with --dp-noise is not supported on the fleet yet "
                "(try it with fogline fl simulate --secagg --dp-mode distributed)"
            )
        return self
