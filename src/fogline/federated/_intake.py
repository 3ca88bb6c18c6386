"""Where devices' ``fl-update`` messages arrive on the controller: stored, checked, answered.

Each chunk is stored before it is acknowledged (retained on the device's
``fl-ack``); a complete update is hashed and decoded against its round's
model. What is wrong — a run or round that does not exist, a closed round,
a device that was not sampled, a second copy, a bad size, hash, NaN or Inf,
a secure-aggregation message of the wrong stage — is refused with a reason
the device reads, and counted. Runs on the coordinator's thread.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from fogline.errors import ItemError
from fogline.federated._codec import decode_update, decode_weights
from fogline.federated._run_state import FleetHooks, RunState, device_topic
from fogline.federated._run_store import RunStore
from fogline.federated._secagg_wire import (
    decode_adverts,
    decode_masked,
    decode_response,
    decode_shares,
    params_from,
)
from fogline.federated._secure_rounds import REPLY, secagg_settings
from fogline.federated.strategy import Weights
from fogline.protocol import UpdateAck, UpdateChunk, decode_frame

__all__ = ["Intake"]

log = logging.getLogger("fogline.federated")


class Intake:
    """Takes devices' messages for the runs in ``live``; see the module docstring."""

    def __init__(
        self,
        store: RunStore,
        hooks: FleetHooks,
        live: dict[str, RunState],
        counters: dict[str, int],
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.counters = counters
        self._live = live
        self._wake = wake
        self._models: dict[str, Weights] = {}  # the open rounds' models, by sha256

    def _model(self, current: dict[str, Any]) -> Weights:
        """The round's model, decoded once (every chunk of every device is checked against it)."""
        sha = current["model_sha256"]
        if sha not in self._models:
            if len(self._models) >= 8:
                self._models.clear()
            self._models[sha] = decode_weights(current["model"])
        return self._models[sha]

    def _ack(self, device: str, ack: UpdateAck) -> None:
        self.hooks.publish(
            device_topic(self.hooks, device, "fl-ack"), ack.model_dump_json().encode(), True
        )

    def _refuse(self, device: str, header: UpdateChunk, reason: str) -> None:
        self.counters["refused"] += 1
        log.warning("refused an update from %s: %s", device, reason)
        self._ack(
            device, UpdateAck(run=header.run, round=header.round, status="refused", reason=reason)
        )

    def on_update(self, device: str, payload: bytes) -> None:
        """One ``fl-update`` message: stored, checked and answered on ``fl-ack``."""
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
        base = self._model(current)
        limit = 2 * base.size + 4096  # float16 per coordinate, deflate's worst case
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
                decode_update(blob, base, f"device {device!r}")
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
        self._wake()

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
        params = params_from(secagg_settings(run_id, live.spec, current))
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
        self._wake()
