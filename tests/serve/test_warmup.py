"""Triton's model_warmup: read from config.pbtxt, run before a version takes traffic.

Real servers, real ONNX Runtime, the official tritonclient. A configured
warm-up is part of the contract: a version that fails it is never served,
and the version already serving goes on.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from fogline.errors import ConfigError
from fogline.examples import digits_model_path
from fogline.serve import ModelConfig, TensorConfig
from fogline.serve._config import WarmupInput, WarmupSample
from fogline.serve._pbtxt import read_config
from fogline.serve._repository import Repository
from fogline.serve._server import Server
from support.serve_repository import DIGITS_CONFIG, make_repository

HANG = 30.0  # seconds: a bound that only a hang reaches


def warmup_block(
    name: str, data: str, *, dims: str = "[ 1, 8, 8 ]", batch: int = 1, count: int = 0
) -> str:
    return f"""
model_warmup [ {{
  name: "{name}" batch_size: {batch} count: {count}
  inputs {{ key: "pixels" value: {{ data_type: TYPE_FP32 dims: {dims} {data} }} }}
}} ]
"""


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def client_for(server: Server) -> http.InferenceServerClient:
    return http.InferenceServerClient(f"127.0.0.1:{server.ports.http}")


def infer_version(client: http.InferenceServerClient) -> str:
    given = http.InferInput("pixels", [1, 1, 8, 8], "FP32")
    given.set_data_from_numpy(pixels(1))
    return str(client.infer("digits", [given]).get_response()["model_version"])


def index(client: http.InferenceServerClient) -> dict[str, dict[str, str]]:
    return {row.get("version", ""): row for row in client.get_model_repository_index()}


# --- reading config.pbtxt ------------------------------------------------------------------


def test_model_warmup_is_read_as_triton_writes_it() -> None:
    text = """
model_warmup [
  { name: "zeros" batch_size: 4 count: 3
    inputs { key: "pixels" value: { data_type: TYPE_FP32 dims: [ 1, 8, 8 ] zero_data: true } } },
  { name: "skipped" batch_size: 0
    inputs { key: "pixels" value: { data_type: TYPE_FP32 dims: [ 1, 8, 8 ] zero_data: true } } },
  { name: "real"
    batch_size: 1
    inputs [
      { key: "pixels" value: { data_type: TYPE_FP32 dims: [ 1, 8, 8 ] input_data_file: "a.bin" } },
      { key: "tag" value: { data_type: TYPE_STRING dims: [ 1 ] random_data: true } }
    ]
  }
]
"""
    config = read_config(text, where="digits/config.pbtxt")

    assert config.warmup == (
        WarmupSample("zeros", 4, (WarmupInput("pixels", "FP32", (1, 8, 8), "zero"),), runs=3),
        WarmupSample(
            "real",
            1,
            (
                WarmupInput("pixels", "FP32", (1, 8, 8), "file", "a.bin"),
                WarmupInput("tag", "BYTES", (1,), "random"),
            ),
        ),
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (warmup_block("w", ""), "set one of zero_data, random_data, input_data_file"),
        (warmup_block("w", "zero_data: true", dims="[ -1, 8, 8 ]"), "must all be known"),
        (warmup_block("w", 'input_data_file: "../../secret"'), "inside the model's warmup/"),
        (warmup_block("w", 'input_data_file: "/etc/hostname"'), "inside the model's warmup/"),
    ],
)
def test_a_bad_model_warmup_is_a_config_error_naming_the_file(block: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"^m/config\.pbtxt: ") as caught:
        read_config(block, where="m/config.pbtxt")

    assert expected in str(caught.value)


def test_a_warmup_file_reached_through_a_link_out_of_the_folder_is_refused(
    tmp_path: Path,
) -> None:
    root = make_repository(tmp_path / "models")
    (root / "digits" / "warmup").mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 256)
    (root / "digits" / "warmup" / "a.bin").symlink_to(secret)

    with pytest.raises(ConfigError, match="outside the model's warmup/ folder"):
        Repository(root).warmup_file("digits", "a.bin")
    assert "warmup" not in Repository(root).ignored("digits")  # a known folder, not a stray one


# --- serving ---------------------------------------------------------------------------------


def test_configured_warmup_runs_before_the_version_is_served(tmp_path: Path) -> None:
    # Prepare: a sample from a file, batched by 4 and run 3 times, and a random one
    sample = pixels(1, seed=3)[0]
    config = (
        DIGITS_CONFIG
        + warmup_block("file", 'input_data_file: "digit.bin"', batch=4, count=3)
        + warmup_block("random", "random_data: true", batch=2)
    )
    root = make_repository(tmp_path / "models", config=config)
    (root / "digits" / "warmup").mkdir()
    (root / "digits" / "warmup" / "digit.bin").write_bytes(sample.astype("<f4").tobytes())

    # Execute
    with Server(root, http_port=0, grpc_port=None) as server:
        client = client_for(server)
        ready = client.is_model_ready("digits")
        version = infer_version(client)
        runs = server.manager.get("digits").stats["warmup_runs"]

    # Assert
    assert ready and version == "1"
    assert runs == 3 + 1


def test_a_version_whose_warmup_fails_never_takes_traffic(tmp_path: Path) -> None:
    # Prepare: the warm-up names a file that is not there
    config = DIGITS_CONFIG + warmup_block("real", 'input_data_file: "digit.bin"')
    root = make_repository(tmp_path / "models", config=config)

    # Execute
    with Server(root, http_port=0, grpc_port=None) as server:
        client = client_for(server)
        live = client.is_server_live()
        ready = client.is_model_ready("digits")
        rows = index(client)
        with pytest.raises(InferenceServerException, match="no ready version"):
            infer_version(client)

    # Assert
    assert live and not ready
    assert rows["1"]["state"] == "UNAVAILABLE"
    assert "warmup/digit.bin" in rows["1"]["reason"]


def test_a_new_version_that_fails_its_warmup_leaves_the_old_one_serving(tmp_path: Path) -> None:
    # Prepare: version 1 serves with a warm-up from a good file
    config = DIGITS_CONFIG + warmup_block("real", 'input_data_file: "digit.bin"')
    root = make_repository(tmp_path / "models", config=config)
    warmup = root / "digits" / "warmup"
    warmup.mkdir()
    (warmup / "digit.bin").write_bytes(pixels(1)[0].tobytes())

    with Server(root, http_port=0, grpc_port=None, control="poll", poll_interval=0.2) as server:
        client = client_for(server)
        assert infer_version(client) == "1"

        # Execute: the file is cut short, then version 2 is dropped in
        (warmup / "digit.bin").write_bytes(b"\0" * 10)
        (root / "digits" / "2").mkdir()
        shutil.copy(digits_model_path(), root / "digits" / "2" / "model.onnx")
        served: set[str] = set()
        rows: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline and rows.get("2", {}).get("state") != "UNAVAILABLE":
            served.add(infer_version(client))
            rows = index(client)
        served.add(infer_version(client))

        # ... and once the file is whole again, version 2 warms up and takes over
        (warmup / "digit.bin").write_bytes(pixels(1)[0].tobytes())
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline and infer_version(client) != "2":
            pass
        after = infer_version(client)

    # Assert
    assert served == {"1"}
    assert rows["2"]["state"] == "UNAVAILABLE" and rows["1"]["state"] == "READY"
    assert "has 10 bytes" in rows["2"]["reason"] and "need 256" in rows["2"]["reason"]
    assert after == "2"


def test_a_warmup_that_does_not_fit_the_model_fails_the_version(tmp_path: Path) -> None:
    config = DIGITS_CONFIG + warmup_block("big", "zero_data: true", batch=9)
    root = make_repository(tmp_path / "models", config=config)

    with Server(root, http_port=0, grpc_port=None) as server:
        rows = index(client_for(server))

    assert rows["1"]["state"] == "UNAVAILABLE"
    assert "batch_size 9 is over max_batch_size 8" in rows["1"]["reason"]


# --- a published model that refuses some inputs --------------------------------------------


def silero_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without importing torch
    assert spec is not None and spec.origin is not None, "silero-vad is a dev dependency"
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


VAD_WARMUP = """
model_warmup [ {{
  name: "speech" batch_size: 1
  inputs [
    {{ key: "input" value: {{ data_type: TYPE_FP32 dims: [ 1, {samples} ] random_data: true }} }},
    {{ key: "state" value: {{ data_type: TYPE_FP32 dims: [ 2, 1, 128 ] zero_data: true }} }},
    {{ key: "sr" value: {{ data_type: TYPE_INT64 input_data_file: "sr.bin" }} }}
  ]
}} ]
"""


@pytest.mark.parametrize(("samples", "ready"), [(512, True), (1, False)])
def test_the_engine_itself_failing_a_warmup_sample_keeps_the_version_out(
    tmp_path: Path, samples: int, ready: bool
) -> None:
    # Prepare: Silero VAD at 16 kHz; one audio sample is too short for its reflection pad
    root = tmp_path / "models"
    (root / "vad" / "1").mkdir(parents=True)
    shutil.copy(silero_path(), root / "vad" / "1" / "model.onnx")
    (root / "vad" / "warmup").mkdir()
    (root / "vad" / "warmup" / "sr.bin").write_bytes(np.int64(16000).tobytes())
    (root / "vad" / "config.pbtxt").write_text(VAD_WARMUP.format(samples=samples))

    # Execute
    with Server(root, http_port=0, grpc_port=None) as server:
        client = client_for(server)
        is_ready = client.is_model_ready("vad")
        rows = {row["name"]: row for row in client.get_model_repository_index()}

    # Assert
    assert is_ready is ready
    if not ready:
        assert rows["vad"]["state"] == "UNAVAILABLE"
        assert "warm-up sample 'speech' failed" in rows["vad"]["reason"]


def test_without_model_warmup_zeros_stay_best_effort(tmp_path: Path) -> None:
    # Silero refuses zeros (a sample rate of 0), yet without model_warmup it is served
    root = tmp_path / "models"
    (root / "vad" / "1").mkdir(parents=True)
    shutil.copy(silero_path(), root / "vad" / "1" / "model.onnx")

    with Server(root, http_port=0, grpc_port=None) as server:
        ready = client_for(server).is_model_ready("vad")
        runs = server.manager.get("vad").stats["warmup_runs"]

    assert ready and runs == 0


def test_warmup_dims_must_fit_the_config() -> None:
    from fogline.serve._warmup import sample_feeds

    config = ModelConfig("m", max_batch_size=4, inputs=(TensorConfig("x", "FP32", (-1, 3)),))
    fits = WarmupSample("ok", 2, (WarmupInput("x", "FP32", (5, 3), "zero"),))
    wrong = WarmupSample("bad", 1, (WarmupInput("x", "FP32", (5, 4), "zero"),))

    assert sample_feeds(fits, config, lambda name: b"")["x"].shape == (2, 5, 3)
    with pytest.raises(ConfigError, match=r"dims \[5, 4\] do not fit the config's \[-1, 3\]"):
        sample_feeds(wrong, config, lambda name: b"")
