"""What the coordinator of federated rounds keeps about the fleet and each running run.

:class:`FleetHooks` is what it needs of the controller it runs in;
:class:`RunState` what a run needs in memory (rebuilt from the store after
a restart). Shared by the coordinator and its helpers, so none imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fogline.federated._client import ClientTrainer
from fogline.federated._privacy import GaussianMechanism, PrivacyAccountant
from fogline.federated._simulate import Task
from fogline.federated.strategy import Strategy
from fogline.protocol import DeviceTopics, RunSpec

__all__ = ["CHUNK_BYTES", "SECAGG_SCALE", "FleetHooks", "RunState", "device_topic"]

#: Bytes a chunk of an update may hold, asked of devices.
CHUNK_BYTES = 64 * 1024
#: Under secure aggregation a device weighs its change by min(1, examples / this).
SECAGG_SCALE = 1000.0


@dataclass
class FleetHooks:
    """What the coordinator needs of the controller it runs in."""

    #: Publish ``payload`` on ``topic`` at QoS 1 (retained or not); queued while offline.
    publish: Callable[[str, bytes, bool], None]
    #: The ids of the online devices of a group.
    members: Callable[[str], list[str]]
    #: The newest release of a name: ``(version, folder of its files)``, or None.
    newest_release: Callable[[str], tuple[str, Path] | None]
    #: Sign a folder as a release: ``(folder, name, version, canary, provenance)``.
    create_release: Callable[[Path, str, str, str, dict[str, Any]], None]
    #: Deploy ``(name, version, group, spec)`` as a canary; returns the deployment id.
    deploy: Callable[[str, str, str, RunSpec], str]
    prefix: str = "fogline"
    #: Where a finished run writes its exported model (``work/<run>/``).
    work: Path = field(default_factory=lambda: Path("federated"))


@dataclass
class RunState:
    """What a run needs in memory; rebuilt from the store after a restart."""

    spec: RunSpec
    task: Task
    trainer: ClientTrainer
    strategy: Strategy
    accountant: PrivacyAccountant | None
    mechanism: GaussianMechanism | None
    waiting: str | None = None  # why the next round has not opened


def device_topic(hooks: FleetHooks, device: str, kind: str) -> str:
    """The device's topic of ``kind`` under the hooks' prefix."""
    return DeviceTopics(hooks.prefix, device).topic(kind)
