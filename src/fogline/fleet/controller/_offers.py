"""A device's fine-tuned candidate: checked, signed as the next release and deployed as a canary.

A device whose ``learner`` release has a ``finetune:`` section sends a
candidate that passed its gate on its ``offer`` topic
(:class:`~fogline.protocol.OfferChunk` frames, :mod:`fogline.protocol._offers`).
:class:`Offers`, on the controller's worker thread, refuses it (answering a
retained :class:`~fogline.protocol.OfferAck` with the reason, and an
``offer-refused`` event) when the device is not enrolled, when its group is
not among those the controller accepts offers from (``fogline controller
--accept-offers GROUP``), when the device does not run (and never reported
in its telemetry) the base release version it fine-tuned, when the offer is
larger than ``max_bytes``, when a chunk does not carry exactly its share
(:attr:`~fogline.protocol.OfferChunk.chunk_bytes`, the last one the rest) or
changes the header of the offer's first stored chunk. It stores each chunk
under ``DATA/offers/`` before it acknowledges it, and once whole writes the
parts into one ``.tar`` while it hashes them, and checks the size and the
sha256. A device has one partial offer at a time: the first chunk of a new
offer deletes the partial one (while one is checked, chunks of another are
dropped, and the device sends them again); a partial offer untouched for
``expire_s`` (an hour) is deleted. Then one
thread of its own re-checks the candidate with :func:`fogline.federated.check_candidate`,
imported only now (the controller itself parses no model: ONNX Runtime and
numpy stay out of a controller that never gets an offer):

* the offer's ``model_path`` is a model folder of the base release (its
  ``fogline.yaml`` is one of the release's files; the header refuses an
  absolute path or ``..``);
* when the base release has no canary set, the controller has a floor of its
  own (``--offer-min-accuracy``), so the canary's live accuracy judges it;
* it is a model folder whose manifest matches its model file, ONNX Runtime
  opens it, and its inputs and outputs are those of the base release's model;
* when the base release has a canary set, the gate's forgetting check on it:
  the candidate may lose at most the offer's ``max_forgetting`` against the
  base model. The device's new data stays on the device, so the gain on it is
  the device's figure, recorded as the device's report.

A candidate that passes is signed as the next version of the base release
(the next minor version after the newest of that name; the base release's
files with the model folder's ``model`` file and ``fogline.yaml`` replaced),
with provenance naming the device, its report and the controller's check,
and rolled out to the device's group as a canary: its floor the stricter of
the offer's ``canary.min_accuracy`` and ``--offer-min-accuracy``, its bake
the offer's ``bake_s`` but at least ``min_bake`` (30 s). While a deployment
of that release runs on the group the offer is refused before anything is
signed. An
``offer-accepted`` event records it; the device reads ``accepted`` with the
version and the deployment.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from fogline._files import atomic_write
from fogline.errors import FoglineError
from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._plan import RolloutPlan
from fogline.fleet.controller._registry import Registry
from fogline.fleet.controller._rollout import Rollouts
from fogline.protocol import OfferAck, OfferChunk, decode_frame

if TYPE_CHECKING:
    from fogline.fleet.controller._records import Device
    from fogline.security import ReleaseDocument, ReleaseRepository

log = logging.getLogger("fogline.controller")

#: The largest offer taken unless the controller says otherwise.
MAX_BYTES = 64 * 1024 * 1024
#: The largest ``offer`` frame taken: a chunk and a header (the device's report rides on chunk 0).
MAX_FRAME = OfferChunk.chunk_bytes + 256 * 1024
#: The shortest canary bake the controller starts, whatever the device asks for (seconds).
MIN_BAKE_S = 30.0
#: A partial offer untouched this long is deleted (seconds).
EXPIRE_S = 3600.0
#: The header fields every chunk of one offer repeats unchanged.
SAME_FIELDS = (
    "release", "base_version", "model_path", "total", "size", "sha256",
    "canary_min_accuracy", "canary_bake", "max_forgetting",
)  # fmt: skip
#: The files a candidate's ``.tar`` may hold.
ALLOWED_FILES = ("model.onnx", "fogline.yaml", "report.json", "report.md")


class Refused(Exception):
    """An offer that is not taken; the message is the reason the device reads."""


class Offers:
    """Fine-tuned candidates devices offer; see the module docstring."""

    def __init__(
        self,
        data: Path,
        *,
        registry: Registry,
        rollouts: Rollouts,
        repository: ReleaseRepository,
        publish: Callable[[str, bytes, bool], None],
        prefix: str,
        wake: Callable[[], None],
        groups: tuple[str, ...] = (),
        max_bytes: int = MAX_BYTES,
        min_accuracy: float | None = None,
        min_bake: float = MIN_BAKE_S,
        expire_s: float = EXPIRE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(data) / "offers"
        self.registry = registry
        self.rollouts = rollouts
        self.repository = repository
        self.publish = publish
        self.prefix = prefix
        self.wake = wake
        self.groups = tuple(groups)
        self.max_bytes = max_bytes
        self.min_accuracy = min_accuracy
        self.min_bake = min_bake
        self.expire_s = expire_s
        self.clock = clock
        self._swept = 0.0
        self._checks: queue.Queue[tuple[OfferChunk, Path] | None] = queue.Queue()
        self._checker: threading.Thread | None = None
        self._checking: set[tuple[str, str]] = set()  # (device, offer) queued or being checked
        self._lock = threading.Lock()

    # -- the worker thread -----------------------------------------------------------------

    def submit(self, device_id: str, payload: bytes) -> None:
        """One ``offer`` frame from ``device_id``; ValueError when it is not one.

        A disk or registry failure is logged, not raised: the worker thread
        that calls this must go on, and the device sends the chunk again.
        """
        try:
            self._submit(device_id, payload)
        except (OSError, FoglineError) as exc:
            log.warning("offer chunk from %s not stored: %s", device_id, exc)

    def _submit(self, device_id: str, payload: bytes) -> None:
        if len(payload) > MAX_FRAME:
            raise ValueError(
                f"an offer frame of {len(payload)} bytes; a chunk and its header fit in {MAX_FRAME}"
            )
        header, body = decode_frame(payload, OfferChunk)
        if header.device_id != device_id:
            raise ValueError(f"the body names device {header.device_id!r}, the topic {device_id!r}")
        folder = self.folder / device_id / header.offer
        done = folder.with_suffix(".json")
        if done.exists():  # answered already: say it again (the device may have missed it)
            self._answer(device_id, OfferAck.model_validate_json(done.read_text()))
            return
        with self._lock:
            checking = (device_id, header.offer) in self._checking
            busy = [o for d, o in self._checking if d == device_id]
        if checking:  # a resend while it is checked: the answer comes when the check ends
            self._answer(device_id, OfferAck(offer=header.offer, status="checking"))
            return
        if busy:  # one offer per device: another is checked now; the device sends again later
            log.info(
                "offer %s from %s not stored: offer %s is being checked",
                header.offer, device_id, busy[0],
            )  # fmt: skip
            return
        self._expire()
        try:
            received = self._store(header, body, folder)
        except Refused as exc:
            self._refuse(header, str(exc))
            return
        if len(received) < header.total:
            self._answer(
                device_id, OfferAck(offer=header.offer, status="partial", received=received)
            )
            return
        first = OfferChunk.model_validate_json((folder / "header.json").read_text())
        tar = folder / "offer.tar"
        digest = _assemble(folder, header.total, tar)
        length = tar.stat().st_size
        if length != header.size or digest != header.sha256:
            self._refuse(
                header,
                f"the offer is {length} bytes with sha256 {digest[:12]}…; its header says "
                f"{header.size} bytes, {header.sha256[:12]}…",
            )
            return
        self._answer(device_id, OfferAck(offer=header.offer, status="checking"))
        with self._lock:
            self._checking.add((device_id, header.offer))
        self._checks.put((first, tar))
        if self._checker is None:
            self._checker = threading.Thread(
                target=self._check_loop, name="fogline-offers", daemon=True
            )
            self._checker.start()

    def _store(self, header: OfferChunk, body: bytes, folder: Path) -> list[int]:
        """Check who offers what and keep the chunk; the indices stored so far.

        A chunk must carry exactly its share of the offer
        (:meth:`~fogline.protocol.OfferChunk.chunk_length`), so the stored
        parts never exceed the offer's ``size``, and repeat the header of the
        offer's first stored chunk. A device has one partial offer at a time:
        the first chunk of a new offer deletes the partial one it replaces
        (a device that restarted offers a new candidate, and must not wait
        for the old one to expire).
        """
        device = self.registry.device(header.device_id)
        if device is None:
            raise Refused(f"device {header.device_id!r} is not enrolled here")
        if device.group not in self.groups:
            raise Refused(
                f"this controller takes no offers from group {device.group!r} "
                f"(it takes them from: {', '.join(self.groups) or 'no group'}; "
                "start it with --accept-offers GROUP)"
            )
        if header.size > self.max_bytes:
            raise Refused(
                f"the offer is {header.size} bytes; this controller takes at most {self.max_bytes}"
            )
        if len(body) != header.chunk_length():
            raise Refused(
                f"chunk {header.index} of {header.total} carries {len(body)} bytes; "
                f"an offer of {header.size} bytes puts {header.chunk_length()} in it"
            )
        if not self._ran(device, header.release, header.base_version):
            raise Refused(
                f"device {header.device_id!r} does not run and never reported "
                f"{header.release} {header.base_version}; a device offers only a model it runs"
            )
        stored = folder / "header.json"
        if stored.exists():
            first = OfferChunk.model_validate_json(stored.read_text())
            changed = [f for f in SAME_FIELDS if getattr(first, f) != getattr(header, f)]
            if changed:
                raise Refused(
                    f"chunk {header.index} changes {', '.join(changed)} of offer {header.offer}"
                )
        else:
            for other in folder.parent.glob("*"):
                if other.is_dir() and other.name != header.offer:
                    log.info(
                        "offer %s from %s replaces its partial offer %s",
                        header.offer, header.device_id, other.name,
                    )  # fmt: skip
                    shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        if header.index == 0 or not stored.exists():  # chunk 0 carries the report
            atomic_write(stored, header.model_dump_json().encode())
        atomic_write(folder / f"{header.index}.part", body)
        return sorted(
            int(p.stem)
            for p in folder.glob("*.part")
            if p.stem.isdigit() and int(p.stem) < header.total
        )

    def _ran(self, device: Device, release: str, version: str) -> bool:
        """Whether ``device`` runs ``release`` ``version``, or its telemetry ever named it."""
        if device.version(release) == version:
            return True
        return bool(
            self.registry.query(
                "SELECT 1 FROM metrics WHERE device_id = ? AND release = ? AND version = ? LIMIT 1",
                (device.id, release, version),
            )
        )

    def _expire(self) -> None:
        """Delete partial offers untouched for ``expire_s`` (at most once a minute)."""
        now = self.clock()
        if now - self._swept < min(60.0, self.expire_s):
            return
        self._swept = now
        with self._lock:
            checking = {self.folder / d / o for d, o in self._checking}
        for folder in self.folder.glob("*/*"):
            if not folder.is_dir() or folder in checking:
                continue
            try:
                touched = max(p.stat().st_mtime for p in (folder, *folder.iterdir()))
            except OSError:
                continue
            if now - touched > self.expire_s:
                log.info("partial offer %s of %s expired", folder.name, folder.parent.name)
                shutil.rmtree(folder, ignore_errors=True)

    def _answer(self, device_id: str, ack: OfferAck) -> None:
        topic = f"{self.prefix}/devices/{device_id}/offer-ack"
        self.publish(topic, ack.model_dump_json().encode(), True)

    def _finish(self, header: OfferChunk, ack: OfferAck) -> None:
        folder = self.folder / header.device_id / header.offer
        folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(folder.with_suffix(".json"), ack.model_dump_json().encode())
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._checking.discard((header.device_id, header.offer))
        self._answer(header.device_id, ack)

    def _refuse(self, header: OfferChunk, reason: str) -> None:
        log.warning("refused offer %s from %s: %s", header.offer, header.device_id, reason)
        self.registry.event(
            "offer-refused",
            f"refused {header.release} fine-tuned from {header.base_version} (offer "
            f"{header.offer}): {reason}",
            device_id=header.device_id if self.registry.device(header.device_id) else None,
        )
        self._finish(header, OfferAck(offer=header.offer, status="refused", reason=reason))

    def stop(self) -> None:
        if self._checker is not None:
            self._checks.put(None)
            self._checker.join(30)

    # -- the checking thread ---------------------------------------------------------------

    def _check_loop(self) -> None:
        while True:
            item = self._checks.get()
            if item is None:
                return
            header, tar = item
            try:
                self._accept(header, tar)
            except Refused as exc:
                self._refuse(header, str(exc))
            except Exception as exc:  # a broken offer must not end the thread
                log.exception("checking offer %s", header.offer)
                self._refuse(header, f"the controller could not check it: {exc}")

    def _accept(self, header: OfferChunk, tar: Path) -> None:
        base = self._base(header)
        minimum = _stricter(header.canary_min_accuracy, self.min_accuracy)
        if base.canary.data is None and self.min_accuracy is None:
            raise Refused(
                f"release {base.name} {base.version} has no canary set, so the controller could "
                "only check that the candidate opens; it takes such offers only with a floor of "
                "its own on the canary's live accuracy (start it with --offer-min-accuracy)"
            )
        model_dir = self._model_dir(base, header.model_path, tar.parent / "work" / "release")
        device = self.registry.device(header.device_id)
        group = device.group if device is not None else "default"
        work = tar.parent / "work"
        shutil.rmtree(work, ignore_errors=True)
        release_dir = work / "release"
        for item in base.files:
            target = release_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.repository.targets_dir / item.blob_path, target)
        candidate = work / "candidate"
        _unpack(tar, candidate)
        # Loaded now, not with the controller: it parses models (numpy, ONNX Runtime).
        from fogline.federated import (
            CandidateRefused,
            check_candidate,
            install_candidate,
            next_version,
        )

        canary = None if base.canary.data is None else release_dir / base.canary.data
        try:
            check = check_candidate(candidate, model_dir, canary, header.max_forgetting)
        except CandidateRefused as exc:
            raise Refused(str(exc)) from None
        install_candidate(candidate, model_dir)
        versions = [d.version for d in self.repository.releases() if d.name == header.release]
        version = next_version(str(max(versions, key=Version)))  # after the newest of the name
        report = header.report or {}
        provenance = {
            "finetuned_on_device": header.device_id,
            "offer": header.offer,
            "base": {"name": base.name, "version": base.version},
            "model_path": header.model_path,
            "device_report": {
                key: report.get(key) for key in ("gate", "training", "data", "holdout", "original")
            },
            "controller_check": check,
        }
        for running in self.rollouts.list(status="running"):  # checked before signing
            if running.release == header.release and running.group == group:
                raise Refused(
                    f"deployment {running.id} of {header.release} {running.version} is still "
                    f"running on {group!r}; nothing was signed (offer a candidate again once "
                    "it ends)"
                )
        self.repository.create_release(
            release_dir,
            header.release,
            version,
            self.repository.layout.key_file("targets"),
            kind=base.kind,
            entry=base.entry,
            latency_budget_ms=base.health.latency_budget_ms,
            sample=base.health.sample,
            canary=base.canary.data,
            description=f"fine-tuned on {header.device_id} from {base.version}",
            provenance=provenance,
        )
        deployment = self.rollouts.create(
            header.release,
            version,
            group,
            strategy=RolloutPlan(
                kind="canary", bake_seconds=max(header.canary_bake, self.min_bake)
            ),
            criteria=Criteria(min_accuracy=minimum),
        )
        self.wake()
        gate = report.get("gate") or {}
        said = (
            f"device gain {_points(gate.get('gain'))} on its held-out data"
            if gate
            else "no device report"
        )
        message = (
            f"{header.device_id} offered {header.release} fine-tuned from {base.version} "
            f"({said}); {check['summary']}; signed {header.release} {version}, canary "
            f"deployment {deployment.id}"
        )
        log.info("%s", message)
        self.registry.event(
            "offer-accepted", message, device_id=header.device_id, deployment=deployment.id
        )
        shutil.rmtree(work, ignore_errors=True)
        self._finish(
            header,
            OfferAck(
                offer=header.offer, status="accepted", version=version, deployment=deployment.id
            ),
        )

    def _model_dir(self, base: ReleaseDocument, model_path: str, release_dir: Path) -> Path:
        """The model folder ``model_path`` of the base release once copied to ``release_dir``.

        Refused unless it stays inside ``release_dir`` and the base release
        has a model manifest there (``model_path/fogline.yaml`` among its files).
        """
        manifest = "fogline.yaml" if model_path == "." else f"{model_path}/fogline.yaml"
        model_dir = (release_dir / model_path).resolve()
        if not model_dir.is_relative_to(release_dir.resolve()) or manifest not in {
            item.path for item in base.files
        }:
            raise Refused(
                f"release {base.name} {base.version} has no model folder {model_path!r} "
                f"(no {manifest} among its files)"
            )
        return release_dir / model_path

    def _base(self, header: OfferChunk) -> ReleaseDocument:
        for document in self.repository.releases():
            if document.name == header.release and document.version == header.base_version:
                if document.kind not in ("model", "pipeline"):
                    raise Refused(
                        f"release {header.release} is a {document.kind} release; offers replace "
                        "the model of a model or pipeline release"
                    )
                return document
        raise Refused(f"no release {header.release} {header.base_version} here to fine-tune from")


def _assemble(folder: Path, total: int, tar: Path) -> str:
    """Write the parts ``0.part`` … of ``folder`` into ``tar`` one by one; their sha256."""
    digest = hashlib.sha256()
    partial = tar.with_suffix(".tmp")
    with partial.open("wb") as out:
        for index in range(total):
            data = (folder / f"{index}.part").read_bytes()  # one chunk (64 KiB) at a time
            digest.update(data)
            out.write(data)
    partial.replace(tar)
    return digest.hexdigest()


def _unpack(tar: Path, folder: Path) -> None:
    """The candidate's files, refused unless they are plain files among :data:`ALLOWED_FILES`."""
    folder.mkdir(parents=True)
    try:
        with tarfile.open(tar, mode="r:") as archive:
            for member in archive.getmembers():
                if member.name not in ALLOWED_FILES or not member.isfile():
                    raise Refused(
                        f"the offer holds {member.name!r}; it may hold {', '.join(ALLOWED_FILES)}"
                    )
                source = archive.extractfile(member)
                assert source is not None
                with source, (folder / member.name).open("wb") as out:
                    shutil.copyfileobj(source, out)  # streamed, not read whole
    except tarfile.TarError as exc:
        raise Refused(f"the offer is not a .tar: {exc}") from None


def _stricter(*floors: float | None) -> float | None:
    """The highest of the accuracy floors that are set.

    >>> _stricter(0.2, None), _stricter(None, None), _stricter(0.9, 0.95)
    (0.2, None, 0.95)
    """
    found = [f for f in floors if f is not None]
    return max(found) if found else None


def _points(value: object) -> str:
    return f"{value * 100:+.2f} points" if isinstance(value, int | float) else "unknown"


__all__ = ["Offers", "Refused"]
