"""The fleet default egress policy on a device: kept where the agent's pipelines read it.

The controller's retained :class:`~fogline.protocol.FleetPrivacy` message
arrives on every connect and after every change. The agent validates the
policy (a malformed one is logged and ignored: the last good one stays), writes
it to ``DATA/agent/fleet-policy.json`` (``null`` when the fleet has none),
records ``policy.changed`` in ``DATA/audit.jsonl`` when it differs, and
restarts its pipeline children, which read the file named by
``$FOGLINE_FLEET_POLICY`` when they start and run under ``stricter(fleet
default, their own)``. A pipeline whose own policy loosens the default is
refused by its check and its release fails like any other that cannot start.

Telemetry carries no result fields (counts, latencies, drift scores, accuracy
figures, resource use): nothing in it is a field a policy could hold back.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from fogline._files import atomic_write
from fogline.errors import PolicyError
from fogline.protocol import FleetPrivacy
from fogline.security import FLEET_POLICY_ENV, AuditLog, parse_policy, policy_json

log = logging.getLogger("fogline.agent")

#: Where the agent keeps the fleet default, under its data folder.
FLEET_POLICY_FILE = Path("agent") / "fleet-policy.json"


class DevicePrivacy:
    """Receives the fleet default and hands it to the pipelines the agent runs."""

    def __init__(
        self,
        data: Path,
        *,
        restart: Callable[[], None],
        on_event: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.path = data / FLEET_POLICY_FILE
        self.audit = AuditLog(data / "audit.jsonl")
        self._restart = restart
        self._event = on_event
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # the children's env names it from the start
            atomic_write(self.path, b"null", mode=0o600)

    def env(self) -> dict[str, str]:
        """What a child's environment needs to find the fleet default."""
        return {FLEET_POLICY_ENV: str(self.path)}

    def on_message(self, payload: bytes) -> None:
        """A ``FleetPrivacy`` body (empty: the retained message was cleared)."""
        try:
            message = FleetPrivacy.model_validate_json(payload) if payload else FleetPrivacy()
            policy = None if message.policy is None else parse_policy(message.policy)
        except (ValidationError, PolicyError, ValueError) as exc:
            log.warning("ignored a fleet policy that does not validate: %s", exc)
            self._event(f"ignored a malformed fleet policy: {exc}")
            return
        text = policy_json(policy)
        with self._lock:
            try:
                before = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                before = "null"
            if before == text:
                return
            atomic_write(self.path, text.encode(), mode=0o600)
            self.audit.record(
                "policy.changed",
                scope="fleet-default",
                policy=json.loads(text),
                previous=json.loads(before),
            )
        self._event("fleet policy changed: restarting pipelines under it")
        self._restart()


__all__ = ["FLEET_POLICY_FILE", "DevicePrivacy"]
