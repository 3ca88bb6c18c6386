"""Per-device MQTT passwords: :class:`Credentials` and the Mosquitto :class:`PasswordFile`.

Passwords are hashed by Mosquitto's own ``mosquitto_passwd``, never by
fogline. Concurrency: plain blocking calls; a lock keeps two threads from
rewriting the password file at once.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fogline._files import keep_private
from fogline.errors import ConfigError
from fogline.transport.mqtt._acl import check_user

#: Why there is no embedded broker, and what to do instead.
NO_MOSQUITTO = (
    "mosquitto is not installed (looked on PATH and in /usr/sbin); fogline's fleet speaks "
    "MQTT 5 and the embedded Python broker amqtt speaks only MQTT 3.1.1, so it cannot stand "
    "in: apt-get install mosquitto, or point --broker at an MQTT 5 broker (EMQX, HiveMQ)"
)


@dataclass(frozen=True)
class Credentials:
    """An MQTT user name and password; ``repr`` hides the password."""

    user: str
    password: str = field(repr=False)


class PasswordFile:
    """A Mosquitto password file, changed only through ``mosquitto_passwd``.

    The file is created empty with mode 0600. Passwords are handed to the
    tool on its standard input (it asks twice), not as ``-b`` arguments,
    so other local users cannot read them in ``ps``. A running broker sees
    a change after :meth:`LocalBroker.reload`.
    """

    def __init__(self, path: Path, *, tool: str | None = None) -> None:
        self.path = Path(path)
        found = tool or shutil.which("mosquitto_passwd")
        if found is None:
            raise ConfigError(f"mosquitto_passwd is not installed: {NO_MOSQUITTO}")
        self.tool = found
        self._lock = threading.Lock()
        if not self.path.exists():
            keep_private(self.path.parent)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def users(self) -> list[str]:
        """The user names in the file, in file order."""
        text = self.path.read_text()
        return [line.split(":", 1)[0] for line in text.splitlines() if ":" in line]

    def add(self, user: str) -> str:
        """Give ``user`` a new strong random password (replacing any old one) and return it."""
        password = secrets.token_urlsafe(24)
        self.set(user, password)
        return password

    def set(self, user: str, password: str) -> None:
        """Set ``user``'s password (hashed by ``mosquitto_passwd``)."""
        check_user(user)
        if not password or "\n" in password or "\r" in password:
            raise ConfigError(f"the password for {user!r} must be one non-empty line")
        self._run([self.path.as_posix(), user], f"{password}\n{password}\n")

    def remove(self, user: str) -> None:
        """Delete ``user``; a user who is not there is an error."""
        check_user(user)
        if user not in self.users():
            raise ConfigError(f"{user!r} is not in the password file {self.path}")
        self._run(["-D", self.path.as_posix(), user], "")

    def _run(self, args: list[str], stdin: str) -> None:
        with self._lock:
            done = subprocess.run(
                [self.tool, *args], input=stdin, capture_output=True, text=True, check=False
            )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise ConfigError(f"mosquitto_passwd failed on {self.path}: {' '.join(why)}")
