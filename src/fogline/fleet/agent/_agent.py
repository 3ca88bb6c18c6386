"""The device agent: one MQTT session, a convergence loop, a supervisor, telemetry, FL rounds.

:class:`Agent` ties the parts together::

    broker ◄─► AgentSession (paho's thread) ──desired, command──► Converger (its thread)
                 ▲          ▲ state, presence                   │ fetch → check → activate
                 │          └───────────────────────────────────┤ (ReleaseInstaller)
                 │ telemetry                                    ▼
    OutboxSender (its thread) ◄── ResultStore ◄── TelemetryReporter ◄── Supervisor
                                  (outbox)         (its thread)         (children's metrics)

    AgentSession ──fl-round, fl-ack──► RoundParticipant (its thread) ──fl-update──► AgentSession
                                       trains the active learner release's task
    FinetuneScheduler (its thread) ──offer──► AgentSession ──offer-ack──► FinetuneScheduler
                       fine-tunes on a pipeline's captures (a learner's finetune:)

Its data folder ``DEV`` holds ``credentials.json`` and ``trust/root.json``
(:mod:`._enrol`), with mutual TLS its key and certificate in ``keys/`` and the
fleet's CA in ``trust/ca.pem`` (:mod:`._certificate`), the installer's releases (``releases/``, ``active/``,
``installed.json``, ``blobs/``, ``downloads/``), and the agent's own ``agent/`` folder: the
convergence state, the telemetry store and outbox, the children's pids and
logs, and ``agent/fl/`` (the update of a federated round, saved before it is
sent, and the rounds already finished). Everything there is written atomically, so the agent may be killed
at any moment and converges after a restart.

Concurrency: threads, because paho-mqtt calls back on its own network
thread and the rest waits on processes, files and compute (the installer
and the health check are blocking calls); each thread owns one role and they
meet only through thread-safe hand-overs (see each part).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

import fogline
from fogline._files import keep_private
from fogline.errors import ConfigError, FoglineError, Unreachable
from fogline.fleet.agent._certificate import device_tls
from fogline.fleet.agent._converge import Converger, Options
from fogline.fleet.agent._enrol import (
    TRUSTED_ROOT,
    DeviceLogin,
    enrol,
    install_root,
    read_credentials,
)
from fogline.fleet.agent._installer import ReleaseInstaller
from fogline.fleet.agent._keyring import DEVICE_KEY, Keyring
from fogline.fleet.agent._offer import FinetuneScheduler
from fogline.fleet.agent._own_store import open_own_store
from fogline.fleet.agent._privacy import DevicePrivacy
from fogline.fleet.agent._rounds import RESEND_AFTER, RoundCounters, RoundParticipant
from fogline.fleet.agent._session import DEFAULT_SESSION_EXPIRY, AgentSession
from fogline.fleet.agent._supervisor import DEVICE_ID_ENV, Supervisor
from fogline.fleet.agent._telemetry import (
    Scrape,
    TelemetryReporter,
    TelemetryTransport,
    metrics_between,
)
from fogline.power import DeferPolicy, Deferral
from fogline.protocol import DEFAULT_PREFIX, DeviceId, DeviceState, DeviceTopics, ReleaseMetrics
from fogline.security import (
    KEY_FILE_ENV,
    SENT_CHECKPOINT,
    AuditLog,
    Checkpoint,
    ClientTls,
    keep_sent_checkpoint,
)
from fogline.store import OutboxSender, ResultStore, Retention
from fogline.transport.mqtt import BrokerUrl, MqttMessage, MqttUrl

log = logging.getLogger("fogline.agent")

#: Results kept in the device's store: telemetry an older agent stored as results
#: (sent ones beyond this are deleted); reports are plain outbox messages now.
TELEMETRY_ROWS = 10_000


class AgentConfig(BaseModel):
    """How one agent runs: where the broker and controller are, its folder, its identity.

    ``credentials`` (a user name and password for the broker) win over the
    ``credentials.json`` that enrolment writes, which wins over a user and
    password in the broker URL. ``token`` enrols the device on first start;
    ``trusted_root`` installs an operator-given TUF root instead.

    >>> config = AgentConfig(
    ...     broker="mqtt://127.0.0.1:1883", controller="http://127.0.0.1:8080",
    ...     data="/var/lib/fogline", device_id="cam-7")
    >>> config.repository, config.broker.port
    ('http://127.0.0.1:8080/repository', 1883)
    >>> relative = AgentConfig.model_validate({**config.model_dump(), "data": "devices/cam-7"})
    >>> relative.data == Path.cwd() / "devices" / "cam-7"  # its children run elsewhere
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: BrokerUrl
    controller: str
    data: Path
    device_id: DeviceId
    prefix: str = Field(default=DEFAULT_PREFIX, min_length=1, pattern=r"^[^/+#\s]+$")
    telemetry_period: float = Field(default=10.0, gt=0)
    credentials: DeviceLogin | None = None
    token: str | None = Field(default=None, min_length=1)
    trusted_root: Path | None = None
    session_expiry: int = Field(default=DEFAULT_SESSION_EXPIRY, ge=1)
    serve_http_port: int | None = Field(default=None, ge=1, le=65535)
    retry_max: float = Field(default=60.0, gt=0)
    round_resend_seconds: float = Field(default=RESEND_AFTER, gt=0)
    #: Keep the agent's own store (telemetry.db) encrypted with the device key.
    encrypt_store: bool = False
    #: Mutual TLS given by the operator (an own CA): win over what enrolment stored.
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: When work that can wait (federated rounds, fine-tuning) may run: ``--defer FILE``.
    defer: DeferPolicy | None = None

    @field_validator("data")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # A child runs in its own folder under it: a relative path would point elsewhere there.
        return value.absolute()

    @field_validator("controller")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"the controller URL starts with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @property
    def repository(self) -> str:
        """Where the controller serves its signed releases."""
        return f"{self.controller}/repository"


class Agent:
    """One device's agent; ``start`` it (or use ``with``), ``stop`` it to drain and say offline.

    ``on_event`` receives one line per change worth telling an operator
    (phases, errors, connections, children).
    """

    def __init__(
        self, config: AgentConfig, *, on_event: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self.data = config.data
        self._on_event = on_event or (lambda line: None)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.installer: ReleaseInstaller | None = None
        self.session: AgentSession | None = None
        self.converger: Converger | None = None
        self.supervisor: Supervisor | None = None
        self.privacy: DevicePrivacy | None = None
        self.store: ResultStore | None = None
        self.reporter: TelemetryReporter | None = None
        self.sender: OutboxSender | None = None
        self.rounds: RoundParticipant | None = None
        self.offers: FinetuneScheduler | None = None
        # Signed with data/audit.key (made on first use); each telemetry report carries a checkpoint.
        self.audit = AuditLog.signed(self.data / "audit.jsonl")
        self._scrapes: dict[str, tuple[Scrape, float]] = {}
        #: The device's deferral policy applied (``config.defer``), and its carbon topic.
        self.deferral = None if config.defer is None else Deferral(config.defer)
        self._carbon: Any = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Enrol if needed, recover, run what is active, connect, and converge in the background."""
        if self._started:
            raise ConfigError("the agent is already started")
        self._started = True
        keep_private(self.data)  # its credentials, keys and state: 0700, ignored by git
        agent_dir = self.data / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        audit = self.audit
        made = not (self.data / DEVICE_KEY).exists()
        keyring = Keyring.load(self.data)  # the device key, made on first start
        if made:
            audit.record(
                "key.created", kind="device", fingerprint=keyring.device_key.fingerprint(),
                file=str(self.data / DEVICE_KEY),
            )  # fmt: skip
        url, prefix, repository, tls = self._identity()
        installer = self.installer = ReleaseInstaller(
            self.data, repository, tls=tls, keyring=keyring, device_id=self.config.device_id
        )
        topics = DeviceTopics(prefix, self.config.device_id)
        # The fleet's default egress policy: pipelines find it through their environment.
        self.privacy = DevicePrivacy(
            self.data, restart=self._restart_pipelines, on_event=self._event
        )
        self.supervisor = Supervisor(
            on_event=self._event,
            pid_file=agent_dir / "children.json",
            # A cluster node's presence names its device; pipelines read the fleet policy.
            # The device key file opens the sealed models of the releases it runs.
            env={
                DEVICE_ID_ENV: self.config.device_id,
                KEY_FILE_ENV: str((self.data / DEVICE_KEY).resolve()),
                **self.privacy.env(),
            },
        )
        self.converger = Converger(
            installer,
            self.supervisor,
            self.config.device_id,
            agent_dir / "state.json",
            self._publish_state,
            Options(
                run_dir=agent_dir / "run",
                logs_dir=agent_dir / "logs",
                serve_http_port=self.config.serve_http_port,
                retry_max=self.config.retry_max,
                on_event=self._event,
                audit=audit,
            ),
            agent_version=fogline.__version__,
            on_report=self._report_now,
        )
        self._subscribe_carbon(url)
        rounds = self.rounds = RoundParticipant(
            self.config.device_id,
            agent_dir / "fl",
            learners=self._learners,
            publish=self._publish_rounds,
            connected=lambda: self.session is not None and self.session.connected,
            update_topic=topics.topic("fl-update"),
            on_event=self._event,
            resend_after=self.config.round_resend_seconds,
            deferral=self.deferral,
        )
        offers = self.offers = FinetuneScheduler(
            self.config.device_id,
            agent_dir / "finetune",
            learners=self._learners,
            active=self._active,
            run_dir=agent_dir / "run",
            publish=self._publish_rounds,
            connected=lambda: self.session is not None and self.session.connected,
            offer_topic=topics.topic("offer"),
            on_event=self._event,
            key=keyring.device_key,  # opens a pipeline's encrypted store
            deferral=self.deferral,
        )
        self.session = AgentSession(
            url,
            topics,
            on_desired=self.converger.desire,
            on_command=self.converger.command,
            on_event=self._event,
            on_round=rounds.on_round,
            on_ack=rounds.on_ack,
            on_rounds_ready=rounds.on_ready,
            on_offer_ack=offers.on_ack,
            on_privacy=self.privacy.on_message,
            session_expiry=self.config.session_expiry,
        )
        self.store = open_own_store(
            agent_dir / "telemetry.db",
            key=keyring.device_key,
            encrypt=self.config.encrypt_store,
            audit=audit,
            retention=Retention(max_rows=TELEMETRY_ROWS),
        )
        self.reporter = TelemetryReporter(
            self.store,
            self.config.device_id,
            self._collect,
            topic=topics.telemetry,
            period=self.config.telemetry_period,
            pids=self.supervisor.pids,
            checkpoint=lambda: _as_dict(_sent(audit.checkpoint(), self.data / SENT_CHECKPOINT)),
        )
        self.sender = OutboxSender(
            self.store, TelemetryTransport(self.session), backoff_initial=1.0, backoff_max=10.0
        )
        self.converger.boot()
        self.session.start()
        self._thread("converge", self.converger.run)
        self._thread("telemetry", self.reporter.run)
        self._thread("outbox", self._deliver)
        self._thread("rounds", rounds.run)
        self._thread("finetune", offers.run)

    def stop(self) -> None:
        """Stop converging, stop the children, say offline, close the store."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.supervisor is not None:
            self.supervisor.close()
        if self.session is not None:
            self.session.close()
        if self._carbon is not None:
            self._carbon.close()
            self._carbon = None
        if self.store is not None:
            self.store.close()
        if self.installer is not None:
            self.installer.close()

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def error(self) -> str | None:
        """Why the broker refuses this device (credentials, ACL), if it does."""
        return None if self.session is None else self.session.error

    def state(self) -> DeviceState | None:
        return None if self.converger is None else self.converger.state()

    def round_counters(self) -> RoundCounters | None:
        """Bytes, rounds and chunks of federated runs since the agent started."""
        return None if self.rounds is None else self.rounds.counters()

    # -- parts -----------------------------------------------------------------------

    def _identity(self) -> tuple[MqttUrl, str, str, ClientTls | None]:
        """The broker URL with this device's credentials, the topic prefix, where releases
        come from, and the device's TLS identity (mutual TLS)."""
        config = self.config
        credentials = config.credentials or read_credentials(self.data)
        if credentials is None and config.token is not None:
            before = device_tls(self.data, ca=config.tls_ca)  # checks the controller's HTTPS
            credentials = enrol(
                config.controller, self.data, config.device_id, config.token, tls=before
            )
            self._event(f"enrolled at {config.controller} as {credentials.username or 'anonymous'}")
            self.audit.record(
                "device.enrolled", controller=config.controller, device=config.device_id
            )
        root = self.data / TRUSTED_ROOT
        if config.trusted_root is not None and not root.exists():
            try:
                given = config.trusted_root.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"--trusted-root {config.trusted_root}: {exc.strerror or exc}"
                ) from exc
            install_root(self.data, given)
            self._event(f"installed the trusted root from {config.trusted_root}")
        if not root.exists():
            raise ConfigError(
                f"{root} is missing: enrol the device with --token, or give the controller's "
                "root.json with --trusted-root"
            )
        url = config.broker
        prefix = config.prefix
        repository = config.repository
        if credentials is not None:
            if credentials.username is not None:
                url = dataclasses.replace(
                    url, username=credentials.username, password=credentials.password
                )
            prefix = credentials.prefix
            repository = credentials.repository or repository
        tls = device_tls(self.data, ca=config.tls_ca, cert=config.tls_cert, key=config.tls_key)
        if url.tls and url.client_tls is None and tls is not None:
            url = dataclasses.replace(url, client_tls=tls)
        return url, prefix, repository, tls

    def _subscribe_carbon(self, url: MqttUrl) -> None:
        """Follow the deferral policy's carbon topic: on its ``url``, else on the fleet's broker
        with this device's login (its ACL must let the device read the topic)."""
        deferral = self.deferral
        if deferral is None or deferral.feed is None or deferral.policy.carbon is None:
            return
        from fogline.pipeline import CarbonSubscription, carbon_broker  # the data plane's

        broker = carbon_broker(deferral.policy, url)
        topic = deferral.policy.carbon.topic
        assert broker is not None and topic is not None
        self._carbon = CarbonSubscription(broker, topic, deferral.feed)
        self._event(f"deferral: following the carbon intensity on {topic} ({broker.host})")

    def _thread(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(
            target=target, args=(self._stop,), name=f"fogline-agent-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _event(self, line: str) -> None:
        log.info("%s", line)
        self._on_event(line)

    def _deliver(self, stop: threading.Event) -> None:
        """Send the outbox while connected; offline, wait (no failures, no backoff piled up)."""
        assert self.sender is not None and self.session is not None
        while not stop.is_set():
            delivered = 0
            if self.session.connected:
                try:
                    delivered = self.sender.deliver_once()
                except Exception:  # the store failing must not end delivery for good
                    log.exception("telemetry delivery failed")
            if delivered < self.sender.batch:
                stop.wait(self.sender.poll_interval)

    def _restart_pipelines(self) -> None:
        """Start the pipeline children again, so each runs under the new fleet policy."""
        if self.converger is None or self.supervisor is None:
            return
        for name, kind in sorted(self.converger.kinds().items()):
            if kind.name in ("pipeline", "learner"):
                self.supervisor.restart(name)

    def _learners(self) -> list[Path]:
        """The entries (``learner.yaml``) of the learner releases that run now."""
        assert self.converger is not None and self.installer is not None
        entries = []
        for name in sorted(self.converger.versions()):
            try:
                release = self.installer.active(name)
            except (OSError, FoglineError):  # swapped or pruned under us: not a learner now
                continue
            if release is not None and release.document.kind == "learner":
                entries.append(release.entry)
        return entries

    def _active(self, name: str) -> tuple[str, Path] | None:
        """The version and folder of the active release ``name``, if any."""
        assert self.installer is not None
        try:
            release = self.installer.active(name)
        except (OSError, FoglineError):
            return None
        return None if release is None else (release.version, release.path)

    def _publish_rounds(self, messages: Sequence[MqttMessage], timeout: float) -> None:
        if self.session is None:
            raise Unreachable("the agent's session has not started")
        self.session.publish_and_wait(messages, timeout)

    def _publish_state(self, state: DeviceState) -> None:
        if self.session is not None:
            self.session.publish_state(state)

    def _report_now(self) -> None:
        if self.reporter is not None:
            self.reporter.report_once()

    def _collect(self) -> tuple[Mapping[str, str], Mapping[str, ReleaseMetrics]]:
        """The versions that run and what each release measured since the last report."""
        assert self.converger is not None and self.supervisor is not None
        versions = self.converger.versions()
        kinds = self.converger.kinds()
        now = time.monotonic()
        metrics: dict[str, ReleaseMetrics] = {}
        for name in versions:
            measured = ReleaseMetrics()
            kind = kinds.get(name)
            text = None if kind is None else self.supervisor.metrics_text(name)
            if kind is not None and text is not None:
                scrape = kind.scrape(text)
                before = self._scrapes.get(name)
                seconds = now - before[1] if before else self.config.telemetry_period
                measured = metrics_between(before[0] if before else None, scrape, seconds)
                self._scrapes[name] = (scrape, now)
            accuracy = self.converger.accuracy(name)
            if accuracy is not None:
                measured = measured.model_copy(update={"accuracy": accuracy})
            ran_on = self.converger.device(name)
            if ran_on is not None:
                update = {"device": ran_on[0], "device_fallback": ran_on[1]}
                measured = measured.model_copy(update=update)
            metrics[name] = measured
        return versions, metrics


def _sent(point: Checkpoint | None, copy: Path) -> Checkpoint | None:
    """``point``, which goes out with a report; a copy is kept outside the log (``copy``), so a
    log later cut after it is found on the device too (``fogline audit verify`` reads it)."""
    if point is not None:
        keep_sent_checkpoint(copy, point)
    return point


def _as_dict(point: Checkpoint | None) -> dict[str, Any] | None:
    return None if point is None else point.as_dict()
