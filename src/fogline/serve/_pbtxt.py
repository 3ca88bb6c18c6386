"""config.pbtxt: Triton's model configuration, parsed into a ModelConfig and checked against a model.

``config.pbtxt`` is parsed with protobuf's text format into Triton's own
``ModelConfig`` message (the one ``tritonclient`` ships), so every file Triton
accepts parses here and every typo fails with the parser's line and column.
Only the fields the server acts on are kept (see :func:`read_config`).
:func:`check_against` then holds a configuration against the model's
signature and fills in what it leaves out, as Triton's auto-complete does.

Pure functions of their arguments: no file is read here (the repository
reads the file), safe from any thread.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fogline.errors import ConfigError, SignatureMismatch
from fogline.model import Signature, TensorSpec
from fogline.oip import TO_NUMPY, datatype_of
from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._warmup import read_warmup

#: The file Triton reads a model's configuration from.
CONFIG_NAME = "config.pbtxt"
#: The model file a version folder holds, in the order they are looked for; the only names
#: a config's ``default_model_filename`` may give.
MODEL_FILES = ("model.onnx", "model.tflite")
#: ``platform`` / ``backend`` values fogline serves ("" when the config names none).
PLATFORMS = ("", "onnxruntime", "onnxruntime_onnx", "tflite")
#: The max_batch_size auto-completion gives a model that can batch (the micro-batcher's default).
DEFAULT_MAX_BATCH_SIZE = 8


def read_config(text: str, *, where: str) -> ModelConfig:
    """Parse the text of a ``config.pbtxt``; ``where`` (its path) prefixes every error.

    Kept: name, platform (or backend), max_batch_size, input/output (name,
    data_type as an OIP datatype, dims), dynamic_batching (its presence,
    max_queue_delay_microseconds, preferred_batch_size), instance_group (the
    sum of the counts), version_policy, model_warmup and the
    ``reject_non_finite`` and ``idle_dispatch`` parameters. Ignored: ``reshape`` (the config's dims must then be the
    model's own, which :func:`check_against` checks), instance kinds and GPUs
    (fogline runs what the engine runs on), optimization, sequence batching
    and the rest. A ``default_model_filename`` other than
    ``model.onnx`` / ``model.tflite`` is refused rather than silently ignored.

    >>> config = read_config(
    ...     'max_batch_size: 8 input [{ name: "x" data_type: TYPE_FP32 dims: [3] }]',
    ...     where="m/config.pbtxt",
    ... )
    >>> config.max_batch_size, config.inputs
    (8, (TensorConfig(name='x', datatype='FP32', dims=(3,)),))
    >>> read_config("max_batch_size: eight", where="m/config.pbtxt")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: m/config.pbtxt:1:17: 'max_batch_size: eight': Couldn't parse integer: eight
    """
    message = _parse(text, where)
    platform = message.platform or message.backend
    if platform not in PLATFORMS:
        served = ", ".join(p for p in PLATFORMS if p)
        raise ConfigError(f"{where}: platform {platform!r} is not one fogline serves ({served})")
    if message.default_model_filename and message.default_model_filename not in MODEL_FILES:
        raise ConfigError(
            f"{where}: default_model_filename {message.default_model_filename!r} is not "
            f"supported; name the model file {' or '.join(MODEL_FILES)}"
        )
    if message.max_batch_size < 0:
        raise ConfigError(f"{where}: max_batch_size must be >= 0; got {message.max_batch_size}")
    counts = [int(group.count) for group in message.instance_group]
    if any(count < 0 for count in counts):
        raise ConfigError(f"{where}: instance_group count must be >= 0; got {counts}")
    batcher = message.dynamic_batching
    try:
        config = ModelConfig(
            name=message.name,
            platform=platform,
            max_batch_size=int(message.max_batch_size),
            inputs=_tensors(message.input, "input", where),
            outputs=_tensors(message.output, "output", where),
            dynamic_batching=message.HasField("dynamic_batching"),
            max_queue_delay_us=int(batcher.max_queue_delay_microseconds),
            max_queue_size=int(batcher.default_queue_policy.max_queue_size),
            preferred_batch_sizes=tuple(int(size) for size in batcher.preferred_batch_size),
            # Triton gives a group without a count one instance, and a model without groups one.
            instance_count=sum(count or 1 for count in counts) or 1,
            version_policy=_version_policy(message.version_policy),
            reject_non_finite=_flag(message.parameters, "reject_non_finite", where),
            warmup=read_warmup(message.model_warmup, where),
            idle_dispatch=_flag(message.parameters, "idle_dispatch", where, default=True),
        )
    except ConfigError as exc:
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from exc
    _check_batching(config, where)
    return config


def check_against(config: ModelConfig, signature: Signature) -> ModelConfig:
    """Check a configuration against the model's signature; fill in what it leaves out.

    Every input and output the config lists must exist in the model with
    the same datatype and dims that fit the model's shape (a dynamic model
    dim accepts -1 or any size; a fixed one only itself). The config must list
    every model input, and may list only some outputs. A side it leaves empty
    is filled from the signature, dynamic dims written -1.

    ``max_batch_size`` follows Triton. When it is above 0 the first dim of
    every model tensor is the batch: it must be dynamic, and ``dims`` leave it
    out. When it is 0 and the config lists tensors, the config has chosen
    not to batch: it stays 0 and dims are the whole shape, a dynamic first
    dim kept as -1 (clients then send whole batches themselves). When it is
    0 and the config lists no tensors, the shape was left to the model, and
    (as Triton's auto-complete does) a model whose tensors all start with a
    dynamic dim gets ``max_batch_size`` :data:`DEFAULT_MAX_BATCH_SIZE` and
    dynamic batching, the batch dim dropped from dims. Protobuf cannot tell
    a written ``max_batch_size: 0`` from an absent one, which is why listed
    tensors are what marks the choice.

    >>> signature = Signature(
    ...     (TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),),
    ...     (TensorSpec("logits", "float32", ("batch", 10)),),
    ... )
    >>> filled = check_against(ModelConfig("digits"), signature)
    >>> filled.max_batch_size, filled.dynamic_batching, filled.inputs[0].dims
    (8, True, (1, 8, 8))
    >>> check_against(replace(filled, max_batch_size=0), signature)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: model 'digits': input 'pixels': dims [1, 8, 8] do not fit the model's shape [batch, 1, 8, 8] (with max_batch_size 0 dims are the whole shape; did you mean max_batch_size > 0?)
    """
    where = f"model {config.name!r}"
    max_batch, dynamic = config.max_batch_size, config.dynamic_batching
    if not config.inputs and not config.outputs and max_batch == 0 and _can_batch(signature):
        max_batch, dynamic = DEFAULT_MAX_BATCH_SIZE, True
    if max_batch > 0:
        for role, spec in _all_specs(signature):
            if not spec.shape or isinstance(spec.shape[0], int):
                raise ConfigError(
                    f"{where}: max_batch_size {max_batch} batches along the first dimension, but "
                    f"the model's {role} {spec.name!r} has shape {spec.describe_shape()}, whose "
                    "first dimension is not dynamic; set max_batch_size 0"
                )
    inputs = _match(config.inputs, signature.inputs, "input", max_batch, where)
    outputs = _match(config.outputs, signature.outputs, "output", max_batch, where)
    listed = {t.name for t in inputs}
    missing = [name for name in signature.input_names if name not in listed]
    if missing:
        raise ConfigError(
            f"{where}: the model takes input(s) {', '.join(missing)}, which the config does not list"
        )
    checked = replace(
        config, max_batch_size=max_batch, dynamic_batching=dynamic, inputs=inputs, outputs=outputs
    )
    _check_batching(checked, where)
    return checked


def _parse(text: str, where: str) -> Any:
    """Triton's ModelConfig message parsed from text; ConfigError with line:column if malformed."""
    # Imported here: the tritonclient package (and grpc with it) costs half a second to import.
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    message = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        if line is not None:
            detail = detail.split(" : ", 1)[-1]  # the parser puts "line:column : " in front
            raise ConfigError(f"{where}:{line}:{column}: {detail}") from exc
        raise ConfigError(f"{where}: {detail}") from exc
    return message


def _tensors(messages: Any, role: str, where: str) -> tuple[TensorConfig, ...]:
    from tritonclient.grpc import model_config_pb2

    out: list[TensorConfig] = []
    for message in messages:
        name = str(message.name)
        if not name:
            raise ConfigError(f"{where}: an {role} has no name")
        if any(t.name == name for t in out):
            raise ConfigError(f"{where}: {role} {name!r} is listed twice")
        type_name = str(model_config_pb2.DataType.Name(message.data_type))
        if type_name == "TYPE_INVALID":
            raise ConfigError(f"{where}: {role} {name!r} has no data_type")
        datatype = "BYTES" if type_name == "TYPE_STRING" else type_name.removeprefix("TYPE_")
        if datatype not in TO_NUMPY:
            raise ConfigError(
                f"{where}: {role} {name!r}: data_type {type_name} has no Open Inference "
                f"Protocol datatype fogline serves ({', '.join(TO_NUMPY)})"
            )
        dims = tuple(int(d) for d in message.dims)
        if any(d < 1 and d != -1 for d in dims):
            raise ConfigError(
                f"{where}: {role} {name!r}: dims {list(dims)} may hold only sizes >= 1 and -1"
            )
        out.append(TensorConfig(name, datatype, dims))
    return tuple(out)


def _version_policy(message: Any) -> VersionPolicy:
    kind = message.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(int(v) for v in message.specific.versions))
    if kind == "latest":
        return VersionPolicy("latest", count=int(message.latest.num_versions))
    return VersionPolicy()


def _flag(parameters: Any, key: str, where: str, *, default: bool = False) -> bool:
    if key not in parameters:
        return default
    value = str(parameters[key].string_value).strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f'{where}: parameter {key} must be "true" or "false"; got {value!r}')
    return value == "true"


def _check_batching(config: ModelConfig, where: str) -> None:
    if config.max_queue_delay_us < 0:
        raise ConfigError(f"{where}: max_queue_delay_microseconds must be >= 0")
    bound = config.max_batch_size or None
    for size in config.preferred_batch_sizes:
        if size < 1 or (bound is not None and size > bound):
            raise ConfigError(
                f"{where}: preferred_batch_size {size} must lie between 1 and max_batch_size "
                f"({config.max_batch_size})"
            )


def _can_batch(signature: Signature) -> bool:
    specs = [spec for _, spec in _all_specs(signature)]
    return bool(signature.inputs) and all(
        s.shape and not isinstance(s.shape[0], int) for s in specs
    )


def _all_specs(signature: Signature) -> list[tuple[str, TensorSpec]]:
    return [("input", s) for s in signature.inputs] + [("output", s) for s in signature.outputs]


def _match(
    listed: tuple[TensorConfig, ...],
    specs: tuple[TensorSpec, ...],
    role: str,
    max_batch: int,
    where: str,
) -> tuple[TensorConfig, ...]:
    """The config's tensors of one role checked against the model's, or the model's when none."""
    skip = 1 if max_batch > 0 else 0
    if not listed:
        return tuple(
            TensorConfig(s.name, _datatype(s, role, where), _dims(s.shape[skip:])) for s in specs
        )
    by_name = {spec.name: spec for spec in specs}
    for tensor in listed:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise ConfigError(
                f"{where}: the config lists {role} {tensor.name!r}, which the model does not "
                f"have; its {role}s are {', '.join(by_name)}"
            )
        datatype = _datatype(spec, role, where)
        if tensor.datatype != datatype:
            raise ConfigError(
                f"{where}: {role} {tensor.name!r} is {tensor.datatype} in the config, but "
                f"{datatype} ({spec.dtype}) in the model"
            )
        if not _fits(tensor.dims, spec.shape[skip:]):
            if skip:
                hint = f"with max_batch_size {max_batch} dims leave out the batch dimension"
            else:
                hint = "with max_batch_size 0 dims are the whole shape"
                if len(tensor.dims) == len(spec.shape) - 1:
                    hint += "; did you mean max_batch_size > 0?"
            raise ConfigError(
                f"{where}: {role} {tensor.name!r}: dims {list(tensor.dims)} do not fit the "
                f"model's shape {spec.describe_shape()} ({hint})"
            )
    return listed


def _fits(dims: tuple[int, ...], shape: tuple[int | str | None, ...]) -> bool:
    """True when config dims fit a model shape: a fixed model dim must be matched exactly."""
    return len(dims) == len(shape) and all(
        not isinstance(m, int) or d == m for d, m in zip(dims, shape, strict=True)
    )


def _dims(shape: tuple[int | str | None, ...]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def _datatype(spec: TensorSpec, role: str, where: str) -> str:
    try:
        return datatype_of(spec.dtype)
    except SignatureMismatch as exc:
        raise ConfigError(f"{where}: the model's {role} {spec.name!r}: {exc}") from exc
