"""A fleet simulator: N lightweight devices in one process, each with its own MQTT session.

One asyncio loop drives every device's paho client through paho's
external-loop hooks (a reader and a writer per socket, ``loop_misc`` once a
second), so a thousand sessions need no thousand threads. Each device does
what the real agent does on the wire — persistent session, last will,
retained presence and state, QoS 1 — and, when told to, installs the release
for real through :class:`~fogline.fleet.agent._installer.ReleaseInstaller`
(TUF-verified download from the controller, atomic activation) on a small
thread pool. What it leaves out is the part that costs a real device its own
CPU: the health check's inference and the running pipeline. Telemetry is a
synthetic report every ``telemetry_seconds``. Clients come from
:func:`fogline.transport.mqtt.new_client`, so ``mqtts://`` is TLS here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from fogline.protocol import (
    DesiredState,
    DeviceState,
    DeviceTopics,
    Presence,
    ReleaseMetrics,
    ReleaseStatus,
    Telemetry,
)
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    Topic,
    connect_properties,
    new_client,
    publish_queued,
)

log = logging.getLogger("fogline.simulate")

Installer = Callable[[str, str, str, bool], None]  # device id, release, version, rollback


@dataclass
class SimulationStats:
    connected: int = 0
    desired_received: int = 0
    installs: int = 0
    install_failures: int = 0
    published: int = 0
    errors: list[str] = field(default_factory=list)


class _Loop:
    """Drives one paho client from an asyncio loop (paho's external-loop interface)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: paho.Client) -> None:
        self.loop = loop
        self.client = client
        self.misc: asyncio.Task[None] | None = None
        client.on_socket_open = self._open
        client.on_socket_close = self._close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing

    def _open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)
        self.misc = self.loop.create_task(self._misc())
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)

    def _close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _want_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _done_writing(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    async def _misc(self) -> None:
        while self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)


class SimulatedDevice:
    """One device: its MQTT session, its releases, its reports."""

    def __init__(self, fleet: SimulatedFleet, device_id: str) -> None:
        self.fleet = fleet
        self.device_id = device_id
        self.topics = DeviceTopics(fleet.prefix, device_id)
        self.releases: dict[str, ReleaseStatus] = {}
        self.generation = 0
        self.sequence = 0
        self.busy = False
        self.pending: DesiredState | None = None
        url = fleet.url
        if device_id in fleet.passwords:  # enrolled: its own user, as the ACL expects
            url = MqttUrl(url.host, url.port, url.tls, device_id, fleet.passwords[device_id])
        client = new_client(url, client_id=device_id, timeout=5.0)  # paho's default timeout
        client.will_set(
            self.topics.presence, Presence(online=False).model_dump_json(), qos=1, retain=True
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self.client = client
        self.driver = _Loop(fleet.loop, client)

    def connect(self) -> None:
        self.client.connect(
            self.fleet.url.host, self.fleet.url.port, keepalive=60, clean_start=False,
            properties=connect_properties(3600),
        )  # fmt: skip

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self.fleet.stats.errors.append(f"{self.device_id}: connect refused: {reason}")
            return
        client.subscribe([(self.topics.desired, 1), (self.topics.command, 1)])
        self._publish(self.topics.presence, Presence(online=True).model_dump_json(), retain=True)
        self.report()
        self.fleet.stats.connected += 1

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic != self.topics.desired or not message.payload:
            return
        try:
            desired = DesiredState.model_validate_json(message.payload)
        except ValidationError:
            return
        if desired.generation <= self.generation:
            return
        self.fleet.stats.desired_received += 1
        if self.busy:
            self.pending = desired
            return
        self.fleet.loop.create_task(self.converge(desired))

    def _publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        publish_queued(self.client, MqttMessage(Topic(topic), payload.encode(), 1, retain))
        self.fleet.stats.published += 1

    def report(self) -> None:
        state = DeviceState(
            device_id=self.device_id, generation=self.generation, releases=self.releases
        )
        self._publish(self.topics.state, state.model_dump_json(), retain=True)

    def telemetry(self) -> None:
        self.sequence += 1
        versions = {name: s.version for name, s in self.releases.items() if s.version}
        report = Telemetry(
            device_id=self.device_id,
            time=time.time(),
            sequence=self.sequence,
            versions=versions,
            metrics={
                name: ReleaseMetrics(
                    items=300,
                    items_per_second=30.0,
                    p50_ms=4.0 + random.random(),
                    p99_ms=9.0 + 2 * random.random(),
                    errors=0,
                    drops=0,
                )
                for name in versions
            },
            cpu_percent=20.0 + 10 * random.random(),
            memory_mb=120.0,
            period=self.fleet.telemetry_seconds,
        )
        self._publish(self.topics.telemetry, report.model_dump_json())

    def _set(self, name: str, **changes: Any) -> None:
        old = self.releases.get(name, ReleaseStatus())
        self.releases[name] = old.model_copy(update={**changes, "since": time.time()})

    async def converge(self, desired: DesiredState) -> None:
        self.busy = True
        try:
            while True:
                self.generation = desired.generation
                for name, version in desired.releases.items():
                    current = self.releases.get(name)
                    if current is not None and current.version == version:
                        continue
                    self._set(name, target=version, phase="downloading", error=None)
                    self.report()
                    rollback = desired.rollback.get(name) == version
                    try:
                        await self.fleet.install(self.device_id, name, version, rollback)
                    except Exception as exc:  # reported to the controller, as the agent does
                        self.fleet.stats.install_failures += 1
                        self._set(name, phase="failed", error=str(exc)[:300])
                    else:
                        self.fleet.stats.installs += 1
                        self._set(
                            name, version=version, target=None,
                            phase="rolled-back" if rollback else "active",
                        )  # fmt: skip
                        if rollback:
                            self._set(name, phase="active")
                    self.report()
                for name in set(self.releases) - set(desired.releases):
                    del self.releases[name]
                    self.report()
                if self.pending is None or self.pending.generation <= desired.generation:
                    self.pending = None
                    break
                desired, self.pending = self.pending, None
        finally:
            self.busy = False


class SimulatedFleet:
    """Start N devices on one event loop; ``install`` does each device's installation."""

    def __init__(
        self,
        count: int,
        broker: MqttUrl,
        *,
        prefix: str = "fogline",
        install: Installer | None = None,
        workers: int = 8,
        telemetry_seconds: float = 10.0,
        id_format: str = "sim-{:04d}",
        passwords: Mapping[str, str] | None = None,
    ) -> None:
        self.count = count
        self.url = broker
        self.prefix = prefix
        self._install = install
        self.telemetry_seconds = telemetry_seconds
        self.passwords = dict(passwords or {})
        self.stats = SimulationStats()
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fogline-sim")
        self.devices = [SimulatedDevice(self, id_format.format(i)) for i in range(count)]
        self._stopping = False

    async def install(self, device_id: str, name: str, version: str, rollback: bool) -> None:
        if self._install is None:
            await asyncio.sleep(0.01)
            return
        await self.loop.run_in_executor(
            self.pool, self._install, device_id, name, version, rollback
        )

    async def start(self) -> None:
        for device in self.devices:
            device.connect()
            await asyncio.sleep(0)  # let the socket callbacks register
        self.loop.create_task(self._telemetry())

    async def _telemetry(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.telemetry_seconds / max(1, self.count))
            # Spread the reports over the period: one device at a time, round robin.
            for device in self.devices:
                if self._stopping:
                    return
                device.telemetry()
                await asyncio.sleep(self.telemetry_seconds / max(1, self.count))

    async def stop(self) -> None:
        self._stopping = True
        for device in self.devices:
            with contextlib.suppress(Exception):
                device.client.disconnect()
        await asyncio.sleep(0.2)
        self.pool.shutdown(wait=False, cancel_futures=True)
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def versions(self, release: str) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for device in self.devices:
            status = device.releases.get(release)
            version = None if status is None else status.version
            out[version] = out.get(version, 0) + 1
        return out


def installer_factory(root: Path, repository_url: str, trusted_root: Path) -> Installer:
    """Real installs: one device data folder under ``root`` per device, TUF-verified downloads."""
    from fogline.fleet.agent import ReleaseInstaller

    installers: dict[str, ReleaseInstaller] = {}

    def install(device_id: str, name: str, version: str, rollback: bool) -> None:
        installer = installers.get(device_id)
        if installer is None:
            installer = ReleaseInstaller(
                root / device_id, repository_url, trusted_root=trusted_root
            )
            installers[device_id] = installer
        staged = installer.fetch(name, version, allow_downgrade_to_previous=rollback)
        installer.activate(staged)

    return install
