"""The controller's side of a device's offer: who may offer, what is refused, what is signed.

A real registry, signed repository and rollouts; a real candidate, made by
``fogline.monitor.finetune`` (the last layer re-fitted on the digits, half of
them moved two pixels) and packed and framed as the agent does; only the MQTT
publish is a list the test reads.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fogline.examples import digits_model_path, digits_split
from fogline.fleet.agent._offer import CHUNK, frames, pack
from fogline.fleet.controller._offers import Offers
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._rollout import Rollouts
from fogline.monitor import FinetuneOptions, GateOptions, finetune
from fogline.protocol import (
    DeviceState,
    OfferAck,
    OfferChunk,
    ReleaseMetrics,
    ReleaseStatus,
    Telemetry,
    encode_frame,
)
from fogline.security import ReleaseRepository, init_keys


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A fine-tuned digits model folder (it forgets about 7 points of the original), packed."""
    folder = tmp_path_factory.mktemp("candidate")
    x, y = digits_split("eval")
    moved = np.zeros_like(x)
    moved[..., 2:] = x[..., :-2]
    pixels, labels = np.concatenate([x, moved]), np.concatenate([y, y])
    pick = np.random.default_rng(1).permutation(len(labels))[:400]
    np.savez(folder / "train.npz", pixels=pixels[pick[:300]], labels=labels[pick[:300]])
    np.savez(folder / "holdout.npz", pixels=pixels[pick[300:]], labels=labels[pick[300:]])
    result = finetune(
        digits_model_path().parent, str(folder / "train.npz"), str(folder / "holdout.npz"),
        folder / "out", original="fogline.examples:digits_eval",
        options=FinetuneOptions(threads=1), gate=GateOptions(max_forgetting=0.5),
    )  # fmt: skip
    assert result.passed, result.verdict.reason
    return pack(folder / "out")


class Fixture:
    def __init__(self, data: Path, *, canary: bool = True, **options: object) -> None:
        init_keys(data)
        self.repository = ReleaseRepository(data)
        base = self.base = data.parent / "digits"
        base.mkdir()
        for name in ("model.onnx", "fogline.yaml"):
            shutil.copyfile(digits_model_path().parent / name, base / name)
        x, y = digits_split("eval")
        np.savez(base / "canary.npz", x=x, y=y)
        self.repository.create_release(
            base, "digits", "1.0.0", self.repository.layout.key_file("targets"),
            kind="model", canary="canary.npz" if canary else None,
        )  # fmt: skip
        self.registry = Registry(data / "registry.db")
        for device, group in (("cam-1", "line"), ("cam-2", "lab")):
            self.registry.set_group(device, group)
            self.registry.ingest(Inbox(states=[DeviceState(
                device_id=device, releases={"digits": ReleaseStatus(version="1.0.0", phase="active")},
            )]))  # fmt: skip
        self.rollouts = Rollouts(self.registry, lambda changed: None)
        self.published: list[tuple[str, bytes]] = []
        self.offers = Offers(
            data, registry=self.registry, rollouts=self.rollouts, repository=self.repository,
            publish=lambda topic, payload, retain: self.published.append((topic, payload)),
            prefix="fogline", wake=lambda: None, groups=("line",), **options,  # type: ignore[arg-type]
        )  # fmt: skip

    def offer(self, device: str, blob: bytes, **header: object) -> OfferChunk:
        fields: dict[str, object] = {
            "device_id": device, "offer": hashlib.sha256(blob).hexdigest()[:16],
            "release": "digits", "base_version": "1.0.0", "total": max(1, -(-len(blob) // CHUNK)),
            "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
            "report": {"gate": {"passed": True, "gain": 0.2}}, "max_forgetting": 0.2,
        }  # fmt: skip
        chunk = OfferChunk.model_validate({**fields, **header})
        for frame in frames(chunk, blob, range(chunk.total)):
            self.offers.submit(device, frame)
        return chunk

    def answer(self, device: str, timeout: float = 60.0) -> OfferAck:
        """The last answer to ``device`` once it is final (the re-check runs on its own thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [p for t, p in self.published if t == f"fogline/devices/{device}/offer-ack"]
            if mine:
                ack = OfferAck.model_validate_json(mine[-1])
                if ack.status in ("accepted", "refused"):
                    return ack
            time.sleep(0.05)
        raise AssertionError(f"no final answer to {device}: {self.published}")

    def close(self) -> None:
        self.offers.stop()
        self.registry.close()


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    found = Fixture(tmp_path / "controller")
    yield found
    found.close()


def kinds(fx: Fixture) -> list[str]:
    return [e["kind"] for e in fx.registry.events()]


def test_an_offer_from_an_allowed_group_is_signed_and_deployed_as_a_canary(
    fx: Fixture, candidate: bytes
) -> None:
    fx.offer("cam-1", candidate)
    fx.offer("cam-1", candidate)  # sent again while it is checked: checked (and signed) once
    ack = fx.answer("cam-1")
    assert (ack.status, ack.version) == ("accepted", "1.1.0"), ack
    (document,) = [d for d in fx.repository.releases() if d.version == "1.1.0"]
    assert document.provenance is not None
    assert document.provenance["finetuned_on_device"] == "cam-1"
    assert document.provenance["device_report"]["gate"] == {"passed": True, "gain": 0.2}
    assert document.canary.data == "canary.npz"
    deployment = fx.rollouts.get(ack.deployment or "")
    assert deployment is not None and deployment.strategy.kind == "canary"
    assert kinds(fx)[0] == "offer-accepted"
    # the same offer again (a device that missed the answer) gets the same answer, no new release
    fx.published.clear()
    fx.offer("cam-1", candidate)
    assert fx.answer("cam-1") == ack
    assert len([d for d in fx.repository.releases() if d.name == "digits"]) == 2


def test_an_unknown_device_is_refused(fx: Fixture, candidate: bytes) -> None:
    fx.offer("ghost", candidate)
    ack = fx.answer("ghost")
    assert ack.status == "refused" and "'ghost' is not enrolled" in (ack.reason or "")
    assert kinds(fx) == ["offer-refused"]


def test_a_group_the_controller_takes_no_offers_from_is_refused(
    fx: Fixture, candidate: bytes
) -> None:
    fx.offer("cam-2", candidate)
    ack = fx.answer("cam-2")
    assert ack.status == "refused"
    assert "takes no offers from group 'lab'" in (ack.reason or ""), ack
    assert "--accept-offers" in (ack.reason or "")


def test_an_offer_larger_than_allowed_is_refused(tmp_path: Path, candidate: bytes) -> None:
    fx = Fixture(tmp_path / "controller", max_bytes=1000)
    try:
        fx.offer("cam-1", candidate)
        ack = fx.answer("cam-1")
        assert ack.status == "refused" and "at most 1000" in (ack.reason or ""), ack
    finally:
        fx.close()


def test_a_wrong_hash_or_size_is_refused(fx: Fixture, candidate: bytes) -> None:
    fx.offer("cam-1", candidate, sha256="0" * 64)
    ack = fx.answer("cam-1")
    assert ack.status == "refused" and "sha256" in (ack.reason or ""), ack
    fx.published.clear()
    fx.offer("cam-1", candidate, size=len(candidate) + 1, offer="beef")
    ack = fx.answer("cam-1")
    assert ack.status == "refused", ack
    assert f"an offer of {len(candidate) + 1} bytes puts" in (ack.reason or ""), ack
    assert [d.version for d in fx.repository.releases()] == ["1.0.0"]


def test_a_candidate_that_forgets_too_much_on_the_canary_set_is_refused(
    fx: Fixture, candidate: bytes
) -> None:
    fx.offer("cam-1", candidate, max_forgetting=0.01)
    ack = fx.answer("cam-1")
    assert ack.status == "refused" and "canary set (597 items)" in (ack.reason or ""), ack
    assert "at most 1.00 allowed" in (ack.reason or "")
    assert [d.version for d in fx.repository.releases()] == ["1.0.0"]


def test_an_offer_that_is_not_a_model_folder_is_refused(fx: Fixture, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not onnx")
    (folder / "fogline.yaml").write_text("name: x\n")
    fx.offer("cam-1", pack(folder))
    ack = fx.answer("cam-1")
    assert ack.status == "refused" and "not a model folder" in (ack.reason or ""), ack


def test_a_body_naming_another_device_is_dropped(fx: Fixture, candidate: bytes) -> None:
    chunk = OfferChunk(device_id="cam-2", offer="ab12", release="digits", base_version="1.0.0",
                       size=3, sha256="0" * 64)  # fmt: skip
    with pytest.raises(ValueError, match="the topic 'cam-1'"):
        fx.offers.submit("cam-1", encode_frame(chunk, b"abc"))


# -- what a device may not do (review findings) ----------------------------------------------


def header(**fields: object) -> dict[str, object]:
    return {
        "device_id": "cam-1", "offer": "abcd1234", "release": "digits", "base_version": "1.0.0",
        "size": 1000, "sha256": "0" * 64, **fields,
    }  # fmt: skip


@pytest.mark.parametrize("path", ["/etc/fogline", "../elsewhere", "a/../../b", "a//b", "./a"])
def test_a_model_path_outside_the_release_is_not_an_offer(fx: Fixture, path: str) -> None:
    with pytest.raises(ValidationError, match=r"must be '\.' or a relative path"):
        OfferChunk.model_validate(header(model_path=path))
    # a frame made without validation is not taken either: the worker drops it as malformed
    frame = encode_frame(OfferChunk.model_construct(**header(model_path=path, total=1)), b"x")
    with pytest.raises(ValueError, match="model_path"):
        fx.offers.submit("cam-1", frame)
    assert not fx.published


def test_a_model_path_that_is_no_model_folder_of_the_base_release_is_refused(
    fx: Fixture, candidate: bytes
) -> None:
    fx.offer("cam-1", candidate, model_path="models")
    ack = fx.answer("cam-1")
    assert ack.status == "refused", ack
    assert "no model folder 'models' (no models/fogline.yaml" in (ack.reason or ""), ack
    assert [d.version for d in fx.repository.releases()] == ["1.0.0"]


def test_chunks_that_do_not_add_up_to_the_offer_are_refused(fx: Fixture) -> None:
    # the reviewer's 10,000 chunks of a 1000-byte offer: not a valid header any more
    with pytest.raises(ValidationError, match="comes in 1 chunks"):
        OfferChunk.model_validate(header(total=10_000))
    # a chunk carrying more than its share
    fx.offers.submit("cam-1", encode_frame(OfferChunk(**header()), b"x" * 1001))  # type: ignore[arg-type]
    ack = OfferAck.model_validate_json(fx.published[-1][1])
    assert ack.status == "refused" and "carries 1001 bytes" in (ack.reason or ""), ack
    assert not list((fx.offers.folder / "cam-1").glob("*/*.part"))


def test_a_frame_larger_than_a_chunk_and_its_header_is_dropped(fx: Fixture) -> None:
    report = {"padding": "x" * 400_000}  # the report rides on chunk 0; it is not a place to store
    frame = encode_frame(OfferChunk(**header(size=1, report=report)), b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a chunk and its header fit in"):
        fx.offers.submit("cam-1", frame)
    assert not fx.published and not fx.offers.folder.exists()


def test_a_chunk_that_changes_the_offer_is_refused(fx: Fixture) -> None:
    size = 3 * OfferChunk.chunk_bytes
    fields = header(offer="abcd5678", size=size, total=3)
    fx.offers.submit("cam-1", encode_frame(OfferChunk(**fields), b"x" * OfferChunk.chunk_bytes))  # type: ignore[arg-type]
    assert OfferAck.model_validate_json(fx.published[-1][1]).received == [0]
    other = OfferChunk(**{**fields, "index": 1, "sha256": "1" * 64})  # type: ignore[arg-type]
    fx.offers.submit("cam-1", encode_frame(other, b"x" * OfferChunk.chunk_bytes))
    ack = OfferAck.model_validate_json(fx.published[-1][1])
    assert ack.status == "refused" and "chunk 1 changes sha256" in (ack.reason or ""), ack


def test_a_device_has_one_partial_offer_and_a_partial_offer_expires(tmp_path: Path) -> None:
    now = [time.time()]
    fx = Fixture(tmp_path / "controller", clock=lambda: now[0], expire_s=600)
    try:
        size, chunk = 2 * OfferChunk.chunk_bytes, b"x" * OfferChunk.chunk_bytes
        for offer in ("aaaa", "bbbb"):
            first = OfferChunk(**header(offer=offer, size=size, total=2))  # type: ignore[arg-type]
            fx.offers.submit("cam-1", encode_frame(first, chunk))
        # the new offer replaced the partial one
        assert sorted(p.name for p in (fx.offers.folder / "cam-1").iterdir()) == ["bbbb"]
        now[0] += 10_000  # later than expire_s after every file's time: the next chunk sweeps
        other = OfferChunk(**header(offer="cccc", device_id="cam-1", size=1, total=1))  # type: ignore[arg-type]
        fx.offers.registry.set_group("cam-1", "lab")  # so this one is refused, not stored
        fx.offers.submit("cam-1", encode_frame(other, b"x"))
        assert [p.name for p in (fx.offers.folder / "cam-1").iterdir() if p.is_dir()] == []
    finally:
        fx.close()


def test_the_controller_floor_and_bake_win_over_the_device(
    tmp_path: Path, candidate: bytes
) -> None:
    fx = Fixture(tmp_path / "controller", min_accuracy=0.9)
    try:
        fx.offer("cam-1", candidate, canary_min_accuracy=0.1, canary_bake=0)
        ack = fx.answer("cam-1")
        assert ack.status == "accepted", ack
        deployment = fx.rollouts.get(ack.deployment or "")
        assert deployment is not None
        assert deployment.criteria.min_accuracy == 0.9
        assert deployment.strategy.bake_seconds == 30.0
    finally:
        fx.close()
    fx = Fixture(tmp_path / "b" / "controller", min_accuracy=0.5)
    try:
        fx.offer("cam-1", candidate, canary_min_accuracy=0.95)
        deployment = fx.rollouts.get(fx.answer("cam-1").deployment or "")
        assert deployment is not None and deployment.criteria.min_accuracy == 0.95
    finally:
        fx.close()


def test_without_a_canary_set_the_controller_needs_its_own_floor(
    tmp_path: Path, candidate: bytes
) -> None:
    fx = Fixture(tmp_path / "controller", canary=False)
    try:
        fx.offer("cam-1", candidate, canary_min_accuracy=0.0)
        ack = fx.answer("cam-1")
        assert ack.status == "refused" and "--offer-min-accuracy" in (ack.reason or ""), ack
        assert [d.version for d in fx.repository.releases()] == ["1.0.0"]
    finally:
        fx.close()
    fx = Fixture(tmp_path / "b" / "controller", canary=False, min_accuracy=0.8)
    try:
        fx.offer("cam-1", candidate)
        assert fx.answer("cam-1").status == "accepted"
    finally:
        fx.close()


def test_a_release_the_device_does_not_run_is_refused(fx: Fixture, candidate: bytes) -> None:
    fx.repository.create_release(
        fx.base, "other", "1.0.0",
        fx.repository.layout.key_file("targets"), kind="model",
    )  # fmt: skip
    fx.offer("cam-1", candidate, release="other")
    ack = fx.answer("cam-1")
    assert ack.status == "refused", ack
    assert "does not run and never reported other 1.0.0" in (ack.reason or ""), ack
    assert len([d for d in fx.repository.releases() if d.name == "other"]) == 1
    # a device that reported running it (telemetry), and runs another version now, may offer it
    fx.published.clear()
    report = Telemetry(device_id="cam-1", time=time.time(), sequence=1,
                       versions={"other": "1.0.0"}, metrics={"other": ReleaseMetrics(items=5)})  # fmt: skip
    fx.registry.ingest(Inbox(telemetry=[("cam-1:1", report)]))
    fx.offer("cam-1", candidate, release="other", offer="beef02")
    ack = fx.answer("cam-1")
    assert ack.status == "refused" and "no canary set" in (ack.reason or ""), ack  # past that


def test_an_offer_while_a_rollout_runs_signs_nothing(fx: Fixture, candidate: bytes) -> None:
    fx.offer("cam-1", candidate)
    assert fx.answer("cam-1").status == "accepted"  # its canary deployment is running now
    fx.published.clear()
    fx.offer("cam-1", candidate, offer="beef01")
    ack = fx.answer("cam-1")
    assert ack.status == "refused" and "is still running" in (ack.reason or ""), ack
    assert "nothing was signed" in (ack.reason or "")
    assert sorted(d.version for d in fx.repository.releases()) == ["1.0.0", "1.1.0"]
