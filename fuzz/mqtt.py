"""Fuzz MQTT message bodies: any payload parses, or raises the ValueError its receiver catches.

What arrives on the broker is data from elsewhere. Each receiver reads a
payload with one function and catches ``ValueError`` (pydantic's
``ValidationError`` and ``UnicodeDecodeError`` are ValueErrors): the agent
and the controller drop and count a malformed fleet message, a cluster
member ignores a bad presence or done message, the ``mqtt`` source turns a
bad payload into a corrupt item. Any other exception would escape into
paho's network thread. So what must hold, for every body kind:

* it parses, or raises ``ValueError`` with a message;
* what parsed is written back the way its sender writes it, and that reads
  back equal (the encoder and the decoder agree).

The first byte picks the body kind (fleet: ``fogline.protocol``; cluster:
``fogline.cluster``; the ``mqtt`` source's JSON and image payloads); with an
odd second byte the rest drives a generator that follows the body's
schema, otherwise it is the payload as is.

    python fuzz/mqtt.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

import atheris
from _harness import fuzz, instrumented, json_value

with instrumented(
    __name__, ["fogline.protocol", "fogline.cluster._topics", "fogline.pipeline.sources._mqtt"]
):
    from fogline import cluster, protocol
    from fogline.pipeline.sources import decode_image, decode_json

FLEET = (
    protocol.DesiredState,
    protocol.DeviceState,
    protocol.Telemetry,
    protocol.Command,
    protocol.Presence,
    protocol.OfferAck,
)
FRAMED = (protocol.RoundTask, protocol.UpdateChunk, protocol.UpdateAck, protocol.OfferChunk)
CLUSTER = (cluster.Presence, cluster.Done, cluster.DispatcherStats)


def _fleet(model: Any) -> Callable[[bytes], None]:
    def check(payload: bytes) -> None:
        body = model.model_validate_json(payload)
        assert model.model_validate_json(body.model_dump_json()) == body, "round trip"

    return check


def _framed(model: Any) -> Callable[[bytes], None]:
    def check(payload: bytes) -> None:
        header, rest = protocol.decode_frame(payload, model)
        again = protocol.decode_frame(protocol.encode_frame(header, rest), model)
        assert again == (header, rest), "round trip"

    return check


def _cluster(kind: Any) -> Callable[[bytes], None]:
    def check(payload: bytes) -> None:
        body = kind.from_payload(payload)
        assert kind.from_payload(body.payload()) == body, "round trip"

    return check


def _source_json(shape: tuple[int, ...] | None) -> Callable[[bytes], None]:
    def check(payload: bytes) -> None:
        array, _, _ = decode_json(payload, shape)
        assert shape is None or array.shape == shape, "shape"

    return check


def _source_image(payload: bytes) -> None:
    image = decode_image(payload)
    assert image.ndim == 3 and image.shape[2] == 3, "not RGB HWC"


#: (name, JSON schema of its body or None, check) per body kind.
KINDS: list[tuple[str, dict[str, Any] | None, Callable[[bytes], None]]] = [
    *[(m.__name__, m.model_json_schema(), _fleet(m)) for m in FLEET],
    *[(f"{m.__name__} frame", m.model_json_schema(), _framed(m)) for m in FRAMED],
    *[
        (
            f"cluster {k.__name__}",
            {"type": "object", "properties": {f.name: {} for f in dataclasses.fields(k)}},
            _cluster(k),
        )
        for k in CLUSTER
    ],
    ("source json", {"type": "array", "items": {"type": "number"}}, _source_json(None)),
    ("source json 2x2", {"type": "array", "items": {"type": "number"}}, _source_json((2, 2))),
    ("source image", None, _source_image),
]


def payload_of(data: bytes) -> tuple[str, Callable[[bytes], None], bytes]:
    """The body kind's name, its check, and the payload an input stands for."""
    name, schema, check = KINDS[data[0] % len(KINDS)] if data else KINDS[0]
    if len(data) < 2 or data[1] % 2 == 0 or schema is None:
        return name, check, data[2:]
    fdp = atheris.FuzzedDataProvider(data[2:])
    payload = json.dumps(json_value(fdp, schema)).encode()
    if name.endswith("frame"):
        payload += b"\n" + fdp.ConsumeBytes(16)
    return name, check, payload


def TestOneInput(data: bytes) -> None:
    name, check, payload = payload_of(data)
    try:
        check(payload)
    except ValueError as exc:
        assert str(exc), f"{name}: a ValueError without a message"


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
