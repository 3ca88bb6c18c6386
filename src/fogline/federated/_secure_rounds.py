"""Secure aggregation's stages on the controller: settings, who must answer, the server replayed.

A round under ``--secagg`` goes ``train`` → ``shares`` → ``mask`` →
``unmask``; each device message of a stage is stored as it comes
(:meth:`RunStore.add_secagg`), and when a stage is over the round's
:class:`~fogline.federated.SecAggServer` is rebuilt from the stored
messages (:func:`replay`), so a controller that restarted mid-protocol goes
on where it was. The coordinator drives the stages; these are its parts.
"""

from __future__ import annotations

from typing import Any

from fogline.federated._codec import decode_weights
from fogline.federated._run_state import SECAGG_SCALE
from fogline.federated._run_store import RunStore
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
)
from fogline.federated.strategy import Strategy, Update, Weights
from fogline.protocol import RunSpec, SecAggSettings

__all__ = ["NEXT", "REPLY", "expected", "replay", "secagg_settings", "stage_bodies", "unmasked"]

#: What a device sends back for each stage the controller opens, and the stage after it.
REPLY = {"train": "keys", "shares": "shares", "mask": "mask", "unmask": "unmask"}
NEXT = {"train": "shares", "shares": "mask", "mask": "unmask"}


def secagg_settings(run_id: str, spec: RunSpec, current: dict[str, Any]) -> SecAggSettings:
    """The round's settings, the same every time they are worked out (also after a restart)."""
    params = SecAggParams(
        num_clients=len(current["sampled"]),
        dimension=decode_weights(current["model"]).size + 1,
        clip=spec.secagg_clip,
        bits=spec.secagg_bits,
        round_id=f"{run_id}/{current['round']}",
    )
    return SecAggSettings(
        num_clients=params.num_clients, dimension=params.dimension, clip=params.clip,
        bits=params.bits, threshold=params.threshold, round_id=params.round_id,
        scale=SECAGG_SCALE,
    )  # fmt: skip


def expected(store: RunStore, run_id: str, current: dict[str, Any]) -> set[str]:
    """Who should answer the round's current stage."""
    number, stage = current["round"], current["stage"]
    gone = {u["device"] for u in store.updates(run_id, number)}  # declined, refused
    if stage == "train":
        return set(current["sampled"]) - gone
    previous = REPLY[{"shares": "train", "mask": "shares", "unmask": "mask"}[stage]]
    return {m["device"] for m in store.secagg(run_id, number, previous)} - gone


def replay(store: RunStore, run_id: str, number: int, params: SecAggParams, upto: str) -> Any:
    """The server of the round rebuilt from the stored messages, run up to ``upto``'s answers.

    Returns what that stage produced: the adverts, each device's inbox of
    shares, the unmask request, or the unmasked sum.
    """
    server = SecAggServer(params)

    def stored(stage: str) -> list[dict[str, Any]]:
        return store.secagg(run_id, number, stage)

    adverts = server.collect_adverts([a for m in stored("keys") for a in decode_adverts(m["body"])])
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


def stage_bodies(following: str, output: Any) -> dict[str, bytes]:
    """What each device gets when stage ``following`` opens, from what the last one produced."""
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
    return bodies


def unmasked(
    store: RunStore, strategy: Strategy, run_id: str, current: dict[str, Any], result: SecAggResult
) -> Weights | None:
    """The new global weights from the unmasked sum; records each device's bytes and part."""
    number = current["round"]
    messages = store.secagg(run_id, number)
    examples = {m["device"]: m["examples"] for m in messages if m["stage"] == "keys"}
    for device in sorted({m["device"] for m in messages}):
        mine = [m for m in messages if m["device"] == device]
        store.add_update(
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
    return strategy.aggregate(number, base, [pooled]).weights
