"""The controller: one MQTT session, one worker thread, the registry, rollouts and the HTTP API.

Concurrency: paho's network thread only queues what arrives; one worker
thread takes it off the queue in batches, stores a batch in one transaction
(:meth:`Registry.ingest`) and advances the rollouts; uvicorn serves the API
and the dashboard on a thread of its own. Desired states are published
retained at QoS 1, and all of them again after every reconnect, so a broker
that restarted without its store still ends up with each device's latest.

The stored releases are checked against their signed metadata
(:class:`~fogline.security.IntegrityCheck`): a file before it is first served
or deployed, and every one again by an auditor thread at start and every
``verify_seconds``, so bytes that rotted on this disk are refused here, with
the file named, rather than by each device after its download.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from fogline._files import atomic_output
from fogline.errors import ConfigError, ModelNotFound
from fogline.fleet.controller._api import ApiContext, application
from fogline.fleet.controller._audit_book import CheckpointBook, LoginFailures
from fogline.fleet.controller._clusters import CLUSTER_FILTERS, ClusterFeed, Clusters
from fogline.fleet.controller._devices import DeviceListener, serve_in_thread
from fogline.fleet.controller._learning import Learning
from fogline.fleet.controller._offers import MAX_BYTES, Offers
from fogline.fleet.controller._privacy import FleetPrivacyDefault
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._release_keys import ReleaseKeys
from fogline.fleet.controller._rollout import Rollouts
from fogline.protocol import (
    DEFAULT_PREFIX,
    DesiredState,
    DeviceState,
    DeviceTopics,
    Presence,
    Telemetry,
    device_filter,
    parse_device_topic,
)
from fogline.security import AuditLog
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    Topic,
    connect_properties,
    new_client,
    publish_queued,
    received,
    stop_loop,
    to_url,
)

if TYPE_CHECKING:
    from fogline.security import DeviceKey, KeySource

log = logging.getLogger("fogline.controller")

#: How long the broker keeps the controller's session (and its QoS 1 backlog) while it is away.
SESSION_EXPIRY = 7 * 24 * 3600


@dataclass
class ControllerStats:
    """Counters for logs, the benchmark and ``/api/health``."""

    received: int = 0
    rejected: int = 0
    published: int = 0
    batches: int = 0
    connected: bool = False
    reconnects: int = 0


@dataclass
class ControllerConfig:
    """Where the controller keeps its data, which broker it uses, where it listens."""

    data: Path
    broker: MqttUrl | str
    prefix: str = DEFAULT_PREFIX
    host: str = "127.0.0.1"
    http_port: int = 8080  # 0 picks a free port
    token: str | None = None  # None: read or create data/admin.token
    tick_seconds: float = 0.5
    telemetry_days: float = 30.0
    client_id: str = "fogline-controller"
    #: The broker URL handed to enrolled devices (default: the controller's, without credentials).
    device_broker: str | None = None
    #: Makes MQTT credentials for a newly enrolled device (the local Mosquitto's password file).
    credentials: Callable[[str], str | None] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Mutual TLS: the CA folder (``fogline ca init``) that issues each enrolling device a
    #: certificate; with ``tls_cert`` a device listener on ``device_port`` (0: a free one)
    #: serves releases only to clients presenting one (see :mod:`._devices`).
    ca: Path | None = None
    device_port: int = 8443
    #: How often every stored release is hashed again (rot that keeps the mtime); None: never.
    verify_seconds: float | None = 3600.0
    extra_routes: list[Any] = field(default_factory=list)
    #: The device groups whose fine-tuned candidates are taken (``--accept-offers``).
    offer_groups: tuple[str, ...] = ()
    offer_max_bytes: int = MAX_BYTES
    #: The canary's live-accuracy floor for an accepted offer that names none.
    offer_min_accuracy: float | None = None
    #: The broker edge clusters use when not the fleet's (a site's data broker), also read.
    cluster_broker: MqttUrl | str | None = None
    #: The key its SQLite files (registry, federated runs) are encrypted with; None: plain.
    db_key: DeviceKey | None = None
    #: Removes a revoked device's MQTT login (the local Mosquitto's password file); None: none.
    revoke_login: Callable[[str], None] | None = None
    #: Where the key that seals release data keys comes from; None: ``$FOGLINE_CONTROLLER_KEY*``
    #: when set, else ``data/keys/controller.key`` (see :mod:`._release_keys`).
    release_key: KeySource | None = None


def operator_token(data: Path) -> str:
    """The operator's bearer token, kept in ``data/admin.token`` (made once, mode 0600)."""
    path = Path(data) / "admin.token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    with atomic_output(path, mode=None) as tmp:
        tmp.write_text(token + "\n")
    path.chmod(0o600)
    return token


class Controller:
    """Start with :meth:`start` (or ``with``); :meth:`stop` ends the session and the API."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.url = to_url(config.broker)
        self.data = Path(config.data)
        self.data.mkdir(parents=True, exist_ok=True)
        from fogline.security import IntegrityCheck, ReleaseRepository

        self.repository = ReleaseRepository(self.data)  # refuses a folder without keys
        self.integrity = IntegrityCheck(self.repository)
        self.token = config.token if config.token is not None else operator_token(self.data)
        # The controller's own audit log (signed with data/audit.key) and its devices' checkpoints.
        self.audit = AuditLog.signed(self.data / "audit.jsonl")
        self.checkpoints = CheckpointBook(self.data / "audit-checkpoints", self.audit)
        self.login_failures = LoginFailures(self.audit)
        self.registry = Registry(self.data / "registry.db", key=config.db_key)
        self.release_keys = ReleaseKeys(
            self.data, self.registry, self.repository, audit=self.audit,
            revoke_login=config.revoke_login, key_source=config.release_key,
        )  # fmt: skip
        self.rollouts = Rollouts(self.registry, self._publish, releases=self._release_exists)
        self.learning = Learning(
            self.data,
            registry=self.registry,
            rollouts=self.rollouts,
            repository=self.repository,
            publish=self._publish_raw,
            prefix=config.prefix,
            wake=self.wake,
            key=config.db_key,
        )
        self.offers = Offers(
            self.data,
            registry=self.registry,
            rollouts=self.rollouts,
            repository=self.repository,
            publish=self._publish_raw,
            prefix=config.prefix,
            wake=self.wake,
            groups=config.offer_groups,
            max_bytes=config.offer_max_bytes,
            min_accuracy=config.offer_min_accuracy,
        )
        self.stats = ControllerStats()
        self.clusters = Clusters()
        #: The fleet's default egress policy, published retained to every device.
        self.privacy = FleetPrivacyDefault(self.data, config.prefix, self._publish_raw)
        self.cluster_feed: ClusterFeed | None = None
        if config.cluster_broker is not None:
            self.cluster_feed = ClusterFeed(
                config.cluster_broker, self.clusters, f"{config.client_id}-clusters"
            )
        self._inbox: queue.Queue[tuple[str, bytes, dict[str, str]]] = queue.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._auditor: threading.Thread | None = None
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self.http_port: int | None = None
        self.devices: DeviceListener | None = None
        if config.ca is not None:
            self.devices = DeviceListener(config.ca, self.data / "audit.jsonl")
        self._client = self._new_client()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Controller:
        self._start_http(timeout)
        self._worker = threading.Thread(target=self._work, name="fogline-controller", daemon=True)
        self._worker.start()
        if self.config.verify_seconds is not None:
            self._auditor = threading.Thread(
                target=self._audit, name="fogline-controller-audit", daemon=True
            )
            self._auditor.start()
        try:
            self._client.connect_async(
                self.url.host, self.url.port, keepalive=30, clean_start=False,
                properties=connect_properties(SESSION_EXPIRY),
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            self.stop()
            raise ConfigError(f"broker {self.url}: {exc}") from exc
        self._client.loop_start()
        if self.cluster_feed is not None:
            self.cluster_feed.start()
        self.learning.resume()  # a federated run that was going on before a restart
        return self

    def wait_connected(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.connected:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(Exception):
            self._client.disconnect()
        stop_loop(self._client)
        if self.cluster_feed is not None:
            self.cluster_feed.stop()
        for thread in (self._worker, self._auditor):
            if thread is not None:
                thread.join(30)
        if self._http is not None:
            self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(30)
        if self.devices is not None:
            self.devices.stop()
        self.learning.stop()
        self.offers.stop()
        self.registry.close()

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self.http_port}"

    def wake(self) -> None:
        """Advance the rollouts now rather than at the next tick."""
        self._wake.set()

    # -- releases (the signed repository in data/repository) --------------------------------

    def releases(self) -> list[dict[str, Any]]:
        """Every release's document plus ``damaged``: None, or which stored files do not match.

        What is known without reading blobs (sizes, earlier hashes); a release
        whose document itself is damaged is left out (the auditor logs it).
        """
        listed = []
        for check in self.integrity.known():
            if check.document is not None:
                listed.append({**check.document.model_dump(mode="json"), "damaged": check.reason})
        return listed

    def _release_exists(self, name: str, version: str) -> bool:
        """Whether ``name`` ``version`` can be deployed; ConfigError naming its damaged files."""
        try:
            [check] = self.integrity.verify(name, version)  # hashes what is not verified yet
        except ModelNotFound:
            return False
        if check.version != version:
            return False  # "v1.0" names release 1.0, but a deployment keeps the exact string
        if not check.ok:
            raise ConfigError(
                f"release {name} {version} is damaged on the controller and will not be "
                f"deployed: {check.reason}; restore the file from a backup or publish the "
                "release again under a new version"
            )
        return True

    def _audit(self) -> None:
        """Hash every stored release again, at start and every ``verify_seconds``."""
        interval = self.config.verify_seconds
        assert interval is not None
        while not self._stopping.is_set():
            try:
                for check in self.integrity.audit(stop=self._stopping):
                    for damage in check.damage:
                        log.error("%s: not served or deployed until it is restored", damage)
            except Exception:  # the auditor must outlive one unreadable repository state
                log.exception("controller release audit")
            if self._stopping.wait(interval):
                return

    def trusted_root(self) -> str:
        path = self.data / "repository" / "metadata" / "root.json"
        if not path.exists():
            raise ConfigError(f"{path} is missing: run 'fogline keys init --data {self.data}'")
        return path.read_text()

    def _enrol(self, device_id: str) -> dict[str, Any]:
        password = None if self.config.credentials is None else self.config.credentials(device_id)
        self.audit.record("device.enrolled", device=device_id, mqtt_password=password is not None)
        broker = self.config.device_broker or str(
            MqttUrl(self.url.host, self.url.port, self.url.tls)
        )
        return {
            "device_id": device_id,
            "username": device_id if password is not None else None,
            "password": password,
            "broker": broker,
            "prefix": self.config.prefix,
            "trusted_root": self.trusted_root(),
        }

    # -- HTTP -------------------------------------------------------------------------------

    def _start_http(self, timeout: float) -> None:
        import uvicorn

        from fogline.fleet.controller._artifacts import repository_routes
        from fogline.fleet.controller._dashboard import dashboard_routes

        ctx = ApiContext(
            registry=self.registry,
            rollouts=self.rollouts,
            releases=self.releases,
            enrol=self._enrol,
            token=self.token,
            wake=self.wake,
            learning=self.learning,
            clusters=self.clusters,
            certify=None if self.devices is None else self.devices.certify,
            login_failed=self.login_failures.failed,
            audit_checkpoint=self.checkpoints.kept,
            privacy=self.privacy,
            keys=self.release_keys,
        )
        releases = repository_routes(self.repository, check=self.integrity)
        if self.devices is not None and self.config.tls_cert and self.config.tls_key:
            # Mutual TLS: releases only on the device listener, to a device's certificate.
            self.devices.start(
                releases,
                host=self.config.host,
                port=self.config.device_port,
                cert=self.config.tls_cert,
                key=self.config.tls_key,
                timeout=timeout,
            )
            releases = []
        app = application(
            ctx, extra=[*releases, *self.config.extra_routes], dashboard=dashboard_routes()
        )
        config = uvicorn.Config(
            app,
            host=self.config.host,
            port=self.config.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=None if self.config.tls_cert is None else str(self.config.tls_cert),
            ssl_keyfile=None if self.config.tls_key is None else str(self.config.tls_key),
        )
        self._http, self._http_thread, self.http_port = serve_in_thread(config, "http", timeout)

    # -- MQTT -------------------------------------------------------------------------------

    def _new_client(self) -> paho.Client:
        client = new_client(self.url, client_id=self.config.client_id, timeout=30.0)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused the controller: %s", self.url, reason)
            return
        prefix = self.config.prefix
        kinds = ("state", "presence", "telemetry", "fl-update", "offer")
        client.subscribe(
            [(device_filter(prefix, kind), 1) for kind in kinds]
            + [(topic, 1) for topic in CLUSTER_FILTERS]  # edge clusters' nodes and dispatchers
        )
        if self.stats.reconnects:
            log.info("reconnected to %s", self.url)
        self.stats.connected = True
        self.stats.reconnects += 1
        self._publish(list(self.registry.all_desired().items()))
        self.privacy.publish()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.stats.connected = False
        if not self._stopping.is_set():
            log.warning("lost the broker %s (%s); reconnecting", self.url, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            got = received(message)
        except ValueError:
            self.stats.rejected += 1  # a topic that is not UTF-8 is no device's
            return
        self._inbox.put((got.topic.value, got.payload, dict(got.user_properties)))

    def _publish(self, changed: list[tuple[str, DesiredState]]) -> None:
        """Publish each desired state retained at QoS 1; paho queues it while offline.

        A state paho refuses (its queue is full) is logged and not counted:
        every desired state is published again on the next connect.
        """
        for device_id, desired in changed:
            topic = Topic(DeviceTopics(self.config.prefix, device_id).desired)
            message = MqttMessage(topic, desired.model_dump_json().encode(), 1, retain=True)
            if publish_queued(self._client, message):
                self.stats.published += 1

    def _publish_raw(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish one message at QoS 1 (federated rounds); paho queues it while offline."""
        if publish_queued(self._client, MqttMessage(Topic(topic), payload, 1, retain=retain)):
            self.stats.published += 1

    # -- the worker -------------------------------------------------------------------------

    def _work(self) -> None:
        last_tick = 0.0
        last_retention = last_resign = 0.0
        while not self._stopping.is_set():
            batch = self._take(timeout=self.config.tick_seconds)
            try:
                if batch:
                    self.registry.ingest(batch)
                    self.stats.batches += 1
                    if batch.telemetry:
                        self.checkpoints.keep_reports(report for _, report in batch.telemetry)
                now = time.monotonic()
                if batch or self._wake.is_set() or now - last_tick >= self.config.tick_seconds:
                    self._wake.clear()
                    self.rollouts.tick()
                    last_tick = now
                if now - last_resign > 600 or last_resign == 0.0:
                    # Devices refuse a stale timestamp (freeze attack): keep it fresh.
                    if self.repository.refresh_timestamp():
                        log.info("re-signed the repository's snapshot and timestamp")
                    last_resign = now
                if now - last_retention > 3600:
                    self.registry.apply_retention(max_age=self.config.telemetry_days * 86400)
                    self.audit.checkpoint()  # hourly, and only when events came since
                    last_retention = now
            except Exception:  # the loop must survive one bad batch; it is logged whole
                log.exception("controller worker")

    def _take(self, timeout: float) -> Inbox:
        inbox = Inbox()
        try:
            first = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return inbox
        self._parse(first, inbox)
        for _ in range(5000):
            try:
                self._parse(self._inbox.get_nowait(), inbox)
            except queue.Empty:
                break
        return inbox

    def _parse(self, item: tuple[str, bytes, dict[str, str]], inbox: Inbox) -> None:
        topic, payload, props = item
        self.stats.received += 1
        if self.clusters.receive(topic, payload):
            return
        parsed = parse_device_topic(self.config.prefix, topic)
        if parsed is None:
            return
        device_id, kind = parsed
        try:
            if kind == "state":
                if not payload:
                    return  # a cleared retained state
                state = DeviceState.model_validate_json(payload)
                _same_device(device_id, state.device_id)
                inbox.states.append(state)
            elif kind == "presence":
                if payload:
                    inbox.presence.append((device_id, Presence.model_validate_json(payload)))
            elif kind == "telemetry":
                key, report = _telemetry(payload, props)
                _same_device(device_id, report.device_id)
                inbox.telemetry.append((key, report))
            elif kind == "fl-update":
                self.learning.submit(device_id, payload)
            elif kind == "offer":
                self.offers.submit(device_id, payload)
        except (ValidationError, ValueError) as exc:
            self.stats.rejected += 1
            log.warning("dropped a %s message from %s: %s", kind, device_id, _short(exc))


def _same_device(topic_device: str, body_device: str) -> None:
    if topic_device != body_device:
        raise ValueError(f"the body names device {body_device!r}, the topic {topic_device!r}")


def _telemetry(payload: bytes, props: dict[str, str]) -> tuple[str, Telemetry]:
    """A report (the protocol's :class:`Telemetry` body) and its idempotency key."""
    try:
        body = json.loads(payload)
    except RecursionError:  # json's C scanner has a depth limit; a payload can exceed it
        raise ValueError("the report is JSON nested too deeply to read") from None
    # Compatibility, for one release only: an agent from before plain outbox
    # messages sent its report inside the pipeline's result envelope
    # ({"key", "result_id", "result": {"outputs": <Telemetry>}}), and such
    # reports may still sit in an old agent's outbox during a rollout.
    # Remove this branch in the release after the one that added it.
    if isinstance(body, dict) and "result" in body and "key" in body and "device_id" not in body:
        result = body["result"]
        outputs = result.get("outputs") if isinstance(result, dict) else None
        return str(body["key"]), Telemetry.model_validate(outputs)
    report = Telemetry.model_validate(body)
    key = props.get("idempotency-key") or f"{report.device_id}:{report.sequence}:{report.time}"
    return key, report


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) < 300 else text[:300] + "…"
