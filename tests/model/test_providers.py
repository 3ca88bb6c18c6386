"""Execution providers on any machine: choosing them, their options, TensorRT's cache, fallback.

Everything here decides from explicit inputs (the providers a build offers, a
GPU's name, a TensorRT version), so it runs without a GPU; what needs one is
in ``test_gpu_engines.py``, marked ``gpu``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import ConfigError
from fogline.model import (
    EngineOptions,
    Manifest,
    TensorRtCache,
    VariantEngine,
    calibration_table_path,
    default_cache_root,
    engine_fallback,
    load_engine,
    open_model,
    provider_name,
)
from fogline.model._providers import (
    CALIBRATION_NAME,
    CPU,
    CUDA,
    TENSORRT,
    choose_providers,
    fallback_of,
    missing_provider_message,
    onnxruntime_wheels,
    prefer_providers,
    provider_options,
    tensorrt_mode,
)

GPU_BUILD = [TENSORRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]
HAS_CUDA = CUDA in ort.get_available_providers()
SHA = "0123456789abcdef" * 4


def _cache(tmp_path: Path, **change: str) -> TensorRtCache:
    fields = {"model_sha256": SHA, "gpu": "NVIDIA H100", "tensorrt": "10.13.0", "mode": "fp16"}
    fields.update(change)
    return TensorRtCache(tmp_path, **fields)


# --- choosing providers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "full"),
    [("cuda", CUDA), ("TensorRT", TENSORRT), ("trt", TENSORRT), (" cpu ", CPU), (CUDA, CUDA)],
)
def test_short_provider_names_are_understood(short: str, full: str):
    assert provider_name(short) == full


def test_the_default_on_a_gpu_build_is_tensorrt_then_cuda_then_cpu():
    assert choose_providers(None, GPU_BUILD) == [TENSORRT, CUDA, CPU]


def test_tensorrt_asked_alone_is_followed_by_cuda_for_what_it_does_not_take():
    assert choose_providers(("tensorrt",), GPU_BUILD) == [TENSORRT, CUDA, CPU]


@given(st.lists(st.sampled_from(GPU_BUILD), min_size=1, unique=True))
def test_the_cpu_is_always_last_and_once(requested: list[str]):
    chosen = choose_providers(tuple(requested), GPU_BUILD)
    assert chosen[-1] == CPU and chosen.count(CPU) == 1
    assert set(requested) <= set(chosen)


@pytest.mark.parametrize("asked", ["cuda", "tensorrt", CUDA])
def test_a_gpu_provider_missing_from_the_build_says_what_it_offers_and_how_to_get_one(asked: str):
    with pytest.raises(ConfigError) as info:
        choose_providers((asked,), CPU_BUILD)
    message = str(info.value)
    assert provider_name(asked) in message
    assert "AzureExecutionProvider, CPUExecutionProvider" in message  # what the build offers
    assert "onnxruntime-gpu" in message and "docs/gpu.md" in message


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_load_engine_refuses_cuda_on_a_build_without_it(digits_onnx: Path):
    from fogline.model import EngineOptions

    with pytest.raises(ConfigError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        load_engine(digits_onnx, options=EngineOptions(providers=("cuda",)))


# --- provider options ------------------------------------------------------------------------


def test_cuda_runs_on_the_gpu_asked_for():
    options = provider_options([CUDA, CPU], device_id=2)
    assert options == [(CUDA, {"device_id": 2}), (CPU, {})]


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"),
    [("fp32", False, False), ("fp16", True, False), ("int8", True, True)],
)
def test_tensorrt_builds_the_precision_asked_for_and_caches_on_disk(
    tmp_path: Path, precision: str, fp16: bool, int8: bool
):
    # Prepare
    cache = _cache(tmp_path, mode=precision)

    # Execute
    (name, options), *rest = provider_options(
        [TENSORRT, CUDA, CPU], device_id=1, precision=precision, cache=cache
    )

    # Assert
    assert name == TENSORRT and [n for n, _ in rest] == [CUDA, CPU]
    assert options["device_id"] == 1
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(cache.engines)
    assert options["trt_timing_cache_enable"] is True
    assert options["trt_timing_cache_path"] == str(cache.timing)
    assert "trt_int8_calibration_table_name" not in options


def test_tensorrt_int8_reads_the_calibration_table_from_its_cache_folder(tmp_path: Path):
    (_, options), *_ = provider_options(
        [TENSORRT], precision="int8", cache=_cache(tmp_path), calibration=True
    )
    assert options["trt_int8_calibration_table_name"] == CALIBRATION_NAME
    assert options["trt_int8_use_native_calibration_table"] is False


# --- TensorRT's engine cache -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "f" * 64},
        {"gpu": "NVIDIA H200"},
        {"tensorrt": "10.14.1"},
        {"mode": "int8-0123456789ab"},
    ],
)
def test_a_different_model_gpu_tensorrt_or_precision_never_shares_an_engine_folder(
    tmp_path: Path, change: dict[str, str]
):
    assert _cache(tmp_path, **change).engines != _cache(tmp_path).engines


def test_the_same_model_on_the_same_gpu_finds_the_same_folder_again(tmp_path: Path):
    assert _cache(tmp_path).engines == _cache(tmp_path).engines
    assert _cache(tmp_path).engines.parent == tmp_path


def test_the_timing_cache_is_shared_by_models_on_one_gpu(tmp_path: Path):
    assert _cache(tmp_path).timing == _cache(tmp_path, model_sha256="f" * 64).timing
    assert _cache(tmp_path).timing != _cache(tmp_path, gpu="Orin").timing


@given(st.text(min_size=1, max_size=40))
def test_any_gpu_name_makes_one_folder_inside_the_root(name: str):
    cache = TensorRtCache(Path("/root-of-cache"), SHA, name, "10.0", "fp32")
    assert cache.engines.parent == Path("/root-of-cache")
    assert cache.timing.parent == Path("/root-of-cache")


def test_prepare_puts_the_calibration_table_where_tensorrt_reads_it(tmp_path: Path):
    # Prepare
    table = tmp_path / "model.calibration.flatbuffers"
    table.write_bytes(b"ranges")
    cache = _cache(tmp_path / "cache")

    # Execute
    cache.prepare(table)

    # Assert
    assert (cache.engines / CALIBRATION_NAME).read_bytes() == b"ranges"
    assert cache.timing.is_dir()


def test_int8_of_a_float_model_needs_a_table_and_its_hash_keys_the_cache(tmp_path: Path):
    table = tmp_path / "t.calibration.flatbuffers"
    with pytest.raises(ConfigError, match="calibration table"):
        tensorrt_mode("int8", quantized=False, table=table)
    table.write_bytes(b"one")
    first = tensorrt_mode("int8", quantized=False, table=table)
    table.write_bytes(b"two")
    assert (
        first.startswith("int8-") and tensorrt_mode("int8", quantized=False, table=table) != first
    )
    assert tensorrt_mode("int8", quantized=True, table=None) == "int8-qdq"


def test_the_default_cache_root_follows_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FOGLINE_CACHE_DIR", str(tmp_path / "fc"))
    assert default_cache_root() == tmp_path / "fc" / "tensorrt"
    monkeypatch.delenv("FOGLINE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "fogline" / "tensorrt"


# --- what ran, recorded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "ran", "fallback"),
    [
        ([CUDA, CPU], [CPU], CUDA),
        ([TENSORRT, CUDA, CPU], [CUDA, CPU], TENSORRT),
        ([TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU], None),
        ([CPU], [CPU], None),
    ],
)
def test_a_fallback_names_the_provider_that_did_not_start(asked, ran, fallback):
    assert fallback_of(asked, ran) == fallback


def test_an_engine_on_the_cpu_says_so_and_did_not_fall_back(digits_onnx: Path):
    from fogline.model import EngineOptions

    engine = load_engine(digits_onnx, options=EngineOptions(providers=("cpu",)))
    assert engine.device == CPU
    assert engine_fallback(engine) is None
    assert engine_fallback(VariantEngine([("only", engine)])) is None


@pytest.mark.parametrize("asked", ["fp16", "int8"])
def test_a_tensorrt_precision_is_reported_only_where_tensorrt_runs(digits_onnx: Path, asked: str):
    # the tensorrt-fp16/-int8 variants ship the FP32 file; on the CPU it runs as FP32
    engine = load_engine(digits_onnx, options=EngineOptions(precision=asked, providers=("cpu",)))
    assert engine.device == CPU and engine.precision == "fp32"


def test_the_manifest_records_the_providers_and_what_ran(digits_copy: Path):
    # Prepare
    engine = load_engine(digits_copy)
    manifest = Manifest.for_model(
        digits_copy, engine.signature, name="digits", backend="onnxruntime", precision="fp32"
    )
    ran_on = {"providers": [CUDA, CPU], "device": CUDA, "fallback": None}
    manifest.engine = manifest.engine.model_copy(update=ran_on)

    # Execute
    manifest.write(digits_copy.parent)
    text = yaml.safe_load((digits_copy.parent / "fogline.yaml").read_text())
    opened = open_model(digits_copy.parent)

    # Assert
    assert text["engine"]["providers"] == [CUDA, CPU] and text["engine"]["device"] == CUDA
    assert "fallback" not in text["engine"]  # unset fields are left out, as before
    assert Manifest.read(digits_copy.parent).engine.device == CUDA
    assert opened.engine.device == (CUDA if HAS_CUDA else CPU)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_a_manifest_made_for_a_gpu_opens_on_a_cpu_build_with_the_fallback_recorded(
    digits_copy: Path, caplog: pytest.LogCaptureFixture
):
    # Prepare: the manifest optimize writes for a TensorRT variant
    engine = load_engine(digits_copy)
    manifest = Manifest.for_model(
        digits_copy, engine.signature, name="digits", backend="onnxruntime", precision="fp16"
    )
    manifest.engine = manifest.engine.model_copy(update={"providers": [TENSORRT, CUDA, CPU]})
    manifest.write(digits_copy.parent)

    # Execute
    opened = open_model(digits_copy.parent)

    # Assert: it runs on what this build has, and says what it could not have
    assert opened.engine.device == CPU
    assert engine_fallback(opened.engine) == TENSORRT
    assert "TensorrtExecutionProvider" in caplog.text
    assert opened.engine.precision == "fp32"  # the file's: TensorRT did not run
    feeds = opened.engine.signature.sample_feeds(batch=2)
    assert opened.engine.run(feeds)["logits"].shape == (2, 10)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_an_explicit_provider_still_wins_over_the_manifest_and_fails_when_missing(
    digits_copy: Path,
):
    engine = load_engine(digits_copy)
    manifest = Manifest.for_model(
        digits_copy, engine.signature, name="digits", backend="onnxruntime", precision="fp32"
    )
    manifest.engine = manifest.engine.model_copy(update={"providers": [CUDA, CPU]})
    manifest.write(digits_copy.parent)
    with pytest.raises(ConfigError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        open_model(digits_copy.parent, providers=("tensorrt", "cuda"))
    pinned = open_model(digits_copy.parent, providers=("cpu",)).engine
    assert pinned.device == CPU and engine_fallback(pinned) is None


@pytest.mark.parametrize(
    ("preferred", "available", "chosen", "fallback"),
    [
        ([TENSORRT, CUDA, CPU], CPU_BUILD, [CPU], TENSORRT),
        ([CUDA, CPU], GPU_BUILD, [CUDA, CPU], None),
        (["trt"], [CUDA, CPU], [CPU], TENSORRT),
        (["trt", "cuda"], [CUDA, CPU], [CUDA, CPU], TENSORRT),
        ([CPU], GPU_BUILD, [CPU], None),
        (["CoreMLExecutionProvider", CUDA], GPU_BUILD, [CUDA, CPU], "CoreMLExecutionProvider"),
    ],
)
def test_a_preference_keeps_what_the_build_offers_in_order_and_names_the_first_it_lacks(
    preferred: list[str], available: list[str], chosen: list[str], fallback: str | None
):
    assert prefer_providers(preferred, available) == (chosen, fallback)


def test_a_preference_leaves_tensorrt_out_without_its_libraries():
    assert prefer_providers([TENSORRT, CUDA, CPU], GPU_BUILD, tensorrt_installed=False) == (
        [CUDA, CPU],
        TENSORRT,
    )


def test_both_onnxruntime_wheels_installed_is_named_with_the_recipe():
    wheels = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
    message = missing_provider_message([CUDA], CPU_BUILD, wheels)
    assert "both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are installed" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in message
    assert "--force-reinstall --no-deps onnxruntime-gpu==1.31.1" in message
    alone = missing_provider_message([CUDA], CPU_BUILD, {"onnxruntime": "1.32.0"})
    assert "both" not in alone and "pip install 'fogline[gpu]'" in alone


def test_the_installed_onnxruntime_wheel_is_found():
    assert onnxruntime_wheels().get("onnxruntime", onnxruntime_wheels().get("onnxruntime-gpu"))
    assert ort.__version__ in onnxruntime_wheels().values()


def test_a_manifest_without_provider_fields_writes_as_before(digits_copy: Path):
    engine = load_engine(digits_copy)
    manifest = Manifest.for_model(
        digits_copy, engine.signature, name="digits", backend="onnxruntime", precision="fp32"
    )
    manifest.write(digits_copy.parent)
    written = yaml.safe_load((digits_copy.parent / "fogline.yaml").read_text())["engine"]
    assert set(written) == {"backend", "precision", "threads", "graph_optimization"}


def test_the_calibration_table_travels_with_its_model(digits_copy: Path):
    # Prepare: the table optimize writes beside a TensorRT INT8 variant
    table = calibration_table_path(digits_copy)
    shutil.copyfile(digits_copy, table)  # any bytes: only its presence matters here
    engine = load_engine(digits_copy)

    # Execute
    manifest = Manifest.for_model(
        digits_copy, engine.signature, name="digits", backend="onnxruntime", precision="int8"
    )

    # Assert
    assert table.name == "model.calibration.flatbuffers"
    assert manifest.model.extra_files == [table.name]
