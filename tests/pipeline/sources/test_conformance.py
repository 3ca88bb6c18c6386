"""Every source spec in SPECS against the one contract of a source.

Each kind gets a small real instance (files written to tmp_path, a real OPC
UA server) that keeps producing — looping, paced or live — so the test can
also check that ``read`` ends promptly once ``stop`` is set.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fogline.errors import TransportError
from fogline.pipeline import Corrupt, Item
from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline.sources import (
    SPECS,
    CsvSpec,
    DatasetSpec,
    ImagesSpec,
    MqttSourceSpec,
    OpcuaSpec,
    ParquetSpec,
    StdinSpec,
    SyntheticSpec,
    VideoSpec,
    ZmqSourceSpec,
)

# The recorded tables: three rows close together, then one 100 s later (the replay waits).
TIMES = [0.0, 0.01, 0.02, 100.0]


def _images(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    for i in range(2):
        cv2.imwrite(str(tmp / f"{i}.png"), np.full((5, 7, 3), i * 50, np.uint8))
    return ImagesSpec(path=tmp, loop=True)


def _video(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    path = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (16, 8))
    for i in range(3):
        writer.write(np.full((8, 16, 3), i * 60, np.uint8))
    writer.release()
    return VideoSpec(path=path, loop=True, realtime=True)


def _csv(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    path = tmp / "log.csv"
    path.write_text("t,a,b\n" + "".join(f"{t},{i},{i * 2}\n" for i, t in enumerate(TIMES)))
    return CsvSpec(path=path, time_column="t")


def _parquet(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    path = tmp / "log.parquet"
    pq.write_table(pa.table({"t": TIMES, "a": [1.0, 2, 3, 4], "b": [1, 2, 3, 4]}), path)
    return ParquetSpec(path=path, time_column="t")


def _dataset(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    path = tmp / "d.npz"
    np.savez(path, x=np.arange(24, dtype=np.int16).reshape(4, 2, 3), y=np.arange(4))
    return DatasetSpec(path=path, loop=True)


def _synthetic(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    return SyntheticSpec(shape=[4, 2], dtype="uint8", pattern="sine")


def _stdin(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    # A real pipe that stays open with nothing more to read: the read must still end on stop.
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"[1, 2, 3, 4]\n[5, 6, 7, 8]\n[9, 10, 11, 12]\n")
    pipe = os.fdopen(read_fd)
    request.addfinalizer(pipe.close)
    request.addfinalizer(lambda: os.close(write_fd))
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(sys, "stdin", pipe)
    return StdinSpec(shape=[2, 2])


def _opcua(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    server = request.getfixturevalue("opcua_server")
    return OpcuaSpec(endpoint=server.endpoint, nodes=list(server.numbers), interval_ms=50)


def _mqtt(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic

    broker = request.getfixturevalue("mosquitto")
    done = threading.Event()

    def publish() -> None:  # a sensor that keeps sending until the test ends
        with MqttPublisher(broker.url) as publisher:
            while not done.wait(0.02):
                publisher.publish(MqttMessage(Topic("sensors/a"), b"[1.5, 2.5]"))

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    request.addfinalizer(lambda: (done.set(), thread.join(5)))
    return MqttSourceSpec(url=broker.url, topic="sensors/#", shape=[2])


def _zmq(tmp: Path, request: pytest.FixtureRequest) -> SourceSpec:
    from fogline.transport.zmq import ZmqEndpoint, ZmqSocket
    from support.ports import free_port

    endpoint = ZmqEndpoint("tcp", host="127.0.0.1", port=free_port())
    done = threading.Event()

    def push() -> None:  # a neighbour that keeps sending work until the test ends
        with ZmqSocket("push", endpoint, bind=False, send_timeout=0.1, linger=0) as sender:
            while not done.wait(0.02):
                try:
                    sender.send([b"[1.5, 2.5]"])
                except TransportError:
                    continue  # the source has not bound yet, or has stopped

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    request.addfinalizer(lambda: (done.set(), thread.join(5)))
    return ZmqSourceSpec(endpoint=str(endpoint), shape=[2])


BUILDERS: dict[type[SourceSpec], Callable[[Path, pytest.FixtureRequest], SourceSpec]] = {
    ImagesSpec: _images,
    VideoSpec: _video,
    CsvSpec: _csv,
    ParquetSpec: _parquet,
    DatasetSpec: _dataset,
    SyntheticSpec: _synthetic,
    StdinSpec: _stdin,
    OpcuaSpec: _opcua,
    MqttSourceSpec: _mqtt,
    ZmqSourceSpec: _zmq,
}


def _fits(data: np.ndarray, spec: ArraySpec) -> bool:
    if spec.dtype is not None and data.dtype.name != spec.dtype:
        return False
    if spec.shape is None:
        return True
    return data.ndim == len(spec.shape) and all(
        d is None or d == n for d, n in zip(spec.shape, data.shape, strict=True)
    )


@pytest.mark.parametrize("spec_class", SPECS, ids=lambda c: c.__name__)
def test_source_keeps_the_contract(
    spec_class: type[SourceSpec], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert spec_class in BUILDERS, f"add a builder for {spec_class.__name__} to this test"
    spec = BUILDERS[spec_class](tmp_path, request)
    expected = spec.output()
    source = spec.build("src-1")
    stop = threading.Event()
    got: list[Item | Corrupt] = []
    thread = threading.Thread(target=lambda: got.extend(_bounded(source.read(stop), 10_000)))

    thread.start()
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    stop.set()
    stopped_at = time.monotonic()
    thread.join(5)

    assert not thread.is_alive(), "read() did not return after stop was set"
    assert time.monotonic() - stopped_at < 0.5
    items = [g for g in got if isinstance(g, Item)]
    assert all(isinstance(g, Item | Corrupt) for g in got)
    assert len(items) >= 3
    assert [i.sequence for i in items] == list(range(len(items)))
    now = time.time()
    for item in items:
        assert item.source == "src-1"
        assert isinstance(item.data, np.ndarray)
        assert _fits(item.data, expected), f"{item.data.shape} {item.data.dtype} vs {expected}"
        assert abs(item.captured_at - now) < 60
        assert item.t0 <= time.monotonic()
        assert item.position


def _bounded(stream, limit: int):  # type: ignore[no-untyped-def]
    """The stream's first ``limit`` entries (a fast source must not fill memory)."""
    for count, entry in enumerate(stream):
        if count >= limit:
            stream.close()
            return
        yield entry
