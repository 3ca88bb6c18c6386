"""The fleet's default egress policy: kept in ``fleet-data/privacy.json``, published retained.

The operator sets it (``fogline fleet policy set FILE``, ``PUT /api/privacy``);
the controller validates it with the same :class:`~fogline.security.PrivacyPolicy`
a device enforces, writes it atomically, records ``policy.changed`` in
``fleet-data/audit.jsonl`` and publishes it retained on
``{prefix}/fleet/privacy`` (again on every connect). Each agent writes it
where its pipelines read it (``$FOGLINE_FLEET_POLICY``), and each pipeline
runs under ``stricter(fleet default, its own)``: a device can only tighten it.

Concurrency: :meth:`FleetPrivacyDefault.set` may be called from the API's
threads; a lock keeps one write and one publish at a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fogline._files import atomic_write
from fogline.errors import ConfigError
from fogline.protocol import FleetPrivacy, privacy_topic
from fogline.security import AuditLog, parse_policy

#: The file in the controller's data folder that holds the fleet default.
PRIVACY_FILE = "privacy.json"


class FleetPrivacyDefault:
    """The fleet default policy: :meth:`show`, :meth:`set`, :meth:`publish`."""

    def __init__(
        self, data: Path, prefix: str, publish: Callable[[str, bytes, bool], None]
    ) -> None:
        self.path = data / PRIVACY_FILE
        self.audit = AuditLog(data / "audit.jsonl")
        self.topic = privacy_topic(prefix)
        self._publish = publish
        self._lock = threading.Lock()

    def show(self) -> dict[str, Any]:
        """``{"policy": {...} | None, "set_at": seconds | None}`` as stored."""
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"policy": None, "set_at": None}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: cannot read the fleet policy: {exc}") from exc
        return {"policy": body.get("policy"), "set_at": body.get("set_at")}

    def set(self, data: object, *, by: str = "operator") -> dict[str, Any]:
        """Validate and keep ``data`` (``None`` clears the default); publish it; audit the change."""
        policy = None if data is None else parse_policy(data).model_dump(mode="json")
        with self._lock:
            before = self.show()["policy"]
            body = {"policy": policy, "set_at": time.time()}
            atomic_write(self.path, json.dumps(body, sort_keys=True, indent=2).encode())
            if before != policy:
                self.audit.record(
                    "policy.changed", scope="fleet", by=by, policy=policy, previous=before
                )
            self.publish()
        return body

    def publish(self) -> None:
        """Publish the current default retained (on connect, and after each change)."""
        shown = self.show()
        if shown["set_at"] is None:
            return  # never set: nothing retained, devices run their own policies
        message = FleetPrivacy(policy=shown["policy"], set_at=shown["set_at"])
        self._publish(self.topic, message.model_dump_json().encode(), True)


__all__ = ["PRIVACY_FILE", "FleetPrivacyDefault"]
