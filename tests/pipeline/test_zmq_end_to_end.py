"""Two devices without a broker: real pipelines on real pyzmq sockets over loopback.

PUSH→PULL work (with CURVE, an intruder refused, a corrupt message
counted), PUB→SUB broadcast by topic prefix, a sink whose peer refuses its
key, and ``fogline check`` refusing what cannot work.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import ConfigError, FoglineError, Refused
from fogline.examples import digits_eval
from fogline.pipeline import Pipeline, load_spec, plan
from fogline.transport.zmq import (
    CurveClient,
    CurveServer,
    KeyPair,
    ZmqEndpoint,
    ZmqSocket,
    write_keypair,
)
from support.digits_pipeline import digits_spec, write_spec
from support.ports import free_port


def digits(count: int) -> Iterator[tuple[str, bytes]]:
    """``(id, payload)`` for the first ``count`` digits, as a camera gateway sends them."""
    batch = next(digits_eval())
    for index in range(count):
        pixels, label = batch["pixels"][index], batch["labels"][index]
        body = {"data": pixels.ravel().tolist(), "id": f"d{index}", "label": str(label)}
        yield f"d{index}", json.dumps(body).encode()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, KeyPair]:
    folder = tmp_path / "keys"
    for name in ("receiver", "camera", "intruder"):
        write_keypair(folder, name)
    return {
        n: KeyPair.load(folder / f"{n}.key_secret", secret=True)
        for n in ("receiver", "camera", "intruder")
    }


def start(path: Path) -> tuple[Pipeline, threading.Thread, list[Any]]:
    checked = plan(load_spec(path))
    pipeline = Pipeline(checked)
    snapshots: list[Any] = []
    thread = threading.Thread(target=lambda: snapshots.append(pipeline.run()), daemon=True)
    thread.start()
    return pipeline, thread, snapshots


def finish(pipeline: Pipeline, thread: threading.Thread, snapshots: list[Any]) -> Any:
    pipeline.stop()
    thread.join(30)
    pipeline.close()
    pipeline.plan.model.engine.close()
    return snapshots[0]


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_push_to_pull_with_curve_counts_a_corrupt_message_and_refuses_an_intruder(
    tmp_path: Path, keys: dict[str, KeyPair]
) -> None:
    # Prepare: a receiver pipeline that PULLs on a port, as a CURVE server allowing the camera
    port = free_port()
    spec = digits_spec(
        sources=[
            {
                "type": "zmq",
                "name": "rx",
                "endpoint": f"tcp://127.0.0.1:{port}",
                "shape": [1, 8, 8],
                "curve": {"secret_key": "keys/receiver.key_secret", "allow": ["keys/camera.key"]},
            }
        ],
        sinks=[{"type": "jsonl", "path": "results.jsonl"}],
        store=False,
    )
    pipeline, thread, snapshots = start(write_spec(tmp_path, spec))
    endpoint = ZmqEndpoint.parse(f"tcp://127.0.0.1:{port}")
    camera = ZmqSocket(
        "push", endpoint, bind=False, curve=CurveClient(keys["camera"], keys["receiver"].public)
    )
    intruder = ZmqSocket(
        "push",
        endpoint,
        bind=False,
        curve=CurveClient(keys["intruder"], keys["receiver"].public),
        send_timeout=0.5,
    )
    try:
        # Execute: 20 digits with a malformed message as the 6th; the intruder tries too
        sent = list(digits(20))
        for index, (_, payload) in enumerate(sent):
            if index == 5:
                camera.send([b'{"data": "not numbers"'])
            camera.send([payload])
        with pytest.raises(Refused, match="not allowed"):
            intruder.send([sent[0][1]])
        wait_for(lambda: len(jsonl(tmp_path / "results.jsonl")) >= 20)
    finally:
        camera.close()
        intruder.close()
        snapshot = finish(pipeline, thread, snapshots)

    # Assert: every digit has its result, under its id, at its position; one corrupt counted
    results = jsonl(tmp_path / "results.jsonl")
    assert sorted(r["item_id"] for r in results) == sorted(i for i, _ in sent)
    positions = {r["position"] for r in results}
    assert f"zmq tcp://127.0.0.1:{port}#0" in positions
    assert f"zmq tcp://127.0.0.1:{port}#5" not in positions  # the corrupt one
    assert snapshot.counts["rx"]["corrupt"] == 1
    assert snapshot.counts["rx"]["processed"] == 20
    assert snapshot.accuracy is not None and snapshot.accuracy[1] == 20


def test_pub_to_sub_results_fan_out_by_topic_prefix(tmp_path: Path) -> None:
    # Prepare: a device SUBscribes to a camera's PUB stream and PUBlishes its results
    feed_port, results_port = free_port(), free_port()
    spec = digits_spec(
        sources=[
            {
                "type": "zmq",
                "name": "cam",
                "pattern": "sub",
                "endpoint": f"tcp://127.0.0.1:{feed_port}",
                "topic": "frames/",
                "shape": [1, 8, 8],
            }
        ],
        sinks=[
            {
                "type": "zmq",
                "pattern": "pub",
                "endpoint": f"tcp://127.0.0.1:{results_port}",
                "topic": "digits/{label}",
            }
        ],
        store=False,
    )
    feed = ZmqSocket("pub", ZmqEndpoint.parse(f"tcp://127.0.0.1:{feed_port}"), bind=True)
    listener = ZmqSocket(
        "sub", ZmqEndpoint.parse(f"tcp://127.0.0.1:{results_port}"), bind=False, topic=b"digits/"
    )
    pipeline, thread, snapshots = start(write_spec(tmp_path, spec))
    received: list[list[bytes]] = []
    try:
        # Execute: publish (again and again: a subscriber joins late) until results come back
        items = list(digits(10))
        deadline = time.monotonic() + 20
        while len(received) < 10 and time.monotonic() < deadline:
            for _, payload in items:
                feed.send([b"frames/cam0", payload])
                feed.send([b"other/cam0", payload])  # not subscribed: never an item
            while (frames := listener.receive(timeout=0.05)) is not None:
                received.append(frames)
    finally:
        feed.close()
        listener.close()
        snapshot = finish(pipeline, thread, snapshots)

    # Assert: results on digits/<label>, as JSON results carrying the item ids and the topic
    assert len(received) >= 10
    for topic, payload in received[:10]:
        result = json.loads(payload)
        assert topic.decode() == f"digits/{result['outputs']['label']}"
        assert result["item_id"].startswith("d")
    assert snapshot.counts["cam"].get("corrupt", 0) == 0


def test_a_sink_whose_peer_refuses_its_key_counts_the_results_as_not_written(
    tmp_path: Path, keys: dict[str, KeyPair]
) -> None:
    # Prepare: a worker PULLs as a CURVE server; the device's sinks hold the right and a wrong key
    port = free_port()
    worker = ZmqSocket(
        "pull",
        ZmqEndpoint.parse(f"tcp://127.0.0.1:{port}"),
        bind=True,
        curve=CurveServer(keys["receiver"], frozenset({keys["camera"].public})),
    )
    sink = {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "timeout": 0.3}
    spec = digits_spec(
        sources=[
            {
                "type": "dataset",
                "name": "digits",
                "function": "fogline.examples:digits_eval",
                "max_items": 8,
            }
        ],
        sinks=[
            {
                **sink,
                "name": "good",
                "curve": {
                    "secret_key": "keys/camera.key_secret",
                    "server_key": "keys/receiver.key",
                },
            },
            {
                **sink,
                "name": "bad",
                "curve": {
                    "secret_key": "keys/camera.key_secret",
                    "server_key": "keys/intruder.key",
                },
            },
        ],
        store=False,
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    try:
        # Execute
        snapshot = pipeline.run()
        pipeline.close()
        got = []
        while (frames := worker.receive(timeout=0.5)) is not None:
            got.append(json.loads(frames[0]))
    finally:
        checked.model.engine.close()
        worker.close()

    # Assert: the good sink delivered all 8; the bad one's results are counted as failed
    assert len(got) == 8 and {r["source"] for r in got} == {"digits"}
    assert snapshot.sinks["good"].get("written") == 8
    assert snapshot.sinks["bad"].get("failed", 0) >= 1
    assert not snapshot.sinks["bad"].get("written")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "tcp://127.0.0.1"}, "sources[0].endpoint: a tcp endpoint is tcp://host:port"),
        (
            {"curve": {"secret_key": "keys/nobody.key_secret", "allow": ["keys/camera.key"]}},
            "sources[0].curve.secret_key: no such file",
        ),
        (
            {"curve": {"secret_key": "keys/receiver.key", "allow": ["keys/camera.key"]}},
            "holds only a public key",
        ),
        ({"curve": {"secret_key": "keys/receiver.key_secret"}}, "give `allow`"),
        ({"pattern": "sub", "endpoint": "tcp://*:5557"}, "only a socket that binds"),
    ],
)
def test_check_refuses_a_bad_zmq_source_with_its_key_path(
    tmp_path: Path, keys: dict[str, KeyPair], change: dict[str, Any], message: str
) -> None:
    source = {
        "type": "zmq",
        "endpoint": f"tcp://127.0.0.1:{free_port()}",
        "shape": [1, 8, 8],
        **change,
    }
    with pytest.raises(ConfigError) as caught:
        plan(load_spec(write_spec(tmp_path, digits_spec(sources=[source]))))
    assert message in str(caught.value)
    assert ": sources[0]" in str(caught.value)


def test_check_refuses_an_endpoint_in_use(tmp_path: Path) -> None:
    port = free_port()
    spec = digits_spec(
        sinks=[{"type": "zmq", "pattern": "pub", "endpoint": f"tcp://127.0.0.1:{port}"}]
    )
    path = write_spec(tmp_path, spec)
    busy = ZmqSocket("pull", ZmqEndpoint.parse(f"tcp://127.0.0.1:{port}"), bind=True)
    with busy, pytest.raises(ConfigError, match=r"sinks\[0\]: endpoint: cannot bind .* in use"):
        plan(load_spec(path))
    plan(load_spec(path)).model.engine.close()  # free again: checks and closes what it bound


def test_an_npy_source_reads_arrays_and_counts_what_does_not_fit() -> None:
    # Prepare: a PULL source of (2, 3) float32 arrays, and a neighbour that pushes to it
    import io

    import numpy as np

    from fogline.pipeline import Corrupt, Item
    from fogline.pipeline.sources import ZmqSourceSpec

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    source = ZmqSourceSpec(endpoint=endpoint, format="npy", shape=[2, 3]).build("arrays")
    stop = threading.Event()
    got: list[Item | Corrupt] = []
    reader = threading.Thread(target=lambda: got.extend(source.read(stop)), daemon=True)
    reader.start()

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    # Execute: a good array, one of the wrong dtype, a two-frame message, a broken one, a good one
    with ZmqSocket("push", ZmqEndpoint.parse(endpoint), bind=False) as push:
        push.send([npy(np.ones((2, 3), np.float32))])
        push.send([npy(np.ones((2, 3), np.float64))])
        push.send([b"topic", npy(np.ones((2, 3), np.float32))])
        push.send([b"\x93NUMPY, but cut short"])
        push.send([npy(np.full((2, 3), 7, np.float32))])
        wait_for(lambda: len(got) >= 5, timeout=10)
    stop.set()
    reader.join(5)

    # Assert: two items in order, three corrupt at their positions, with the reason
    items = [g for g in got if isinstance(g, Item)]
    corrupt = [g for g in got if isinstance(g, Corrupt)]
    assert [float(i.data[0, 0]) for i in items] == [1.0, 7.0]
    assert [c.position for c in corrupt] == [f"zmq {endpoint}#{n}" for n in (1, 2, 3)]
    assert "expected float32 data, got float64" in corrupt[0].reason
    assert "2 frames" in corrupt[1].reason
    assert "not a .npy array" in corrupt[2].reason


def test_a_failed_setup_closes_what_it_had_opened(tmp_path: Path) -> None:
    # Prepare: two zmq sinks that bind in build(); the second's port is taken once the
    # pipeline was checked, so its run fails while setting up, after the first one bound
    first, second = free_port(), free_port()
    sinks = [
        {"type": "zmq", "name": f"pub{n}", "pattern": "pub", "endpoint": f"tcp://127.0.0.1:{port}"}
        for n, port in enumerate((first, second))
    ]
    spec = digits_spec(sinks=sinks, store=False)
    runner = Pipeline(plan(load_spec(write_spec(tmp_path, spec))))
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", second))
    squatter.listen()
    # Execute
    try:
        with pytest.raises(FoglineError, match="in use"):
            runner.run(duration=5)
    finally:
        squatter.close()
    # Assert: the first sink's socket was closed: its port can be bound again
    deadline = time.monotonic() + 5
    while True:
        again = socket.socket()
        try:
            again.bind(("127.0.0.1", first))
            break
        except OSError:
            assert time.monotonic() < deadline, "the first sink's port is still bound"
            time.sleep(0.05)
        finally:
            again.close()
