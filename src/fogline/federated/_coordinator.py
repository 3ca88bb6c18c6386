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

Its parts: :mod:`._intake` takes the devices' messages, :mod:`._secure_rounds`
holds secure aggregation's stages, :mod:`._gate` the end of a run, and
:mod:`._run_state` what they share. Everything lives in
:class:`~fogline.federated._run_store.RunStore`; a
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
from typing import Any

import numpy as np

from fogline.errors import ConfigError, Conflict, FoglineError, ItemError, ModelNotFound
from fogline.federated._codec import decode_update, decode_weights, encode_weights
from fogline.federated._export import export_weights
from fogline.federated._gate import gate as judge
from fogline.federated._gate import next_version
from fogline.federated._gate import provenance as record
from fogline.federated._intake import Intake
from fogline.federated._privacy import GaussianMechanism, PrivacyAccountant, PrivacyConfig
from fogline.federated._run_state import (
    CHUNK_BYTES,
    FleetHooks,
    RunState,
    device_topic,
)
from fogline.federated._run_store import ACTIVE, RunStore
from fogline.federated._secagg import SecAggResult
from fogline.federated._secagg_wire import params_from
from fogline.federated._secure_rounds import (
    NEXT,
    REPLY,
    expected,
    replay,
    secagg_settings,
    stage_bodies,
    unmasked,
)
from fogline.federated._simulate import MEAN_STRATEGIES, load_task
from fogline.federated.strategy import STRATEGIES, Update, Weights, strategy_for
from fogline.protocol import RoundTask, RunSpec, UpdateAck, encode_frame

__all__ = ["Coordinator", "FleetHooks"]

log = logging.getLogger("fogline.federated")


class Coordinator:
    """Runs federated rounds; see the module docstring. Start with :meth:`start`."""

    def __init__(self, store: RunStore, hooks: FleetHooks, *, tick: float = 0.25) -> None:
        self.store = store
        self.hooks = hooks
        self.tick = tick
        self.counters: dict[str, int] = {"received": 0, "refused": 0, "duplicates": 0}
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._live: dict[str, RunState] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.intake = Intake(store, hooks, self._live, self.counters, self._wake.set)

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
                    self.intake.on_update(device_id, payload)
                except Exception:  # one bad message must not end the coordinator
                    log.exception("federated update from %s", device_id)
            for run_id in list(self._live):
                try:
                    self._advance(run_id)
                except Exception as exc:
                    log.exception("federated run %s", run_id)
                    self.store.set_status(run_id, "failed", f"{type(exc).__name__}: {exc}")
                    self._live.pop(run_id, None)

    def _rebuild(self, run_id: str, spec: RunSpec) -> RunState:
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
        return RunState(spec, task, trainer, strategy, accountant, mechanism)

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

    def _open_round(self, run_id: str, live: RunState, number: int, model: bytes) -> None:
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
            round_ = {"round": number, "sampled": sampled, "model": model}
            secagg = secagg_settings(run_id, live.spec, round_)
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
            self.hooks.publish(device_topic(self.hooks, device, "fl-round"), frame, True)
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
        live: RunState,
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
            self.hooks.publish(device_topic(self.hooks, device, "fl-round"), b"", True)  # withdrawn
            if device not in answered:
                ack = UpdateAck(
                    run=run_id, round=number, status="closed", reason="the round closed"
                )
                self.hooks.publish(
                    device_topic(self.hooks, device, "fl-ack"), ack.model_dump_json().encode(), True
                )
        log.info(
            "federated run %s round %d closed: %d update(s), accuracy %.4f%s",
            run_id, number, participants, evaluated.accuracy, f" ({reason})" if reason else "",
        )  # fmt: skip

    def _late(self, run_id: str, live: RunState, number: int, base: Weights) -> list[Update]:
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
        self, live: RunState, number: int, base: Weights, updates: list[Update], sampled: int
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

    def _advance_secagg(self, run_id: str, live: RunState, current: dict[str, Any]) -> None:
        number, stage = current["round"], current["stage"]
        got = {m["device"] for m in self.store.secagg(run_id, number, REPLY[stage])}
        deadline = current["deadline"] if stage == "train" else current["stage_deadline"]
        if not got >= expected(self.store, run_id, current) and time.time() < deadline:
            return
        settings = secagg_settings(run_id, live.spec, current)
        try:
            output = replay(self.store, run_id, number, params_from(settings), stage)
        except (ItemError, Conflict, ConfigError) as exc:
            self._close_round(
                run_id, live, current, reason=f"secure aggregation failed at {stage}: {exc}"
            )
            return
        if isinstance(output, SecAggResult):
            self._close_round(
                run_id,
                live,
                current,
                secured=unmasked(self.store, live.strategy, run_id, current, output),
            )
            return
        following = NEXT[stage]
        bodies = stage_bodies(following, output)
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
            self.hooks.publish(device_topic(self.hooks, device, "fl-round"), frame, True)
            sent += len(frame)
        self.store.add_sent(run_id, number, sent)
        log.info(
            "federated run %s round %d: secure aggregation stage %s with %d device(s)",
            run_id, number, following, len(bodies),
        )  # fmt: skip

    # -- the end of a run -----------------------------------------------------------------------

    def _withdraw_all(self, run_id: str) -> None:
        """Clear the retained round of every device the run ever sampled (stragglers too)."""
        devices = {d for r in self.store.rounds(run_id) for d in r["sampled"]}
        for device in sorted(devices):
            self.hooks.publish(device_topic(self.hooks, device, "fl-round"), b"", True)

    def _finish(self, run_id: str, live: RunState) -> None:
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
        gate = judge(spec, model_path, X, y, self.hooks.newest_release(spec.release))
        self.store.set_status(run_id, "finishing", gate=gate)
        if not gate["passed"]:
            self.store.set_status(run_id, "gate-failed", gate["reason"])
            self._live.pop(run_id, None)
            return
        version = (
            result.get("version") or spec.version or next_version(gate.get("baseline_version"))
        )
        if not result.get("released"):
            provenance = record(run_id, spec, live.accountant, rounds)
            self.hooks.create_release(folder, spec.release, version, "canary.npz", provenance)
            self.store.set_status(run_id, "finishing", version=version, released=True)
        deployment = result.get("deployment")
        if spec.then == "canary" and deployment is None:
            deployment = self.hooks.deploy(spec.release, version, spec.group, spec)
            self.store.set_status(run_id, "finishing", deployment=deployment)
        self.store.set_status(run_id, "finished", None, version=version)
        log.info("federated run %s finished: release %s %s", run_id, spec.release, version)
        self._live.pop(run_id, None)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
