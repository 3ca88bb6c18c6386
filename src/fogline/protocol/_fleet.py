"""What controller and agents say to each other over MQTT 5: topics and message bodies.

Every device has five fleet topics under ``{prefix}/devices/{device_id}/``
(and three for federated rounds, :mod:`fogline.protocol._rounds`). The
device id is also the device's MQTT user name, so one pattern ACL
(:func:`fogline.fleet.acl_lines`) lets a device read only its own commands
and write only its own reports.

=============  ==========  =======  ========  ==========================================
topic          direction   QoS      retained  body
=============  ==========  =======  ========  ==========================================
``desired``    controller  1        yes       :class:`DesiredState`: releases to run
``command``    controller  1        no        :class:`Command`: rollback, restart, report
``state``      device      1        yes       :class:`DeviceState`: what runs, each phase
``telemetry``  device      1        no        :class:`Telemetry`: one report a period
``presence``   device      1        yes       :class:`Presence`; also the last will
=============  ==========  =======  ========  ==========================================

Retained desired state means a device that reconnects after a week reads the
latest at once; persistent sessions (clean start off, a session expiry) keep
its commands while it is away. Bodies are JSON objects validated by the
pydantic models here; a body that does not validate is logged and dropped by
the receiver, never applied.

>>> topics = DeviceTopics("fogline", "cam-7")
>>> topics.desired, topics.state
('fogline/devices/cam-7/desired', 'fogline/devices/cam-7/state')
>>> parse_device_topic("fogline", "fogline/devices/cam-7/telemetry")
('cam-7', 'telemetry')
>>> DesiredState(generation=3, releases={"digits": "1.1.0"}).model_dump_json()
'{"generation":3,"releases":{"digits":"1.1.0"},"rollback":{},"deployment":null}'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fogline._names import NAME_PATTERN, check_name, is_name
from fogline.protocol._monitoring import Monitoring

#: The default first topic level; a controller and its agents must agree on it.
DEFAULT_PREFIX = "fogline"
#: The kinds of topic a device has.
#: The last three carry federated rounds (:mod:`fogline.protocol._rounds`).
TOPIC_KINDS = (
    "desired", "command", "state", "telemetry", "presence", "fl-round", "fl-ack", "fl-update",
    "offer", "offer-ack",
)  # fmt: skip
#: What a device id may be: it is an MQTT user name, a topic level and a folder name.
#: A release name follows the same rule, kept once in :mod:`fogline._names`.
DEVICE_ID_PATTERN = NAME_PATTERN

#: Names no device may take: the broker's controller user (it reads and writes
#: the whole prefix) and the controller's certificate subject. A device enrolled
#: under one would be the controller to the broker.
RESERVED_DEVICE_IDS = frozenset({"controller"})

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
#: A release name (versions are PEP 440).
ReleaseName = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` or raise ``ValueError`` saying what a device id may be.

    >>> check_device_id("cam/7")
    Traceback (most recent call last):
    ...
    ValueError: device id 'cam/7' must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit
    >>> check_device_id("controller")
    Traceback (most recent call last):
    ...
    ValueError: device id 'controller' is reserved for the controller's MQTT user and certificate; choose another
    """
    check_name(device_id, "device id")
    if device_id.casefold() in RESERVED_DEVICE_IDS:
        raise ValueError(
            f"device id {device_id!r} is reserved for the controller's MQTT user and certificate; "
            "choose another"
        )
    return device_id


@dataclass(frozen=True)
class DeviceTopics:
    """The topics of one device."""

    prefix: str
    device_id: str

    def __post_init__(self) -> None:
        check_device_id(self.device_id)

    def topic(self, kind: str) -> str:
        """This device's topic of ``kind`` (one of :data:`TOPIC_KINDS`)."""
        if kind not in TOPIC_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}; one of {', '.join(TOPIC_KINDS)}")
        return f"{self.prefix}/devices/{self.device_id}/{kind}"

    _topic = topic

    @property
    def desired(self) -> str:
        return self._topic("desired")

    @property
    def command(self) -> str:
        return self._topic("command")

    @property
    def state(self) -> str:
        return self._topic("state")

    @property
    def telemetry(self) -> str:
        return self._topic("telemetry")

    @property
    def presence(self) -> str:
        return self._topic("presence")


def device_filter(prefix: str, kind: str) -> str:
    """The filter a controller subscribes to for one kind of report from every device."""
    return f"{prefix}/devices/+/{kind}"


def parse_device_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(device_id, kind)`` of a device topic, or None for any other topic."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != prefix or levels[1] != "devices":
        return None
    if levels[3] not in TOPIC_KINDS or not is_name(levels[2]):
        return None
    return levels[2], levels[3]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DesiredState(_Message):
    """What the controller wants a device to run: release name → version.

    ``generation`` grows with every change, so a device ignores a stale
    message. ``rollback`` names releases the device may take back to an older
    version (only to one it ran and still holds); without it a device refuses
    to go back (a rollback attack). ``deployment`` is the rollout that set it.
    """

    generation: int = Field(ge=0)
    releases: dict[ReleaseName, str] = Field(default_factory=dict)
    rollback: dict[ReleaseName, str] = Field(default_factory=dict)
    deployment: str | None = None


Phase = Literal[
    "pending",  # desired, not started
    "downloading",
    "verifying",
    "staging",
    "checking",  # health check of the staged release
    "active",  # running and healthy
    "failed",  # download, verification or health check failed; last-known-good runs
    "refused",  # signature, hash, size, age or expiry refused; last-known-good runs
    "rolled-back",  # back on the previous release after a command or a failure
]


class ReleaseStatus(_Message):
    """Where one release slot of a device is."""

    version: str | None = None  # what runs now (last-known-good), None if nothing yet
    target: str | None = None  # what it is converging to, if different
    phase: Phase = "pending"
    error: str | None = None  # why the last attempt failed or was refused
    since: float = Field(default_factory=time.time)


class DeviceState(_Message):
    """A device's report of itself, retained on its ``state`` topic."""

    device_id: DeviceId
    generation: int = Field(ge=0, default=0)  # the desired generation last applied
    releases: dict[ReleaseName, ReleaseStatus] = Field(default_factory=dict)
    health: Literal["ok", "degraded", "failed"] = "ok"
    agent: str = ""  # agent version
    time: float = Field(default_factory=time.time)


class ReleaseMetrics(_Message):
    """What one release measured over the last period (all optional)."""

    items: int = 0  # processed in the period
    items_per_second: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    drops: int = 0
    accuracy: float | None = None  # on the release's labelled canary set, if it has one
    drift: float | None = None  # the highest drift score of any stage (see ``monitoring``)
    #: Drift, live accuracy, its estimate and captures of a pipeline that monitors its model.
    monitoring: Monitoring | None = None
    #: What ran the release's model in its health check: the execution provider
    #: (``CUDAExecutionProvider``...), and the GPU provider asked for that did not start.
    device: str | None = None
    device_fallback: str | None = None
    #: Joules the release's process used in the period, and per item processed (None: its
    #: child exports no energy counter); ``energy`` says how: ``measured (RAPL package-0)``
    #: or ``estimated (CPU time x 10 W per core)``.
    joules: float | None = Field(default=None, ge=0)
    joules_per_item: float | None = Field(default=None, ge=0)
    energy: str | None = Field(default=None, max_length=200)
    energy_measured: bool | None = None


class AuditCheckpoint(_Message):
    """The device's audit log, signed at its head: line ``seq`` has hash ``hash``.

    ``key`` is the device's audit public key and ``signature`` its Ed25519
    signature (both hex); the controller keeps the latest per device, so a
    device log later cut below it is found (``fogline audit verify --checkpoint``).
    """

    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: float
    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


class Telemetry(_Message):
    """One periodic report; queued in the agent's outbox while offline."""

    device_id: DeviceId
    time: float
    sequence: int = Field(ge=0)
    versions: dict[ReleaseName, str] = Field(default_factory=dict)
    metrics: dict[ReleaseName, ReleaseMetrics] = Field(default_factory=dict)
    cpu_percent: float | None = None
    memory_mb: float | None = None
    #: Seconds between reports: how long a silence the controller's bake tolerates.
    period: float | None = Field(default=None, gt=0)
    #: The device's audit log signed at its head when the report was made (None: no log).
    audit: AuditCheckpoint | None = None


class Command(_Message):
    """A one-off order; ``id`` lets the device answer it once."""

    id: str
    kind: Literal["rollback", "restart", "report"]
    release: ReleaseName | None = None  # which slot; None means all


class Presence(_Message):
    """Online or not; the offline one is the device's MQTT last will."""

    online: bool
    time: float = Field(default_factory=time.time)
