"""Secure aggregation (SecAgg, Bonawitz et al. 2017): the server learns the sum of the updates and nothing else.

A pure protocol: clients and the server exchange the value objects of
:mod:`._secagg_messages` by method calls, in four stages, so anything can
carry them (a loop in a simulation, MQTT on the fleet)::

    stage 0  client.advertise()            -> KeyAdvert          server.collect_adverts()  -> all adverts
    stage 1  client.share_keys(adverts)    -> [EncryptedShare]   server.route_shares()     -> {client: shares}
    stage 2  client.mask(update, shares)   -> MaskedInput        server.collect_masked()   -> UnmaskRequest
    stage 3  client.unmask(request)        -> UnmaskResponse     server.aggregate()        -> SecAggResult

A client's upload is its quantized update plus a self-mask (from a secret
32-byte seed) plus, for every other client, a pairwise mask from their X25519
agreement, added by the smaller id and subtracted by the larger, so pairwise
masks cancel in the sum. Both the seed and the mask private key are Shamir
shared among the clients (sealed, so the server only relays them): the server
rebuilds the self-masks of the survivors and the mask keys of those that
dropped after sharing, and a client never reveals both for the same client.
Each stage fails with :class:`~fogline.errors.Conflict` when fewer than the
threshold remain. Synchronous and single-threaded: each object is one party.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fogline.errors import Conflict, ItemError, SignatureMismatch

from ._secagg_crypto import (
    SEED_BYTES,
    combine_secret,
    derive_key,
    mask_vector,
    open_shares,
    seal_shares,
    split_secret,
)
from ._secagg_field import FieldArray
from ._secagg_messages import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    SecAggParams,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = ["SecAggClient", "SecAggResult", "SecAggServer"]

_SHARE = 32  # one Shamir share of a 32-byte secret


def _enough(params: SecAggParams, count: int, stage: str) -> None:
    if count < params.threshold:
        raise Conflict(
            f"secure aggregation round {params.round_id} failed at {stage}: "
            f"{count} clients survived, the threshold is {params.threshold}"
        )


def _adverts_by_id(adverts: Iterable[KeyAdvert]) -> dict[str, KeyAdvert]:
    table: dict[str, KeyAdvert] = {}
    for advert in adverts:
        if advert.client_id in table:
            raise ItemError(f"{advert.client_id} advertised its keys twice")
        table[advert.client_id] = advert
    return dict(sorted(table.items()))


def _share_index(table: Mapping[str, KeyAdvert], client_id: str) -> int:
    """Shamir index of a client: its place among the advertised ids, from 1."""
    return list(table).index(client_id) + 1


class SecAggClient:
    """One client's side of a round; create a new one for every round (fresh keys and seed)."""

    def __init__(self, client_id: str, params: SecAggParams) -> None:
        self.client_id = client_id
        self.params = params
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._seed = secrets.token_bytes(SEED_BYTES)
        self._adverts: dict[str, KeyAdvert] = {}
        self._held: dict[str, bytes] = {}  # owner -> its mask-key share + its seed share, for us
        self._masked_with: frozenset[str] = frozenset()
        self._revealed: dict[str, str] = {}  # owner -> "seed" or "key", whichever we gave out

    def advertise(self) -> KeyAdvert:
        """Stage 0: the public keys, for the server to broadcast."""
        return KeyAdvert(
            self.client_id,
            self._cipher_key.public_key().public_bytes_raw(),
            self._mask_key.public_key().public_bytes_raw(),
        )

    def share_keys(self, adverts: Sequence[KeyAdvert]) -> list[EncryptedShare]:
        """Stage 1: Shamir-share the mask key and the seed, one sealed pair of shares per other client."""
        table = _adverts_by_id(adverts)
        if table.get(self.client_id) != self.advertise():
            raise ItemError(f"the advertised keys do not include {self.client_id}'s own")
        _enough(self.params, len(table), "key sharing")
        threshold, count = self.params.threshold, len(table)
        key_shares = split_secret(self._mask_key.private_bytes_raw(), threshold, count)
        seed_shares = split_secret(self._seed, threshold, count)
        sealed: list[EncryptedShare] = []
        for position, peer in enumerate(table):
            plaintext = key_shares[position] + seed_shares[position]
            if peer == self.client_id:
                self._held[peer] = plaintext
                continue
            key = self._share_key(table[peer])
            box = seal_shares(
                key, plaintext, sender=self.client_id, recipient=peer, round_id=self.params.round_id
            )
            sealed.append(EncryptedShare(self.client_id, peer, box))
        self._adverts = table
        return sealed

    def mask(self, update: npt.ArrayLike, shares: Sequence[EncryptedShare]) -> MaskedInput:
        """Stage 2: open the shares sent to us and upload the masked, quantized update."""
        if not self._adverts:
            raise Conflict(f"{self.client_id} must share its keys before masking")
        for share in shares:
            if share.recipient != self.client_id or share.sender not in self._adverts:
                raise ItemError(
                    f"{self.client_id} got shares from {share.sender} to {share.recipient}"
                )
            if share.sender in self._held:
                raise ItemError(f"{self.client_id} got shares from {share.sender} twice")
            key = self._share_key(self._adverts[share.sender])
            plaintext = open_shares(
                key,
                share.sealed,
                sender=share.sender,
                recipient=self.client_id,
                round_id=self.params.round_id,
            )
            if len(plaintext) != 2 * _SHARE:
                raise ItemError(f"the shares from {share.sender} have the wrong length")
            self._held[share.sender] = plaintext
        peers = frozenset(self._held)
        _enough(self.params, len(peers), "masking")

        quantizer, dimension, bits = self.params.quantizer, self.params.dimension, self.params.bits
        values = quantizer.quantize(update)
        if values.size != dimension:
            raise SignatureMismatch(
                f"{self.client_id}: an update of {values.size} values, not {dimension}"
            )
        values = quantizer.add(values, mask_vector(self._seed, dimension, bits))
        for peer in peers - {self.client_id}:
            seed = derive_key(
                self._mask_key,
                self._adverts[peer].mask_key,
                label=b"mask",
                round_id=self.params.round_id,
            )
            pairwise = mask_vector(seed, dimension, bits)
            if self.client_id < peer:
                values = quantizer.add(values, pairwise)
            else:
                values = quantizer.subtract(values, pairwise)
        self._masked_with = peers
        return MaskedInput(self.client_id, values)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 3: shares of the survivors' seeds and of the dropped clients' mask keys, never both for one."""
        if not self._masked_with:
            raise Conflict(f"{self.client_id} has not masked an update in this round")
        if self.client_id not in request.survivors:
            raise ItemError(f"{self.client_id} is not among the survivors it is asked to unmask")
        unknown = (request.survivors | request.dropped) - self._masked_with
        if unknown:
            raise ItemError(f"{self.client_id} holds no shares for {sorted(unknown)}")
        _enough(self.params, len(request.survivors), "unmasking")
        wanted = {owner: "seed" for owner in request.survivors}
        wanted.update({owner: "key" for owner in request.dropped})
        twice = sorted(o for o, kind in wanted.items() if self._revealed.get(o, kind) != kind)
        if twice:
            raise Conflict(
                f"{self.client_id} refuses to reveal both the seed and the mask key of {twice}"
            )
        self._revealed.update(wanted)
        return UnmaskResponse(
            self.client_id,
            seed_shares={owner: self._held[owner][_SHARE:] for owner in sorted(request.survivors)},
            key_shares={owner: self._held[owner][:_SHARE] for owner in sorted(request.dropped)},
        )

    def _share_key(self, peer: KeyAdvert) -> bytes:
        return derive_key(
            self._cipher_key, peer.cipher_key, label=b"share", round_id=self.params.round_id
        )


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The unmasked sum: exact in the field, and dequantized to floats."""

    field_sum: FieldArray
    survivors: tuple[str, ...]
    total: npt.NDArray[np.float64]

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """The survivors' average update."""
        return self.total / len(self.survivors)


class SecAggServer:
    """The server's side of a round: relays, checks thresholds, and unmasks only the sum.

    >>> params = SecAggParams(num_clients=3, dimension=2, bits=16)
    >>> clients = [SecAggClient(name, params) for name in ("a", "b", "c")]
    >>> server = SecAggServer(params)
    >>> adverts = server.collect_adverts([c.advertise() for c in clients])
    >>> inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
    >>> updates = {"a": [0.5, -0.25], "b": [0.25, 0.25], "c": [0.0, 1.0]}
    >>> request = server.collect_masked([c.mask(updates[c.client_id], inbox[c.client_id]) for c in clients[:2]])
    >>> sorted(request.dropped)
    ['c']
    >>> result = server.aggregate([c.unmask(request) for c in clients[:2]])
    >>> [round(float(v), 3) for v in result.total]
    [0.75, 0.0]
    """

    def __init__(self, params: SecAggParams) -> None:
        self.params = params
        self._adverts: dict[str, KeyAdvert] = {}
        self._sharers: frozenset[str] = frozenset()
        self._inputs: dict[str, MaskedInput] = {}

    def collect_adverts(self, adverts: Sequence[KeyAdvert]) -> list[KeyAdvert]:
        """Stage 0: the keys of the clients that advertised, to broadcast to all of them."""
        table = _adverts_by_id(adverts)
        if len(table) > self.params.num_clients:
            raise ItemError(
                f"{len(table)} clients advertised, only {self.params.num_clients} were sampled"
            )
        _enough(self.params, len(table), "key advertisement")
        self._adverts = table
        return list(table.values())

    def route_shares(self, shares: Sequence[EncryptedShare]) -> dict[str, list[EncryptedShare]]:
        """Stage 1: each sharer's inbox of sealed shares from the other sharers."""
        seen: set[tuple[str, str]] = set()
        for share in shares:
            if share.sender not in self._adverts or share.recipient not in self._adverts:
                raise ItemError(
                    f"shares from {share.sender} to {share.recipient}: not both advertised"
                )
            if (share.sender, share.recipient) in seen:
                raise ItemError(f"shares from {share.sender} to {share.recipient} sent twice")
            seen.add((share.sender, share.recipient))
        self._sharers = frozenset(share.sender for share in shares)
        _enough(self.params, len(self._sharers), "key sharing")
        inbox: dict[str, list[EncryptedShare]] = {client: [] for client in sorted(self._sharers)}
        for share in shares:
            if share.recipient in self._sharers:
                inbox[share.recipient].append(share)
        return inbox

    def collect_masked(self, inputs: Sequence[MaskedInput]) -> UnmaskRequest:
        """Stage 2: the masked inputs; asks the survivors to unmask the sum."""
        table: dict[str, MaskedInput] = {}
        for masked in inputs:
            if masked.client_id not in self._sharers or masked.client_id in table:
                raise ItemError(
                    f"a masked input from {masked.client_id}: not sharing, or sent twice"
                )
            if masked.values.size != self.params.dimension:
                raise SignatureMismatch(f"{masked.client_id} sent {masked.values.size} values")
            table[masked.client_id] = masked
        _enough(self.params, len(table), "masking")
        self._inputs = table
        return UnmaskRequest(frozenset(table), self._sharers - frozenset(table))

    def aggregate(self, responses: Sequence[UnmaskResponse]) -> SecAggResult:
        """Stage 3: rebuild the secrets from the shares, remove every mask, keep only the sum."""
        survivors = frozenset(self._inputs)
        dropped = self._sharers - survivors
        answered = {r.client_id: r for r in responses if r.client_id in survivors}
        _enough(self.params, len(answered), "unmasking")
        quantizer, dimension, bits = self.params.quantizer, self.params.dimension, self.params.bits
        total = np.zeros(dimension, dtype=np.uint64)
        for masked in self._inputs.values():
            total = quantizer.add(total, masked.values)
        for owner in sorted(survivors):
            seed = self._rebuild(owner, {i: r.seed_shares for i, r in answered.items()})
            total = quantizer.subtract(total, mask_vector(seed, dimension, bits))
        for owner in sorted(dropped):
            secret = self._rebuild(owner, {i: r.key_shares for i, r in answered.items()})
            key = X25519PrivateKey.from_private_bytes(secret)
            if key.public_key().public_bytes_raw() != self._adverts[owner].mask_key:
                raise ItemError(f"the shares of {owner}'s mask key do not rebuild it (a bad share)")
            for peer in sorted(survivors):
                seed = derive_key(
                    key, self._adverts[peer].mask_key, label=b"mask", round_id=self.params.round_id
                )
                pairwise = mask_vector(seed, dimension, bits)
                # the survivor added the mask when its id is the smaller one
                if peer < owner:
                    total = quantizer.subtract(total, pairwise)
                else:
                    total = quantizer.add(total, pairwise)
        count = len(survivors)
        return SecAggResult(total, tuple(sorted(survivors)), quantizer.dequantize_sum(total, count))

    def _rebuild(self, owner: str, shares: Mapping[str, Mapping[str, bytes]]) -> bytes:
        found = {_share_index(self._adverts, i): s[owner] for i, s in shares.items() if owner in s}
        if len(found) < self.params.threshold:
            raise Conflict(
                f"secure aggregation round {self.params.round_id} failed at unmasking: "
                f"{len(found)} shares of {owner}'s secret, the threshold is {self.params.threshold}"
            )
        return combine_secret(found)
