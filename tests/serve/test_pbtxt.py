"""config.pbtxt: parsing Triton's model configuration, and checking it against the model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fogline.errors import ConfigError
from fogline.examples import digits_model_path
from fogline.model import Signature, TensorSpec, load_engine
from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._pbtxt import DEFAULT_MAX_BATCH_SIZE, check_against, read_config

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
