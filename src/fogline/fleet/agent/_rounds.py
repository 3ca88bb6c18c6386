"""The device's side of a federated run: train when a round is offered, send the change in chunks.

The controller offers a round on the device's retained ``fl-round`` topic (a
:class:`~fogline.protocol.RoundTask` frame with the global model) and answers
on the retained ``fl-ack`` topic (:class:`~fogline.protocol.UpdateAck`);
the device sends :class:`~fogline.protocol.UpdateChunk` frames on ``fl-update``
(QoS 1). :class:`RoundParticipant` plays the device:

1. A round whose deadline has passed, or that is already finished here
   (accepted, refused, closed, declined), is ignored; an empty ``fl-round``
   withdraws the round (its saved update is dropped).
2. The round's ``task`` must be the ``task`` of an active ``learner``
   release (:mod:`fogline.fleet.agent.kinds.learner`), the model must match
   the round's ``model_size`` and ``model_sha256``; otherwise the device
   sends a ``decline`` with the reason, so the round need not wait for it. So
   does a training that fails (the data function, a model that is not the
   task's). The device must also be eligible (CPU not busier than
   ``max_cpu_percent`` over the last second; not on battery when
   ``require_mains``): that passes, so it looks again every
   ``ELIGIBILITY_RETRY`` seconds and declines only in the last quarter of the
   time the round had left when it first looked (at least 2 s before the
   deadline). So does the device's own deferral policy (``fogline agent
   --defer FILE``: mains, battery level, time windows, carbon intensity),
   whose reason the decline carries (``deferred: on battery (38 % < 40 %)``);
   a round whose deadline falls before the policy's next window is declined
   at once.
3. It trains the task's trainer from the global model on its own data
   (``data(device_id=..., **data_args)``) with the round's ``config``
   (``epochs``, ``mu``), encodes the change (:func:`~fogline.federated.encode_update`)
   and saves it with its metadata in one atomic file, ``DEV/agent/fl/update.bin``,
   *before* sending a byte: an agent killed mid-upload sends the saved update
   again after a restart, without training again, if the retained round is
   still open.
4. It sends the update as frames of at most the round's ``chunk_bytes``
   (header included). The controller's ``partial`` acknowledgement lists the
   chunks it stored; the missing ones are sent again a moment after a
   reconnect (once the retained acknowledgement had time to arrive) or when
   nothing progressed for ``resend_after`` seconds (doubling up to a minute).
   ``accepted``, ``refused`` or ``closed`` finishes the round: the saved update
   is deleted and the round remembered in ``DEV/agent/fl/finished.json``.

Under secure aggregation (the round carries ``secagg`` settings) the change
never leaves in the clear: after training, a :class:`~fogline.federated.SecAggDevice`
sends its keys (an ``UpdateChunk`` of kind ``secagg``, stage ``keys``) and
answers each later stage the controller opens on ``fl-round`` (``shares``,
``mask``, ``unmask``, each body checked against its size and sha256) with one
frame of the same stage. Its keys live in memory only, so a device restarted
mid-round stays out of that round (the protocol tolerates it); the round is
remembered as ``secagg`` so that it is not trained again.

A newer round replaces an older one whose update is not taken yet. Bytes
down (the round frames) and up (every frame sent) are counted per round (in
the chunk headers) and in :meth:`RoundParticipant.counters`.

Concurrency: the session's paho thread only hands raw payloads over
(:meth:`~RoundParticipant.on_round`, :meth:`~RoundParticipant.on_ack`,
:meth:`~RoundParticipant.on_ready`); :meth:`~RoundParticipant.run` is the one
thread that trains, saves and sends, one round at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline._files import atomic_write
from fogline.errors import FoglineError, TransportError
from fogline.federated import (
    SecAggDevice,
    Task,
    decode_weights,
    encode_update,
    load_device_data,
    load_task,
)
from fogline.federated.strategy import Weights
from fogline.fleet.agent._eligibility import CpuMeter, Waiting, deferred, ineligible
from fogline.fleet.agent.kinds import LearnerSpec, load_learner
from fogline.power import Deferral
from fogline.protocol import RoundTask, UpdateAck, UpdateChunk, decode_frame, encode_frame
from fogline.transport.mqtt import MqttMessage, Topic

log = logging.getLogger(__name__)

#: Seconds to wait after (re)subscribing for the retained acknowledgement before resending.
RESUME_GRACE = 1.0
#: Seconds without progress before the missing chunks go again; doubles up to RESEND_MAX.
RESEND_AFTER = 5.0
RESEND_MAX = 60.0
#: Chunks per publish_and_wait call, and how long one call may wait for the broker.
BATCH = 16
PUBLISH_TIMEOUT = 30.0
#: How often the worker looks at its timers (and samples the CPU) when nothing arrives.
TICK = 0.25
#: Seconds between looks at the eligibility of a round the device waits for.
ELIGIBILITY_RETRY = 2.0
#: How many finished rounds are remembered.
FINISHED_KEPT = 256
FINAL = ("accepted", "refused", "closed")

Key = tuple[str, int]


class SavedUpdate(BaseModel):
    """What is saved with an encoded update, so that it can be sent again after a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str
    round: int
    deadline: float
    sha256: str
    size: int
    piece: int = Field(ge=1)  # bytes of the update per chunk
    total: int = Field(ge=1)
    num_examples: int
    loss: float | None = None
    train_seconds: float
    bytes_down: int
    #: The run folds late updates in (``--async``): sent even when a newer round came.
    late_ok: bool = False


@dataclass
class RoundCounters:
    """Totals since the agent started: bytes, rounds and chunks."""

    bytes_down: int = 0
    bytes_up: int = 0
    rounds_trained: int = 0
    rounds_declined: int = 0
    rounds_accepted: int = 0
    chunks_sent: int = 0
    chunks_resent: int = 0


@dataclass
class _Upload:
    meta: SavedUpdate
    blob: bytes
    live: bool  # the open round was seen since it was saved (False after a restart, until then)
    received: set[int] = field(default_factory=set)
    next_send: float = 0.0  # monotonic time of the next (re)send of missing chunks
    sent_at: float = 0.0  # monotonic time of the last pass (or of resuming after a restart)
    wait: float = RESEND_AFTER
    passes: int = 0
    bytes_sent: int = 0

    @property
    def key(self) -> Key:
        return self.meta.run, self.meta.round

    def piece(self, index: int) -> bytes:
        return self.blob[index * self.meta.piece : (index + 1) * self.meta.piece]


@dataclass(frozen=True)
class _Trained:
    base: Weights
    weights: Weights
    num_examples: int
    loss: float | None
    seconds: float

    @property
    def change(self) -> np.ndarray:
        return self.weights.vector() - self.base.vector()


def _size(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1000:.1f} kB"


class RoundParticipant:
    """One device's part in federated runs; see the module docstring.

    ``learners`` lists the entries (``learner.yaml``) of the active learner
    releases; ``publish`` sends messages and waits for the broker's
    acknowledgements (the session's ``publish_and_wait``); ``connected`` says
    whether the session is up; ``update_topic`` is the device's ``fl-update``.
    """

    def __init__(
        self,
        device_id: str,
        folder: Path,
        *,
        learners: Callable[[], Iterable[Path]],
        publish: Callable[[Sequence[MqttMessage], float], None],
        connected: Callable[[], bool],
        update_topic: str,
        on_event: Callable[[str], None] = lambda line: None,
        resend_after: float = RESEND_AFTER,
        cpu: CpuMeter | None = None,
        deferral: Deferral | None = None,
    ) -> None:
        self.device_id = device_id
        self.folder = Path(folder)
        self.resend_after = resend_after
        self._learners = learners
        self._publish = publish
        self._connected = connected
        self._topic = Topic(update_topic)
        self._event = on_event
        self._cpu = cpu or CpuMeter()
        self._deferral = deferral  # the device's own policy for work that can wait (--defer)
        self._cond = threading.Condition()
        self._rounds: list[bytes] = []  # raw fl-round payloads, in order of arrival
        self._acks: list[bytes] = []
        self._ready_at: float | None = None  # when the round topics were last (re)subscribed
        self._counters = RoundCounters()
        # the worker's own
        self._upload: _Upload | None = None
        self._waiting: Waiting | None = None  # a round it is not eligible for yet
        self._outbox: list[tuple[float, bytes]] = []  # (deadline, frame): declines, secagg replies
        self._finished: dict[Key, str] = {}
        self._secagg: dict[Key, tuple[SecAggDevice, int]] = {}  # this round's masking, examples
        self._answered: set[tuple[str, int, str]] = set()  # secagg stages answered
        self._tasks: dict[str, Task] = {}

    # -- inputs (paho's thread: hand over, nothing else) -------------------------------

    def on_round(self, payload: bytes) -> None:
        with self._cond:
            self._rounds.append(payload)
            self._cond.notify_all()

    def on_ack(self, payload: bytes) -> None:
        with self._cond:
            self._acks.append(payload)
            self._cond.notify_all()

    def on_ready(self) -> None:
        """The round topics are (re)subscribed: retained round and ack are on their way."""
        with self._cond:
            self._ready_at = time.monotonic()
            self._cond.notify_all()

    def counters(self) -> RoundCounters:
        with self._cond:
            return dataclasses.replace(self._counters)

    # -- the worker ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Take part in rounds until ``stop`` is set."""
        self._restore()
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a bug must not end federated learning for good
                log.exception("federated round step failed")
                self._event("federated round step failed (see the log); going on")
            with self._cond:
                if not (self._rounds or self._acks):
                    self._cond.wait(TICK)

    def step(self) -> None:
        """Take what arrived (acknowledgements, then rounds), then send what is due."""
        self._cpu.sample()
        with self._cond:
            rounds, self._rounds = self._rounds, []
            acks, self._acks = self._acks, []
        # acknowledgements first: a round that closed right after taking this device's
        # update is withdrawn on another topic, and may arrive in the same batch
        for payload in acks:
            self._take_ack(payload)
        for payload in rounds:
            self._take_round(payload)
        self._retry_waiting()
        self._send_outbox()
        self._pump()

    # -- rounds ----------------------------------------------------------------------

    def _take_round(self, payload: bytes) -> None:
        if not payload or (self._waiting is not None and _round_key(payload) != self._waiting.key):
            self._waiting = None  # withdrawn or replaced while it waited to be eligible
        if not payload:  # the retained round was cleared: withdrawn
            if self._upload is not None:
                self._drop(self._upload, "the round was withdrawn")
            return
        try:
            task, body = decode_frame(payload, RoundTask)
        except ValueError as exc:
            log.warning("dropped a malformed fl-round frame: %s", exc)
            self._event("dropped a malformed federated round")
            return
        with self._cond:
            self._counters.bytes_down += len(payload)
        key = (task.run, task.round)
        if task.deadline < time.time():
            return
        if task.stage != "train":
            self._secagg_stage(task, body, len(payload))
            return
        if key in self._finished:
            return
        upload = self._upload
        if upload is not None:
            if upload.key == key:
                if not upload.live:  # saved before a restart, and the round is still open
                    upload.live = True
                    upload.sent_at = time.monotonic()  # the retained ack comes right after
                    upload.next_send = upload.sent_at + RESUME_GRACE
                    self._say(key, f"resuming the saved update ({upload.meta.total} chunk(s))")
                return
            if upload.meta.late_ok and upload.meta.run == task.run:
                missing = [i for i in range(upload.meta.total) if i not in upload.received]
                if missing:  # the run folds it into a later round: send it before moving on
                    self._send(upload, missing)
                    self._say(upload.key, f"sent late ({len(missing)} chunk(s)) for a later round")
            self._drop(upload, f"round {task.round} of run {task.run} replaces it")
        self._train(task, body, len(payload))

    def _train(self, task: RoundTask, body: bytes, down: int) -> None:
        key = (task.run, task.round)
        found = self._learner(task.task)
        if found is None:
            self._decline(task, f"no active learner release for task {task.task}", down)
            return
        reason = self._model_mismatch(task, body)  # first: it costs nothing, eligibility a second
        if reason is not None:
            self._decline(task, reason, down)
            return
        busy = ineligible(found.eligibility, self._cpu)
        if busy is None and self._deferral is not None:
            busy, hopeless = deferred(self._deferral, task.deadline)
            if hopeless:  # its windows stay closed until after the deadline: no use waiting
                self._waiting = None
                self._decline(task, busy or "deferred", down)
                return
        if busy is not None:  # a busy CPU, a battery, a dirty grid pass: wait, decline near the end
            waiting = self._waiting
            if waiting is None or waiting.key != key:
                waiting = self._waiting = Waiting(task, body, down, time.time())
                self._say(key, f"waiting to be eligible: {busy}")
            if waiting.give_up(time.time()):
                self._waiting = None
                self._decline(task, busy, down)
            return
        self._waiting = None
        try:
            trained = self._fit(task, body, found)
            if task.secagg is None:
                meta, blob = self._encode(task, trained, down)
            else:
                masking = SecAggDevice(
                    self.device_id, task.secagg, trained.change, trained.num_examples
                )
        except FoglineError as exc:
            self._decline(task, f"training failed: {exc}", down)
            return
        except Exception as exc:  # the task's or the data's own code failed
            log.exception("training round %s of run %s failed", task.round, task.run)
            self._decline(task, f"training failed: {type(exc).__name__}: {exc}", down)
            return
        with self._cond:
            replaced = any(not p or (_round_key(p) or key) != key for p in self._rounds)
            self._counters.rounds_trained += 1
        if replaced and not task.config.get("async"):  # a newer round came while training: it wins
            self._say(key, "trained, but a newer round arrived; not sent")
            return
        if task.secagg is not None:
            self._secagg = {key: (masking, trained.num_examples)}
            self._answered = set()
            self._remember(key, "secagg")  # its keys live in memory: after a restart, it is out
            reply = self._secagg_frame(task, "keys", masking.keys(), down, trained)
            self._queue(task.deadline, reply)
            self._say(
                key,
                f"trained on {trained.num_examples} examples in {trained.seconds:.2g} s, "
                f"sent its keys for secure aggregation ({_size(len(reply))})",
            )
            return
        atomic_write(self._update_file, encode_frame(meta, blob), mode=0o600)
        upload = self._upload = _Upload(meta, blob, live=True, wait=self.resend_after)
        self._send(upload, range(meta.total))
        sent = f"sent {_size(upload.bytes_sent)} in {meta.total} chunk(s)"
        if upload.passes == 0:
            sent = f"saved {_size(meta.size)}, to send when connected"
        self._say(
            key,
            f"trained on {meta.num_examples} examples in {meta.train_seconds:.2g} s, {sent}",
        )

    def _retry_waiting(self) -> None:
        """Look again, every ``ELIGIBILITY_RETRY`` seconds, at a round that waits to be eligible."""
        waiting = self._waiting
        if waiting is None or time.monotonic() < waiting.next_try:
            return
        waiting.next_try = time.monotonic() + ELIGIBILITY_RETRY
        self._train(waiting.task, waiting.body, waiting.down)

    def _learner(self, task: str) -> LearnerSpec | None:
        for entry in self._learners():
            try:
                spec = load_learner(entry)
            except FoglineError as exc:
                log.warning("skipped a learner release: %s", exc)
                continue
            if spec.task == task:
                return spec
        return None

    @staticmethod
    def _model_mismatch(task: RoundTask, body: bytes) -> str | None:
        if len(body) != task.model_size:
            return f"the model is {len(body)} bytes, the round says {task.model_size}"
        digest = hashlib.sha256(body).hexdigest()
        if digest != task.model_sha256:
            return f"the model's sha256 is {digest[:12]}…, the round says {task.model_sha256[:12]}…"
        return None

    def _fit(self, task: RoundTask, body: bytes, spec: LearnerSpec) -> _Trained:
        """Train on this device's data from the round's model."""
        assert spec.task is not None and spec.data is not None  # matched by its task
        loaded = self._tasks.get(spec.task)
        if loaded is None:
            loaded = self._tasks[spec.task] = load_task(spec.task)
        base = decode_weights(body, f"the model of round {task.round}")
        X, y = load_device_data(spec.data, self.device_id, spec.data_args)
        trainer = loaded.trainer(spec.epochs)
        started = time.monotonic()
        update = trainer.fit(self.device_id, base, (X, y), task.config, np.random.default_rng())
        seconds = time.monotonic() - started
        loss = trainer.evaluate(update.weights, (X, y)).loss
        return _Trained(
            base,
            update.weights,
            update.num_examples,
            loss if math.isfinite(loss) else None,
            round(seconds, 6),
        )

    def _encode(self, task: RoundTask, trained: _Trained, down: int) -> tuple[SavedUpdate, bytes]:
        """The encoded change and what is saved with it, cut into chunks within ``chunk_bytes``."""
        blob = encode_update(trained.weights, trained.base)
        meta = SavedUpdate(
            run=task.run,
            round=task.round,
            deadline=task.deadline,
            sha256=hashlib.sha256(blob).hexdigest(),
            size=len(blob),
            piece=1,
            total=1,
            num_examples=trained.num_examples,
            loss=trained.loss,
            train_seconds=trained.seconds,
            bytes_down=down,
            late_ok=bool(task.config.get("async")),
        )
        # the widest header a chunk of this update can have: a frame stays within chunk_bytes
        widest = len(encode_frame(self._chunk(meta, 99_999, 100_000)))
        piece = task.chunk_bytes - widest
        total = max(1, math.ceil(len(blob) / max(piece, 1)))
        if piece < 1 or total > 100_000:
            raise FoglineError(
                f"an update of {len(blob)} bytes needs {total} chunks of {task.chunk_bytes} "
                "bytes, more than 100000"
            )
        return meta.model_copy(update={"piece": piece, "total": total}), blob

    def _chunk(self, meta: SavedUpdate, index: int, total: int) -> UpdateChunk:
        return UpdateChunk(
            device_id=self.device_id,
            run=meta.run,
            round=meta.round,
            index=index,
            total=total,
            size=meta.size,
            sha256=meta.sha256,
            num_examples=meta.num_examples,
            loss=meta.loss,
            train_seconds=meta.train_seconds,
            bytes_down=meta.bytes_down,
        )

    # -- declines --------------------------------------------------------------------

    def _decline(self, task: RoundTask, reason: str, down: int) -> None:
        key = (task.run, task.round)
        self._finished[key] = "declined"  # not saved: after a restart the device may take it
        decline = UpdateChunk(
            device_id=self.device_id,
            run=task.run,
            round=task.round,
            kind="decline",
            reason=reason[:500],
            bytes_down=down,
        )
        with self._cond:
            self._counters.rounds_declined += 1
        self._say(key, f"declined: {reason}")
        self._queue(task.deadline, encode_frame(decline))

    def _queue(self, deadline: float, frame: bytes) -> None:
        """Send a one-frame message now, or when connected again (until ``deadline``)."""
        self._outbox.append((deadline, frame))
        self._send_outbox()

    def _send_outbox(self) -> None:
        now = time.time()
        self._outbox = [(d, f) for d, f in self._outbox if d >= now]
        while self._outbox and self._connected():
            frame = self._outbox[0][1]
            try:
                self._publish([MqttMessage(self._topic, frame, 1)], PUBLISH_TIMEOUT)
            except TransportError as exc:
                log.info("a federated message waits for the broker: %s", exc)
                return
            self._outbox.pop(0)
            with self._cond:
                self._counters.bytes_up += len(frame)

    # -- secure aggregation ----------------------------------------------------------

    def _secagg_frame(
        self, task: RoundTask, stage: str, body: bytes, down: int, trained: _Trained | None = None
    ) -> bytes:
        key = (task.run, task.round)
        examples = trained.num_examples if trained is not None else self._secagg[key][1]
        header = UpdateChunk.model_validate(
            {
                "device_id": self.device_id,
                "run": task.run,
                "round": task.round,
                "kind": "secagg",
                "stage": stage,
                "num_examples": examples,
                "loss": None if trained is None else trained.loss,
                "train_seconds": 0.0 if trained is None else trained.seconds,
                "bytes_down": down,
            }
        )
        return encode_frame(header, body)

    def _secagg_stage(self, task: RoundTask, body: bytes, down: int) -> None:
        """Answer a later stage of secure aggregation (shares, mask, unmask) from this round's keys."""
        key = (task.run, task.round)
        held = self._secagg.get(key)
        mark = (task.run, task.round, task.stage)
        if held is None or mark in self._answered:
            return  # not in this round's masking (declined, or restarted since), or answered
        reason = self._model_mismatch(task, body)
        try:
            if reason is not None:
                raise FoglineError(reason.replace("the model", "the stage's body"))
            reply = held[0].answer(task.stage, body)
        except FoglineError as exc:
            self._secagg.pop(key, None)
            self._say(key, f"left secure aggregation at stage {task.stage}: {exc}")
            return
        self._answered.add(mark)
        frame = self._secagg_frame(task, task.stage, reply, down)
        self._queue(task.deadline, frame)
        self._say(key, f"secure aggregation: answered {task.stage} ({_size(len(frame))})")

    # -- acknowledgements and (re)sending ---------------------------------------------

    def _take_ack(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            ack = UpdateAck.model_validate_json(payload)
        except ValidationError:
            try:  # a controller may send it as a frame with an empty body
                ack = decode_frame(payload, UpdateAck)[0]
            except ValueError as exc:
                log.warning("dropped a malformed fl-ack: %s", exc)
                self._event("dropped a malformed federated acknowledgement")
                return
        key = (ack.run, ack.round)
        upload = self._upload if self._upload is not None and self._upload.key == key else None
        if ack.status in FINAL:
            self._secagg.pop(key, None)
            if upload is not None:
                self._finish(upload, ack)
            elif self._finished.get(key) in (None, "declined", "secagg"):
                self._remember(key, ack.status)
            return
        if upload is not None:
            stored = {i for i in ack.received if 0 <= i < upload.meta.total}
            if stored - upload.received:  # progress: wait again before resending
                upload.wait = self.resend_after
                upload.next_send = time.monotonic() + upload.wait
            upload.received = stored

    def _pump(self) -> None:
        upload = self._upload
        if upload is None:
            return
        if time.time() > upload.meta.deadline:
            self._drop(upload, "its deadline passed before the controller took it")
            return
        if not upload.live:
            return
        with self._cond:
            ready_at = self._ready_at
        if ready_at is not None and ready_at > upload.sent_at:  # reconnected since the last pass
            upload.next_send = min(upload.next_send, ready_at + RESUME_GRACE)
        if time.monotonic() < upload.next_send or not self._connected():
            return
        missing = [i for i in range(upload.meta.total) if i not in upload.received]
        if not missing:  # all stored: the controller is checking the whole
            upload.next_send = time.monotonic() + upload.wait
            return
        first = upload.passes == 0
        self._send(upload, missing)
        upload.wait = min(upload.wait * 2, RESEND_MAX)
        if not first:
            with self._cond:
                self._counters.chunks_resent += len(missing)
            self._say(
                upload.key, f"sent {len(missing)} missing chunk(s) of {upload.meta.total} again"
            )

    def _send(self, upload: _Upload, indices: Iterable[int]) -> None:
        """Send the chunks ``indices`` of ``upload``; offline or refused, the pump tries again."""
        meta = upload.meta
        frames = [encode_frame(self._chunk(meta, i, meta.total), upload.piece(i)) for i in indices]
        upload.sent_at = time.monotonic()
        upload.next_send = upload.sent_at + upload.wait
        try:
            for start in range(0, len(frames), BATCH):
                batch = frames[start : start + BATCH]
                self._publish([MqttMessage(self._topic, f, 1) for f in batch], PUBLISH_TIMEOUT)
                upload.bytes_sent += sum(map(len, batch))
                with self._cond:
                    self._counters.bytes_up += sum(map(len, batch))
                    self._counters.chunks_sent += len(batch)
        except TransportError as exc:
            log.info("round %s of run %s: upload interrupted: %s", meta.round, meta.run, exc)
            return
        upload.passes += 1

    def _finish(self, upload: _Upload, ack: UpdateAck) -> None:
        if ack.status == "accepted":
            with self._cond:
                self._counters.rounds_accepted += 1
            what = f"accepted by the controller ({_size(upload.bytes_sent)} sent)"
        elif ack.status == "refused":
            what = f"refused by the controller: {ack.reason or 'no reason given'}"
        else:
            what = "closed before the controller had the whole update"
        self._say(upload.key, what)
        self._upload = None
        self._remember(upload.key, ack.status)  # first: killed in between, it is not sent again
        self._update_file.unlink(missing_ok=True)

    def _drop(self, upload: _Upload, why: str) -> None:
        self._say(upload.key, f"update dropped: {why}")
        self._upload = None
        self._update_file.unlink(missing_ok=True)

    # -- what is kept on disk -----------------------------------------------------------

    @property
    def _update_file(self) -> Path:
        return self.folder / "update.bin"

    @property
    def _finished_file(self) -> Path:
        return self.folder / "finished.json"

    def _remember(self, key: Key, status: str) -> None:
        self._finished[key] = status
        kept = [[run, r, s] for (run, r), s in self._finished.items() if s != "declined"]
        atomic_write(self._finished_file, json.dumps(kept[-FINISHED_KEPT:]).encode())

    def _restore(self) -> None:
        """The finished rounds and the saved update (sent again once its round is seen open)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for run, r, status in json.loads(self._finished_file.read_text()):
                self._finished[(str(run), int(r))] = str(status)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignored %s: %s", self._finished_file, exc)
        try:
            meta, blob = decode_frame(self._update_file.read_bytes(), SavedUpdate)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("discarded %s: %s", self._update_file, exc)
            self._update_file.unlink(missing_ok=True)
            return
        finished = (meta.run, meta.round) in self._finished
        if (
            finished
            or hashlib.sha256(blob).hexdigest() != meta.sha256
            or time.time() > meta.deadline
        ):
            self._update_file.unlink(missing_ok=True)
            return
        self._upload = _Upload(meta, blob, live=False, wait=self.resend_after)

    def _say(self, key: Key, what: str) -> None:
        self._event(f"federated run {key[0]} round {key[1]}: {what}")


def _round_key(payload: bytes) -> Key | None:
    """The (run, round) of a raw fl-round payload; None for a malformed one."""
    try:
        task = decode_frame(payload, RoundTask)[0]
    except ValueError:
        return None
    return task.run, task.round


__all__ = ["RoundCounters", "RoundParticipant", "SavedUpdate"]
