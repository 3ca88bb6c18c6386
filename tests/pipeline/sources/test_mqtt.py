"""The mqtt source against a real Mosquitto: JSON and image payloads, and corrupt ones."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline.sources._mqtt import MqttSource, MqttSourceSpec
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto


class Running:
    """A source's ``read`` on its own thread, its items in a queue."""

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.items: queue.Queue[Item | Corrupt] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert source.subscribed.wait(10), "the source did not subscribe"

    def _run(self) -> None:
        for item in self.source.read(self.stop):
            self.items.put(item)

    def take(self, count: int) -> list[Item | Corrupt]:
        return [self.items.get(timeout=10) for _ in range(count)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "read() did not return after stop"


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[MqttPublisher]:
    with MqttPublisher(mosquitto.url) as opened:
        yield opened


def start(url: str, **options: object) -> Running:
    spec = MqttSourceSpec.model_validate({"url": url, **options})
    return Running(spec.build("plant"))


def test_json_payloads_become_float32_vectors_and_bad_ones_corrupt(
    mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    # Prepare
    running = start(mosquitto.url, topic="sensors/+/vibration")
    payloads = [b"[1, 2, 3]", b'{"data": [0.5, -1], "label": "ok"}', b"{not json", b'{"x": 1}']
    # Execute
    publisher.publish(
        *(MqttMessage(Topic(f"sensors/m{i}/vibration"), p) for i, p in enumerate(payloads))
    )
    got = running.take(4)
    running.close()
    # Assert
    first, second, broken, missing = got
    assert isinstance(first, Item) and isinstance(second, Item)
    assert first.data.dtype == np.float32 and first.data.tolist() == [1, 2, 3]
    assert (first.source, first.sequence, first.position) == (
        "plant",
        0,
        "mqtt sensors/m0/vibration",
    )
    assert second.data.tolist() == [0.5, -1] and second.meta["label"] == "ok"
    assert second.sequence == 1
    assert broken == Corrupt("plant", "mqtt sensors/m2/vibration", broken.reason)
    assert "not JSON" in broken.reason
    assert isinstance(missing, Corrupt) and '"data"' in missing.reason


def test_json_with_shape_reshapes_or_reports(
    mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    running = start(mosquitto.url, topic="s/#", shape=[2, 2])
    publisher.publish(MqttMessage(Topic("s/a"), b"[1, 2, 3, 4]"), MqttMessage(Topic("s/b"), b"[1]"))
    ok, short = running.take(2)
    running.close()
    assert isinstance(ok, Item) and ok.data.shape == (2, 2)
    assert isinstance(short, Corrupt) and "shape" in short.reason


def test_image_payloads_become_rgb_and_garbage_corrupt(
    mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    # Prepare: a PNG whose red pixel must come out as RGB (255, 0, 0)
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    ok, jpeg = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    running = start(mosquitto.url, topic="cams/+", format="image", qos=0)
    # Execute
    publisher.publish(
        MqttMessage(Topic("cams/a"), png.tobytes()),
        MqttMessage(Topic("cams/b"), jpeg.tobytes()),
        MqttMessage(Topic("cams/c"), b"\x89PNG but not really"),
    )
    image, photo, garbage = running.take(3)
    running.close()
    # Assert
    assert isinstance(image, Item) and image.data.dtype == np.uint8
    assert np.array_equal(image.data, rgb)
    assert isinstance(photo, Item) and photo.data.shape == (8, 8, 3)
    assert isinstance(garbage, Corrupt) and garbage.position == "mqtt cams/c"


def test_max_items_ends_the_read(mosquitto: Mosquitto, publisher: MqttPublisher) -> None:
    running = start(mosquitto.url, topic="n", max_items=2)
    publisher.publish(*(MqttMessage(Topic("n"), b"[1]") for _ in range(3)))
    running.take(2)
    running.thread.join(5)
    assert not running.thread.is_alive()


def test_spec_defaults_to_drop_oldest_and_checks_its_options() -> None:
    assert MqttSourceSpec(url="mqtt://b", topic="a/#").policy == "drop-oldest"
    assert MqttSourceSpec(url="mqtt://b", topic="a", policy="block").policy == "block"
    for bad in (
        {"topic": "a/#/b"},
        {"topic": "a", "url": "http://b"},
        {"topic": "a", "format": "image", "shape": [3]},
        {"topic": "a", "qos": 3},
    ):
        with pytest.raises(ValidationError):
            MqttSourceSpec.model_validate({"url": "mqtt://b", **bad})
