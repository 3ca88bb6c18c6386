"""A real Mosquitto broker on loopback for tests: generated config, stop and start on one port.

:class:`Mosquitto` is fogline's own :class:`~fogline.transport.mqtt.LocalBroker`
without auth: a listener on 127.0.0.1 and a free port, anonymous access,
persistence in its folder so QoS 1 sessions outlive a restart. It runs
``mosquitto -c <config>`` and waits until the port accepts connections.
``stop()`` and ``start()`` again keep the port, which is what a broker-down
test needs. ``extra_config`` lines are appended verbatim (a password file or
an ACL, for the fleet tests).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

from fogline.errors import FoglineError
from fogline.testing import free_port
from fogline.transport.mqtt import BrokerConfig, LocalBroker, mosquitto_binary

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]


class Mosquitto:
    """One broker process; ``url`` stays the same across ``stop()`` / ``start()``."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise FileNotFoundError("mosquitto is not installed")
        self.binary = found
        self.folder = Path(folder)
        self.port = port or free_port()
        settings = BrokerConfig(
            folder=self.folder, port=self.port, auth=False, extra=tuple(extra_config)
        )
        self.config = settings.config_file
        self.log = settings.log_file
        self._broker = LocalBroker(settings, binary=found)
        self._broker.write_files()

    @property
    def url(self) -> str:
        return self._broker.url

    @property
    def running(self) -> bool:
        return self._broker.running

    def start(self, timeout: float = 10.0) -> None:
        """Run the broker and return once its port accepts connections."""
        try:
            self._broker.start(timeout)
        except FoglineError as exc:
            raise RuntimeError(f"{exc}\n{self.log_text()}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, so it saves its sessions); kill it if it hangs."""
        self._broker.stop(timeout)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker go on (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        pid = self._broker.pid
        if pid is not None:
            os.kill(pid, sig)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
