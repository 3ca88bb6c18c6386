"""Federated rounds across the fleet, coordinated by the controller.

The controller loads this module when a run starts (or when one was running
before a restart), so a controller that never runs one never loads numpy.
:class:`Coordinator` owns one thread; the controller hands it every
``fl-update`` message (:meth:`Coordinator.submit`) and it does the rest:

1. **Open a round**: the online devices of the run's group are sampled by the
   strategy (``fraction``, at least ``min_clients``); each sampled device gets
   a retained ``fl-round`` frame with the global model and a deadline.
2. **Take updates**: each chunk is stored before it is acknowledged on the
   device's retained ``fl-ack``; a complete update is hashed, decoded against
   the round's model and checked (shape, NaN, Inf). Whatever is wrong (a
   round that is closed or never existed, a device not sampled, an update
   sent twice, a bad hash or shape) is refused with a reason the device
   reads, and counted; the round goes on.
3. **Close the round** when every sampled device answered (an update, a
   refusal or a ``decline``) or at the deadline: with at least
   ``min_clients`` updates (and the strategy's own bound) the strategy
   aggregates them (with differential privacy: each change clipped, the mean
   over the sampled devices noised, ε counted), the new model is evaluated on
   the task's test set, and all of it is committed in one transaction. A
   round short of updates keeps the model and says why.
4. **Finish**: export the model to ONNX, gate it against the newest release
   of the same name on the operator's validation set (both run in ONNX
   Runtime), sign it as a release whose document records its provenance,
   and with ``then="canary"`` deploy it through the fleet's rollout.

Everything lives in :class:`~fogline.federated._run_store.RunStore`; a
controller killed with ``kill -9`` resumes each run where it stood: the open
round keeps its deadline, stored chunks and acknowledged updates stay.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import ConfigError, Conflict, FoglineError, ItemError, ModelNotFound
from fogline.federated._client import ClientTrainer
from fogline.federated._codec import decode_update, decode_weights, encode_weights
from fogline.federated._export import export_weights
from fogline.federated._privacy import GaussianMechanism, PrivacyAccountant, PrivacyConfig
from fogline.federated._run_store import ACTIVE, RunStore
from fogline.federated._secagg import SecAggResult, SecAggServer
from fogline.federated._secagg_messages import SecAggParams
from fogline.federated._secagg_wire import (
    decode_adverts,
    decode_masked,
    decode_response,
    decode_shares,
    encode_adverts,
    encode_request,
    encode_shares,
    params_from,
)
from fogline.federated._simulate import MEAN_STRATEGIES, Task, load_task
from fogline.federated.strategy import STRATEGIES, Strategy, Update, Weights, strategy_for
from fogline.protocol import (
    DeviceTopics,
    RoundTask,
    RunSpec,
    SecAggSettings,
    UpdateAck,
    UpdateChunk,
    decode_frame,
    encode_frame,
)

__all__ = ["Coordinator", "FleetHooks"]

log = logging.getLogger("fogline.federated")

#: Bytes a chunk of an update may hold, asked of devices.
CHUNK_BYTES = 64 * 1024
#: Under secure aggregation a device weighs its change by min(1, examples / this).
SECAGG_SCALE = 1000.0
#: What a device sends back for each stage the controller opens, and the stage after it.
REPLY = {"train": "keys", "shares": "shares", "mask": "mask", "unmask": "unmask"}
NEXT = {"train": "shares", "shares": "mask", "mask": "unmask"}


@dataclass
class FleetHooks:
    """What the coordinator needs of the controller it runs in."""

    #: Publish ``payload`` on ``topic`` at QoS 1 (retained or not); queued while offline.
    publish: Callable[[str, bytes, bool], None]
    #: The ids of the online devices of a group.
    members: Callable[[str], list[str]]
    #: The newest release of a name: ``(version, folder of its files)``, or None.
    newest_release: Callable[[str], tuple[str, Path] | None]
    #: Sign a folder as a release: ``(folder, name, version, canary, provenance)``.
    create_release: Callable[[Path, str, str, str, dict[str, Any]], None]
    #: Deploy ``(name, version, group, spec)`` as a canary; returns the deployment id.
    deploy: Callable[[str, str, str, RunSpec], str]
    prefix: str = "fogline"
    #: Where a finished run writes its exported model (``work/<run>/``).
    work: Path = field(default_factory=lambda: Path("federated"))


@dataclass
class _Live:
    """What a run needs in memory; rebuilt from the store after a restart."""

    spec: RunSpec
    task: Task
    trainer: ClientTrainer
    strategy: Strategy
    accountant: PrivacyAccountant | None
    mechanism: GaussianMechanism | None
    waiting: str | None = None  # why the next round has not opened


class Coordinator:
    """Runs federated rounds; see the module docstring. Start with :meth:`start`."""

    def __init__(self, store: RunStore, hooks: FleetHooks, *, tick: float = 0.25) -> None:
        self.store = store
        self.hooks = hooks
        self.tick = tick
        self.counters: dict[str, int] = {"received": 0, "refused": 0, "duplicates": 0}
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._live: dict[str, _Live] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Coordinator:
        for row in self.store.runs(ACTIVE):
            try:
                self._live[row["id"]] = self._rebuild(
                    row["id"], RunSpec.model_validate_json(row["spec"])
                )
                log.info("federated run %s resumes at round %s", row["id"], row["round"])
            except FoglineError as exc:
                self.store.set_status(row["id"], "failed", f"cannot resume: {exc}")
        self._thread = threading.Thread(target=self._loop, name="fogline-federated", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def submit(self, device_id: str, payload: bytes) -> None:
        """Hand over one ``fl-update`` message (from the controller's network thread)."""
        self._inbox.put((device_id, payload))
        self._wake.set()

    # -- the operator's side ---------------------------------------------------------------

    def start_run(self, spec: RunSpec) -> dict[str, Any]:
        """Check ``spec`` and start it; ConfigError or Conflict saying what is wrong."""
        if spec.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {spec.strategy!r}; known: {', '.join(sorted(STRATEGIES))}"
            )
        if spec.dp_noise is not None and spec.strategy not in MEAN_STRATEGIES:
            raise ConfigError(
                f"strategy {spec.strategy!r} needs each device's update, and --dp-noise gives it "
                f"only their mean; use one of {', '.join(sorted(MEAN_STRATEGIES))}"
            )
        if spec.secagg and spec.strategy not in MEAN_STRATEGIES:
            raise ConfigError(
                f"strategy {spec.strategy!r} needs each device's update, and --secagg gives it "
                f"only their sum; use one of {', '.join(sorted(MEAN_STRATEGIES))}"
            )
        if spec.secagg and spec.min_clients < 2:
            raise ConfigError("--secagg needs --min-clients of at least 2")
        busy = [
            r["id"]
            for r in self.store.runs(ACTIVE)
            if RunSpec.model_validate_json(r["spec"]).release == spec.release
        ]
        if busy:
            raise Conflict(
                f"run {busy[0]} already trains release {spec.release!r}; "
                f"stop it first with 'fogline fl stop {busy[0]}'"
            )
        members = self.hooks.members(spec.group)
        if len(members) < spec.min_clients:
            raise ConfigError(
                f"group {spec.group!r} has {len(members)} online device(s); "
                f"--min-clients is {spec.min_clients}"
            )
        run_id = f"fl-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        live = self._rebuild(run_id, spec)
        model = encode_weights(live.task.initial_weights(live.trainer))
        with self._lock:
            self.store.add_run(run_id, spec.model_dump_json(), model)
            self._live[run_id] = live
        self._wake.set()
        log.info("federated run %s started: %s", run_id, spec.model_dump_json())
        found = self.describe(run_id)
        assert found is not None
        return found

    def stop_run(self, run_id: str) -> dict[str, Any]:
        row = self.store.run(run_id)
        if row is None:
            raise ModelNotFound(f"no federated run {run_id!r}")
        if row["status"] not in ACTIVE:
            raise Conflict(f"run {run_id} is already {row['status']}")
        self.store.set_status(run_id, "stopping", "stopped by the operator")
        self._wake.set()
        return self.describe(run_id) or {}

    def runs(self) -> list[dict[str, Any]]:
        return [self._summary(row) for row in self.store.runs()]

    def describe(self, run_id: str) -> dict[str, Any] | None:
        row = self.store.run(run_id)
        if row is None:
            return None
        out = self._summary(row)
        out["rounds"] = self.store.rounds(run_id)
        current = self.store.round(run_id, row["round"]) if row["round"] else None
        if current is not None:
            out["current"] = {
                "round": current["round"],
                "status": current["status"],
                "stage": current["stage"],
                "deadline": current["deadline"],
                "sampled": current["sampled"],
                "updates": self.store.updates(run_id, current["round"]),
            }
        return out

    def _summary(self, row: dict[str, Any]) -> dict[str, Any]:
        spec = RunSpec.model_validate_json(row["spec"])
        live = self._live.get(row["id"])
        return {
            "id": row["id"],
            "status": row["status"],
            "round": row["round"],
            "reason": row["reason"],
            "waiting": live.waiting if live is not None else None,
            "result": row["result"],
            "last": self.store.last_round(row["id"]),
            "created": row["created"],
            "updated": row["updated"],
            "spec": spec.model_dump(mode="json"),
        }

    # -- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick)
            self._wake.clear()
            while True:
                try:
                    device_id, payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._on_update(device_id, payload)
                except Exception:  # one bad message must not end the coordinator
                    log.exception("federated update from %s", device_id)
            for run_id in list(self._live):
                try:
                    self._advance(run_id)
                except Exception as exc:
                    log.exception("federated run %s", run_id)
                    self.store.set_status(run_id, "failed", f"{type(exc).__name__}: {exc}")
                    self._live.pop(run_id, None)

    def _rebuild(self, run_id: str, spec: RunSpec) -> _Live:
        task = load_task(spec.task)
        trainer = task.trainer(spec.local_epochs)
        strategy = strategy_for(spec.strategy, fraction=spec.fraction, min_clients=spec.min_clients)
        accountant = mechanism = None
        if spec.dp_noise is not None and spec.dp_clip is not None:
            config = PrivacyConfig(
                noise_multiplier=spec.dp_noise,
                clip_norm=spec.dp_clip,
                sampling_rate=spec.fraction,
                delta=spec.dp_delta,
            )
            mechanism = GaussianMechanism(config, seed=spec.seed)
            done = sum(
                1 for r in self.store.rounds(run_id) if r["status"] == "closed"
            )  # rounds already counted before a restart
            accountant = PrivacyAccountant(config, rounds=done)
        return _Live(spec, task, trainer, strategy, accountant, mechanism)

    def _advance(self, run_id: str) -> None:
        row = self.store.run(run_id)
        if row is None:
            self._live.pop(run_id, None)
            return
        live = self._live[run_id]
        current = self.store.round(run_id, row["round"]) if row["round"] else None
        if current is not None and current["status"] == "open":
            if row["status"] == "stopping":
                self._close_round(run_id, live, current, reason="stopped by the operator")
            elif live.spec.secagg:
                self._advance_secagg(run_id, live, current)
            elif self._round_done(run_id, current):
                self._close_round(run_id, live, current)
            return
        if row["status"] == "stopping":
            if live.spec.asynchronous:
                self._withdraw_all(run_id)
            self.store.set_status(run_id, "stopped")
            self._live.pop(run_id, None)
            return
        if row["status"] == "finishing" or row["round"] >= live.spec.rounds:
            self._finish(run_id, live)
            return
        budget = live.spec.epsilon_budget
        if (
            live.accountant is not None
            and budget is not None
            and live.accountant.would_exceed(budget)
        ):
            reason = (
                f"round {row['round'] + 1} would take ε to "
                f"{live.accountant.epsilon(live.accountant.rounds + 1):.3g} > budget {budget:g}"
            )
            self.store.set_status(run_id, "finishing", reason, stopped_by_budget=True)
            self._finish(run_id, live)
            return
        self._open_round(run_id, live, row["round"] + 1, row["model"])

    def _open_round(self, run_id: str, live: _Live, number: int, model: bytes) -> None:
        members = self.hooks.members(live.spec.group)
        if len(members) < live.spec.min_clients:
            live.waiting = (
                f"{len(members)} of --min-clients {live.spec.min_clients} devices of group "
                f"{live.spec.group!r} online"
            )
            return
        live.waiting = None
        seed = live.spec.seed if live.spec.seed is not None else secrets.randbits(32)
        rng = np.random.default_rng([seed, number])
        instructions = live.strategy.configure(number, members, rng)
        config = {k: float(v) for k, v in instructions[0].config.items() if _number(v)}
        config["epochs"] = float(live.spec.local_epochs)
        if live.spec.asynchronous:
            config["async"] = 1.0  # a device sends an update it finished even if a newer round came
        sha = hashlib.sha256(model).hexdigest()
        deadline = time.time() + live.spec.deadline
        sampled = [i.client for i in instructions]
        secagg = None
        if live.spec.secagg:
            dimension = decode_weights(model).size + 1  # the change and its weight
            params = SecAggParams(
                num_clients=len(sampled), dimension=dimension, clip=live.spec.secagg_clip,
                bits=live.spec.secagg_bits, round_id=f"{run_id}/{number}",
            )  # fmt: skip
            secagg = SecAggSettings(
                num_clients=params.num_clients, dimension=params.dimension, clip=params.clip,
                bits=params.bits, threshold=params.threshold, round_id=params.round_id,
                scale=SECAGG_SCALE,
            )  # fmt: skip
        self.store.open_round(run_id, number, deadline, sampled, model, sha)
        task = RoundTask(
            run=run_id,
            round=number,
            task=live.spec.task,
            deadline=deadline,
            config=config,
            model_sha256=sha,
            model_size=len(model),
            chunk_bytes=CHUNK_BYTES,
            secagg=secagg,
        )
        frame = encode_frame(task, model)
        for device in sampled:
            self.hooks.publish(self._topic(device, "fl-round"), frame, True)
        self.store.add_sent(run_id, number, len(frame) * len(sampled))
        log.info("federated run %s round %d opened: %s", run_id, number, ", ".join(sampled))

    def _round_done(self, run_id: str, current: dict[str, Any]) -> bool:
        if time.time() >= current["deadline"]:
            return True
        answered = {u["device"] for u in self.store.updates(run_id, current["round"])}
        return answered >= set(current["sampled"])

    def _close_round(
        self,
        run_id: str,
        live: _Live,
        current: dict[str, Any],
        *,
        reason: str | None = None,
        secured: Weights | None = None,
    ) -> None:
        """Aggregate what the round has (or take ``secured``, the unmasked aggregate) and close it."""
        number = current["round"]
        base = decode_weights(current["model"])
        rows = [
            u for u in self.store.updates(run_id, number, data=True) if u["status"] == "accepted"
        ]
        if live.spec.secagg:
            rows = []  # nothing decodable: the secure sum is all the controller has
        updates = [
            Update(
                u["device"],
                decode_update(u["data"], base, f"device {u['device']!r}"),
                u["examples"],
            )
            for u in rows
        ]
        late = self._late(run_id, live, number, base) if live.spec.asynchronous else []
        fresh = len(updates)
        updates += late
        needed = max(live.spec.min_clients, live.strategy.bound(len(updates)).minimum)
        new: Weights | None = None
        participants = len(updates)
        if live.spec.secagg:
            new = secured
            participants = sum(
                1 for u in self.store.updates(run_id, number) if u["status"] == "accepted"
            )
            if new is None and reason is None:
                reason = "secure aggregation did not complete"
        elif reason is not None:
            pass
        elif len(updates) < needed:
            reason = (
                f"{len(updates)} update(s) by the deadline, {needed} needed "
                f"({len(current['sampled'])} sampled); the model is kept"
            )
        else:
            try:
                new = self._aggregate(live, number, base, updates, len(current["sampled"]))
            except ConfigError as exc:  # below a strategy's bound after its own checks
                reason = str(exc)
            else:
                for update in late:  # used once
                    device, _, origin = update.client.rpartition("@")
                    self.store.fold(run_id, int(origin), device, number)
                if late:
                    reason = f"{fresh} on time and {len(late)} late, folded in by staleness"
        epsilon = None
        if new is not None and live.accountant is not None:
            epsilon = live.accountant.step()
        elif live.accountant is not None and live.accountant.rounds:
            epsilon = live.accountant.epsilon()
        evaluated = live.trainer.evaluate(new if new is not None else base, live.task.test)
        self.store.close_round(
            run_id,
            number,
            status="closed" if new is not None else "failed",
            model=None if new is None else encode_weights(new),
            accuracy=evaluated.accuracy,
            loss=evaluated.loss,
            participants=participants,
            epsilon=epsilon,
            reason=reason,
        )
        answered = {u["device"] for u in self.store.updates(run_id, number)}
        for device in current["sampled"]:
            if (
                live.spec.asynchronous
                and device not in answered
                and reason != "stopped by the operator"
            ):
                continue  # a straggler goes on: what it sends is folded into a later round
            self.hooks.publish(self._topic(device, "fl-round"), b"", True)  # withdrawn
            if device not in answered:
                ack = UpdateAck(
                    run=run_id, round=number, status="closed", reason="the round closed"
                )
                self.hooks.publish(
                    self._topic(device, "fl-ack"), ack.model_dump_json().encode(), True
                )
        log.info(
            "federated run %s round %d closed: %d update(s), accuracy %.4f%s",
            run_id, number, participants, evaluated.accuracy, f" ({reason})" if reason else "",
        )  # fmt: skip

    def _late(self, run_id: str, live: _Live, number: int, base: Weights) -> list[Update]:
        """The late updates to fold into round ``number``, as if trained from ``base``.

        A change made from round ``r``'s model is applied to this round's with
        the weight ``(1 + staleness) ** -0.5`` (FedBuff's polynomial discount),
        ``staleness = number - r``; older than ``max_staleness`` it is dropped.
        """
        out = []
        since = number - live.spec.max_staleness
        vector = base.vector()
        for row in self.store.late_updates(run_id, since):
            origin = self.store.round(run_id, row["round"])
            if origin is None or row["round"] >= number:
                continue
            start = decode_weights(origin["model"])
            change = decode_update(row["data"], start, f"device {row['device']!r}").vector()
            change -= start.vector()
            factor = (1 + number - row["round"]) ** -0.5
            trained = base.like(vector + factor * change)
            out.append(Update(f"{row['device']}@{row['round']}", trained, row["examples"]))
        return out

    def _aggregate(
        self, live: _Live, number: int, base: Weights, updates: list[Update], sampled: int
    ) -> Weights:
        if live.mechanism is None:
            return live.strategy.aggregate(number, base, updates).weights
        vector = base.vector()
        total = np.zeros_like(vector)
        for u in updates:  # each device's change clipped to the norm, each counted once
            (clipped,) = live.mechanism.clip([u.weights.vector() - vector])
            total += clipped
        (mean,) = live.mechanism.server_average([total / sampled], expected_clients=sampled)
        examples = sum(u.num_examples for u in updates)
        pooled = Update("aggregate", base.like(vector + mean), examples)
        return live.strategy.aggregate(number, base, [pooled]).weights

    # -- secure aggregation ------------------------------------------------------------------

    def _settings(self, run_id: str, live: _Live, current: dict[str, Any]) -> SecAggSettings:
        """The round's settings, the same every time they are worked out (also after a restart)."""
        params = SecAggParams(
            num_clients=len(current["sampled"]),
            dimension=decode_weights(current["model"]).size + 1,
            clip=live.spec.secagg_clip,
            bits=live.spec.secagg_bits,
            round_id=f"{run_id}/{current['round']}",
        )
        return SecAggSettings(
            num_clients=params.num_clients, dimension=params.dimension, clip=params.clip,
            bits=params.bits, threshold=params.threshold, round_id=params.round_id,
            scale=SECAGG_SCALE,
        )  # fmt: skip

    def _on_secagg(
        self, device: str, header: UpdateChunk, body: bytes, current: dict[str, Any], wire: int
    ) -> None:
        run_id, number, stage = header.run, header.round, current["stage"]
        live = self._live.get(run_id)
        if live is None or not live.spec.secagg:
            self._refuse(device, header, f"run {run_id} does not use secure aggregation")
            return
        if header.stage != REPLY[stage]:
            self._refuse(
                device, header, f"a {header.stage} message while round {number} is at stage {stage}"
            )
            return
        params = params_from(self._settings(run_id, live, current))
        try:  # checked now, so that one device's garbage cannot fail the round later
            if header.stage == "keys":
                adverts = decode_adverts(body)
                if [a.client_id for a in adverts] != [device] or header.num_examples < 1:
                    raise ItemError(
                        "a keys message holds this device's one advert and its examples"
                    )
            elif header.stage == "shares":
                if any(s.sender != device for s in decode_shares(body)):
                    raise ItemError("shares must all be sent by this device")
            elif header.stage == "mask":
                decode_masked(device, body, params)
            elif decode_response(body).client_id != device:
                raise ItemError("an unmask response must come from this device")
        except ItemError as exc:
            self._refuse(device, header, str(exc))
            self.store.add_update(run_id, number, device, status="refused", reason=str(exc))
            return
        stored = self.store.add_secagg(
            run_id, number, header.stage, device, body, wire=wire,
            examples=header.num_examples, bytes_down=header.bytes_down,
        )  # fmt: skip
        if not stored:
            self.counters["duplicates"] += 1
        self._wake.set()

    def _expected(self, run_id: str, current: dict[str, Any]) -> set[str]:
        """Who should answer the round's current stage."""
        number, stage = current["round"], current["stage"]
        gone = {u["device"] for u in self.store.updates(run_id, number)}  # declined, refused
        if stage == "train":
            return set(current["sampled"]) - gone
        previous = REPLY[{"shares": "train", "mask": "shares", "unmask": "mask"}[stage]]
        return {m["device"] for m in self.store.secagg(run_id, number, previous)} - gone

    def _advance_secagg(self, run_id: str, live: _Live, current: dict[str, Any]) -> None:
        number, stage = current["round"], current["stage"]
        got = {m["device"] for m in self.store.secagg(run_id, number, REPLY[stage])}
        deadline = current["deadline"] if stage == "train" else current["stage_deadline"]
        if not got >= self._expected(run_id, current) and time.time() < deadline:
            return
        settings = self._settings(run_id, live, current)
        try:
            output = self._replay(run_id, number, params_from(settings), stage)
        except (ItemError, Conflict, ConfigError) as exc:
            self._close_round(
                run_id, live, current, reason=f"secure aggregation failed at {stage}: {exc}"
            )
            return
        if isinstance(output, SecAggResult):
            self._close_round(
                run_id, live, current, secured=self._unmasked(run_id, live, current, output)
            )
            return
        following = NEXT[stage]
        bodies: dict[str, bytes]
        if following == "shares":
            assert isinstance(output, list)
            blob = encode_adverts(output)
            bodies = {a.client_id: blob for a in output}
        elif following == "mask":
            assert isinstance(output, dict)
            bodies = {device: encode_shares(shares) for device, shares in output.items()}
        else:
            blob = encode_request(output)
            bodies = {device: blob for device in sorted(output.survivors)}
        until = time.time() + live.spec.deadline
        self.store.set_stage(run_id, number, following, until)
        sent = 0
        for device, blob in bodies.items():
            task = RoundTask(
                run=run_id, round=number, task=live.spec.task, deadline=until,
                model_sha256=hashlib.sha256(blob).hexdigest(), model_size=len(blob),
                stage=following, secagg=settings,  # type: ignore[arg-type]
            )  # fmt: skip
            frame = encode_frame(task, blob)
            self.hooks.publish(self._topic(device, "fl-round"), frame, True)
            sent += len(frame)
        self.store.add_sent(run_id, number, sent)
        log.info(
            "federated run %s round %d: secure aggregation stage %s with %d device(s)",
            run_id, number, following, len(bodies),
        )  # fmt: skip

    def _replay(self, run_id: str, number: int, params: SecAggParams, upto: str) -> Any:
        """The server of the round rebuilt from the stored messages, run up to ``upto``'s answers.

        Returns what that stage produced: the adverts, each device's inbox of
        shares, the unmask request, or the unmasked sum.
        """
        server = SecAggServer(params)

        def stored(stage: str) -> list[dict[str, Any]]:
            return self.store.secagg(run_id, number, stage)

        adverts = server.collect_adverts(
            [a for m in stored("keys") for a in decode_adverts(m["body"])]
        )
        if upto == "train":
            return adverts
        inbox = server.route_shares([s for m in stored("shares") for s in decode_shares(m["body"])])
        if upto == "shares":
            return inbox
        request = server.collect_masked(
            [decode_masked(m["device"], m["body"], params) for m in stored("mask")
             if m["device"] in inbox]
        )  # fmt: skip
        if upto == "mask":
            return request
        return server.aggregate([decode_response(m["body"]) for m in stored("unmask")])

    def _unmasked(
        self, run_id: str, live: _Live, current: dict[str, Any], result: SecAggResult
    ) -> Weights | None:
        """The new global weights from the unmasked sum; records each device's bytes and part."""
        number = current["round"]
        messages = self.store.secagg(run_id, number)
        examples = {m["device"]: m["examples"] for m in messages if m["stage"] == "keys"}
        for device in sorted({m["device"] for m in messages}):
            mine = [m for m in messages if m["device"] == device]
            self.store.add_update(
                run_id, number, device,
                status="accepted" if device in result.survivors else "dropped",
                reason=None if device in result.survivors else "dropped before unmasking",
                examples=examples.get(device, 0),
                bytes_up=sum(m["wire"] for m in mine),
                bytes_down=max(m["bytes_down"] for m in mine),
            )  # fmt: skip
        weight = float(result.total[-1])
        if weight <= 0:
            return None
        base = decode_weights(current["model"])
        mean = result.total[:-1] / weight
        total_examples = sum(examples.get(d, 0) for d in result.survivors) or 1
        pooled = Update("aggregate", base.like(base.vector() + mean), total_examples)
        return live.strategy.aggregate(number, base, [pooled]).weights

    # -- updates -----------------------------------------------------------------------------

    def _topic(self, device: str, kind: str) -> str:
        return DeviceTopics(self.hooks.prefix, device).topic(kind)

    def _ack(self, device: str, ack: UpdateAck) -> None:
        self.hooks.publish(self._topic(device, "fl-ack"), ack.model_dump_json().encode(), True)

    def _refuse(self, device: str, header: UpdateChunk, reason: str) -> None:
        self.counters["refused"] += 1
        log.warning("refused an update from %s: %s", device, reason)
        self._ack(
            device, UpdateAck(run=header.run, round=header.round, status="refused", reason=reason)
        )

    def _on_update(self, device: str, payload: bytes) -> None:
        self.counters["received"] += 1
        try:
            header, body = decode_frame(payload, UpdateChunk)
        except ValueError as exc:
            self.counters["refused"] += 1
            log.warning("dropped a malformed fl-update from %s: %s", device, str(exc)[:300])
            return
        if header.device_id != device:
            self._refuse(
                device, header, f"the body names device {header.device_id!r}, the topic {device!r}"
            )
            return
        run = self.store.run(header.run)
        if run is None:
            self._refuse(device, header, f"run {header.run!r} does not exist")
            return
        current = self.store.round(header.run, header.round)
        if current is None:
            self._refuse(device, header, f"round {header.round} of run {header.run} never existed")
            return
        if device not in current["sampled"]:
            self._refuse(
                device, header, f"device {device} was not sampled for round {header.round}"
            )
            return
        known = self.store.update(header.run, header.round, device)
        if known is not None:
            self.counters["duplicates"] += 1
            self.store.count_duplicate(header.run, header.round, device)
            self._ack(device, UpdateAck(
                run=header.run, round=header.round,
                status="accepted" if known["status"] in ("accepted", "late", "folded")
                else "refused",
                reason=known["reason"] or "already received",
            ))  # fmt: skip
            return
        late = current["status"] != "open" and self._takes_late(header, run)
        if current["status"] != "open" and not late:
            self._ack(device, UpdateAck(
                run=header.run, round=header.round, status="closed",
                reason=f"round {header.round} is closed",
            ))  # fmt: skip
            return
        if header.kind == "secagg":
            self._on_secagg(device, header, body, current, len(payload))
            return
        if header.kind == "decline":
            self.store.add_update(
                header.run, header.round, device, status="declined",
                reason=header.reason or "declined", bytes_down=header.bytes_down,
            )  # fmt: skip
            self._ack(device, UpdateAck(
                run=header.run, round=header.round, status="refused",
                reason=f"declined: {header.reason or 'no reason given'}",
            ))  # fmt: skip
            log.info("device %s declined round %d: %s", device, header.round, header.reason)
            return
        self._on_chunk(device, header, body, current, len(payload), late=late)

    def _takes_late(self, header: UpdateChunk, run: dict[str, Any]) -> bool:
        """Whether an update for a closed round is still folded into a later one (``--async``)."""
        live = self._live.get(header.run)
        return (
            live is not None
            and live.spec.asynchronous
            and header.kind == "chunk"
            and run["status"] == "running"
            and run["round"] - header.round < live.spec.max_staleness
        )

    def _on_chunk(
        self,
        device: str,
        header: UpdateChunk,
        body: bytes,
        current: dict[str, Any],
        wire: int,
        *,
        late: bool = False,
    ) -> None:
        run_id, number = header.run, header.round
        model = current["model"]
        limit = 2 * _coordinates(model) + 4096  # float16 per coordinate, deflate's worst case
        problem = None
        if header.sha256 is None or header.num_examples < 1:
            problem = "an update chunk needs sha256 and num_examples >= 1"
        elif header.size > limit:
            problem = f"the update is {header.size} bytes, more than the model allows ({limit})"
        elif header.index >= header.total:
            problem = f"chunk {header.index} of {header.total} does not exist"
        else:
            earlier = self.store.chunks(run_id, number, device)
            if earlier and (earlier[0]["sha256"], earlier[0]["total"], earlier[0]["size"]) != (
                header.sha256,
                header.total,
                header.size,
            ):
                self.store.drop_chunks(run_id, number, device)  # a new attempt replaces the old
        if problem is not None:
            self._refuse(device, header, problem)
            self.store.add_update(run_id, number, device, status="refused", reason=problem)
            return
        assert header.sha256 is not None
        received = self.store.add_chunk(
            run_id,
            number,
            device,
            header.index,
            header.total,
            header.sha256,
            header.size,
            wire,
            body,
        )
        if len(received) < header.total:
            self._ack(
                device, UpdateAck(run=run_id, round=number, status="partial", received=received)
            )
            return
        chunks = self.store.chunks(run_id, number, device)
        blob = b"".join(c["data"] for c in chunks)
        wire_bytes = sum(c["wire"] for c in chunks)
        reason = None
        if len(blob) != header.size or hashlib.sha256(blob).hexdigest() != header.sha256:
            reason = "the chunks do not add up to the size and sha256 they announced"
        else:
            try:
                decode_update(blob, decode_weights(model), f"device {device!r}")
            except ItemError as exc:
                reason = str(exc)
        if reason is not None:
            self.store.add_update(
                run_id, number, device, status="refused", reason=reason, bytes_up=wire_bytes
            )
            self._refuse(device, header, reason)
            return
        self.store.add_update(
            run_id, number, device, status="late" if late else "accepted",
            examples=header.num_examples,
            loss=header.loss, train_seconds=header.train_seconds, bytes_up=wire_bytes,
            bytes_down=header.bytes_down, data=blob,
        )  # fmt: skip
        self._ack(device, UpdateAck(run=run_id, round=number, status="accepted", received=received))
        self._wake.set()

    # -- the end of a run -----------------------------------------------------------------------

    def _withdraw_all(self, run_id: str) -> None:
        """Clear the retained round of every device the run ever sampled (stragglers too)."""
        devices = {d for r in self.store.rounds(run_id) for d in r["sampled"]}
        for device in sorted(devices):
            self.hooks.publish(self._topic(device, "fl-round"), b"", True)

    def _finish(self, run_id: str, live: _Live) -> None:
        row = self.store.run(run_id)
        assert row is not None
        if live.spec.asynchronous:
            self._withdraw_all(run_id)
        result = row["result"]
        if row["status"] != "finishing":
            self.store.set_status(run_id, "finishing")
        spec = live.spec
        weights = decode_weights(row["model"])
        folder = self.hooks.work / run_id / "release"
        rounds = self.store.rounds(run_id)
        accuracy = next((r["accuracy"] for r in reversed(rounds) if r["status"] == "closed"), None)
        model_path = export_weights(live.task, live.trainer, weights, folder, accuracy)
        X, y = live.task.test
        np.savez(folder / "canary.npz", x=X.astype(np.float32), y=y)
        gate = self._gate(spec, model_path, X, y)
        self.store.set_status(run_id, "finishing", gate=gate)
        if not gate["passed"]:
            self.store.set_status(run_id, "gate-failed", gate["reason"])
            self._live.pop(run_id, None)
            return
        version = (
            result.get("version") or spec.version or _next_version(gate.get("baseline_version"))
        )
        if not result.get("released"):
            provenance = self._provenance(run_id, live, rounds)
            self.hooks.create_release(folder, spec.release, version, "canary.npz", provenance)
            self.store.set_status(run_id, "finishing", version=version, released=True)
        deployment = result.get("deployment")
        if spec.then == "canary" and deployment is None:
            deployment = self.hooks.deploy(spec.release, version, spec.group, spec)
            self.store.set_status(run_id, "finishing", deployment=deployment)
        self.store.set_status(run_id, "finished", None, version=version)
        log.info("federated run %s finished: release %s %s", run_id, spec.release, version)
        self._live.pop(run_id, None)

    def _gate(
        self, spec: RunSpec, model_path: Path, X: np.ndarray, y: np.ndarray
    ) -> dict[str, Any]:
        new = _onnx_accuracy(model_path, X, y)
        gate: dict[str, Any] = {"accuracy": new, "max_drop": spec.max_drop, "passed": True}
        if spec.min_accuracy is not None and new < spec.min_accuracy:
            gate.update(
                passed=False,
                reason=f"validation accuracy {new:.4f} < --min-accuracy {spec.min_accuracy}",
            )
            return gate
        newest = self.hooks.newest_release(spec.release)
        if newest is None:
            gate["baseline"] = None
            gate["reason"] = (
                f"validation accuracy {new:.2%}; no release {spec.release!r} yet to compare with"
            )
            return gate
        version, files = newest
        gate["baseline_version"] = version
        try:
            old = _onnx_accuracy(files, X, y)
        except FoglineError as exc:
            gate.update(
                passed=False,
                reason=f"cannot evaluate release {spec.release} {version} on the validation set: {exc}",
            )
            return gate
        gate["baseline"] = old
        if new < old - spec.max_drop:
            gate.update(
                passed=False,
                reason=(
                    f"validation accuracy {new:.4f} is below release {spec.release} {version}'s "
                    f"{old:.4f} by more than --max-drop {spec.max_drop}"
                ),
            )
        else:
            gate["reason"] = (
                f"validation accuracy {new:.2%} against release {spec.release} {version}'s "
                f"{old:.2%} (at most {spec.max_drop:.0%} lower allowed)"
            )
        return gate

    def _provenance(self, run_id: str, live: _Live, rounds: list[dict[str, Any]]) -> dict[str, Any]:
        spec = live.spec
        privacy = None
        if live.accountant is not None:
            spent = live.accountant.spent()
            privacy = {**spent.to_dict(), "mode": "central"}
        return {
            "federated_run": run_id,
            "task": spec.task,
            "strategy": spec.strategy,
            "rounds": sum(1 for r in rounds if r["status"] == "closed"),
            "rounds_failed": sum(1 for r in rounds if r["status"] == "failed"),
            "participants": [r["participants"] for r in rounds],
            "group": spec.group,
            "fraction": spec.fraction,
            "min_clients": spec.min_clients,
            "local_epochs": spec.local_epochs,
            "secure_aggregation": None
            if not spec.secagg
            else {
                "protocol": "SecAgg+ (X25519, HKDF, ChaCha20, Shamir shares)",
                "bits": spec.secagg_bits,
                "clip": spec.secagg_clip,
                "weight_scale": SECAGG_SCALE,
                "tolerates": "a third of the sampled devices dropping",
            },
            "privacy": privacy,
            "accuracy": rounds[-1]["accuracy"] if rounds else None,
        }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _coordinates(model: bytes) -> int:
    return decode_weights(model).size


def _next_version(baseline: str | None) -> str:
    """The next minor version after ``baseline`` (``1.0.0`` without one)."""
    if baseline is None:
        return "1.0.0"
    from packaging.version import Version

    v = Version(baseline)
    return f"{v.major}.{v.minor + 1}.0"


def _onnx_accuracy(path: Path, X: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model at ``path`` (a file or a manifest folder) in ONNX Runtime.

    The validation inputs are reshaped to the model's input when only the
    layout differs (``[n, 64]`` for ``[n, 1, 8, 8]``); otherwise ConfigError.
    """
    from fogline.model import open_model

    opened = open_model(path)
    spec = opened.engine.signature.inputs[0]
    batch = X.astype(np.float32)
    if not spec.accepts_shape(batch.shape):
        want = spec.concrete_shape(batch=len(batch))
        if int(np.prod(want)) != batch.size:
            raise ConfigError(
                f"its input {spec.name!r} {spec.describe_shape()} does not take the validation "
                f"set's {list(X.shape)}"
            )
        batch = batch.reshape(want)
    correct = 0
    for start in range(0, len(batch), 256):
        outputs = opened.engine.run({spec.name: batch[start : start + 256]})
        scores = next(iter(outputs.values()))
        correct += int(np.sum(np.argmax(scores, axis=-1) == y[start : start + 256]))
    return correct / len(y)
