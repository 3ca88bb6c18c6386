"""Secure aggregation's messages as bytes, for the fleet's ``fl-round`` and ``fl-update`` frames.

Keys, sealed shares and unmasking answers are small JSON documents (bytes
in base64); a masked input is its field elements as little-endian unsigned
integers of the field's width (2 bytes each at 16 bits), the cost
:func:`~fogline.federated.upload_cost` counts. Every decoder validates
through the message classes, so a malformed message is an
:class:`~fogline.errors.ItemError` naming what is wrong.

>>> advert = KeyAdvert("edge-1", b"a" * 32, b"b" * 32)
>>> decode_adverts(encode_adverts([advert])) == [advert]
True
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fogline.errors import ItemError
from fogline.federated._secagg import SecAggClient
from fogline.federated._secagg_messages import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    SecAggParams,
    UnmaskRequest,
    UnmaskResponse,
)
from fogline.protocol import SecAggSettings

__all__ = [
    "SecAggDevice",
    "decode_adverts",
    "decode_masked",
    "decode_request",
    "decode_response",
    "decode_shares",
    "encode_adverts",
    "encode_masked",
    "encode_request",
    "encode_response",
    "encode_shares",
    "params_from",
]


def params_from(settings: SecAggSettings) -> SecAggParams:
    """The protocol's settings as the secure aggregation library's parameters."""
    return SecAggParams(
        num_clients=settings.num_clients,
        dimension=settings.dimension,
        clip=settings.clip,
        bits=settings.bits,
        threshold=settings.threshold,
        round_id=settings.round_id,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ItemError(f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ItemError(f"{what} is not base64: {exc}") from None


def _json(blob: bytes, what: str) -> Any:
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ItemError(f"{what} is not JSON: {exc}") from None


def _fields(item: Any, names: Sequence[str], what: str) -> list[Any]:
    if not isinstance(item, dict) or any(n not in item for n in names):
        raise ItemError(f"{what} needs {', '.join(names)}")
    return [item[n] for n in names]


def encode_adverts(adverts: Sequence[KeyAdvert]) -> bytes:
    return json.dumps(
        [
            {
                "client_id": a.client_id,
                "cipher_key": _b64(a.cipher_key),
                "mask_key": _b64(a.mask_key),
            }
            for a in adverts
        ]
    ).encode()


def decode_adverts(blob: bytes) -> list[KeyAdvert]:
    items = _json(blob, "key adverts")
    if not isinstance(items, list):
        raise ItemError("key adverts must be a list")
    out = []
    for item in items:
        client, cipher, mask = _fields(
            item, ("client_id", "cipher_key", "mask_key"), "a key advert"
        )
        out.append(KeyAdvert(str(client), _bytes(cipher, "cipher_key"), _bytes(mask, "mask_key")))
    return out


def encode_shares(shares: Sequence[EncryptedShare]) -> bytes:
    return json.dumps(
        [{"sender": s.sender, "recipient": s.recipient, "sealed": _b64(s.sealed)} for s in shares]
    ).encode()


def decode_shares(blob: bytes) -> list[EncryptedShare]:
    items = _json(blob, "shares")
    if not isinstance(items, list):
        raise ItemError("shares must be a list")
    out = []
    for item in items:
        sender, recipient, sealed = _fields(item, ("sender", "recipient", "sealed"), "a share")
        out.append(EncryptedShare(str(sender), str(recipient), _bytes(sealed, "sealed")))
    return out


def _width(bits: int) -> np.dtype[Any]:
    return np.dtype("<u2" if bits <= 16 else "<u4" if bits <= 32 else "<u8")


def encode_masked(masked: MaskedInput, bits: int) -> bytes:
    """The field elements at the field's width (they are below ``2**bits``)."""
    return masked.values.astype(_width(bits)).tobytes()


def decode_masked(client_id: str, blob: bytes, params: SecAggParams) -> MaskedInput:
    width = _width(params.bits)
    if len(blob) != params.dimension * width.itemsize:
        raise ItemError(
            f"{client_id}: a masked input of {len(blob)} bytes; {params.dimension} values of "
            f"{width.itemsize} bytes expected"
        )
    values = np.frombuffer(blob, dtype=width).astype(np.uint64)
    if params.bits < 64 and bool(np.any(values >> np.uint64(params.bits))):
        raise ItemError(f"{client_id}: a masked value is outside the {params.bits}-bit field")
    return MaskedInput(client_id, values)


def encode_request(request: UnmaskRequest) -> bytes:
    return json.dumps(
        {"survivors": sorted(request.survivors), "dropped": sorted(request.dropped)}
    ).encode()


def decode_request(blob: bytes) -> UnmaskRequest:
    survivors, dropped = _fields(_json(blob, "an unmask request"), ("survivors", "dropped"),
                                 "an unmask request")  # fmt: skip
    return UnmaskRequest(frozenset(map(str, survivors)), frozenset(map(str, dropped)))


def encode_response(response: UnmaskResponse) -> bytes:
    return json.dumps(
        {
            "client_id": response.client_id,
            "seed_shares": {k: _b64(v) for k, v in response.seed_shares.items()},
            "key_shares": {k: _b64(v) for k, v in response.key_shares.items()},
        }
    ).encode()


def decode_response(blob: bytes) -> UnmaskResponse:
    client, seeds, keys = _fields(
        _json(blob, "an unmask response"), ("client_id", "seed_shares", "key_shares"),
        "an unmask response",
    )  # fmt: skip
    if not isinstance(seeds, dict) or not isinstance(keys, dict):
        raise ItemError("an unmask response's shares must be objects")
    return UnmaskResponse(
        str(client),
        {str(k): _bytes(v, "a seed share") for k, v in seeds.items()},
        {str(k): _bytes(v, "a key share") for k, v in keys.items()},
    )


class SecAggDevice:
    """A device's side of one secure-aggregation round over the fleet's frames.

    Made after training with the change from the round's model and the
    number of examples; :meth:`keys` is what it sends first, and
    :meth:`answer` turns each later stage's body (from ``fl-round``) into the
    body of its reply (on ``fl-update``). It sends ``[w * change, w]`` with
    ``w = min(1, examples / settings.scale)``, so the controller's sum gives
    the examples-weighted mean change whoever survives. Keep one per round:
    its keys live only in memory, so a device that restarts mid-round drops
    out of it (which the protocol tolerates).
    """

    def __init__(
        self, device_id: str, settings: SecAggSettings, change: npt.ArrayLike, examples: int
    ) -> None:
        self.settings = settings
        self.params = params_from(settings)
        weight = min(1.0, examples / settings.scale)
        vector = np.asarray(change, dtype=np.float64).ravel()
        if vector.size + 1 != settings.dimension:
            raise ItemError(
                f"a change of {vector.size} values for a round of {settings.dimension - 1}"
            )
        self.row = np.append(weight * vector, weight)
        self.client = SecAggClient(device_id, self.params)

    def keys(self) -> bytes:
        return encode_adverts([self.client.advertise()])

    def answer(self, stage: str, body: bytes) -> bytes:
        """The reply to stage ``shares``, ``mask`` or ``unmask``; ItemError or Conflict if refused."""
        if stage == "shares":
            return encode_shares(self.client.share_keys(decode_adverts(body)))
        if stage == "mask":
            masked = self.client.mask(self.row, decode_shares(body))
            return encode_masked(masked, self.params.bits)
        if stage == "unmask":
            return encode_response(self.client.unmask(decode_request(body)))
        raise ItemError(f"no secure aggregation stage {stage!r}")
