"""One contract for every engine fogline defines, then what each backend promises on its own.

The conformance suite is generated from ``fogline.model.BACKENDS``: every
backend is loaded on a real model and held to the same contract. A backend
added to ``BACKENDS`` without a model below fails ``test_every_backend_has_a_model``,
so a new engine is tested the day it is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import (
    BackendUnavailable,
    ConfigError,
    ModelError,
    ModelFormatError,
    SignatureMismatch,
)
from fogline.model import (
    BACKENDS,
    PRECISIONS,
    Engine,
    EngineOptions,
    available_backends,
    backend_for,
    load_engine,
    tensorrt_version,
)
from fogline.model._onnxruntime import choose_providers
from fogline.model._openvino import cpu_capabilities

#: The fixture giving the real model each backend is checked on (see conftest.py).
MODELS = {"onnxruntime": "digits_onnx", "openvino": "digits_onnx", "litert": "digits_tflite"}

#: LiteRT's names for the digits model's tensors (see examples/tflite/make_model.py).
TFLITE_INPUT = "serving_default_pixels:0"
TFLITE_OUTPUT = "StatefulPartitionedCall_1:0"


def test_every_backend_has_a_model():
    assert set(MODELS) == set(BACKENDS)


def test_every_backend_is_installed_here():
    assert available_backends() == dict.fromkeys(BACKENDS, True)


# --- the contract ----------------------------------------------------------------------------


#: Every backend on its default device, and ONNX Runtime on each GPU provider (those are
#: marked ``gpu``: skipped, with the reason, where onnxruntime-gpu or the GPU is missing).
ENGINES = [
    *(pytest.param((b, None), id=b) for b in BACKENDS),
    *(
        pytest.param(("onnxruntime", p), id=f"onnxruntime-{p}", marks=pytest.mark.gpu)
        for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    ),
]


@pytest.fixture(scope="module", params=ENGINES)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    backend, provider = request.param
    path: Path = request.getfixturevalue(MODELS[backend])
    options = None
    if provider == "TensorrtExecutionProvider" and tensorrt_version() == "unknown":
        pytest.skip("needs TensorRT: its libraries (libnvinfer) are not installed here")
    if provider is not None:  # TensorRT's engines go to a cache of the test's own
        cache = tmp_path_factory.mktemp("tensorrt-cache")
        options = EngineOptions(providers=(provider,), cache_dir=cache)
    loaded = load_engine(path, backend=backend, options=options)
    if provider is not None:
        assert loaded.device == provider, f"asked for {provider}, ONNX Runtime ran {loaded.device}"
    yield loaded
    loaded.close()


def test_is_an_engine(engine: Engine):
    assert isinstance(engine, Engine)


def test_says_what_runs_it(engine: Engine):
    for value in (engine.backend, engine.precision, engine.device):
        assert isinstance(value, str)
        assert value
    assert engine.backend in BACKENDS
    assert engine.precision in PRECISIONS


@pytest.mark.parametrize("batch", [1, 5])
def test_run_gives_every_output_for_every_row(engine: Engine, batch: int):
    # Prepare
    signature = engine.signature
    feeds = signature.sample_feeds(batch=batch)

    # Execute
    outputs = engine.run(feeds)

    # Assert
    assert isinstance(outputs, dict)
    assert tuple(outputs) == signature.output_names
    for spec in signature.outputs:
        array = outputs[spec.name]
        assert isinstance(array, np.ndarray)
        assert array.shape[0] == batch
        assert array.dtype == np.dtype(spec.dtype)
        assert spec.accepts_shape(array.shape)


def test_run_refuses_a_missing_input(engine: Engine):
    # Prepare: run once, so nothing stale can stand in for the missing input
    engine.run(engine.signature.sample_feeds(batch=2))

    # Execute / Assert
    with pytest.raises(SignatureMismatch, match="missing") as info:
        engine.run({})
    assert engine.signature.input_names[0] in str(info.value)


def test_run_refuses_float64(engine: Engine):
    # Prepare
    feeds = {
        name: array.astype(np.float64)
        for name, array in engine.signature.sample_feeds(batch=2).items()
    }

    # Execute / Assert
    with pytest.raises(SignatureMismatch, match="float64") as info:
        engine.run(feeds)
    assert engine.signature.input_names[0] in str(info.value)


def test_run_refuses_the_wrong_rank(engine: Engine):
    name = engine.signature.input_names[0]
    with pytest.raises(SignatureMismatch) as info:
        engine.run({name: np.zeros((2, 64), dtype=np.float32)})
    assert name in str(info.value)


def test_run_is_deterministic(engine: Engine):
    # Prepare
    feeds = engine.signature.sample_feeds(batch=3, seed=11)

    # Execute
    first = engine.run(feeds)
    engine.run(engine.signature.sample_feeds(batch=7, seed=12))  # something else in between
    second = engine.run(feeds)

    # Assert
    for name in engine.signature.output_names:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_after_close_says_the_engine_is_closed(backend: str, request: pytest.FixtureRequest):
    # Prepare
    path: Path = request.getfixturevalue(MODELS[backend])
    engine = load_engine(path, backend=backend)
    feeds = engine.signature.sample_feeds(batch=1)
    engine.run(feeds)

    # Execute
    engine.close()

    # Assert
    with pytest.raises(ModelError, match="closed"):
        engine.run(feeds)


# --- ONNX Runtime ----------------------------------------------------------------------------


def test_onnxruntime_equals_a_bare_session(digits_onnx: Path, eval_pixels: np.ndarray):
    # Prepare: both on the CPU (a GPU build's default would be CUDA, whose sums differ)
    engine = load_engine(digits_onnx, options=EngineOptions(providers=("cpu",)))
    session = ort.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])

    # Execute
    ours = engine.run({"pixels": eval_pixels})["logits"]
    (theirs,) = session.run(["logits"], {"pixels": eval_pixels})

    # Assert
    np.testing.assert_array_equal(ours, theirs)


def test_choose_providers_puts_cpu_last_by_default():
    providers = choose_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert providers.count("CPUExecutionProvider") == 1


@given(
    requested=st.lists(
        st.sampled_from(ort.get_available_providers()),
        min_size=1,
        unique=True,
    )
)
def test_choose_providers_always_ends_with_cpu(requested: list[str]):
    # Execute
    providers = choose_providers(tuple(requested))

    # Assert
    assert providers[-1] == "CPUExecutionProvider"
    assert providers.count("CPUExecutionProvider") == 1
    assert set(requested) <= set(providers)


def test_choose_providers_refuses_an_unknown_provider():
    with pytest.raises(ConfigError, match="NoSuchExecutionProvider"):
        choose_providers(("NoSuchExecutionProvider", "CPUExecutionProvider"))


def test_load_engine_refuses_an_unknown_provider(digits_onnx: Path):
    options = EngineOptions(providers=("NoSuchExecutionProvider",))
    with pytest.raises(ConfigError, match="NoSuchExecutionProvider"):
        load_engine(digits_onnx, options=options)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_graph_optimization_level_gives_the_same_answer(
    level: str, digits_onnx: Path, eval_pixels: np.ndarray
):
    feeds = {"pixels": eval_pixels[:64]}
    reference = load_engine(digits_onnx).run(feeds)["logits"]

    engine = load_engine(digits_onnx, options=EngineOptions(threads=1, graph_optimization=level))

    np.testing.assert_allclose(engine.run(feeds)["logits"], reference, atol=1e-5)


# --- OpenVINO --------------------------------------------------------------------------------


def test_openvino_matches_onnxruntime_on_the_eval_split(digits_onnx: Path, eval_pixels: np.ndarray):
    # Prepare
    feeds = {"pixels": eval_pixels}

    # Execute
    openvino = load_engine(digits_onnx, backend="openvino").run(feeds)["logits"]
    onnxruntime = load_engine(digits_onnx, backend="onnxruntime").run(feeds)["logits"]

    # Assert
    assert openvino.shape == (len(eval_pixels), 10)
    np.testing.assert_allclose(openvino, onnxruntime, rtol=0, atol=1e-4)


def test_openvino_bf16_runs_exactly_when_the_cpu_has_it(digits_onnx: Path):
    # Prepare
    options = EngineOptions(precision="bf16")

    # Execute / Assert: whichever branch this machine takes, it is the right one
    if "BF16" in cpu_capabilities():
        engine = load_engine(digits_onnx, backend="openvino", options=options)
        assert engine.precision == "bf16"
        assert engine.run(engine.signature.sample_feeds(2))["logits"].shape == (2, 10)
    else:
        with pytest.raises(BackendUnavailable, match="BF16"):
            load_engine(digits_onnx, backend="openvino", options=options)


def test_openvino_refuses_fp16_on_cpu(digits_onnx: Path):
    with pytest.raises(ConfigError, match="fp16"):
        load_engine(digits_onnx, backend="openvino", options=EngineOptions(precision="fp16"))


def test_openvino_refuses_an_ir_without_its_bin(tmp_path: Path):
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelFormatError, match=r"\.bin") as info:
        load_engine(xml)
    assert str(xml) in str(info.value)


# --- LiteRT ----------------------------------------------------------------------------------


def test_litert_names_its_tensors(digits_tflite: Path):
    signature = load_engine(digits_tflite).signature
    assert signature.input_names == (TFLITE_INPUT,)
    assert signature.output_names == (TFLITE_OUTPUT,)
    assert signature.inputs[0].shape == (None, 8, 8, 1)


def test_litert_reproduces_the_reference_logits(
    digits_tflite: Path, digits_reference: dict[str, np.ndarray]
):
    # Prepare
    engine = load_engine(digits_tflite)

    # Execute
    logits = engine.run({TFLITE_INPUT: digits_reference["pixels"]})[TFLITE_OUTPUT]

    # Assert
    np.testing.assert_allclose(logits, digits_reference["logits"], rtol=0, atol=1e-4)


def test_litert_gives_the_same_rows_after_resizing(
    digits_tflite: Path, digits_reference: dict[str, np.ndarray]
):
    # Prepare: one batch of 4, then each row alone, then the 4 again
    engine = load_engine(digits_tflite)
    pixels = digits_reference["pixels"]

    # Execute
    together = engine.run({TFLITE_INPUT: pixels})[TFLITE_OUTPUT]
    alone = np.concatenate(
        [engine.run({TFLITE_INPUT: pixels[i : i + 1]})[TFLITE_OUTPUT] for i in range(4)]
    )
    again = engine.run({TFLITE_INPUT: pixels})[TFLITE_OUTPUT]

    # Assert
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(again, together)


@pytest.mark.parametrize("content", [b"", b"ABCDEFGHIJ", b"\x00" * 64])
def test_litert_refuses_a_file_that_is_not_tflite(content: bytes, tmp_path: Path):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match="TFL3") as info:
        load_engine(path)
    assert str(path) in str(info.value)


def test_litert_refuses_a_missing_file(tmp_path: Path):
    path = tmp_path / "missing.tflite"
    with pytest.raises(ModelFormatError, match="no such model file"):
        load_engine(path)


# --- choosing a backend and options ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("model.onnx", "onnxruntime"),
        ("MODEL.ONNX", "onnxruntime"),
        ("model.tflite", "litert"),
        ("model.xml", "openvino"),
    ],
)
def test_backend_for_goes_by_suffix(name: str, backend: str):
    assert backend_for(Path(name)) == backend


def test_load_engine_picks_the_backend_by_suffix(digits_onnx: Path, digits_tflite: Path):
    assert load_engine(digits_onnx).backend == "onnxruntime"
    assert load_engine(digits_tflite).backend == "litert"


@pytest.mark.parametrize("name", ["model.pt", "model.pb", "model", "model.onnx.bak"])
def test_load_engine_refuses_an_unknown_suffix(name: str, tmp_path: Path):
    path = tmp_path / name
    path.write_bytes(b"whatever")
    with pytest.raises(ConfigError, match="unknown model format") as info:
        load_engine(path)
    assert str(path) in str(info.value)


def test_load_engine_refuses_an_unknown_backend(digits_onnx: Path):
    with pytest.raises(ConfigError, match="tensorrt"):
        load_engine(digits_onnx, backend="tensorrt")


@given(threads=st.integers(max_value=0))
def test_engine_options_refuse_fewer_than_one_thread(threads: int):
    with pytest.raises(ConfigError, match="threads"):
        EngineOptions(threads=threads)


@pytest.mark.parametrize("level", ["fast", "ALL", "", "none"])
def test_engine_options_refuse_an_unknown_graph_optimization(level: str):
    with pytest.raises(ConfigError, match="graph_optimization"):
        EngineOptions(graph_optimization=level)


def test_engine_options_refuse_an_unknown_precision():
    with pytest.raises(ConfigError, match="precision"):
        EngineOptions(precision="fp8")


def test_engine_options_accept_what_they_document():
    options = EngineOptions(threads=1, graph_optimization="basic", precision="int8")
    assert (options.threads, options.graph_optimization, options.precision) == (1, "basic", "int8")
