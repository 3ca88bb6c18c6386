"""Secure aggregation with real X25519, HKDF, ChaCha20(-Poly1305) and pycryptodome's Shamir shares."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from fogline.errors import ConfigError, Conflict, ItemError
from fogline.federated._secagg import SecAggClient, SecAggResult, SecAggServer
from fogline.federated._secagg_crypto import mask_vector
from fogline.federated._secagg_field import FieldQuantizer, upload_cost
from fogline.federated._secagg_messages import (
    EncryptedShare,
    SecAggParams,
    UnmaskRequest,
)


@dataclass
class Dropouts:
    """Who disappears before which stage (a client missing from one is gone for the rest)."""

    advertise: Collection[str] = ()
    share: Collection[str] = ()
    mask: Collection[str] = ()
    unmask: Collection[str] = ()
    gone: set[str] = field(default_factory=set)

    def alive(self, clients: list[SecAggClient], stage: str) -> list[SecAggClient]:
        self.gone |= set(getattr(self, stage))
        return [c for c in clients if c.client_id not in self.gone]


def names(n: int) -> list[str]:
    return [f"device-{i:02d}" for i in range(n)]


def updates_for(n: int, dimension: int, seed: int = 0) -> dict[str, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)  # test data only: the protocol never touches numpy's RNG
    return {name: rng.uniform(-1.2, 1.2, dimension) for name in names(n)}


def run_round(
    params: SecAggParams,
    updates: dict[str, npt.NDArray[np.float64]],
    drops: Dropouts | None = None,
) -> SecAggResult:
    drops = drops or Dropouts()
    clients = [SecAggClient(name, params) for name in updates]
    server = SecAggServer(params)

    clients = drops.alive(clients, "advertise")
    adverts = server.collect_adverts([c.advertise() for c in clients])
    clients = drops.alive(clients, "share")
    inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
    clients = drops.alive(clients, "mask")
    request = server.collect_masked(
        [c.mask(updates[c.client_id], inbox[c.client_id]) for c in clients]
    )
    clients = drops.alive(clients, "unmask")
    return server.aggregate([c.unmask(request) for c in clients])


def expected_field_sum(
    params: SecAggParams, updates: dict[str, npt.NDArray[np.float64]], survivors: Collection[str]
) -> npt.NDArray[np.uint64]:
    quantizer = params.quantizer
    total = np.zeros(params.dimension, dtype=np.uint64)
    for name in survivors:
        total = quantizer.add(total, quantizer.quantize(updates[name]))
    return total


def assert_sum_recovered(
    params: SecAggParams,
    updates: dict[str, npt.NDArray[np.float64]],
    result: SecAggResult,
    survivors: list[str],
) -> None:
    assert list(result.survivors) == survivors
    np.testing.assert_array_equal(result.field_sum, expected_field_sum(params, updates, survivors))
    plain = sum(np.clip(updates[name], -params.clip, params.clip) for name in survivors)
    bound = params.quantizer.sum_error_bound(len(survivors))
    assert np.max(np.abs(result.total - plain)) <= bound + 1e-12


@pytest.mark.parametrize(("n", "bits"), [(5, 16), (5, 32), (10, 16), (10, 32)])
def test_a_full_round_recovers_the_exact_sum(n: int, bits: int) -> None:
    # Prepare
    params = SecAggParams(num_clients=n, dimension=64, bits=bits, round_id="r-1")
    updates = updates_for(n, 64, seed=n + bits)

    # Execute
    result = run_round(params, updates)

    # Assert
    assert_sum_recovered(params, updates, result, names(n))


@pytest.mark.parametrize(
    "drops",
    [
        Dropouts(advertise=["device-03", "device-07"]),
        Dropouts(share=["device-01", "device-08"]),
        Dropouts(mask=["device-00", "device-04", "device-09"]),  # 30 % after masking
        Dropouts(unmask=["device-02", "device-05"]),
        Dropouts(advertise=["device-01"], share=["device-02"], mask=["device-03"]),
        Dropouts(share=["device-06"], mask=["device-00"], unmask=["device-04"]),
    ],
    ids=["before-keys", "after-keys", "after-masking-30pc", "while-unmasking", "mixed", "late"],
)
def test_dropouts_at_every_stage_leave_the_survivors_sum(drops: Dropouts) -> None:
    # Prepare
    params = SecAggParams(num_clients=10, dimension=32, bits=32)
    updates = updates_for(10, 32)
    masked_out = set(drops.advertise) | set(drops.share) | set(drops.mask)

    # Execute
    result = run_round(params, updates, drops)

    # Assert: a client that uploaded counts even if it then went silent
    survivors = [name for name in names(10) if name not in masked_out]
    assert_sum_recovered(params, updates, result, survivors)


@pytest.mark.parametrize("stage", ["advertise", "share", "mask", "unmask"])
def test_below_the_threshold_the_round_fails_naming_the_count(stage: str) -> None:
    params = SecAggParams(num_clients=10, dimension=8)
    drops = Dropouts(**{stage: names(10)[:4]})

    with pytest.raises(Conflict, match="6 clients survived, the threshold is 7"):
        run_round(params, updates_for(10, 8), drops)


def test_the_default_threshold_tolerates_a_third_dropping() -> None:
    assert SecAggParams(num_clients=10, dimension=1).threshold == 7
    assert SecAggParams(num_clients=5, dimension=1).threshold == 4
    with pytest.raises(ConfigError, match="majority"):
        SecAggParams(num_clients=10, dimension=1, threshold=11)


def chi_square_uniform(values: npt.NDArray[np.uint64], bits: int, bins: int = 16) -> float:
    counts = np.bincount((values >> np.uint64(bits - 4)).astype(np.int64), minlength=bins)
    expected = values.size / bins
    return float(np.sum((counts - expected) ** 2 / expected))


def test_one_upload_is_indistinguishable_from_uniform_random() -> None:
    # Prepare: a very structured update (a ramp), so its quantized form is far from uniform
    params = SecAggParams(num_clients=5, dimension=20_000, bits=16)
    updates = updates_for(5, 20_000)
    updates["device-00"] = np.linspace(-0.1, 0.1, 20_000)
    clients = [SecAggClient(name, params) for name in updates]
    server = SecAggServer(params)
    adverts = server.collect_adverts([c.advertise() for c in clients])
    inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])

    # Execute
    upload = clients[0].mask(updates["device-00"], inbox["device-00"]).values

    # Assert: chi-square with 15 degrees of freedom, 44.3 is p = 1e-4
    quantized = params.quantizer.quantize(updates["device-00"])
    assert chi_square_uniform(quantized, 16) > 1000
    assert chi_square_uniform(upload, 16) < 44.3
    assert abs(np.corrcoef(upload.astype(np.float64), updates["device-00"])[0, 1]) < 0.04
    assert abs(float(np.mean(upload)) / 2**16 - 0.5) < 0.01


def test_a_tampered_or_misrouted_share_is_refused() -> None:
    params = SecAggParams(num_clients=5, dimension=4)
    clients = [SecAggClient(name, params) for name in names(5)]
    server = SecAggServer(params)
    adverts = server.collect_adverts([c.advertise() for c in clients])
    inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
    share = inbox["device-00"][0]
    flipped = bytearray(share.sealed)
    flipped[20] ^= 1
    tampered = EncryptedShare(share.sender, share.recipient, bytes(flipped))
    relabelled = EncryptedShare(inbox["device-00"][1].sender, share.recipient, share.sealed)

    with pytest.raises(ItemError, match="fail authentication"):
        clients[0].mask(np.zeros(4), [tampered, *inbox["device-00"][1:]])
    with pytest.raises(ItemError, match="fail authentication"):
        clients[0].mask(np.zeros(4), [relabelled])  # another sender's name on it


def test_a_survivor_never_reveals_both_shares_of_one_client() -> None:
    # Prepare: a round where everyone masked
    params = SecAggParams(num_clients=5, dimension=4)
    clients = [SecAggClient(name, params) for name in names(5)]
    server = SecAggServer(params)
    adverts = server.collect_adverts([c.advertise() for c in clients])
    inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
    for c in clients:
        c.mask(np.zeros(4), inbox[c.client_id])
    everyone = frozenset(names(5))
    clients[0].unmask(UnmaskRequest(everyone))

    # Execute / Assert: a server that now says device-04 dropped wants its key too
    with pytest.raises(Conflict, match=r"refuses to reveal both .*device-04"):
        clients[0].unmask(UnmaskRequest(everyone - {"device-04"}, frozenset({"device-04"})))
    with pytest.raises(ItemError, match="both survive and drop"):
        UnmaskRequest(everyone, frozenset({"device-04"}))


def test_masks_come_from_32_byte_keys_never_a_32_bit_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: numpy's generators must not be used by the protocol at all
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("secure aggregation used numpy's RNG")

    monkeypatch.setattr(np.random, "default_rng", forbidden)
    monkeypatch.setattr(np.random, "seed", forbidden)
    params = SecAggParams(num_clients=5, dimension=8)
    updates = {name: np.full(8, 0.25) for name in names(5)}

    # Execute
    result = run_round(params, updates)
    advert = SecAggClient("device-00", params).advertise()

    # Assert
    np.testing.assert_allclose(result.total, 1.25, atol=params.quantizer.sum_error_bound(5))
    assert len(advert.cipher_key) == len(advert.mask_key) == 32
    with pytest.raises(ConfigError, match="32 bytes"):
        mask_vector((12345).to_bytes(4, "little"), 8, 32)
    seed = bytes(range(32))
    np.testing.assert_array_equal(mask_vector(seed, 8, 32), mask_vector(seed, 8, 32))
    assert not np.array_equal(mask_vector(seed, 8, 32), mask_vector(bytes(32), 8, 32))


def test_a_field_too_small_for_the_clients_is_refused() -> None:
    with pytest.raises(ConfigError, match="headroom"):
        FieldQuantizer(bits=8, num_clients=300)


def test_the_upload_expansion_against_float32_fedavg() -> None:
    assert round(upload_cost(100_000, 100, 16).expansion, 2) == 0.53
    assert round(upload_cost(100_000, 100, 32).expansion, 2) == 1.03
    small = upload_cost(1_000, 10, 16)
    assert small.total == small.masked + small.keys + small.shares + small.unmask
    assert small.masked == 2_000 and small.plain == 4_000


@pytest.mark.parametrize("bits, clients", [(16, 10), (16, 3), (32, 7), (12, 5)])
def test_unchanged_coordinates_sum_to_exactly_zero(bits: int, clients: int) -> None:
    # with an odd number of levels 0.0 fell halfway between two, and every client's
    # zero came back half a step low: a sum of unchanged coordinates drifted
    q = FieldQuantizer(bits=bits, clip=8.0, num_clients=clients)
    zeros = q.quantize(np.zeros(5))
    total = zeros
    for _ in range(clients - 1):
        total = q.add(total, zeros)
    assert np.array_equal(q.dequantize_sum(total, clients), np.zeros(5))
