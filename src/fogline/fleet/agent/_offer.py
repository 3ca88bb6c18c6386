"""Fine-tuning on the device's own captures, on a schedule, and offering a passing candidate.

A ``learner`` release with a ``finetune:`` section
(:class:`~fogline.fleet.agent.kinds.FinetuneSection`) names the active
release whose model is fine-tuned, its model folder and the pipeline's
results store (relative to that release's run folder,
``DEV/agent/run/<release>/``, where the pipeline writes it). Every
``every_s`` seconds :class:`FinetuneScheduler` (its own thread), once the
device's deferral policy allows (``fogline agent --defer FILE``; a due
fine-tune waits, and says why, while it does not):

1. exports the store's labelled captures (:func:`fogline.store.export_captures`)
   and does nothing more until there are ``min_labelled`` of them, or when
   there are no more than at the last offer;
2. runs ``fogline learn finetune --holdout`` (which holds out that share by a
   seeded shuffle) as a child process (``nice``, ``--threads``, ``timeout_s``), so
   the agent's loop and the pipeline go on beside it; exit 3 (the gate said
   no) is logged with the gate's reason;
3. packs a passing candidate (``model.onnx``, ``fogline.yaml``,
   ``report.json``, ``report.md``) as a ``.tar`` and sends it on the device's
   ``offer`` topic in :class:`~fogline.protocol.OfferChunk` frames, the
   gate report on the first; it is saved first (``DEV/agent/finetune/``),
   so an agent restarted mid-upload sends it again.
4. The controller answers on the retained ``offer-ack``
   (:class:`~fogline.protocol.OfferAck`); missing chunks go again after
   ``RESEND_AFTER`` seconds without an answer (``CHECK_WAIT`` once the
   controller said ``checking``); ``accepted`` or ``refused``
   ends the offer (logged as an event).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline._files import atomic_write
from fogline.errors import FoglineError
from fogline.fleet.agent._own_store import key_for
from fogline.fleet.agent.kinds import FinetuneSection, load_learner
from fogline.power import Deferral, Verdict
from fogline.protocol import OfferAck, OfferChunk, encode_frame
from fogline.transport.mqtt import MqttMessage, Topic

if TYPE_CHECKING:
    from fogline.security import DeviceKey

_OFFER_PURPOSE = "offer"

log = logging.getLogger(__name__)

#: Bytes of the candidate per chunk (the protocol's: the controller refuses any other).
CHUNK = OfferChunk.chunk_bytes
#: Seconds without a final answer before the missing chunks go again.
RESEND_AFTER = 10.0
#: Seconds to wait for the outcome once the controller said it is checking the offer.
CHECK_WAIT = 300.0
#: How often the thread looks at its schedule and its answers.
TICK = 0.5
#: The files of a candidate folder that travel (the plot stays on the device).
SENT_FILES = ("model.onnx", "fogline.yaml", "report.json", "report.md")


class _State(BaseModel):
    """What survives a restart: when each release was last looked at, the offer in flight."""

    model_config = ConfigDict(extra="ignore")

    last_run: dict[str, float] = Field(default_factory=dict)
    offered_labelled: dict[str, int] = Field(default_factory=dict)
    pending: dict[str, Any] | None = None  # an OfferChunk header (index 0) of the offer


def pack(folder: Path) -> bytes:
    """The candidate folder's files as an uncompressed ``.tar`` (ONNX weights barely compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in SENT_FILES:
            path = folder / name
            if path.is_file():
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return buffer.getvalue()


def frames(header: OfferChunk, blob: bytes, indices: Iterable[int]) -> list[bytes]:
    """The frames of chunks ``indices`` of ``blob`` (the report rides on chunk 0 only)."""
    out = []
    for index in indices:
        piece = blob[index * CHUNK : (index + 1) * CHUNK]
        chunk = header.model_copy(
            update={"index": index, "report": header.report if index == 0 else None}
        )
        out.append(encode_frame(chunk, piece))
    return out


class FinetuneScheduler:
    """The device's fine-tunes and offers; see the module docstring.

    ``learners`` lists the entries of the active learner releases; ``active``
    gives the version and folder of the active release of a name;
    ``run_dir`` is where releases run (their stores live there); ``publish``
    sends messages and waits for the broker (the session's ``publish_and_wait``).
    """

    def __init__(
        self,
        device_id: str,
        folder: Path,
        *,
        learners: Callable[[], Iterable[Path]],
        active: Callable[[str], tuple[str, Path] | None],
        run_dir: Path,
        publish: Callable[[Sequence[MqttMessage], float], None],
        connected: Callable[[], bool],
        offer_topic: str,
        on_event: Callable[[str], None] = lambda line: None,
        key: DeviceKey | None = None,
        deferral: Deferral | None = None,
    ) -> None:
        self.device_id = device_id
        self.folder = Path(folder)
        self.learners = learners
        self.active = active
        self.run_dir = Path(run_dir)
        self.publish = publish
        self.connected = connected
        self.offer_topic = offer_topic
        self.key = key  # the device key: a pipeline's store may be encrypted with it
        self.on_event = on_event
        #: The device's policy for work that can wait: a due fine-tune waits until it allows.
        self.deferral = deferral
        self._verdict: tuple[float, Verdict] | None = None  # (monotonic time, last verdict)
        self._acks: queue.Queue[bytes] = queue.Queue()
        self._sent_at = 0.0
        self._wait = RESEND_AFTER  # before the next resend; CHECK_WAIT while it is checked
        self._state = self._read_state()

    # -- paho's thread ---------------------------------------------------------------------

    def on_ack(self, payload: bytes) -> None:
        self._acks.put(payload)

    # -- the scheduler's thread -------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._answers()
                if self._state.pending is not None:
                    self._resend()
                else:
                    self._schedule(stop)
            except Exception:  # one bad pass must not end fine-tuning for good
                log.exception("fine-tuning")
            stop.wait(TICK)

    def _schedule(self, stop: threading.Event) -> None:
        for entry in self.learners():
            try:
                section = load_learner(entry).finetune
            except FoglineError:
                continue
            if section is None:
                continue
            last = self._state.last_run.get(section.release, 0.0)
            if time.time() - last < section.every_s:
                continue
            if not self._allowed(section.release):
                return  # due, and waits for the policy: looked at again in check_every_s
            self._state.last_run[section.release] = time.time()
            self._write_state()
            self._attempt(section, stop)
            return  # one fine-tune per pass; the next pass looks at the others

    def _allowed(self, release: str) -> bool:
        """Whether the deferral policy lets a fine-tune run now; a new reason is an event."""
        deferral = self.deferral
        if deferral is None:
            return True
        now, before = time.monotonic(), self._verdict
        if before is not None and now - before[0] < deferral.policy.check_every_s:
            return before[1].allowed
        verdict = deferral.check()
        self._verdict = (now, verdict)
        if before is None or before[1].gist != verdict.gist:
            self.on_event(f"fine-tune {release}: {verdict.reason}")
        return verdict.allowed

    def _attempt(self, section: FinetuneSection, stop: threading.Event) -> None:
        """One fine-tune in ``work/``, removed afterwards whatever happened: it holds the
        captures (sealed with the device key), the candidate and its log."""
        import shutil

        work = self.folder / "work"
        try:
            self._attempt_in(work, section, stop)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _attempt_in(self, work: Path, section: FinetuneSection, stop: threading.Event) -> None:
        from fogline.errors import DataError
        from fogline.model import Manifest
        from fogline.store import ResultStore, export_captures

        found = self.active(section.release)
        if found is None:
            self.on_event(f"fine-tune: no active release {section.release!r} here")
            return
        version, release_dir = found
        store = self.run_dir / section.release / section.store
        if not store.is_file():
            self.on_event(f"fine-tune {section.release}: no results store at {store} yet")
            return
        if work.exists():  # left by a crash in an attempt
            import shutil

            shutil.rmtree(work)
        work.mkdir(parents=True)
        model_dir = release_dir if section.model == "." else release_dir / section.model
        try:
            classes = Manifest.read(model_dir).labels or None  # labels that are class names
        except FoglineError as exc:
            self.on_event(f"fine-tune {section.release}: no model at {model_dir}: {exc}")
            return
        try:
            with ResultStore(store, key=key_for(store, self.key)) as opened:
                if not opened.captures(labelled_only=True, limit=1):
                    items = 0
                else:
                    done = export_captures(  # sealed: never plain on the disk
                        opened, work / "labelled.npz", labelled_only=True, classes=classes,
                        key=self.key,
                    )  # fmt: skip
                    items = done.items
        except DataError as exc:  # it will not work by waiting: say why, every pass
            self.on_event(
                f"fine-tune {section.release}: the labelled captures cannot be exported: {exc}"
            )
            return
        if items < section.min_labelled:
            self.on_event(
                f"fine-tune {section.release}: {items} labelled captures, waiting for "
                f"{section.min_labelled}"
            )
            return
        if items <= self._state.offered_labelled.get(section.release, 0):
            return  # nothing new since the last offer
        held = round(items * section.holdout)  # what `learn finetune --holdout` holds out
        out = work / "candidate"
        command = [
            sys.executable, "-m", "fogline", "learn", "finetune", str(model_dir),
            "--data", str(work / "labelled.npz"), "--holdout", str(section.holdout),
            "--seed", "0", "--out", str(out), "--layers", section.layers, "--epochs", str(section.epochs),
            "--threads", str(section.threads), "--min-gain", str(section.min_gain),
            "--max-forgetting", str(section.max_forgetting),
        ]  # fmt: skip
        if section.original is not None:
            command += ["--original", section.original]
        if section.replay is not None:
            command += ["--replay", section.replay]
        if section.from_torch is not None:
            command += ["--from-torch", section.from_torch]
        threads = str(section.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        if self.key is not None:  # the child opens the sealed captures with it, in memory
            from fogline.security import KEY_ENV

            env[KEY_ENV] = self.key.hex()
        self.on_event(
            f"fine-tune {section.release} {version}: {items - held} labelled captures to train "
            f"on, {held} held out"
        )
        started = time.monotonic()
        with (work / "finetune.log").open("wb") as output:
            child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        with contextlib.suppress(OSError):  # lowered after the start: preexec_fn is unsafe here
            os.setpriority(os.PRIO_PROCESS, child.pid, section.nice)
        deadline = started + section.timeout_s
        while child.poll() is None:
            if stop.is_set() or time.monotonic() > deadline:
                child.kill()
                child.wait()
                if not stop.is_set():
                    self.on_event(
                        f"fine-tune {section.release}: gave up after {section.timeout_s:.0f} s"
                    )
                return
            stop.wait(0.2)
        seconds = time.monotonic() - started
        report = _report(out)
        reason = (report.get("gate") or {}).get("reason", "")
        if child.returncode == 3:
            self.on_event(f"fine-tune {section.release}: gate failed ({seconds:.1f} s): {reason}")
            return
        if child.returncode != 0:
            text = (work / "finetune.log").read_text(errors="replace")
            tail = text.strip().splitlines()[-1:]
            self.on_event(
                f"fine-tune {section.release}: failed (exit {child.returncode}): "
                f"{tail[0] if tail else ''}"
            )
            return
        blob = pack(out)
        header = OfferChunk(
            device_id=self.device_id,
            offer=secrets.token_hex(8),
            release=section.release,
            base_version=version,
            model_path=section.model,
            total=max(1, -(-len(blob) // CHUNK)),
            size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
            report=report,
            canary_min_accuracy=section.canary.min_accuracy,
            canary_bake=section.canary.bake_s,
            max_forgetting=section.max_forgetting,
        )
        self._keep_offer(blob)
        self._state.pending = header.model_dump(mode="json")
        self._state.offered_labelled[section.release] = items
        self._write_state()
        self.on_event(
            f"fine-tune {section.release} {version}: gate passed ({seconds:.1f} s): {reason}; "
            f"offering the candidate ({len(blob)} bytes, offer {header.offer})"
        )
        self._send(header, blob, range(header.total))

    def _send(self, header: OfferChunk, blob: bytes, indices: Iterable[int]) -> None:
        if not self.connected():
            return
        messages = [
            MqttMessage(Topic(self.offer_topic), frame, 1)
            for frame in frames(header, blob, indices)
        ]
        try:
            self.publish(messages, 60.0)
        except FoglineError as exc:
            log.warning("offer %s not sent: %s", header.offer, exc)
        self._sent_at = time.monotonic()

    def _keep_offer(self, blob: bytes) -> None:
        """``offer.tar`` until acknowledged, sealed with the device key: a model trained on
        this device's captures is kept as carefully as they are."""
        if self.key is not None:
            from fogline.security import seal

            blob = seal(blob, self.key, purpose=_OFFER_PURPOSE)
        atomic_write(self.folder / "offer.tar", blob, mode=0o600)

    def _kept_offer(self) -> bytes:
        blob = (self.folder / "offer.tar").read_bytes()
        if self.key is None:
            return blob
        from fogline.security import is_sealed, unseal

        return unseal(blob, self.key, purpose=_OFFER_PURPOSE) if is_sealed(blob) else blob

    def _pending(self) -> tuple[OfferChunk, bytes] | None:
        if self._state.pending is None:
            return None
        try:
            return (
                OfferChunk.model_validate(self._state.pending),
                self._kept_offer(),
            )
        except (OSError, ValidationError, FoglineError):
            self._state.pending = None  # unreadable: given up, the next schedule tries again
            self._write_state()
            return None

    def _resend(self, received: Sequence[int] = ()) -> None:
        if time.monotonic() - self._sent_at < self._wait:
            return
        found = self._pending()
        if found is not None:
            header, blob = found
            missing = [i for i in range(header.total) if i not in set(received)]
            self._send(header, blob, missing)

    def _answers(self) -> None:
        while True:
            try:
                payload = self._acks.get_nowait()
            except queue.Empty:
                return
            if not payload or self._state.pending is None:
                continue
            try:
                ack = OfferAck.model_validate_json(payload)
            except ValidationError:
                continue
            if ack.offer != self._state.pending.get("offer"):
                continue
            if ack.status == "accepted":
                self.on_event(
                    f"offer {ack.offer} accepted: release {self._state.pending['release']} "
                    f"{ack.version}, canary deployment {ack.deployment}"
                )
            elif ack.status == "refused":
                self.on_event(f"offer {ack.offer} refused: {ack.reason}")
            else:  # progress: wait again before resending, longer while it is checked
                self._sent_at = time.monotonic()
                self._wait = CHECK_WAIT if ack.status == "checking" else RESEND_AFTER
                continue
            (self.folder / "offer.tar").unlink(missing_ok=True)
            self._state.pending = None
            self._wait = RESEND_AFTER
            self._write_state()

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self) -> _State:
        path = self.folder / "state.json"
        try:
            return _State.model_validate_json(path.read_text())
        except (OSError, ValidationError, ValueError):
            return _State()

    def _write_state(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / "state.json", self._state.model_dump_json().encode())


def _report(folder: Path) -> dict[str, Any]:
    try:
        found = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
