"""The OIP client engine against a real ``fogline serve``: the same answers as the local model,
over HTTP and gRPC, and each failure (refused, paused, unknown model, garbled answer) mapped."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from fogline.cli import app, main
from fogline.data import load_dataset
from fogline.errors import BadAnswer, ConfigError, Refused, TimedOut, Unreachable
from fogline.examples import digits_split, digits_teacher_path
from fogline.model import Engine, load_engine
from fogline.oip import ModelUrl, RemoteEngine
from fogline.optimize import accuracy, measure_variant
from support.oip_server import Served, garbling_server, served

__all__ = ["served"]  # the fixture, imported for this module

PROTOCOLS = ("http", "grpc")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_remote_model_answers_like_the_local_file(served: Served, protocol: str) -> None:
    # Prepare
    pixels, _ = digits_split("eval")
    local = load_engine(digits_teacher_path())
    engine = RemoteEngine(served.url(protocol), timeout_s=5)
    # Execute
    answer = engine.infer({"pixels": pixels[:16]})
    # Assert
    assert isinstance(engine, Engine)
    assert engine.signature.input_names == ("pixels",)
    assert engine.signature.inputs[0].shape == (None, 1, 8, 8)
    assert (answer.model, answer.version, engine.version) == ("digits-teacher", "1", "1")
    np.testing.assert_allclose(
        answer.outputs["logits"], local.run({"pixels": pixels[:16]})["logits"], rtol=1e-5, atol=1e-5
    )
    engine.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_paused_server_times_out_within_the_deadline_and_recovers(
    served: Served, protocol: str
) -> None:
    pixels, _ = digits_split("eval")
    engine = RemoteEngine(served.url(protocol), timeout_s=0.3).connect()
    served.pause()
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut, match=r"no answer within 0\.3 s"):
            engine.infer({"pixels": pixels[:1]})
        assert time.monotonic() - started < 1.0
    finally:
        served.resume()
    deadline = time.monotonic() + 5
    while True:  # the first call after the pause may still find the old connection's state
        try:
            assert engine.run({"pixels": pixels[:1]})["logits"].shape == (1, 10)
            break
        except (TimedOut, Unreachable):
            assert time.monotonic() < deadline, "the engine did not recover after SIGCONT"
    engine.close()


def test_unknown_models_and_foreign_urls_are_refused(served: Served) -> None:
    with pytest.raises(Refused, match="404"):
        RemoteEngine(served.url("http", "nosuch"), timeout_s=2).connect()
    with pytest.raises(Refused, match=r"NOT_FOUND|not found|unknown"):
        RemoteEngine(served.url("grpc", "nosuch"), timeout_s=2).connect()
    for bad in ("mqtt://h:1/x", "http://h/v2/models/x", "http://h:8000/x", "grpc://h:1/"):
        with pytest.raises(ConfigError, match=r"http://HOST:PORT/v2/models/NAME"):
            ModelUrl.parse(bad)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_closed_port_is_unreachable_at_once(protocol: str) -> None:
    started = time.monotonic()
    url = "http://127.0.0.1:1/v2/models/x" if protocol == "http" else "grpc://127.0.0.1:1/x"
    with pytest.raises(Unreachable):
        RemoteEngine(url, timeout_s=2).connect()
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        json.dumps({"model_name": "t", "outputs": [{"name": "logits", "datatype": "FP32",
                    "shape": [1, 3], "data": [1, 2, 3]}]}).encode(),
        json.dumps({"model_name": "t", "outputs": []}).encode(),
    ],
    ids=["not-json", "wrong-shape", "no-output"],
)  # fmt: skip
def test_a_garbled_answer_is_a_bad_answer(answer: bytes) -> None:
    server = garbling_server(answer)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/digits-teacher"
        engine = RemoteEngine(url, timeout_s=2).connect()
        with pytest.raises(BadAnswer):
            engine.infer({"pixels": np.zeros((1, 1, 8, 8), np.float32)})
        engine.close()
    finally:
        server.shutdown()


def test_bench_and_the_optimizer_measure_a_remote_model(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    out = CliRunner().invoke(
        app, ["bench", served.url("grpc"), "--batch", "1,8", "--duration", "0.2", "--json"]
    )
    engine = RemoteEngine(served.url("http"), timeout_s=5)
    data = load_dataset("fogline.examples:digits_eval", engine.signature)
    figures, outputs = measure_variant(engine, data, batches=(1,), duration_s=0.1)
    # Assert
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert info["backend"] == "oip-grpc" and info["model"] == served.url("grpc")
    assert [r["batch"] for r in info["results"]] == [1, 8]
    assert figures["throughput"]["batch1"] > 0
    assert outputs["logits"].shape == (597, 10)
    assert accuracy(outputs, data.labels) == pytest.approx(99.66, abs=0.01)
    engine.close()
    assert main(["bench", "http://127.0.0.1:1/teacher"]) == 2
    assert "http://HOST:PORT/v2/models/NAME" in capsys.readouterr().err
