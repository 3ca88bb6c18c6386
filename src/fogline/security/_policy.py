"""The egress policy: what may leave a device, and the merge that lets a device only tighten it.

A pipeline's ``privacy:`` section and the fleet-wide default the controller
keeps are both a :class:`PrivacyPolicy`::

    privacy:
      fields:
        allow: [label, score]     # only these result fields leave (absent: every field)
        drop: [position]          # never leave (drop wins over allow and hash)
        hash: [item_id]           # leave as a keyed hash, never in the clear (if let out at all)
      raw: never                  # raw inputs: never | captured-only | allowed
      redact: [faces]             # blur faces in any image that is let out
      destinations: [mqtt, http, zmq, shell, outbox, telemetry]   # what it covers
                                  # (mqtt: sinks and a cluster node's done messages;
                                  # telemetry carries no result field: nothing to cover)

Every key left out is the loosest value (a policy says what it forbids), so
``PrivacyPolicy()`` forbids nothing and a pipeline without ``privacy:`` runs as
it always did. The fields named are a result's outputs plus ``position`` and
``item_id``; the result's identity (source, sequence, captured_at, model,
model_version) always goes, since topics, dedupe and ordering need it.

This module needs pydantic only, so the controller (which loads neither numpy
nor the pipeline) validates and merges policies with the same code the device
enforces them with. Where the policy is enforced: :mod:`fogline.pipeline._egress`.

>>> fleet = PrivacyPolicy.model_validate({"raw": "never", "fields": {"drop": ["position"]}})
>>> own = PrivacyPolicy.model_validate({"fields": {"allow": ["label", "score"]}})
>>> merged = merge_fleet(fleet, own)
>>> merged.raw, merged.fields.allow, merged.fields.drop
('never', ('label', 'score'), ('position',))
>>> merge_fleet(fleet, PrivacyPolicy.model_validate({"raw": "allowed"}))
Traceback (most recent call last):
...
fogline.errors.PolicyError: privacy.raw: 'allowed' is looser than the fleet default 'never'; a device may only tighten it
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fogline.errors import ConfigError, PolicyError

if TYPE_CHECKING:
    from fogline.security._sealing import KeySource

Raw = Literal["never", "captured-only", "allowed"]
Destination = Literal["mqtt", "http", "zmq", "shell", "outbox", "telemetry"]
Redaction = Literal["faces"]

#: The environment variable that names the fleet default's file, for a pipeline the agent runs.
FLEET_POLICY_ENV = "FOGLINE_FLEET_POLICY"
#: What raw inputs may do, loosest last.
RAW_LEVELS: tuple[str, ...] = ("never", "captured-only", "allowed")
#: The ways out a policy can cover; ``jsonl`` and ``stdout`` sinks and the store stay on the device.
#: ``mqtt`` also covers a cluster node's ``done`` messages. ``telemetry`` is accepted for forward
#: compatibility, but the agent's telemetry carries no result field (counts, latencies, drift and
#: accuracy figures, CPU, memory), so there is nothing in it to gate: see :data:`NO_RESULT_FIELDS`.
DESTINATIONS: tuple[Destination, ...] = ("mqtt", "http", "zmq", "shell", "outbox", "telemetry")
#: Destinations that carry no result field: listed in ``destinations``, but nothing to cover.
NO_RESULT_FIELDS: frozenset[str] = frozenset({"telemetry"})
#: Redactions there are.
REDACTIONS: tuple[str, ...] = ("faces",)
#: The fields every message keeps: what the result is, not what it says.
IDENTITY: frozenset[str] = frozenset(
    {"source", "sequence", "captured_at", "model", "model_version", "sync"}
)
#: The HKDF purpose of the hashing key derived from the device key.
HASH_PURPOSE = "fogline egress hash v1"


def _names(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(sorted(dict.fromkeys(str(v) for v in value)))
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldRules(_Strict):
    """``fields:``: which result fields may leave, which never, which only hashed."""

    allow: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    hash: tuple[str, ...] = ()

    _sorted = field_validator("allow", "drop", "hash", mode="before")(_names)

    @field_validator("allow", "drop", "hash")
    @classmethod
    def _no_identity(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        kept = sorted(IDENTITY.intersection(value or ()))
        if kept:
            raise ValueError(
                f"{kept[0]!r} is part of every result's identity and always leaves "
                "(source, sequence, captured_at, model, model_version)"
            )
        return value


class PrivacyPolicy(_Strict):
    """What may leave the device (see the module docstring for the YAML).

    >>> PrivacyPolicy().leaves("image"), PrivacyPolicy(raw="never").raw_rank
    (True, 0)
    >>> p = PrivacyPolicy.model_validate({"fields": {"allow": ["label"], "hash": ["label"]}})
    >>> p.leaves("label"), p.hashed("label"), p.leaves("score")
    (True, True, False)
    """

    fields: FieldRules = FieldRules()
    raw: Raw = "allowed"
    redact: tuple[Redaction, ...] = ()
    destinations: tuple[Destination, ...] = tuple(sorted(DESTINATIONS))

    _sorted = field_validator("redact", "destinations", mode="before")(_names)

    @property
    def raw_rank(self) -> int:
        """0 for ``never`` up to 2 for ``allowed``: a higher rank lets more out."""
        return RAW_LEVELS.index(self.raw)

    def covers(self, destination: str) -> bool:
        return destination in self.destinations

    def leaves(self, name: str) -> bool:
        """Whether result field ``name`` may leave (in the clear or hashed)."""
        if name in IDENTITY:
            return True
        if name in self.fields.drop:
            return False
        allow = self.fields.allow
        return allow is None or name in allow

    def hashed(self, name: str) -> bool:
        return name in self.fields.hash and self.leaves(name)

    @property
    def restricts_fields(self) -> bool:
        f = self.fields
        return f.allow is not None or bool(f.drop) or bool(f.hash)


def stricter(a: PrivacyPolicy, b: PrivacyPolicy) -> PrivacyPolicy:
    """The policy that forbids what either forbids: commutative, associative, idempotent.

    Allowed fields intersect (absent means all), dropped and hashed ones unite,
    the more restrictive ``raw`` wins, redactions and covered destinations unite.

    >>> a = PrivacyPolicy.model_validate({"fields": {"allow": ["a", "b"]}, "raw": "allowed"})
    >>> b = PrivacyPolicy.model_validate({"fields": {"allow": ["b", "c"]}, "redact": ["faces"]})
    >>> m = stricter(a, b)
    >>> m.fields.allow, m.raw, m.redact
    (('b',), 'allowed', ('faces',))
    """
    if a.fields.allow is None:
        allow = b.fields.allow
    elif b.fields.allow is None:
        allow = a.fields.allow
    else:
        allow = tuple(sorted(set(a.fields.allow) & set(b.fields.allow)))
    fields = FieldRules(
        allow=allow,
        drop=tuple(sorted(set(a.fields.drop) | set(b.fields.drop))),
        hash=tuple(sorted(set(a.fields.hash) | set(b.fields.hash))),
    )
    return PrivacyPolicy(
        fields=fields,
        raw=RAW_LEVELS[min(a.raw_rank, b.raw_rank)],  # type: ignore[arg-type]
        redact=tuple(sorted(set(a.redact) | set(b.redact))),
        destinations=tuple(sorted(set(a.destinations) | set(b.destinations))),
    )


def loosenings(fleet: PrivacyPolicy, own: PrivacyPolicy) -> list[str]:
    """Where ``own`` says, in so many words, that something may leave which ``fleet`` forbids.

    A key ``own`` leaves out is not a loosening (it takes the fleet's); one it
    writes looser is. Each entry names the key: ``privacy.raw: ...``.
    """
    problems: list[str] = []
    said = own.model_fields_set
    if "raw" in said and own.raw_rank > fleet.raw_rank:
        problems.append(
            f"privacy.raw: {own.raw!r} is looser than the fleet default {fleet.raw!r}; "
            "a device may only tighten it"
        )
    if "destinations" in said:
        for gone in sorted(set(fleet.destinations) - set(own.destinations)):
            problems.append(
                f"privacy.destinations: leaves out {gone!r}, which the fleet default covers; "
                "a device may only add destinations"
            )
    for name in own.fields.allow or ():
        if name in fleet.fields.drop:
            problems.append(
                f"privacy.fields.allow: {name!r} is dropped by the fleet default; "
                "a device may only tighten it"
            )
        elif fleet.fields.allow is not None and name not in fleet.fields.allow:
            problems.append(
                f"privacy.fields.allow: {name!r} is not allowed by the fleet default "
                f"(it allows {', '.join(fleet.fields.allow) or 'nothing'})"
            )
    return problems


def merge_fleet(fleet: PrivacyPolicy | None, own: PrivacyPolicy | None) -> PrivacyPolicy | None:
    """The effective policy: ``stricter(fleet, own)``; :class:`PolicyError` if ``own`` loosens."""
    if fleet is None:
        return own
    if own is None:
        return fleet
    problems = loosenings(fleet, own)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PolicyError(problems[0] + more)
    return stricter(fleet, own)


def parse_policy(data: object, origin: str = "privacy") -> PrivacyPolicy:
    """Validate a policy from parsed YAML/JSON; :class:`PolicyError` names the key."""
    if data is None:
        return PrivacyPolicy()
    try:
        return PrivacyPolicy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        where = f"{origin}.{where}" if where else origin
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise PolicyError(f"{where}: {message}") from exc


def read_policy(path: str | Path) -> PrivacyPolicy:
    """A policy file (YAML or JSON; a top-level ``privacy:`` key is taken off)."""
    policy = _read(Path(path))
    return PrivacyPolicy() if policy is None else policy


def fleet_policy_from_env() -> PrivacyPolicy | None:
    """The fleet default the agent handed this process (``$FOGLINE_FLEET_POLICY``), if any.

    The agent's file holds ``null`` while the fleet has no default: then None.
    """
    path = os.environ.get(FLEET_POLICY_ENV)
    return _read(Path(path)) if path else None


def _read(path: Path) -> PrivacyPolicy | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such policy file") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the policy: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"privacy"}:
        data = data["privacy"]
    return None if data is None else parse_policy(data, origin=f"{path}: privacy")


def policy_json(policy: PrivacyPolicy | None) -> str:
    """Canonical JSON of a policy (sorted keys): the same policy, the same bytes."""
    body = None if policy is None else policy.model_dump(mode="json")
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


class FieldHasher:
    """Hashes field values that may leave only hashed.

    With a device key, HMAC-SHA256 under a key derived from it (HKDF purpose
    :data:`HASH_PURPOSE`): the same value hashes the same on this device, and no
    one without the key can test a guess. Without one, plain SHA-256, which
    anyone can recompute for a guessed value. The prefix says which:
    ``hmac-sha256:…`` or ``sha256:…``.

    >>> FieldHasher(None).hash("alice")[:17]
    'sha256:2bd806c97f'
    >>> FieldHasher(b"k" * 32).hash("alice").startswith("hmac-sha256:")
    True
    """

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def hash(self, value: object) -> str:
        data = (
            value.encode()
            if isinstance(value, str)
            else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
        )
        if self._key is None:
            return "sha256:" + hashlib.sha256(data).hexdigest()
        return "hmac-sha256:" + hmac.new(self._key, data, hashlib.sha256).hexdigest()


def device_hasher(keys: KeySource | str | Path | None = None) -> FieldHasher:
    """A :class:`FieldHasher` keyed by the device key when one is available, else unkeyed.

    ``keys`` is a :class:`~fogline.security.KeySource` (``fogline run --device-key``),
    a key file's path, or None for the environment's key.
    """
    from fogline.errors import KeyUnavailable
    from fogline.security._sealing import KeySource

    source = (
        keys if isinstance(keys, KeySource) else KeySource(None if keys is None else Path(keys))
    )
    if not source.available():
        return FieldHasher(None)
    try:
        return FieldHasher(source.load().derive(HASH_PURPOSE))
    except KeyUnavailable:
        return FieldHasher(None)
