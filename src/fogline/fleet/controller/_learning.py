"""The controller's side of federated learning: the coordinator, loaded only when needed.

:class:`Learning` holds a :class:`fogline.federated.Coordinator` that it
creates on the first ``fogline fl start`` (or at start-up when
``DATA/federated.db`` shows a run to resume), so a controller that never
runs one never imports numpy. It gives the coordinator what it needs of the
controller (:class:`fogline.federated.FleetHooks`): the MQTT session to
publish rounds, the registry's online devices of a group, the signed
repository to read the newest release for the gate and to sign the
result, and the rollouts to deploy it as a canary.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from fogline.errors import FoglineError, ModelNotFound
from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._plan import RolloutPlan
from fogline.fleet.controller._registry import Registry
from fogline.fleet.controller._rollout import Rollouts
from fogline.protocol import ACTIVE_RUN_STATUSES, RunSpec
from fogline.store import database_errors, open_connection

if TYPE_CHECKING:
    from fogline.federated import Coordinator
    from fogline.security import DeviceKey, ReleaseRepository

log = logging.getLogger("fogline.controller")

#: The file that holds the federated runs, next to the registry.
DATABASE = "federated.db"


class Learning:
    """Federated runs of one controller; the coordinator is made on first use."""

    def __init__(
        self,
        data: Path,
        *,
        registry: Registry,
        rollouts: Rollouts,
        repository: ReleaseRepository,
        publish: Callable[[str, bytes, bool], None],
        prefix: str,
        wake: Callable[[], None],
        key: DeviceKey | None = None,
    ) -> None:
        self.data = Path(data)
        self.registry = registry
        self.rollouts = rollouts
        self.repository = repository
        self.publish = publish
        self.prefix = prefix
        self.wake = wake
        self.key = key  # the controller's database key: federated.db is encrypted with it
        self._coordinator: Coordinator | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._coordinator is not None

    def resume(self) -> None:
        """Load the coordinator when a run was going on before a restart (and only then)."""
        path = self.data / DATABASE
        if not path.exists():
            return
        statuses = ", ".join(f"'{s}'" for s in ACTIVE_RUN_STATUSES)
        try:
            conn = open_connection(path, key=self.key, timeout=10, what="federated runs")
            with contextlib.closing(conn):
                (active,) = conn.execute(
                    f"SELECT COUNT(*) FROM runs WHERE status IN ({statuses})"
                ).fetchone()
        except FoglineError:  # no key, another key: the run store says so when it opens
            active = 1
        except database_errors():
            active = 1  # unreadable here: the store opens it and says what is wrong
        if active:
            self.coordinator()

    def coordinator(self) -> Coordinator:
        with self._lock:
            if self._coordinator is None:
                from fogline.federated import Coordinator, FleetHooks, RunStore

                hooks = FleetHooks(
                    publish=self.publish,
                    members=self._members,
                    newest_release=self._newest_release,
                    create_release=self._create_release,
                    deploy=self._deploy,
                    prefix=self.prefix,
                    work=self.data / "federated",
                )
                store = RunStore(self.data / DATABASE, key=self.key)
                self._coordinator = Coordinator(store, hooks).start()
            return self._coordinator

    def submit(self, device_id: str, payload: bytes) -> None:
        """An ``fl-update`` message; dropped (and logged) when no run was ever started."""
        if self._coordinator is None:
            log.warning("dropped an fl-update from %s: no federated run", device_id)
            return
        self._coordinator.submit(device_id, payload)

    def stop(self) -> None:
        if self._coordinator is not None:
            self._coordinator.stop()
            self._coordinator.store.close()

    # -- what the API calls ----------------------------------------------------------------

    def start_run(self, spec: RunSpec) -> dict[str, Any]:
        return self.coordinator().start_run(spec)

    def stop_run(self, run_id: str) -> dict[str, Any]:
        return self.coordinator().stop_run(run_id)

    def runs(self) -> list[dict[str, Any]]:
        return self.coordinator().runs() if self._any() else []

    def run(self, run_id: str) -> dict[str, Any]:
        found = self.coordinator().describe(run_id) if self._any() else None
        if found is None:
            raise ModelNotFound(f"no federated run {run_id!r}")
        return found

    def _any(self) -> bool:
        """Whether a run was ever started here (else there is nothing to load numpy for)."""
        return self.loaded or (self.data / DATABASE).exists()

    # -- the hooks -------------------------------------------------------------------------

    def _members(self, group: str) -> list[str]:
        return [d.id for d in self.registry.devices(group) if d.online]

    def _newest_release(self, name: str) -> tuple[str, Path] | None:
        """The newest release called ``name``, its files copied out of the store for the gate."""
        documents = [d for d in self.repository.releases() if d.name == name]
        if not documents:
            return None
        newest = max(documents, key=lambda d: Version(d.version))
        folder = self.data / "federated" / "baseline" / f"{name}-{newest.version}"
        if not (folder / newest.entry).exists():
            shutil.rmtree(folder, ignore_errors=True)
            for item in newest.files:
                target = folder / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.repository.targets_dir / item.blob_path, target)
        return newest.version, folder / newest.entry

    def _create_release(
        self, folder: Path, name: str, version: str, canary: str, provenance: dict[str, Any]
    ) -> None:
        self.repository.create_release(
            folder,
            name,
            version,
            self.repository.layout.key_file("targets"),
            kind="model",
            canary=canary,
            description=f"federated run {provenance.get('federated_run')}",
            provenance=provenance,
        )

    def _deploy(self, name: str, version: str, group: str, spec: RunSpec) -> str:
        plan = RolloutPlan(kind="canary", bake_seconds=spec.canary_bake)
        criteria = Criteria(min_accuracy=spec.canary_min_accuracy)
        deployment = self.rollouts.create(name, version, group, strategy=plan, criteria=criteria)
        self.wake()
        return deployment.id
