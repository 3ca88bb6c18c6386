"""What the registry hands out: a :class:`Device` as the controller knows it, an :class:`Inbox` of reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fogline.protocol import DeviceState, Presence, Telemetry


@dataclass(frozen=True)
class Device:
    """What the controller knows of one device."""

    id: str
    group: str
    tags: tuple[str, ...]
    enrolled_at: float | None
    last_seen: float | None
    online: bool
    state: DeviceState | None

    def version(self, release: str) -> str | None:
        """The version of ``release`` this device last said it runs."""
        if self.state is None or release not in self.state.releases:
            return None
        return self.state.releases[release].version

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "tags": list(self.tags),
            "enrolled_at": self.enrolled_at,
            "last_seen": self.last_seen,
            "online": self.online,
            "state": None if self.state is None else self.state.model_dump(mode="json"),
        }


@dataclass
class Inbox:
    """One batch of device messages, as parsed by the controller's MQTT worker."""

    states: list[DeviceState] = field(default_factory=list)
    presence: list[tuple[str, Presence]] = field(default_factory=list)
    telemetry: list[tuple[str, Telemetry]] = field(default_factory=list)  # (idempotency key, body)

    def __bool__(self) -> bool:
        return bool(self.states or self.presence or self.telemetry)


def device_from_row(row: tuple[Any, ...]) -> Device:
    device_id, grp, tags, enrolled_at, last_seen, online, state = row
    return Device(
        id=device_id,
        group=grp,
        tags=tuple(json.loads(tags)),
        enrolled_at=enrolled_at,
        last_seen=last_seen,
        online=bool(online),
        state=None if state is None else DeviceState.model_validate_json(state),
    )
