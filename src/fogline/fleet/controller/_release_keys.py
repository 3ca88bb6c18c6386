"""The controller's side of encrypted releases: devices' release keys, revocation, data keys, re-wrapping.

Each device sends its X25519 public key at enrolment (``release_key``); the
registry keeps it beside the device (schema v3 in :mod:`._schema`:
``devices.release_key``, ``devices.revoked_at``). An encrypted release
(``fogline release create --encrypt``) gets a random data key, wrapped for
every enrolled device that has a release key and is not revoked; the data
key itself is kept sealed with the controller's own key::

    DATA/keys/controller.key                    the controller key (64 hex digits, 0600)
    DATA/release-keys/<name>/<version>.key      a release's data key, sealed with it

A copy of ``DATA`` that holds ``keys/controller.key`` opens every data key and
so every encrypted release. The controller key may instead come from
elsewhere (:func:`controller_key_source`): ``--release-key-file FILE``, or
``$FOGLINE_CONTROLLER_KEY`` (hex), ``$FOGLINE_CONTROLLER_KEY_COMMAND`` (a
command printing it, e.g. from a secret store) or ``$FOGLINE_CONTROLLER_KEY_FILE``;
then no file in ``DATA`` unseals the data keys.

so that :meth:`ReleaseKeys.rewrap` can wrap it again: for a device enrolled
after the release was published, and without a device that was revoked.
Re-wrapping re-signs ``targets.json`` and needs the targets key in
``DATA/keys/targets.pem`` (the controller has it when it publishes offers
and federated models); without it, enrolments and revocations say so in the
log and ``fogline release rewrap`` does it where the key is.

A revoked device is left out of every key document written after its
revocation; it keeps whatever it has already installed (a key it has
unwrapped cannot be taken back) and it cannot enrol again under its id.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fogline.errors import ConfigError, FoglineError, KeyUnavailable
from fogline.fleet.controller._registry import Registry
from fogline.security import (
    AuditLog,
    DeviceKey,
    Envelope,
    KeySource,
    PublishedRelease,
    ReleaseRepository,
    init_device_key,
    new_data_key,
    parse_public_key,
    parse_version,
    read_key_file,
    seal,
    unseal,
)

log = logging.getLogger("fogline.controller")

CONTROLLER_KEY = Path("keys") / "controller.key"
#: The environment variables of the controller key: this, ``_COMMAND``, ``_FILE``.
CONTROLLER_KEY_ENV = "FOGLINE_CONTROLLER_KEY"
_PURPOSE = "release-data-key"


def controller_key_source(file: Path | None = None) -> KeySource:
    """Where the controller key comes from when not ``DATA/keys/controller.key``."""
    return KeySource(
        file=file, env=CONTROLLER_KEY_ENV, option="--release-key-file", what="controller key"
    )


class DeviceKeys:
    """The release keys and revocations of the devices in a :class:`Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def set_release_key(self, device_id: str, public_key: str) -> None:
        """Keep ``device_id``'s X25519 public key (base64, checked); ConfigError when malformed."""
        try:
            parse_public_key(public_key)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.registry.execute(
            "UPDATE devices SET release_key = ? WHERE id = ?", (public_key, device_id)
        )

    def revoke(self, device_id: str, *, now: float) -> bool:
        """Mark ``device_id`` revoked; False when it already was. ConfigError for an unknown id."""
        with self.registry.transaction() as conn:
            row = conn.execute(
                "SELECT revoked_at FROM devices WHERE id = ?", (device_id,)
            ).fetchone()
            if row is None:
                raise ConfigError(f"no device {device_id!r} in the registry")
            if row[0] is not None:
                return False
            conn.execute("UPDATE devices SET revoked_at = ? WHERE id = ?", (now, device_id))
        return True

    def revoked(self, device_id: str) -> float | None:
        """When ``device_id`` was revoked, or None."""
        rows = self.registry.query("SELECT revoked_at FROM devices WHERE id = ?", (device_id,))
        return rows[0][0] if rows else None

    def recipients(self) -> dict[str, bytes]:
        """Every enrolled, not revoked device with a release key: device id → raw public key."""
        rows = self.registry.query(
            "SELECT id, release_key FROM devices WHERE release_key IS NOT NULL "
            "AND revoked_at IS NULL AND enrolled_at IS NOT NULL ORDER BY id"
        )
        return {device_id: base64.b64decode(key) for device_id, key in rows}


class ReleaseKeys:
    """Publish encrypted releases and keep their key documents in step with the fleet.

    It is also what the API calls on enrolment and revocation
    (:class:`~fogline.fleet.controller._api.DeviceKeysApi`); ``audit`` gets
    ``device.revoked`` (the controller records ``device.enrolled``), ``revoke_login`` removes a
    revoked device's MQTT login.
    """

    def __init__(
        self,
        data: Path,
        registry: Registry,
        repository: ReleaseRepository,
        *,
        audit: AuditLog | None = None,
        revoke_login: Callable[[str], None] | None = None,
        key_source: KeySource | None = None,
    ) -> None:
        self.data = Path(data)
        self.key_source = key_source if key_source is not None else controller_key_source()
        self._key: DeviceKey | None = None
        self.registry = registry
        self.devices = DeviceKeys(registry)
        self.repository = repository
        self.audit = audit
        self.revoke_login = revoke_login
        self._lock = threading.Lock()

    # -- enrolment and revocation (the API) ---------------------------------------------

    def refuse_revoked(self, device_id: str) -> None:
        """ConfigError when ``device_id`` was revoked: it may not enrol again under that id."""
        if self.devices.revoked(device_id) is not None:
            raise ConfigError(f"device {device_id!r} was revoked; enrol the device under a new id")

    def enrolled(self, device_id: str, release_key: str | None) -> None:
        """After ``device_id`` enrolled: keep its release key, wrap encrypted releases for it."""
        if release_key is not None:
            self.devices.set_release_key(device_id, release_key)
        self._rewrap_after(f"the enrolment of {device_id}")

    def revoke(self, device_id: str) -> dict[str, Any]:
        """Revoke ``device_id``: left out of every key document from now on, its login removed."""
        first = self.devices.revoke(device_id, now=time.time())
        login = False
        if first and self.revoke_login is not None:
            try:
                self.revoke_login(device_id)
                login = True
            except ConfigError as exc:
                log.warning("revoking %s: its MQTT login: %s", device_id, exc)
        if first:
            self.registry.event("revoked", "revoked: no key to later releases", device_id=device_id)
            self._audit("device.revoked", device=device_id, login_removed=login)
        return {
            "device_id": device_id,
            "revoked_at": self.devices.revoked(device_id),
            "already": not first,
            "login_removed": login,
            "rewrapped": self._rewrap_after(f"the revocation of {device_id}"),
        }

    def _rewrap_after(self, why: str) -> list[str]:
        try:
            changed = self.rewrap()
        except FoglineError as exc:
            log.warning("after %s: encrypted releases not re-wrapped: %s", why, exc)
            return []
        if changed:
            log.info("after %s: re-wrapped the keys of %s", why, ", ".join(changed))
        return changed

    def _audit(self, event: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, **fields)

    # -- releases -----------------------------------------------------------------------

    def controller_key(self) -> DeviceKey:
        """The key that seals release data keys: from ``key_source`` when one is set, else
        ``DATA/keys/controller.key``, made (0600) the first time an encrypted release needs it.
        """
        if self._key is None:
            if self.key_source.available():
                self._key = self.key_source.load()  # a command runs once, not per release
            else:
                path = self.data / CONTROLLER_KEY
                self._key = init_device_key(path) if not path.exists() else read_key_file(path)
        return self._key

    def publish(
        self, folder: Path, name: str, version: str, key_path: Path, **options: Any
    ) -> PublishedRelease:
        """Create release ``name`` ``version`` from ``folder``, encrypted for the enrolled devices.

        ``options`` are those of :meth:`ReleaseRepository.create_release`. A
        fleet with no device that has sent a release key is refused: nobody
        could read the release.
        """
        recipients = self.devices.recipients()
        if not recipients:
            raise ConfigError(
                "no enrolled device has a release key, so nobody could read an encrypted "
                "release; enrol devices with this version of fogline first"
            )
        try:
            version = str(parse_version(version))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        data_key = new_data_key()
        # Kept before the release exists: a release whose data key was lost could never be
        # wrapped for another device. A release that is then refused leaves no key behind.
        key_file = self._store_data_key(name, version, data_key)
        try:
            return self.repository.create_release(
                folder, name, version, key_path, envelope=Envelope(data_key, recipients), **options
            )
        except BaseException:
            key_file.unlink(missing_ok=True)
            raise

    def rewrap(self, key_path: Path | None = None) -> list[str]:
        """Wrap every encrypted release's data key for exactly today's recipients.

        Returns ``"<name> <version>"`` of each key document that changed
        (devices enrolled since it was written, or revoked). ConfigError
        when the targets key or the controller key is missing.
        """
        key_path = key_path or self.repository.layout.key_file("targets")
        with self._lock:
            recipients = self.devices.recipients()
            stale = []
            for doc in self.repository.releases():
                keys = self.repository.keys_document(doc.name, doc.version)
                if keys is not None and set(keys.keys) != set(recipients):
                    stale.append(doc)
            if stale and not Path(key_path).is_file():
                raise ConfigError(
                    f"{key_path} is not here: encrypted releases cannot be re-wrapped for new or "
                    "revoked devices; run `fogline release rewrap --key TARGETS_KEY`"
                )
            for doc in stale:
                data_key = self._data_key(doc.name, doc.version)
                self.repository.rewrap(doc.name, doc.version, data_key, recipients, key_path)
        return [f"{doc.name} {doc.version}" for doc in stale]

    def wrapped_for(self) -> Mapping[str, list[str]]:
        """For each encrypted release (``"<name> <version>"``), the devices its keys are for."""
        found = {}
        for doc in self.repository.releases():
            keys = self.repository.keys_document(doc.name, doc.version)
            if keys is not None:
                found[f"{doc.name} {doc.version}"] = sorted(keys.keys)
        return found

    def _file(self, name: str, version: str) -> Path:
        return self.data / "release-keys" / name / f"{version}.key"

    def _store_data_key(self, name: str, version: str, data_key: bytes) -> Path:
        from fogline._files import atomic_write

        file = self._file(name, version)
        if file.exists():
            raise ConfigError(
                f"{file}: a data key for {name} {version} is already kept; give a higher --version"
            )
        blob = seal(data_key, self.controller_key(), purpose=_PURPOSE, aad=_aad(name, version))
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, blob, mode=0o600)
        return file

    def _data_key(self, name: str, version: str) -> bytes:
        file = self._file(name, version)
        try:
            blob = file.read_bytes()
        except FileNotFoundError:
            raise KeyUnavailable(
                f"{file}: the data key of encrypted release {name} {version} is not here, so it "
                "cannot be wrapped for other devices; publish it again under a new version"
            ) from None
        return unseal(blob, self.controller_key(), purpose=_PURPOSE, aad=_aad(name, version))


def _aad(name: str, version: str) -> bytes:
    return f"{name}\n{version}".encode()
