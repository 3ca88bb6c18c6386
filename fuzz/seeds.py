"""Write the seed corpora (``fuzz/corpus/<target>/``) from real, valid inputs.

    python fuzz/seeds.py

Each seed is something fogline itself writes or ships: the example
pipelines, small ONNX models made with ``onnx.helper``, requests the way
the protocol's clients send them, bodies the way devices, the controller
and cluster nodes publish them, a release document. The first byte of a
seed is the target's mode byte where it has one (see each target), so a
seed is read as the real input it is. Run it again after a format
changes; the files are small and committed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2

from fogline import cluster, protocol
from fogline.examples import digits_model_path
from fogline.security import ReleaseDocument, ReleaseFile

CORPUS = Path(__file__).parent / "corpus"
RAW = b"\x00"  # mode byte: the rest is the input as is
MQTT_KINDS = [
    "DesiredState",
    "DeviceState",
    "Telemetry",
    "Command",
    "Presence",
    "OfferAck",
    "RoundTask frame",
    "UpdateChunk frame",
    "UpdateAck frame",
    "OfferChunk frame",
    "cluster Presence",
    "cluster Done",
    "cluster DispatcherStats",
    "source json",
    "source json 2x2",
    "source image",
]  # fmt: skip - the order of fuzz/mqtt.py's KINDS


def _models() -> dict[str, bytes]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    add = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    weights = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])
    gemm = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "classifier",
        [x],
        [probs],
        [weights, bias],
    )
    out = {}
    for graph in (add, gemm):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        out[graph.name] = model.SerializeToString()
    return out


def _oip_http() -> dict[str, bytes]:
    plain = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]
    }
    full = {
        "id": "42",
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
            {"name": "c", "datatype": "BOOL", "shape": [2, 1], "data": [[True], [False]]},
        ],
        "outputs": [{"name": "a", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False},
    }
    return {
        "plain": RAW + json.dumps(plain).encode(),
        "full": RAW + json.dumps(full).encode(),
        "built": b"\x01" + bytes(range(1, 64)),  # the generator's path
    }


def _oip_grpc() -> dict[str, bytes]:
    raw = service_pb2.ModelInferRequest(model_name="digits", id="1")
    tensor = raw.inputs.add(name="pixels", datatype="FP32", shape=[1, 4])
    del tensor
    raw.raw_input_contents.append(np.arange(4, dtype="<f4").tobytes())
    raw.outputs.add(name="probs")
    typed = service_pb2.ModelInferRequest(model_name="m")
    a = typed.inputs.add(name="a", datatype="INT64", shape=[2])
    a.contents.int64_contents.extend([1, -2])
    b = typed.inputs.add(name="b", datatype="BYTES", shape=[1])
    b.contents.bytes_contents.append(b"hi")
    c = typed.inputs.add(name="c", datatype="UINT8", shape=[3])
    c.contents.uint_contents.extend([0, 7, 255])
    return {"raw": raw.SerializeToString(), "typed": typed.SerializeToString()}


def _mqtt() -> dict[str, bytes]:
    import cv2

    sha = "0" * 64
    bodies = {
        "DesiredState": protocol.DesiredState(
            generation=3, releases={"digits": "1.2.0"}, rollback={"digits": "1.1.0"}
        ).model_dump_json(),
        "DeviceState": protocol.DeviceState(
            device_id="cam-1",
            generation=3,
            releases={"digits": protocol.ReleaseStatus(version="1.2.0", phase="active")},
        ).model_dump_json(),
        "Telemetry": protocol.Telemetry(
            device_id="cam-1",
            time=1.0,
            sequence=7,
            versions={"digits": "1.2.0"},
            metrics={"digits": protocol.ReleaseMetrics(items=10, p50_ms=1.5)},
            period=10,
        ).model_dump_json(),
        "Command": protocol.Command(id="c1", kind="rollback", release="digits").model_dump_json(),
        "Presence": protocol.Presence(online=True, time=1.0).model_dump_json(),
        "OfferAck": protocol.OfferAck(
            offer="a1b2", status="partial", received=[0]
        ).model_dump_json(),
        "RoundTask frame": protocol.encode_frame(
            protocol.RoundTask(
                run="r1",
                round=1,
                task="fogline.examples:digits_task",
                deadline=1e9,
                model_sha256=sha,
                model_size=3,
            ),
            b"abc",
        ),
        "UpdateChunk frame": protocol.encode_frame(
            protocol.UpdateChunk(device_id="cam-1", run="r1", round=1, size=3, sha256=sha), b"xyz"
        ),
        "UpdateAck frame": protocol.encode_frame(
            protocol.UpdateAck(run="r1", round=1, status="partial", received=[0])
        ),
        "OfferChunk frame": protocol.encode_frame(
            protocol.OfferChunk(
                device_id="cam-1",
                offer="a1b2",
                release="digits",
                base_version="1.0.0",
                size=3,
                sha256=sha,
            ),
            b"tar",
        ),
        "cluster Presence": cluster.Presence(
            "node-a", "online", 2, took=5, finished=4, in_flight=1, lag_ms=3.5, at=1.0
        ).payload(),
        "cluster Done": cluster.Done("cam-1:17", 17, "processed", {"label": 3}).payload(),
        "cluster DispatcherStats": cluster.DispatcherStats(
            "running", "digits/in", 2, queued=1, dispatched=9, at=2.0
        ).payload(),
        "source json": json.dumps({"data": [1, 2.5], "label": "ok", "id": 7}),
        "source json 2x2": json.dumps([1, 2, 3, 4]),
        "source image": cv2.imencode(".png", np.arange(12, dtype=np.uint8).reshape(2, 2, 3))[
            1
        ].tobytes(),
    }
    out = {}
    for name, body in bodies.items():
        payload = body if isinstance(body, bytes) else body.encode()
        out[name.replace(" ", "-")] = bytes([MQTT_KINDS.index(name), 0]) + payload
    return out


def _release() -> dict[str, bytes]:
    doc = ReleaseDocument(
        name="digits",
        version="1.2.0",
        kind="model",
        entry="model",
        files=[
            ReleaseFile(path="model/model.onnx", length=618850, sha256="1" * 64),
            ReleaseFile(path="model/fogline.yaml", length=645, sha256="2" * 64),
        ],
        description="digits classifier",
        provenance={"strategy": "fedavg", "rounds": 3},
    )
    return {"digits": RAW + doc.model_dump_json().encode(), "built": b"\x01" + bytes(range(40))}


def _spec() -> dict[str, bytes]:
    examples = digits_model_path().parent.parent
    out = {
        path.parent.name: RAW + path.read_bytes()
        for path in sorted(examples.glob("*/*.yaml"))
        if path.name != "fogline.yaml"
    }
    out["built"] = b"\x01" + bytes(range(1, 80))
    return out


def main() -> None:
    corpora = {
        "model": _models(),
        "spec": _spec(),
        "oip_http": _oip_http(),
        "oip_grpc": _oip_grpc(),
        "mqtt": _mqtt(),
        "release": _release(),
    }
    for target, seeds in corpora.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            digest = hashlib.sha256(data).hexdigest()[:8]
            (folder / f"{name}-{digest}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
