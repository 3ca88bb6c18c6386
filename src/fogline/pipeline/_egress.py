"""The egress gate: the one place a pipeline's results are cut down to what may leave the device.

The pipeline's ``privacy:`` section, made stricter by the fleet default the
agent hands it (``$FOGLINE_FLEET_POLICY``, see
:func:`fogline.security.merge_fleet`), is checked against the pipeline when it
is planned (:func:`check_privacy`: a sink, the outbox or a step that would
send what the policy forbids is refused, naming the key), and enforced while
it runs by one :class:`Egress`:

* the runner hands every result bound for a sink that leaves the device
  (``mqtt``, ``http``, ``zmq``, and ``shell``: a command can send anything)
  through :meth:`Egress.result` before the sink sees it, once per result for
  all of them;
* the outbox encoder does the same before a ``sync`` result is serialised
  into the outbox, so what the outbox holds is already what may leave;
* a cluster node (an ``mqtt`` source with ``share:``) publishes each item's
  ``done`` message with the gated outputs, under the ``mqtt`` destination;
* the raw input an ``offload`` step sends (``send: raw``) has its faces
  blurred when the step is let through at all (``raw: allowed``).

``jsonl`` and ``stdout`` sinks and the results store stay on the device: they
get the whole result. The agent's telemetry carries no result field (counts,
latencies, drift and accuracy figures), so ``telemetry`` has nothing to gate.
Redaction (``faces``) applies to the images that are let
out: raw-input fields under ``raw: allowed`` and an offload's raw input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fogline.errors import PolicyError
from fogline.model import Signature
from fogline.security import (
    NO_RESULT_FIELDS,
    FieldHasher,
    PrivacyPolicy,
    device_hasher,
    merge_fleet,
    policy_json,
)
from fogline.store import Result

if TYPE_CHECKING:
    from fogline.pipeline._faces import FaceBlur
    from fogline.pipeline._spec import PipelineSpec
    from fogline.security import KeySource

log = logging.getLogger("fogline.pipeline")

#: Sinks that send results off the device; ``jsonl`` and ``stdout`` write on it.
LEAVING_SINKS = frozenset({"mqtt", "http", "zmq", "shell"})
#: Result fields, besides the outputs, that a policy may hold back.
OPTIONAL_FIELDS = ("position", "item_id")


class Egress:
    """The effective policy of one pipeline, ready to apply to results.

    ``raw_fields`` are result fields that carry the raw input (a model output
    the size of its input: a reconstruction or a copy).

    >>> policy = PrivacyPolicy.model_validate({"fields": {"drop": ["secret"], "hash": ["who"]}})
    >>> gate = Egress(policy, frozenset(), FieldHasher(None))
    >>> out = gate.result(Result("cam", 1, 0.0, "m", "1", {"label": 3, "secret": "x", "who": "al"}))
    >>> sorted(out.outputs), out.outputs["who"][:7]
    (['label', 'who'], 'sha256:')
    """

    def __init__(
        self,
        policy: PrivacyPolicy,
        raw_fields: frozenset[str],
        hasher: FieldHasher,
        faces: FaceBlur | None = None,
    ) -> None:
        self.policy = policy
        self.raw_fields = raw_fields
        self.hasher = hasher
        self.faces = faces

    def covers(self, destination: str) -> bool:
        return self.policy.covers(destination)

    def result(self, result: Result) -> Result:
        """``result`` as it may leave: fields held back, hashed, images redacted."""
        policy = self.policy
        outputs: dict[str, Any] = {}
        for name, value in result.outputs.items():
            if name in self.raw_fields:
                if policy.raw != "allowed":
                    continue
                value = self.redact(value)
            if not policy.leaves(name):
                continue
            outputs[name] = self.hasher.hash(value) if policy.hashed(name) else value
        return dataclasses.replace(
            result,
            outputs=outputs,
            position=self._optional("position", result.position),
            item_id=self._optional("item_id", result.item_id),
        )

    def redact(self, value: Any) -> Any:
        """``value`` with faces blurred when the policy redacts faces and it is an image."""
        if self.faces is None:
            return value
        as_list = isinstance(value, list)
        blurred, found = self.faces.blur(np.asarray(value) if as_list else value)
        if not found:
            return value
        return blurred.tolist() if as_list else blurred

    def _optional(self, name: str, value: str | None) -> str | None:
        if value is None or not self.policy.leaves(name):
            return None
        return self.hasher.hash(value) if self.policy.hashed(name) else value

    def warnings(self) -> list[str]:
        """What ``fogline check`` should warn about: a hash anyone can recompute.

        >>> policy = PrivacyPolicy.model_validate({"fields": {"hash": ["item_id"]}})
        >>> Egress(policy, frozenset(), FieldHasher(None)).warnings()[0][:40]
        'privacy.fields.hash: item_id are hashed '
        """
        if not self.policy.fields.hash or self.hasher.keyed:
            return []
        return [
            f"privacy.fields.hash: {', '.join(self.policy.fields.hash)} are hashed with plain "
            "SHA-256 (no device key), which anyone can recompute for a guessed value; give a "
            "key (--device-key, $FOGLINE_DEVICE_KEY_FILE) for HMAC-SHA256"
        ]

    def describe(self) -> str:
        """One line for ``fogline check``: what the policy holds back and how it hashes."""
        p = self.policy
        parts = []
        if p.fields.allow is not None:
            parts.append(f"fields allowed: {', '.join(p.fields.allow) or 'none'}")
        if p.fields.drop:
            parts.append(f"dropped: {', '.join(p.fields.drop)}")
        if p.fields.hash:
            how = "HMAC-SHA256, device key" if self.hasher.keyed else "SHA-256, no device key"
            parts.append(f"hashed ({how}): {', '.join(p.fields.hash)}")
        parts.append(f"raw inputs: {p.raw}")
        if p.redact:
            parts.append(f"redact: {', '.join(p.redact)}")
        covered = [d for d in p.destinations if d not in NO_RESULT_FIELDS]
        parts.append(f"covers: {', '.join(covered) or 'nothing'}")
        parts += [f"{d} carries no result fields" for d in p.destinations if d in NO_RESULT_FIELDS]
        return "; ".join(parts)


def raw_fields(spec: PipelineSpec, signature: Signature) -> frozenset[str]:
    """The result fields that carry the raw input: model outputs the shape of the input.

    Only without post-processing do model outputs become result fields as
    they are; an output with the input's per-item shape (an autoencoder's
    reconstruction, a copy) shows the input itself.
    """
    if spec.postprocess:
        return frozenset()
    wanted = signature.inputs[0].shape[1:]
    return frozenset(
        output.name
        for output in signature.outputs
        if len(output.shape) > 1 and output.shape[1:] == wanted and len(wanted) >= 2
    )


def check_privacy(
    spec: PipelineSpec,
    signature: Signature,
    fields: frozenset[str],
    fleet: PrivacyPolicy | None,
    keys: KeySource | None = None,
) -> Egress | None:
    """The pipeline's :class:`Egress`, or :class:`PolicyError` naming what would leak and where.

    ``keys`` gives the device key that keys the hash of ``fields.hash`` (the
    environment's when None; unkeyed SHA-256 when there is none).
    """
    own = spec.privacy
    policy = merge_fleet(fleet, own)  # refuses an own policy that loosens the fleet's
    if policy is None:
        return None
    known = fields | set(OPTIONAL_FIELDS)
    if own is not None:
        for key in ("allow", "drop", "hash"):
            for name in getattr(own.fields, key) or ():
                if name not in known:
                    raise PolicyError(
                        f"privacy.fields.{key}: no result has {name!r} "
                        f"(results have: {', '.join(sorted(known))})"
                    )
    raw = raw_fields(spec, signature)
    by = " (the fleet default)" if own is None or own.raw != policy.raw else ""
    for index, sink in enumerate(spec.sinks):
        if sink.type in LEAVING_SINKS and policy.covers(sink.type):
            _check_sends(f"sinks[{index}] ({sink.type})", sink, policy, raw, by)
    for index, source in enumerate(spec.sources):  # a cluster node's done carries the outputs
        if getattr(source, "share", None) is not None and policy.covers("mqtt"):
            _check_sends(f"sources[{index}] (mqtt, share: done messages)", None, policy, raw, by)
    if spec.outbox is not None and policy.covers("outbox"):
        _check_sends(
            f"outbox ({spec.outbox.transport.type})", spec.outbox.transport, policy, raw, by
        )
    for index, step in enumerate(spec.postprocess):
        if step.type != "offload":
            continue
        send = getattr(step, "send", "input")
        what = "raw input" if send == "raw" else "model input"
        where = f"postprocess[{index}] (offload)"
        if policy.raw != "allowed":
            raise PolicyError(
                f"{where}: sends items' {what} to {getattr(step, 'url', '?')} but privacy.raw is "
                f"{policy.raw}{by}; remove the step or set privacy.raw: allowed"
            )
        if "faces" in policy.redact and send != "raw":
            raise PolicyError(
                f"{where}: sends the model input, in which privacy.redact [faces] cannot find "
                "faces; use `send: raw` (the image as the source gave it, faces blurred)"
            )
    faces = None
    if "faces" in policy.redact:
        from fogline.pipeline._faces import FaceBlur

        faces = FaceBlur()
    return Egress(policy, raw, device_hasher(keys), faces)


def _check_sends(
    where: str, sink: Any, policy: PrivacyPolicy, raw: frozenset[str], by: str
) -> None:
    from fogline.pipeline.sinks._basic import fields_of

    for name in sorted(fields_of(sink) if sink is not None else ()):
        if not policy.leaves(name):
            raise PolicyError(
                f"{where}: its template uses {name!r}, which privacy.fields keeps on the device"
            )
    if policy.raw == "allowed":
        return
    for name in sorted(raw):
        if policy.leaves(name):
            raise PolicyError(
                f"{where}: sends raw input {name!r} but privacy.raw is {policy.raw}{by}; "
                f"add it to privacy.fields.drop or list what may leave in privacy.fields.allow"
            )


def record_policy(egress: Egress | None, store_path: Path | None, pipeline: str) -> None:
    """Keep the effective policy beside the store; a change is a ``policy.changed`` audit event.

    ``STORE.privacy.json`` says which policy governed the results in the
    store (``fogline capture export`` reads it); ``audit.jsonl`` beside the
    store gets an event whenever it changes from one run to the next.
    """
    if store_path is None:
        return
    from fogline._files import atomic_write
    from fogline.security import AuditLog

    path = policy_file(store_path)
    text = policy_json(None if egress is None else egress.policy)
    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = policy_json(None)
    if before == text:
        return
    atomic_write(path, text.encode())
    AuditLog(store_path.parent / "audit.jsonl").record(
        "policy.changed",
        scope="pipeline",
        pipeline=pipeline,
        policy=json.loads(text),
        previous=json.loads(before),
    )


def policy_file(store_path: Path) -> Path:
    """Where the effective policy of the pipeline writing ``store_path`` is kept."""
    return store_path.with_name(store_path.name + ".privacy.json")


def stored_policy(store_path: Path) -> PrivacyPolicy | None:
    """The effective policy the pipeline that writes ``store_path`` last ran under, if any."""
    from fogline.security import parse_policy

    path = policy_file(store_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{path}: cannot read the pipeline's privacy policy: {exc}") from exc
    return None if data is None else parse_policy(data, origin=f"{path}: privacy")


def check_export(store_path: Path, pipeline: Path | None = None) -> PrivacyPolicy | None:
    """The policy that governs exporting ``store_path``'s captures; refuse when it forbids it.

    The policy is the one its pipeline last ran under (``STORE.privacy.json``),
    made stricter by the fleet default in ``$FOGLINE_FLEET_POLICY`` and by the
    ``privacy:`` of ``pipeline`` when one is given. With none of them recorded
    for an encrypted store (the store was copied, or its policy file deleted),
    whether captures may leave is unknown: :class:`PolicyError` says how to go
    on. A plain store without one exports as it always did.
    """
    from fogline.security import fleet_policy_from_env, stricter
    from fogline.store import is_encrypted

    recorded = stored_policy(store_path)
    fleet = fleet_policy_from_env()
    known: list[PrivacyPolicy | None] = [recorded, fleet]
    if pipeline is not None:
        from fogline.pipeline._spec import load_spec

        known.append(merge_fleet(fleet, load_spec(pipeline).privacy) or PrivacyPolicy())
    policies = [p for p in known if p is not None]
    policy = None
    for one in policies:
        policy = one if policy is None else stricter(policy, one)
    if policy is not None and policy.raw == "never":
        raise PolicyError(
            f"{store_path}: its pipeline runs with privacy.raw never: captures are raw inputs "
            "and may not leave the device (privacy.raw: captured-only lets them)"
        )
    if recorded is None and pipeline is None and is_encrypted(store_path):
        raise PolicyError(
            f"{store_path}: no privacy policy is recorded for this encrypted store "
            f"({policy_file(store_path).name} is missing: the store was copied or the file "
            "deleted), so whether its captures may leave is unknown; run its pipeline once "
            "(it records its policy) or name it: --pipeline PIPELINE.yaml"
        )
    return policy


def redact_dataset(source: Path, target: Path) -> int:
    """Copy the ``.npz`` dataset ``source`` to ``target`` with faces blurred; the faces blurred."""
    from fogline._files import atomic_output
    from fogline.pipeline._faces import FaceBlur

    faces = FaceBlur()
    blurred = 0
    with np.load(source, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name, array in arrays.items():
        if array.ndim < 3 or array.dtype.kind not in "uif":
            continue  # labels, or not images
        out = array.copy()
        for index in range(len(out)):
            out[index], found = faces.blur(out[index])
            blurred += found
        arrays[name] = out
    with atomic_output(target) as temporary, temporary.open("wb") as file:
        np.savez(file, **arrays)
    return blurred


__all__ = [
    "LEAVING_SINKS",
    "Egress",
    "check_export",
    "check_privacy",
    "policy_file",
    "raw_fields",
    "record_policy",
    "redact_dataset",
    "stored_policy",
]
