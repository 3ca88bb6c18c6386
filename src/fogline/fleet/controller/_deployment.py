"""A deployment as the registry records it: :class:`Deployment` and its :class:`DeploymentDevice` rows.

Read-only values built by :class:`~fogline.fleet.controller.Rollouts` from
the registry's ``deployments`` and ``deployment_devices`` tables; the API,
the dashboard and the CLI show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from fogline.fleet.controller._bake import BakeProgress
from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._plan import RolloutPlan

Status = Literal["running", "succeeded", "rolled-back"]


@dataclass(frozen=True)
class DeploymentDevice:
    device_id: str
    wave: int
    status: str  # waiting, assigned, converged, failed, rolled-back
    previous: str | None
    since: float | None


@dataclass(frozen=True)
class Deployment:
    """One rollout of ``release`` ``version`` to ``group``, and where it is."""

    id: str
    release: str
    version: str
    group: str
    strategy: RolloutPlan
    criteria: Criteria
    status: Status
    wave: int
    wave_started: float | None
    converged_at: float | None
    reason: str | None
    created: float
    updated: float
    devices: tuple[DeploymentDevice, ...]
    bake: BakeProgress | None = None  # filled by Rollouts.get while the current wave bakes
    #: The model's gates of the current wave (accuracy figures used, a drift alarm), by Rollouts.get.
    gates: dict[str, Any] | None = None

    @property
    def waves(self) -> int:
        return 1 + max((d.wave for d in self.devices), default=-1)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for device in self.devices:
            out[device.status] = out.get(device.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "release": self.release,
            "version": self.version,
            "group": self.group,
            "strategy": self.strategy.model_dump(),
            "criteria": self.criteria.model_dump(),
            "criteria_text": self.criteria.describe(),
            "status": self.status,
            "wave": self.wave,
            "waves": self.waves,
            "wave_started": self.wave_started,
            "converged_at": self.converged_at,
            "reason": self.reason,
            "created": self.created,
            "updated": self.updated,
            "counts": self.counts(),
            "devices": [d.__dict__ for d in self.devices],
            "bake": None if self.bake is None else self.bake.to_dict(),
            "gates": self.gates,
        }


def describe(d: Deployment) -> str:
    """One line for logs and the CLI."""
    counts = json.dumps(d.counts(), sort_keys=True)
    return f"{d.id} {d.release} {d.version} → {d.group}: {d.status}, wave {d.wave + 1}/{d.waves} {counts}"
