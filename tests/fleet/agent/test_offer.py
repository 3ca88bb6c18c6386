"""The agent's fine-tuning schedule: wait for labels, keep a failed candidate, offer a passing one.

A real store of captures and labels, a real ``fogline learn finetune`` child
process and the bundled digits model; the MQTT publish is a list the test
reads, and the controller's answers are handed in as it would send them.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from fogline.examples import digits_model_path, digits_split
from fogline.fleet.agent._offer import FinetuneScheduler
from fogline.power import DeferPolicy, Deferral
from fogline.protocol import OfferAck, OfferChunk, decode_frame
from fogline.security import DeviceKey, init_device_key, is_sealed
from fogline.store import Capture, ResultStore, StoredLabel
from fogline.testing import wait_until
from fogline.transport.mqtt import MqttMessage
from support.finetune_captures import seed_store


class Device:
    """One scheduler on ``folder``: its sent frames and its event lines."""

    def __init__(
        self,
        folder: Path,
        key: DeviceKey | None = None,
        deferral: Deferral | None = None,
        **finetune: object,
    ) -> None:
        self.folder = folder
        release = folder / "releases" / "digits"
        if not release.exists():
            release.mkdir(parents=True)
            for name in ("model.onnx", "fogline.yaml"):
                shutil.copyfile(digits_model_path().parent / name, release / name)
            seed_store(folder / "run" / "digits" / "results.db", key=key)
        section = {"release": "digits", "store": "results.db", "every_s": 0.5,
                   "original": "fogline.examples:digits_eval", "threads": 1, **finetune}  # fmt: skip
        (folder / "learner.yaml").write_text(yaml.safe_dump({"finetune": section}))
        self.sent: list[MqttMessage] = []
        self.events: list[str] = []
        self.scheduler = FinetuneScheduler(
            "cam-1", folder / "agent" / "finetune",
            learners=lambda: [folder / "learner.yaml"],
            active=lambda name: ("1.0.0", release) if name == "digits" else None,
            run_dir=folder / "run", publish=self._publish, connected=lambda: True,
            offer_topic="fogline/devices/cam-1/offer", on_event=self.events.append, key=key,
            deferral=deferral,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.scheduler.run, args=(self._stop,))
        self._thread.start()

    def _publish(self, messages: Sequence[MqttMessage], timeout: float) -> None:
        self.sent.extend(messages)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.events)

    def chunks(self) -> list[tuple[OfferChunk, bytes]]:
        return [decode_frame(m.payload, OfferChunk) for m in self.sent]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.stop()


def test_nothing_is_done_until_enough_captures_are_labelled(
    tmp_path: Path, devices: list[Device]
) -> None:
    device = Device(tmp_path, min_labelled=1000)
    devices.append(device)
    wait_until(
        "the schedule to look", lambda: device.said("400 labelled captures, waiting for 1000")
    )
    assert device.sent == [] and not device.said("to train on")


def test_a_due_fine_tune_waits_for_the_deferral_policy_and_says_why(
    tmp_path: Path, devices: list[Device]
) -> None:
    # Prepare: a laptop on battery (a folder laid out like /sys/class/power_supply)
    power = tmp_path / "power_supply"
    for name, files in {
        "AC": {"type": "Mains", "online": "0"},
        "BAT0": {"type": "Battery", "capacity": "20", "status": "Discharging"},
    }.items():
        (power / name).mkdir(parents=True)
        for key, value in files.items():
            (power / name / key).write_text(value + "\n")
    policy = DeferPolicy(min_battery_percent=40, check_every_s=0.1, power_supply=power)
    device = Device(tmp_path / "device", deferral=Deferral(policy), min_labelled=1000)
    devices.append(device)

    # Execute: it waits on battery; plugged in, it goes on to look at the captures
    wait_until("the schedule to wait", lambda: device.said("waiting: on battery (20 % < 40 %)"))
    looked_while_waiting = device.said("labelled captures")
    (power / "AC" / "online").write_text("1\n")
    (power / "BAT0" / "status").write_text("Charging\n")
    wait_until("the schedule to look", lambda: device.said("labelled captures, waiting for 1000"))

    # Assert
    assert not looked_while_waiting
    assert "fine-tune digits: waiting: on battery (20 % < 40 %)" in device.events
    assert "fine-tune digits: allowed: on mains power (20 %)" in device.events


def test_a_candidate_that_fails_the_gate_is_not_offered(
    tmp_path: Path, devices: list[Device]
) -> None:
    device = Device(tmp_path, max_forgetting=0.01)  # the head re-fit forgets ~7 points here
    devices.append(device)
    wait_until("the fine-tune to end", lambda: device.said("gate failed"), timeout=60)
    assert device.said("300 labelled captures to train on, 100 held out")
    assert device.said("points forgotten, the gate allows at most 1.00")
    assert device.sent == []


def test_a_passing_candidate_is_offered_sent_again_after_a_restart_and_ends_with_the_answer(
    tmp_path: Path, devices: list[Device]
) -> None:
    device = Device(tmp_path, max_forgetting=0.5)
    devices.append(device)
    wait_until("the offer sent", lambda: device.said("offering the candidate"), timeout=60)
    chunks = device.chunks()
    header = chunks[0][0]
    blob = b"".join(body for _, body in chunks)
    assert [c.index for c, _ in chunks] == list(range(header.total))
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (header.size, header.sha256)
    assert header.report is not None and header.report["gate"]["passed"]
    assert all(c.report is None for c, _ in chunks[1:])  # the report rides on the first only
    assert (header.release, header.base_version, header.max_forgetting) == ("digits", "1.0.0", 0.5)

    # an agent restarted before the answer sends the saved offer again, without training again
    device.stop()
    again = Device(tmp_path, max_forgetting=0.5)
    devices.append(again)
    wait_until("the offer sent again", lambda: len(again.sent) == header.total)
    assert {c.offer for c, _ in again.chunks()} == {header.offer}
    assert not again.said("to train on")

    again.scheduler.on_ack(
        OfferAck(offer=header.offer, status="accepted", version="1.1.0", deployment="d-1")
        .model_dump_json()
        .encode()
    )
    wait_until("the answer heard", lambda: again.said("accepted: release digits 1.1.0"))
    wait_until("the offer forgotten", lambda: '"pending":null' in (
        tmp_path / "agent" / "finetune" / "state.json").read_text().replace(" ", ""))  # fmt: skip
    state = (tmp_path / "agent" / "finetune" / "state.json").read_text()
    assert '"pending":null' in state.replace(" ", "")
    assert not (tmp_path / "agent" / "finetune" / "offer.tar").exists()
    # the schedule fires again (every_s 0.5) but there is nothing new to fine-tune on
    sent = len(again.sent)
    threading.Event().wait(1.5)
    assert len(again.sent) == sent and not again.said("to train on")


def test_captures_from_an_encrypted_store_never_reach_the_disk_in_plain(
    tmp_path: Path, devices: list[Device]
) -> None:
    # Prepare: the device's store encrypted with its key
    key = init_device_key(tmp_path / "device.key")
    device = Device(tmp_path, key=key, max_forgetting=0.5)
    devices.append(device)

    # Execute: one attempt that passes the gate and offers its candidate
    wait_until("the offer sent", lambda: device.said("offering the candidate"), timeout=60)
    wait_until("the work folder removed", lambda: not (device.scheduler.folder / "work").exists())

    # Assert: no file under the device folder holds a captured input's bytes
    with ResultStore(tmp_path / "run" / "digits" / "results.db", key=key) as store:
        inputs = [r.capture.array().tobytes() for r in store.captures(labelled_only=True)[:20]]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    leaked = [p for p in files for raw in inputs if raw in p.read_bytes()]
    assert leaked == [] and len(files) > 3
    offer = (device.scheduler.folder / "offer.tar").read_bytes()
    assert is_sealed(offer) and b"model.onnx" not in offer  # the candidate is sealed too
    blob = b"".join(body for _, body in device.chunks())
    assert b"model.onnx" in blob  # what is sent is the plain tar (the controller reads it)


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def named_release(folder: Path) -> Path:
    """The digits model whose manifest names its classes, and captures labelled by name."""
    release = folder / "releases" / "digits"
    release.mkdir(parents=True)
    for name in ("model.onnx", "fogline.yaml"):
        shutil.copyfile(digits_model_path().parent / name, release / name)
    manifest = yaml.safe_load((release / "fogline.yaml").read_text())
    manifest["labels"] = NAMES
    (release / "fogline.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    x, y = digits_split("eval")
    (folder / "run" / "digits").mkdir(parents=True)
    with ResultStore(folder / "run" / "digits" / "results.db") as store:
        store.add_captures(
            Capture.of(x[i], item_id=f"cam#{i}", source="camera", captured_at=float(i),
                       model="digits", model_version="1", reason="drift.alarm",
                       input_name="pixels", answer={})
            for i in range(50)
        )  # fmt: skip
        store.put_labels(StoredLabel(f"cam#{i}", NAMES[int(y[i])], float(i)) for i in range(50))
    return folder / "run" / "digits" / "results.db"


def test_labels_that_are_class_names_are_exported_with_the_manifest_classes(
    tmp_path: Path, devices: list[Device]
) -> None:
    named_release(tmp_path)
    device = Device(tmp_path, min_labelled=1000)
    devices.append(device)
    wait_until(
        "the schedule to look", lambda: device.said("50 labelled captures, waiting for 1000")
    )
    assert not device.said("cannot be exported"), device.events


def test_captures_that_cannot_be_exported_are_reported_with_the_reason(
    tmp_path: Path, devices: list[Device]
) -> None:
    store = named_release(tmp_path)
    with ResultStore(store) as opened:  # the camera changed: inputs of another shape
        opened.add_captures([Capture.of(np.zeros((1, 4, 4), np.float32), item_id="big",
                             source="camera", captured_at=99.0, model="digits",
                             model_version="1", reason="drift.alarm", input_name="pixels",
                             answer={})])  # fmt: skip
        opened.put_labels([StoredLabel("big", "one", 99.0)])
    device = Device(tmp_path, min_labelled=10)
    devices.append(device)
    wait_until("the schedule to look", lambda: device.said("cannot be exported"))
    assert device.said("the captured inputs differ in shape or dtype"), device.events
    assert not device.said("labelled captures, waiting for"), device.events
