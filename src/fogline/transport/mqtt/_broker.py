"""A local Mosquitto for a single-host fleet: config, per-device passwords and the ACL.

fogline writes no message routing of its own: the broker is the distributed
engine. For tests, CI and small fleets that broker is Mosquitto, which this
module configures and runs; a large fleet points ``--broker`` at an EMQX or
HiveMQ cluster and loads the same rules (:func:`acl_lines`) into it.

Security is the broker's: every device logs in with its device id as MQTT
user name and its own password (:class:`PasswordFile`, in :mod:`._passwords`)
or, with mutual TLS (``identity_from_certificate``), with a client
certificate whose subject is its device id, and the ACL (:func:`acl_lines`, in :mod:`._acl`) lets it touch only its own
topics; this module writes both where Mosquitto reads them.

There is no embedded Python fallback: the only one at hand, amqtt 0.12,
speaks MQTT 3.1.1 and refuses the MQTT 5 CONNECT every fogline client sends
("unsupported protocol version"), so without Mosquitto :class:`LocalBroker`
fails with a message naming ``apt-get install mosquitto``.

Concurrency: plain blocking calls; the broker is a child process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fogline._files import keep_private
from fogline.errors import ConfigError, TransportError
from fogline.security import ClientTls
from fogline.transport.mqtt._acl import (
    DEFAULT_PREFIX,
    DEVICE_READS,
    DEVICE_WRITES,
    acl_lines,
    acl_users,
    check_device_user,
)
from fogline.transport.mqtt._passwords import NO_MOSQUITTO, Credentials, PasswordFile
from fogline.transport.mqtt._values import MqttUrl


class BrokerConfig(BaseModel):
    """What the local Mosquitto is told: one listener, auth, persistence, TLS, logs.

    With ``auth`` the folder holds ``passwords`` (0600) and ``acl`` and
    anonymous clients are refused; without it anyone on the listener may do
    anything (a trial on loopback only). Persistence in the folder keeps
    persistent sessions and retained desired state across a restart.

    >>> config = BrokerConfig(folder=Path("/srv/broker"), port=1884, auth=True)
    >>> [line for line in config.lines() if line.startswith(("listener", "allow_anon"))]
    ['allow_anonymous false', 'listener 1884 127.0.0.1']
    """

    model_config = ConfigDict(frozen=True)

    folder: Path
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    auth: bool = True
    prefix: str = DEFAULT_PREFIX
    controller_user: str = "controller"
    device_reads: tuple[str, ...] = DEVICE_READS
    device_writes: tuple[str, ...] = DEVICE_WRITES
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_certificate: bool = False
    # Mutual TLS: the client certificate's CN is the MQTT user name (whatever the client
    # sends), so the ACL's %u patterns bind each device to its own topics by certificate.
    identity_from_certificate: bool = False
    # Messages a broker keeps per offline persistent session: the controller's
    # session queues every device's reports while it is away.
    max_queued_messages: int = Field(default=100_000, ge=0)
    autosave_interval: int = Field(default=60, ge=1)  # seconds; SIGTERM saves too
    # Mosquitto lets any user connect with any client id, so without this one
    # device can take over (and with clean start wipe) another's session. On,
    # the client id is the user name: one connection per device and controller.
    # It needs auth (Mosquitto refuses clients without a user name under it).
    username_as_client_id: bool = True
    extra: tuple[str, ...] = ()  # appended verbatim, after the listener

    @property
    def config_file(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.folder / "mosquitto.log"

    @property
    def password_file(self) -> Path | None:
        return self.folder / "passwords" if self.auth else None

    @property
    def acl_file(self) -> Path | None:
        return self.folder / "acl" if self.auth else None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def check(self) -> None:
        """Raise ConfigError for a TLS option without its partner or a file that is not there."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        if self.require_certificate and self.tls_ca is None:
            raise ConfigError("require_certificate needs the CA that signs client certificates")
        if self.identity_from_certificate and not self.require_certificate:
            raise ConfigError(
                "identity_from_certificate needs require_certificate (--mtls sets both)"
            )
        for what, path in (("certificate", self.tls_cert), ("key", self.tls_key)):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS {what} file {path} does not exist")
        if self.tls_ca is not None and not self.tls_ca.exists():
            raise ConfigError(f"TLS CA file {self.tls_ca} does not exist")
        for line in (str(self.folder), *self.extra):
            if "\n" in line:
                raise ConfigError(f"broker config value {line!r} holds a line break")

    def lines(self) -> list[str]:
        """The lines of ``mosquitto.conf``: global options, then the listener and its TLS."""
        folder = self.folder.absolute()
        lines = [
            "# Generated by fogline: rewritten on every start.",
            f"allow_anonymous {'false' if self.auth else 'true'}",
        ]
        if self.password_file is not None and self.acl_file is not None:
            lines += [
                f"password_file {self.password_file.absolute()}",
                f"acl_file {self.acl_file.absolute()}",
            ]
        lines += [
            "persistence true",
            f"persistence_location {folder}/",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            # Small packets (PUBACKs, a cluster's credits) go out at once, not ~40 ms later.
            "set_tcp_nodelay true",
            f"log_dest file {folder / 'mosquitto.log'}",
            *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto" and cannot write the folder
        lines.append(f"listener {self.port} {self.host}")
        if self.username_as_client_id and self.auth:
            lines.append("use_username_as_clientid true")
        if self.tls_cert is not None and self.tls_key is not None:
            lines += [f"certfile {self.tls_cert.absolute()}", f"keyfile {self.tls_key.absolute()}"]
            if self.tls_ca is not None:
                key = "capath" if self.tls_ca.is_dir() else "cafile"
                lines.append(f"{key} {self.tls_ca.absolute()}")
            lines.append(f"require_certificate {'true' if self.require_certificate else 'false'}")
            if self.identity_from_certificate:
                lines.append("use_identity_as_username true")
        return [*lines, *self.extra]


def mosquitto_binary() -> str | None:
    """Where the ``mosquitto`` executable is (Debian puts it in /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class LocalBroker:
    """One Mosquitto process run from a :class:`BrokerConfig`; a context manager.

    ``start()`` writes the config (and with auth an empty password file and
    the ACL), runs ``mosquitto -c`` and returns once the port accepts
    connections; ``reload()`` makes it re-read passwords and ACL (SIGHUP);
    ``stop()`` ends it with SIGTERM so it saves sessions and retained messages.
    """

    def __init__(self, config: BrokerConfig, *, binary: str | None = None) -> None:
        found = binary or mosquitto_binary()
        if found is None or not os.access(found, os.X_OK):
            raise ConfigError(NO_MOSQUITTO)
        self.binary = found
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._passwords: PasswordFile | None = None

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def passwords(self) -> PasswordFile:
        """The password file (created on first use); ConfigError without auth."""
        if self.config.password_file is None:
            raise ConfigError("this broker runs without auth: it has no password file")
        if self._passwords is None:
            self._passwords = PasswordFile(self.config.password_file)
        return self._passwords

    def write_files(self) -> None:
        """Write ``mosquitto.conf`` and, with auth, the ACL and an empty password file."""
        config = self.config
        config.check()
        keep_private(config.folder)  # passwords: 0700, ignored by git
        if config.acl_file is not None:
            _ = self.passwords  # creates the file Mosquitto refuses to start without
            config.acl_file.write_text(
                "\n".join(
                    acl_lines(
                        config.prefix,
                        config.controller_user,
                        reads=config.device_reads,
                        writes=config.device_writes,
                    )
                )
                + "\n"
            )
        config.config_file.write_text("\n".join(config.lines()) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Run the broker and return once its port accepts connections."""
        if self.running:
            return
        self.write_files()
        _check_port_free(self.config.host, self.config.port)
        log_start = self._log_size()
        self._process = subprocess.Popen(
            # Absolute: reload_broker() recognises the process by this argument.
            [self.binary, "-c", str(self.config.config_file.absolute())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it cleanly
        )
        _pid_file(self.config.folder).write_text(f"{self._process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                self._process = None
                _pid_file(self.config.folder).unlink(missing_ok=True)
                why = (stderr + self._log_tail(log_start)).strip().replace("\n", "; ")
                raise ConfigError(f"mosquitto exited at start: {why}")
            try:
                socket.create_connection(
                    (_dial_host(self.config.host), self.config.port), 0.5
                ).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TransportError(f"mosquitto did not listen on {self.config.port} within {timeout} s")

    def reload(self, timeout: float = 10.0) -> None:
        """Make the running broker re-read its password file and ACL (SIGHUP), and wait for it.

        Mosquitto logs "Reloading config" and then reloads before it reads
        from any socket again, so a client that connects after this returns
        meets the new files. Clients already connected stay connected.
        """
        if self.pid is not None:
            _reload(self.pid, self.config.log_file, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, so it saves its sessions); kill it if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        _pid_file(self.config.folder).unlink(missing_ok=True)
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()

    def add_device(self, device_id: str) -> Credentials:
        """Credentials for a device (user name = device id); a running broker reloads."""
        return self._add(check_device_user(device_id, [self.config.controller_user]))

    def add_controller(self) -> Credentials:
        """New credentials for the controller user; a running broker reloads."""
        return self._add(self.config.controller_user)

    def _add(self, user: str) -> Credentials:
        password = self.passwords.add(user)
        self.reload()
        return Credentials(user, password)

    def _log_text(self) -> str:
        log = self.config.log_file
        return log.read_text(errors="replace") if log.exists() else ""

    def _log_size(self) -> int:
        log = self.config.log_file
        return log.stat().st_size if log.exists() else 0

    def _log_tail(self, start: int) -> str:
        return self._log_text().encode()[start:].decode(errors="replace")

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def device_credentials(
    folder: Path, *, check: Callable[[str], object] | None = None
) -> Callable[[str], str]:
    """For a controller beside a ``fogline broker``: make a device's MQTT password.

    The returned function adds the device to the password file in ``folder``
    and, when that broker runs (in any process), makes it reload; it returns
    the new password. With no broker running the next start reads the file.
    ``check`` is the caller's rule for a device id (``ValueError`` says why
    not); an id is always a valid MQTT user name.
    """
    passwords = PasswordFile(folder / "passwords")
    lock = threading.Lock()

    def make(device_id: str) -> str:
        try:
            if check is not None:
                check(device_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        check_device_user(device_id, acl_users(folder / "acl"))
        with lock:
            password = passwords.add(device_id)
            reload_broker(folder)
        return password

    return make


def reload_broker(folder: Path, timeout: float = 10.0) -> bool:
    """Make the Mosquitto that a :class:`LocalBroker` runs from ``folder`` reload; False if none runs.

    The pid comes from ``mosquitto.pid`` in the folder and is only signalled
    when that process is a ``mosquitto`` reading this folder's config, so a
    stale file never signals a stranger.
    """
    try:
        pid = int(_pid_file(folder).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    config = str((folder / "mosquitto.conf").absolute()).encode()
    if not cmdline or not cmdline[0].endswith(b"mosquitto") or config not in cmdline:
        return False
    _reload(pid, folder / "mosquitto.log", timeout)
    return True


def _pid_file(folder: Path) -> Path:
    return folder / "mosquitto.pid"


def _reload(pid: int, log_file: Path, timeout: float) -> None:
    """SIGHUP ``pid`` and wait until it logged that it reloads (it finishes before reading again)."""

    def reloads() -> int:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        return text.count("Reloading config")

    before = reloads()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise TransportError(f"mosquitto (pid {pid}) is not running") from exc
    deadline = time.monotonic() + timeout
    while reloads() <= before:
        if time.monotonic() > deadline:
            raise TransportError(f"mosquitto (pid {pid}) did not reload within {timeout} s")
        time.sleep(0.02)


def _dial_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _check_port_free(host: str, port: int) -> None:
    """ConfigError naming the port when something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Mosquitto does
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is in use (another broker?): choose another port"
                ) from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def controller_url(folder: Path) -> MqttUrl:
    """The controller's broker URL with its credentials, from a ``fogline broker`` folder.

    With mutual TLS the file also names the CA and the controller's client
    certificate and key (``"tls": {"ca", "cert", "key"}``).
    """
    path = Path(folder) / "controller.json"
    try:
        kept = json.loads(path.read_text())
        url = MqttUrl.parse(str(kept["url"]))
        tls = kept.get("tls")
        client_tls = (
            None if tls is None else ClientTls(*(Path(tls[k]) for k in ("ca", "cert", "key")))
        )
        return MqttUrl(
            url.host, url.port, url.tls, str(kept["user"]), str(kept["password"]), client_tls
        )
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is missing: start 'fogline broker --data {folder}' first, or pass --broker URL"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a controller credentials file ({exc})") from exc
