"""The model repository: config.pbtxt parsing, Triton's layout, version policies, auto-complete."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fogline.errors import ConfigError, ModelNotFound
from fogline.examples import digits_model_path
from fogline.model import Manifest, Signature, TensorSpec, load_engine
from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._repository import (
    DEFAULT_MAX_BATCH_SIZE,
    Repository,
    check_against,
    read_config,
)

FULL_CONFIG = """
name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 16
version_policy: { specific: { versions: [1, 3] } }
input [
  { name: "pixels", data_type: TYPE_FP32, dims: [ 1, 8, 8 ] },
  { name: "label", data_type: TYPE_STRING, dims: [ -1 ] }
]
output [ { name: "logits", data_type: TYPE_FP16, dims: [ 10 ], reshape: { shape: [ 10 ] } } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2500
}
instance_group [ { count: 2, kind: KIND_CPU }, { kind: KIND_CPU } ]
parameters { key: "reject_non_finite" value { string_value: "true" } }
parameters { key: "idle_dispatch" value { string_value: "false" } }
parameters { key: "something_else" value { string_value: "whatever" } }
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
"""

DIGITS_SIGNATURE = Signature(
    (TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),),
    (TensorSpec("logits", "float32", (None, 10)),),
)


def add_version(root: Path, model: str, version: str, filename: str = "model.onnx") -> Path:
    folder = root / model / version
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(digits_model_path(), folder / filename))


def write_config(root: Path, model: str, text: str) -> None:
    (root / model).mkdir(parents=True, exist_ok=True)
    (root / model / "config.pbtxt").write_text(text)


# --- read_config --------------------------------------------------------------------------


def test_full_config_keeps_every_field_fogline_acts_on() -> None:
    config = read_config(FULL_CONFIG, where="digits/config.pbtxt")

    assert config == ModelConfig(
        name="digits",
        platform="onnxruntime_onnx",
        max_batch_size=16,
        inputs=(
            TensorConfig("pixels", "FP32", (1, 8, 8)),
            TensorConfig("label", "BYTES", (-1,)),
        ),
        outputs=(TensorConfig("logits", "FP16", (10,)),),
        dynamic_batching=True,
        max_queue_delay_us=2500,
        preferred_batch_sizes=(4, 8),
        instance_count=3,
        version_policy=VersionPolicy("specific", versions=(1, 3)),
        reject_non_finite=True,
        idle_dispatch=False,
    )


def test_an_empty_config_is_triton_defaults() -> None:
    config = read_config("", where="m/config.pbtxt")

    assert config == ModelConfig(name="")
    assert config.version_policy == VersionPolicy("latest", count=1)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("version_policy { latest { num_versions: 2 } }", VersionPolicy("latest", count=2)),
        ("version_policy { all { } }", VersionPolicy("all")),
        ("version_policy { specific { versions: 4 } }", VersionPolicy("specific", versions=(4,))),
    ],
)
def test_version_policies(text: str, policy: VersionPolicy) -> None:
    assert read_config(text, where="m/config.pbtxt").version_policy == policy


def test_backend_stands_in_for_platform() -> None:
    assert read_config('backend: "onnxruntime"', where="c").platform == "onnxruntime"


def test_a_dynamic_batching_block_without_fields_still_turns_batching_on() -> None:
    config = read_config("max_batch_size: 4 dynamic_batching { }", where="c")

    assert config.dynamic_batching
    assert config.max_queue_delay_us == 0


def test_malformed_config_names_file_line_and_column() -> None:
    text = 'name: "digits"\nmax_batch_size: 8\ninput [ { name: "x" dims: [ 3 ] }\noops: 1\n'

    with pytest.raises(ConfigError) as caught:
        read_config(text, where="/repo/digits/config.pbtxt")

    message = str(caught.value)
    assert message.startswith("/repo/digits/config.pbtxt:4:")
    assert "oops" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('input [ { name: "x" data_type: TYPE_BF16 dims: [1] } ]', "TYPE_BF16"),
        ('input [ { name: "x" dims: [1] } ]', "no data_type"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [0] } ]', "dims [0]"),
        (
            'input [ { name: "x" data_type: TYPE_FP32 }, { name: "x" data_type: TYPE_FP32 } ]',
            "listed twice",
        ),
        ("output [ { data_type: TYPE_FP32 } ]", "an output has no name"),
        ('platform: "tensorrt_plan"', "tensorrt_plan"),
        ('default_model_filename: "net.onnx"', "net.onnx"),
        ("max_batch_size: -1", "max_batch_size"),
        ("max_batch_size: 4 dynamic_batching { preferred_batch_size: 8 }", "preferred"),
        ("version_policy { latest { } }", "num_versions"),
        ('parameters { key: "reject_non_finite" value { string_value: "yes" } }', "yes"),
        ('parameters { key: "idle_dispatch" value { string_value: "0" } }', "idle_dispatch"),
    ],
)
def test_bad_configs_say_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"^m/config\.pbtxt: ") as caught:
        read_config(text, where="m/config.pbtxt")

    assert expected in str(caught.value)


# --- Repository ---------------------------------------------------------------------------


def test_two_versions_and_each_policy(tmp_path: Path) -> None:
    first = add_version(tmp_path, "digits", "1")
    second = add_version(tmp_path, "digits", "2")
    repository = Repository(tmp_path)

    assert repository.model_names() == ["digits"]
    assert repository.all_versions("digits") == [1, 2]
    assert repository.versions("digits") == {2: second}  # no config: latest 1

    write_config(tmp_path, "digits", "version_policy { all { } }")
    assert repository.versions("digits") == {1: first, 2: second}

    write_config(tmp_path, "digits", "version_policy { specific { versions: [1, 7] } }")
    assert repository.versions("digits") == {1: first}

    write_config(tmp_path, "digits", "version_policy { latest { num_versions: 5 } }")
    assert list(repository.versions("digits")) == [1, 2]
    assert repository.problems() == {}


def test_without_config_the_folder_names_the_model(tmp_path: Path) -> None:
    add_version(tmp_path, "digits", "1")

    assert Repository(tmp_path).config("digits") == ModelConfig(name="digits")


def test_config_without_a_name_takes_the_folder_name(tmp_path: Path) -> None:
    add_version(tmp_path, "digits", "1")
    write_config(tmp_path, "digits", "max_batch_size: 4")

    config = Repository(tmp_path).config("digits")

    assert (config.name, config.max_batch_size) == ("digits", 4)


def test_name_in_config_must_match_its_folder(tmp_path: Path) -> None:
    add_version(tmp_path, "digits", "1")
    write_config(tmp_path, "digits", 'name: "mnist"')
    repository = Repository(tmp_path)

    with pytest.raises(ConfigError, match=r"'mnist'.*'digits'"):
        repository.config("digits")
    assert repository.model_names() == ["digits"]  # listed, and its problem said
    assert "'mnist'" in repository.problems()["digits"]


def test_tflite_and_other_entries(tmp_path: Path) -> None:
    add_version(tmp_path, "m", "1", "model.tflite")  # any bytes: nothing is loaded here
    (tmp_path / "m" / "2").mkdir()  # being copied in: not a version yet
    (tmp_path / "m" / "03").mkdir()
    (tmp_path / "m" / "0").mkdir()
    (tmp_path / "m" / "latest").mkdir()
    (tmp_path / "m" / "labels.txt").write_text("a\nb\n")
    (tmp_path / "m" / ".cache").mkdir()
    repository = Repository(tmp_path)

    assert repository.all_versions("m") == [1]
    assert repository.versions("m") == {1: tmp_path / "m" / "1" / "model.tflite"}
    assert set(repository.ignored("m")) == {"2", "03", "0", "latest", "labels.txt", ".cache"}
    assert "no model file" in repository.ignored("m")["2"]
    assert repository.problems() == {}  # version 1 still serves


def test_problems_say_why_a_model_cannot_be_served(tmp_path: Path) -> None:
    add_version(tmp_path, "good", "1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_file" / "1").mkdir(parents=True)
    add_version(tmp_path, "bad_config", "1")
    write_config(tmp_path, "bad_config", "max_batch_size: [")
    add_version(tmp_path, "wrong_version", "1")
    write_config(tmp_path, "wrong_version", "version_policy { specific { versions: 2 } }")
    (tmp_path / ".trash").mkdir()
    (tmp_path / "README.md").write_text("models")
    repository = Repository(tmp_path)

    problems = repository.problems()

    assert sorted(problems) == ["bad_config", "empty", "no_file", "wrong_version"]
    assert "no version folders" in problems["empty"]
    assert "1: holds no model file" in problems["no_file"]
    assert "config.pbtxt:1:" in problems["bad_config"]
    assert "selects none" in problems["wrong_version"]
    assert repository.model_names() == ["bad_config", "good", "wrong_version"]
    assert repository.versions("wrong_version") == {}


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", ".hidden", "a..b", "a\\b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a model name"):
        Repository(tmp_path).config(name)


def test_unknown_model(tmp_path: Path) -> None:
    repository = Repository(tmp_path)

    for call in (repository.config, repository.versions, repository.fingerprint):
        with pytest.raises(ModelNotFound, match="no model named 'nope'"):
            call("nope")


def test_a_missing_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        Repository(tmp_path / "absent")


def test_manifest_gives_the_signature_and_may_name_the_model_file(tmp_path: Path) -> None:
    model = add_version(tmp_path, "digits", "1", "digits.onnx")
    signature = load_engine(model).signature
    Manifest.for_model(
        model, signature, name="digits", backend="onnxruntime", precision="fp32"
    ).write(model.parent)
    repository = Repository(tmp_path)

    assert repository.versions("digits") == {1: model}
    config = repository.config("digits")
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.inputs == (TensorConfig("pixels", "FP32", (1, 8, 8)),)
    assert config.outputs == (TensorConfig("logits", "FP32", (10,)),)


def test_a_manifest_for_another_model_is_refused(tmp_path: Path) -> None:
    model = add_version(tmp_path, "digits", "1")
    Manifest.for_model(
        model, DIGITS_SIGNATURE, name="faces", backend="onnxruntime", precision="fp32"
    ).write(tmp_path / "digits")

    with pytest.raises(ConfigError, match=r"'faces'.*'digits'"):
        Repository(tmp_path).config("digits")


def test_a_broken_version_manifest_skips_that_version(tmp_path: Path) -> None:
    add_version(tmp_path, "digits", "1")
    add_version(tmp_path, "digits", "2")
    (tmp_path / "digits" / "2" / "fogline.yaml").write_text("name: [")
    repository = Repository(tmp_path)

    assert repository.all_versions("digits") == [1]
    assert "not valid YAML" in repository.ignored("digits")["2"]


def test_fingerprint_changes_when_a_version_is_dropped_in(tmp_path: Path) -> None:
    add_version(tmp_path, "digits", "1")
    repository = Repository(tmp_path)
    before = repository.fingerprint("digits")

    assert repository.fingerprint("digits") == before
    add_version(tmp_path, "digits", "2")
    assert repository.fingerprint("digits") != before


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["model.onnx", "x.txt"])),
        max_size=6,
        unique=True,
    ),
    extra=st.tuples(st.sampled_from(["1", "4"]), st.sampled_from(["model.tflite", "y.bin"])),
    data=st.binary(max_size=8),
)
def test_fingerprint_notices_any_added_file(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[tuple[str, str]],
    extra: tuple[str, str],
    data: bytes,
) -> None:
    root = tmp_path_factory.mktemp("repo")
    (root / "m").mkdir()
    for version, name in files:
        (root / "m" / version).mkdir(exist_ok=True)
        (root / "m" / version / name).write_bytes(b"x")
    repository = Repository(root)
    before = repository.fingerprint("m")

    (root / "m" / extra[0]).mkdir(exist_ok=True)
    (root / "m" / extra[0] / extra[1]).write_bytes(data)

    assert repository.fingerprint("m") != before


@given(
    available=st.lists(st.integers(1, 50), unique=True, max_size=10),
    count=st.integers(1, 12),
    wanted=st.lists(st.integers(1, 50), unique=True, max_size=5),
)
def test_version_policies_select_from_what_is_there(
    available: list[int], count: int, wanted: list[int]
) -> None:
    latest = VersionPolicy("latest", count=count).select(available)
    every = VersionPolicy("all").select(available)
    specific = VersionPolicy("specific", versions=tuple(wanted)).select(available)

    assert every == sorted(available)
    assert latest == sorted(available)[-count:]
    assert len(latest) == min(count, len(available))
    assert all(v < min(latest) for v in set(available) - set(latest))
    assert specific == sorted(set(wanted) & set(available))


# --- check_against ------------------------------------------------------------------------


def test_check_against_completes_an_empty_config_from_the_real_model() -> None:
    signature = load_engine(digits_model_path()).signature

    config = check_against(ModelConfig("digits"), signature)

    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.dynamic_batching
    assert config.inputs == (TensorConfig("pixels", "FP32", (1, 8, 8)),)
    assert config.outputs == (TensorConfig("logits", "FP32", (10,)),)
    assert check_against(config, signature) == config  # complete configs pass unchanged


def test_check_against_accepts_the_matching_triton_config() -> None:
    config = read_config(
        'max_batch_size: 8 input [ { name: "pixels" data_type: TYPE_FP32 dims: [1, 8, 8] } ]',
        where="c",
    )

    checked = check_against(replace(config, name="digits"), DIGITS_SIGNATURE)

    assert checked.inputs == config.inputs
    assert checked.outputs == (TensorConfig("logits", "FP32", (10,)),)  # filled
    assert not checked.dynamic_batching  # not asked for, not added


def test_unbatched_config_keeps_the_dynamic_first_dim() -> None:
    config = ModelConfig("digits", inputs=(TensorConfig("pixels", "FP32", (-1, 1, 8, 8)),))

    checked = check_against(config, DIGITS_SIGNATURE)

    assert checked.max_batch_size == 0
    assert checked.outputs == (TensorConfig("logits", "FP32", (-1, 10)),)


def test_a_model_with_a_fixed_first_dim_is_not_batched() -> None:
    signature = Signature((TensorSpec("x", "int64", (1, 3)),), (TensorSpec("y", "float32", (1,)),))

    config = check_against(ModelConfig("m"), signature)

    assert config.max_batch_size == 0
    assert not config.dynamic_batching
    assert config.inputs == (TensorConfig("x", "INT64", (1, 3)),)
    with pytest.raises(ConfigError, match="first dimension is not dynamic"):
        check_against(ModelConfig("m", max_batch_size=4), signature)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            ModelConfig("d", max_batch_size=8, inputs=(TensorConfig("pixels", "FP64", (1, 8, 8)),)),
            "input 'pixels' is FP64 in the config, but FP32 (float32) in the model",
        ),
        (
            ModelConfig("d", max_batch_size=8, inputs=(TensorConfig("pixels", "FP32", (1, 8, 9)),)),
            "dims [1, 8, 9] do not fit the model's shape [batch, 1, 8, 8]",
        ),
        (
            ModelConfig("d", max_batch_size=8, inputs=(TensorConfig("pixels", "FP32", (8, 8)),)),
            "dims [8, 8] do not fit",
        ),
        (
            ModelConfig(
                "d", max_batch_size=8, inputs=(TensorConfig("pixels", "FP32", (-1, 8, 8)),)
            ),
            "dims [-1, 8, 8] do not fit",
        ),
        (
            ModelConfig("d", max_batch_size=0, inputs=(TensorConfig("pixels", "FP32", (1, 8, 8)),)),
            "did you mean max_batch_size > 0?",
        ),
        (
            ModelConfig("d", max_batch_size=8, inputs=(TensorConfig("image", "FP32", (1, 8, 8)),)),
            "lists input 'image', which the model does not have; its inputs are pixels",
        ),
        (
            ModelConfig("d", max_batch_size=8, outputs=(TensorConfig("probs", "FP32", (10,)),)),
            "lists output 'probs'",
        ),
        (
            ModelConfig("d", max_batch_size=4, preferred_batch_sizes=(8,)),
            "preferred_batch_size 8",
        ),
    ],
)
def test_check_against_says_what_does_not_fit(config: ModelConfig, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_against(config, DIGITS_SIGNATURE)

    assert str(caught.value).startswith("model 'd': ")
    assert expected in str(caught.value)


def test_a_dtype_without_a_protocol_datatype_is_a_config_error() -> None:
    signature = Signature((TensorSpec("x", "bfloat16", (None, 4)),), ())

    with pytest.raises(ConfigError, match="bfloat16"):
        check_against(ModelConfig("m"), signature)


def test_every_model_input_must_be_listed_when_some_are() -> None:
    signature = Signature(
        (TensorSpec("ids", "int64", (None, 16)), TensorSpec("mask", "int64", (None, 16))),
        (TensorSpec("score", "float32", (None,)),),
    )
    config = ModelConfig("m", max_batch_size=4, inputs=(TensorConfig("ids", "INT64", (16,)),))

    with pytest.raises(ConfigError, match=r"takes input\(s\) mask, which the config does not"):
        check_against(config, signature)
    both = replace(config, inputs=(*config.inputs, TensorConfig("mask", "INT64", (16,))))
    assert check_against(both, signature).outputs == (TensorConfig("score", "FP32", ()),)


def test_a_folder_with_an_unsafe_name_is_a_problem_not_a_model(tmp_path: Path) -> None:
    add_version(tmp_path, "a..b", "1")

    assert Repository(tmp_path).model_names() == []
    assert "not a model name" in Repository(tmp_path).problems()["a..b"]
