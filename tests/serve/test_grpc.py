"""The gRPC endpoint against the real ``tritonclient`` (sync and asyncio), real models, real ORT.

One server per module runs on a background thread's event loop: a real
:class:`ModelManager` over a Triton-style repository in a temporary folder
(``digits`` with a config, loaded at start; ``spare``, the same model without
one, loaded only through the repository API), and the real ``grpc.aio`` server.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from fogline.errors import (
    ConfigError,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    NotRunning,
    Overloaded,
    SignatureMismatch,
)
from fogline.examples import digits_model_path
from fogline.serve._grpc import EXTENSIONS, ServerTLS, _status_of, start_grpc
from fogline.serve._manager import ModelManager
from fogline.serve._repository import Repository
from support.certificates import self_signed
from support.serve_repository import DIGITS_CONFIG, make_repository

T = TypeVar("T")


class Running:
    """A manager and a gRPC server on their own event loop, on a background thread."""

    def __init__(self, root: Path, *, timeout_s: float | None = None) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.manager = ModelManager(
            Repository(root), control="explicit", startup=["digits"], timeout_s=timeout_s
        )
        self.call(self.manager.start())
        self.server, self.port = self.call(start_grpc(self.manager, "127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.port}"

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def close(self) -> None:
        self.call(self.server.stop(None))
        self.call(self.manager.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = DIGITS_CONFIG.replace(
        "max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 1000"
    )
    root = make_repository(tmp_path_factory.mktemp("repository"), config=config)
    (root / "spare" / "1").mkdir(parents=True)  # a second model, without a config
    shutil.copy(digits_model_path(), root / "spare" / "1" / "model.onnx")
    server = Running(root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(running: Running) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(running.url) as connected:
        yield connected


@pytest.fixture(scope="module")
def stub(running: Running) -> Iterator[Any]:
    """The generated stub, for requests that tritonclient would never build."""
    channel = grpc.insecure_channel(running.url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def pixels(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32) * 16


def expected_logits(batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(digits_model_path()), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"pixels": batch})[0])


def infer_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def status_of(error: InferenceServerException) -> str:
    return str(error.status()).removeprefix("StatusCode.")


def assert_serves(client: triton.InferenceServerClient) -> None:
    batch = pixels(1, seed=99)
    result = client.infer("digits", [infer_input("pixels", batch, "FP32")])
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(batch), atol=1e-5)


# --- health and metadata ------------------------------------------------------------------


def test_server_is_live_and_ready_and_describes_itself(
    client: triton.InferenceServerClient,
) -> None:
    metadata = client.get_server_metadata(as_json=True)

    assert client.is_server_live()
    assert client.is_server_ready()
    assert metadata["name"] == "fogline"
    assert metadata["version"] == __import__("fogline").__version__
    assert metadata["extensions"] == list(EXTENSIONS)


def test_model_metadata_has_the_batch_dimension(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("digits", as_json=True)

    assert metadata["name"] == "digits"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "pixels", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}
    ]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}]


def test_model_config_carries_the_repository_config(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("digits").config

    assert (config.name, config.platform, config.max_batch_size) == (
        "digits",
        "onnxruntime_onnx",
        8,
    )
    assert [(t.name, list(t.dims)) for t in config.input] == [("pixels", [1, 8, 8])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]
    assert config.input[0].data_type == triton.model_config_pb2.TYPE_FP32
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert config.instance_group[0].count == 1
    assert config.version_policy.latest.num_versions == 1


def test_model_ready_answers_yes_or_no(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("digits", "7")
    assert not client.is_model_ready("spare")  # in the repository, not loaded
    assert not client.is_model_ready("no-such-model")


# --- inference ----------------------------------------------------------------------------


def test_a_batch_of_three_matches_onnxruntime(client: triton.InferenceServerClient) -> None:
    batch = pixels(3)

    result = client.infer(
        "digits",
        [infer_input("pixels", batch, "FP32")],
        outputs=[triton.InferRequestedOutput("logits")],
        request_id="req-42",
    )

    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-42", "digits", "1")
    assert result.as_numpy("logits").shape == (3, 10)
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(batch), atol=1e-5)


def test_typed_contents_are_read_like_raw_bytes(stub: Any) -> None:
    batch = pixels(2, seed=3)
    request = service_pb2.ModelInferRequest(model_name="digits", model_version="1")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[2, 1, 8, 8])
    tensor.contents.fp32_contents.extend(batch.reshape(-1).tolist())

    response = stub.ModelInfer(request)

    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("logits", "FP32", [2, 10])
    ]
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(logits, expected_logits(batch), atol=1e-5)


def test_concurrent_async_requests_share_batches(running: Running) -> None:
    rows = [pixels(1, seed=seed) for seed in range(48)]

    async def send_all() -> list[np.ndarray]:
        async with triton_aio.InferenceServerClient(running.url) as client:
            results = await asyncio.gather(
                *(client.infer("digits", [infer_input("pixels", row, "FP32")]) for row in rows)
            )
        return [result.as_numpy("logits") for result in results]

    before = running.manager.get("digits").batcher.stats  # type: ignore[union-attr]
    answers = asyncio.run(send_all())
    after = running.manager.get("digits").batcher.stats  # type: ignore[union-attr]

    np.testing.assert_allclose(
        np.concatenate(answers), expected_logits(np.concatenate(rows)), atol=1e-5
    )
    grown = {
        size: count - before.batch_sizes.get(size, 0) for size, count in after.batch_sizes.items()
    }
    assert any(size > 1 and count > 0 for size, count in grown.items()), grown


# --- bad requests -------------------------------------------------------------------------


BAD = {
    "wrong dtype": (
        "digits",
        "",
        [("pixels", np.zeros((1, 1, 8, 8), np.int32), "INT32")],
        "INVALID_ARGUMENT",
        "input 'pixels' has datatype INT32, model 'digits' expects FP32",
    ),
    "wrong shape": (
        "digits",
        "",
        [("pixels", np.zeros((2, 8, 8), np.float32), "FP32")],
        "INVALID_ARGUMENT",
        "input 'pixels' has shape [2, 8, 8], model 'digits' expects [-1, 1, 8, 8]",
    ),
    "batch over max_batch_size": (
        "digits",
        "",
        [("pixels", np.zeros((9, 1, 8, 8), np.float32), "FP32")],
        "INVALID_ARGUMENT",
        "batch of 9",
    ),
    "unknown input": (
        "digits",
        "",
        [
            ("pixels", np.zeros((1, 1, 8, 8), np.float32), "FP32"),
            ("extra", np.zeros((1, 1), np.float32), "FP32"),
        ],
        "INVALID_ARGUMENT",
        "unknown input(s) extra",
    ),
    "missing input": (
        "digits",
        "",
        [("other", np.zeros((1, 1, 8, 8), np.float32), "FP32")],
        "INVALID_ARGUMENT",
        "missing input(s) pixels",
    ),
    "unknown model": (
        "no-such-model",
        "",
        [("pixels", np.zeros((1, 1, 8, 8), np.float32), "FP32")],
        "NOT_FOUND",
        "no-such-model",
    ),
    "unknown version": (
        "digits",
        "7",
        [("pixels", np.zeros((1, 1, 8, 8), np.float32), "FP32")],
        "NOT_FOUND",
        "no ready version 7",
    ),
    "model not loaded": (
        "spare",
        "",
        [("pixels", np.zeros((1, 1, 8, 8), np.float32), "FP32")],
        "UNAVAILABLE",
        "'spare' is not ready",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_a_clear_status_and_the_server_goes_on(
    client: triton.InferenceServerClient, case: str
) -> None:
    model, version, tensors, status, message = BAD[case]
    inputs = [infer_input(name, array, datatype) for name, array, datatype in tensors]

    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, inputs, model_version=version)

    assert status_of(raised.value) == status
    assert message in raised.value.message()
    assert_serves(client)


def test_an_unknown_requested_output_is_named(client: triton.InferenceServerClient) -> None:
    inputs = [infer_input("pixels", pixels(1), "FP32")]

    with pytest.raises(InferenceServerException) as raised:
        client.infer("digits", inputs, outputs=[triton.InferRequestedOutput("probabilities")])

    assert status_of(raised.value) == "INVALID_ARGUMENT"
    assert "unknown output(s) probabilities; model 'digits' has logits" in raised.value.message()


def hand_made(
    raw: list[bytes], datatype: str = "FP32", shape: tuple[int, ...] = (1, 1, 8, 8)
) -> Any:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype=datatype, shape=list(shape))
    request.raw_input_contents.extend(raw)
    return request


MALFORMED = {
    "bytes short of the shape": (hand_made([b"\0" * 255]), "255 bytes of data"),
    "two raw buffers for one input": (hand_made([b"\0" * 256, b""]), "raw_input_contents"),
    "unknown datatype": (hand_made([b"\0" * 256], datatype="FP8"), "unknown datatype 'FP8'"),
    "negative dimension": (hand_made([b""], shape=(-1, 1, 8, 8)), "negative dimension"),
    "BYTES with a huge shape": (
        hand_made([b"\0" * 8], datatype="BYTES", shape=(1 << 40,)),
        "8 bytes cannot hold 1099511627776 BYTES elements",
    ),
    "empty but huge": (hand_made([b""], shape=(0, 1 << 40, 1 << 40)), "is too large"),
    "too many dimensions": (hand_made([b"\0" * 4], shape=(1,) * 40), "40 dimensions"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_raw_contents_are_refused(
    stub: Any, client: triton.InferenceServerClient, case: str
) -> None:
    request, message = MALFORMED[case]

    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()
    assert_serves(client)


def test_typed_contents_must_fit_the_datatype(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="pixels", datatype="INT8", shape=[1, 1, 8, 8])
    tensor.contents.int_contents.extend([300] * 64)

    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of INT8's range" in raised.value.details()


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    datatype=st.sampled_from(["FP32", "FP16", "INT8", "INT64", "BYTES", "BOOL", "", "fp32"]),
    shape=st.lists(st.one_of(st.integers(-2, 9), st.integers(0, 1 << 62)), max_size=40),
    raw=st.lists(st.binary(max_size=300), max_size=2),
    typed=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["fp32_contents", "int_contents", "bytes_contents", "bool_contents"]),
            st.integers(0, 300),
        ),
    ),
    name=st.sampled_from(["pixels", "", "x"]),
    version=st.sampled_from(["", "1", "2", "one"]),
)
def test_random_malformed_requests_never_break_the_server(
    stub: Any,
    datatype: str,
    shape: list[int],
    raw: list[bytes],
    typed: tuple[str, int] | None,
    name: str,
    version: str,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits", model_version=version)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    if typed is not None:
        field, count = typed
        value = {"bytes_contents": b"7", "bool_contents": True}.get(field, 7)
        getattr(tensor.contents, field).extend([value] * count)

    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert error.details()
    assert stub.ServerLive(service_pb2.ServerLiveRequest()).live


def test_what_fogline_does_not_do_is_unimplemented(
    client: triton.InferenceServerClient, stub: Any
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_system_shared_memory_status()
    with pytest.raises(grpc.RpcError) as streamed:
        list(stub.ModelStreamInfer(iter([hand_made([b"\0" * 256])])))

    assert status_of(raised.value) == "UNIMPLEMENTED"
    assert "SystemSharedMemoryStatus" in raised.value.message()
    assert streamed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "use ModelInfer" in streamed.value.details()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ModelNotFound("m"), grpc.StatusCode.NOT_FOUND),
        (ModelNotReady("m"), grpc.StatusCode.UNAVAILABLE),
        (NotRunning("m"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("m"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (SignatureMismatch("m"), grpc.StatusCode.INVALID_ARGUMENT),
        (ConfigError("m"), grpc.StatusCode.INVALID_ARGUMENT),
        (asyncio.TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ModelError("m"), grpc.StatusCode.INTERNAL),
        (KeyError("m"), grpc.StatusCode.INTERNAL),
    ],
)
def test_every_error_has_its_status_and_a_message(error: Exception, code: Any) -> None:
    mapped, details = _status_of(error, "ModelInfer")

    assert mapped == code
    assert details


def test_a_request_over_the_timeout_is_deadline_exceeded(running: Running) -> None:
    slow = Running(running.root, timeout_s=1e-6)
    try:
        with (
            triton.InferenceServerClient(slow.url) as client,
            pytest.raises(InferenceServerException) as raised,
        ):
            client.infer("digits", [infer_input("pixels", pixels(8), "FP32")])
        assert status_of(raised.value) == "DEADLINE_EXCEEDED"
        assert "did not answer within" in raised.value.message()
    finally:
        slow.close()


# --- the model repository -----------------------------------------------------------------


def test_repository_index_load_and_unload(client: triton.InferenceServerClient, stub: Any) -> None:
    def index() -> dict[str, tuple[str, str]]:
        rows = client.get_model_repository_index().models
        return {row.name: (row.version, row.state) for row in rows}

    assert index() == {"digits": ("1", "READY"), "spare": ("", "UNAVAILABLE")}

    client.load_model("spare")
    assert index()["spare"] == ("1", "READY")
    assert client.is_model_ready("spare")
    assert client.get_model_config("spare").config.name == "spare"  # config from the model
    batch = pixels(2)
    result = client.infer("spare", [infer_input("pixels", batch, "FP32")])
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(batch), atol=1e-5)

    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True)).models
    assert [row.name for row in ready] == ["digits"]

    with pytest.raises(InferenceServerException) as raised:
        client.load_model("no-such-model")
    assert status_of(raised.value) == "NOT_FOUND"


def test_statistics_count_the_inferences(client: triton.InferenceServerClient) -> None:
    assert_serves(client)

    stats = client.get_inference_statistics("digits").model_stats

    assert [(s.name, s.version) for s in stats] == [("digits", "1")]
    assert stats[0].inference_count >= 1


# --- the server: ports, TLS, tokens -------------------------------------------------------


def test_a_busy_port_is_a_config_error(running: Running) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        running.call(start_grpc(running.manager, "127.0.0.1", running.port))


def test_a_token_is_required_when_set(running: Running) -> None:
    server, port = running.call(start_grpc(running.manager, "127.0.0.1", 0, token="s3cret"))
    try:
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(InferenceServerException) as raised:
                client.is_server_live()
            assert status_of(raised.value) == "UNAUTHENTICATED"
            with pytest.raises(InferenceServerException, match="not valid"):
                client.is_server_live(headers={"authorization": "Bearer wrong"})
            assert client.is_server_live(headers={"authorization": "Bearer s3cret"})
    finally:
        running.call(server.stop(None))


def test_tls_serves_the_same_service(running: Running, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    tls = ServerTLS(cert_file, key_file)
    server, port = running.call(start_grpc(running.manager, "localhost", 0, tls=tls))
    try:
        with triton.InferenceServerClient(
            f"localhost:{port}", ssl=True, root_certificates=str(cert_file)
        ) as client:
            assert client.is_server_live()
            assert_serves(client)
    finally:
        running.call(server.stop(None))


def test_a_missing_tls_file_is_a_config_error(running: Running, tmp_path: Path) -> None:
    tls = ServerTLS(tmp_path / "absent.pem", tmp_path / "absent.key")

    with pytest.raises(ConfigError, match="absent"):
        running.call(start_grpc(running.manager, "127.0.0.1", 0, tls=tls))
