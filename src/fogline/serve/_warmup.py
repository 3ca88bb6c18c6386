"""Warming a version up before it takes traffic: Triton's ``model_warmup``, or zeros.

A model's first runs are slow (ONNX Runtime allocates, picks kernels,
fills caches), so a version answers sample requests before it is published.
Two kinds:

* **Configured** (``model_warmup`` in ``config.pbtxt``, read as Triton reads
  it): each sample's inputs come from zeros, seeded random values or a file
  in the model's ``warmup/`` folder, are repeated ``batch_size`` times into
  one batch and run ``count`` times (0: once); a sample with ``batch_size``
  0 is skipped. The samples are part of the contract: a version that cannot
  answer one does not take traffic, and the versions already serving stay.
* **Best effort** (no ``model_warmup``): one run on zeros, tried with a few
  sizes for dynamic dimensions. Zeros are not always a valid input (an
  audio model may branch on a sample rate, and 0 is none), so a model that
  refuses them is still served, with a warning.

Both run on the loading thread, straight on the engine (as Triton runs them
on each instance, not through the scheduler).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from fogline.errors import ConfigError, FoglineError, ModelNotReady, SignatureMismatch
from fogline.model import Engine
from fogline.oip import TO_NUMPY, check_shape, decode, numpy_dtype
from fogline.serve._config import ModelConfig, WarmupData, WarmupInput, WarmupSample

log = logging.getLogger("fogline.serve")

#: The folder of a model, next to its versions, that ``input_data_file`` names files in.
WARMUP_FOLDER = "warmup"
#: Sizes tried for a dynamic dimension by the best-effort warm-up: some models refuse
#: tiny inputs (an audio model that pads by reflection needs more than one sample).
ZERO_SIZES = (1, 16, 512)

ReadFile = Callable[[str], bytes]


def read_warmup(messages: Any, where: str) -> tuple[WarmupSample, ...]:
    """Triton's ``model_warmup`` messages → samples; :class:`ConfigError` naming ``where``.

    ``messages`` are ``ModelWarmup`` protobuf messages (tritonclient's
    ``model_config_pb2``). Samples with ``batch_size`` 0 are left out, as
    Triton skips them.
    """
    from tritonclient.grpc import model_config_pb2

    samples: list[WarmupSample] = []
    for index, message in enumerate(messages):
        name = str(message.name) or f"model_warmup[{index}]"
        if message.batch_size == 0:
            continue
        inputs: list[WarmupInput] = []
        for input_name, spec in sorted(message.inputs.items()):
            at = f"{where}: warm-up sample {name!r}: input {input_name!r}"
            type_name = str(model_config_pb2.DataType.Name(spec.data_type))
            datatype = "BYTES" if type_name == "TYPE_STRING" else type_name.removeprefix("TYPE_")
            if datatype not in TO_NUMPY:
                raise ConfigError(f"{at}: data_type {type_name} is not one fogline serves")
            kind = spec.WhichOneof("input_data_type")
            if kind is None:
                raise ConfigError(f"{at}: set one of zero_data, random_data, input_data_file")
            data: WarmupData = (
                "zero" if kind == "zero_data" else "random" if kind == "random_data" else "file"
            )
            try:
                inputs.append(
                    WarmupInput(
                        str(input_name),
                        datatype,
                        tuple(int(d) for d in spec.dims),
                        data,
                        str(spec.input_data_file) if data == "file" else "",
                    )
                )
            except ConfigError as exc:
                raise ConfigError(f"{where}: warm-up sample {name!r}: {exc}") from None
        try:
            samples.append(
                WarmupSample(name, int(message.batch_size), tuple(inputs), max(1, message.count))
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(samples)


def warm_up(engine: Engine, config: ModelConfig, read_file: ReadFile) -> int:
    """Run the config's warm-up samples (or the best-effort zeros); return how many runs passed.

    ``read_file`` reads a file of the model's ``warmup/`` folder by name. A
    configured sample that does not fit the config, lacks its file or fails
    in the engine raises (:class:`ConfigError`, :class:`ModelNotReady`).
    """
    if not config.warmup:
        return 1 if _zeros(engine, config) else 0
    runs = 0
    for sample in config.warmup:
        feeds = sample_feeds(sample, config, read_file)
        for _ in range(sample.runs):
            try:
                engine.run(feeds)
            except FoglineError as exc:
                raise ModelNotReady(
                    f"model {config.name!r}: warm-up sample {sample.name!r} failed: {exc}"
                ) from exc
            runs += 1
    return runs


def sample_feeds(
    sample: WarmupSample, config: ModelConfig, read_file: ReadFile
) -> dict[str, np.ndarray]:
    """The batch one sample stands for, checked against the (completed) config."""
    where = f"model {config.name!r}: warm-up sample {sample.name!r}"
    wanted = {t.name: t for t in config.inputs}
    given = {i.name for i in sample.inputs}
    missing = sorted(set(wanted) - given)
    if missing:
        raise ConfigError(f"{where}: no data for input(s) {', '.join(missing)}")
    batched = config.max_batch_size > 0
    if batched and sample.batch_size > config.max_batch_size:
        raise ConfigError(
            f"{where}: batch_size {sample.batch_size} is over max_batch_size "
            f"{config.max_batch_size}"
        )
    if not batched and sample.batch_size != 1:
        raise ConfigError(f"{where}: batch_size must be 1 for a model that does not batch")
    rng = np.random.default_rng(0)  # the same data on every load
    feeds: dict[str, np.ndarray] = {}
    for spec in sample.inputs:
        at = f"{where}: input {spec.name!r}"
        tensor = wanted.get(spec.name)
        if tensor is None:
            raise ConfigError(f"{at}: the model has no such input; it takes {', '.join(wanted)}")
        if spec.datatype != tensor.datatype:
            raise ConfigError(f"{at}: {spec.datatype} here, {tensor.datatype} in the config")
        dims = spec.dims
        if len(dims) != len(tensor.dims) or any(
            d != -1 and d != s for d, s in zip(tensor.dims, dims, strict=False)
        ):
            raise ConfigError(
                f"{at}: dims {list(dims)} do not fit the config's {list(tensor.dims)}"
            )
        one = _one(spec, rng, read_file, at)
        feeds[spec.name] = np.repeat(one[np.newaxis], sample.batch_size, axis=0) if batched else one
    return feeds


def _one(spec: WarmupInput, rng: np.random.Generator, read_file: ReadFile, at: str) -> np.ndarray:
    """One sample of one input (no batch dimension)."""
    shape = list(spec.dims)
    count = check_shape(shape, spec.name)
    dtype = numpy_dtype(spec.datatype)
    if spec.datatype == "BYTES":
        if spec.data == "file":
            return _decoded(read_file(spec.file), spec, at)
        return np.full(shape, b"", dtype=object)  # Triton's random strings are empty too
    if spec.data == "zero":
        return np.zeros(shape, dtype)
    if spec.data == "random":
        if dtype.kind == "f":
            return rng.random(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    raw = read_file(spec.file)
    need = count * dtype.itemsize
    if len(raw) < need:  # Triton takes the first bytes of a longer file
        raise ConfigError(
            f"{at}: {WARMUP_FOLDER}/{spec.file} has {len(raw)} bytes; dims {shape} of "
            f"{spec.datatype} need {need}"
        )
    return _decoded(raw[:need], spec, at)


def _decoded(raw: bytes, spec: WarmupInput, at: str) -> np.ndarray:
    try:
        return decode(raw, spec.datatype, list(spec.dims), spec.name)
    except SignatureMismatch as exc:
        raise ConfigError(f"{at}: {WARMUP_FOLDER}/{spec.file}: {exc}") from None


def _zeros(engine: Engine, config: ModelConfig) -> bool:
    """The best-effort warm-up: zeros in a few sizes; False (and a warning) if all are refused."""
    if not config.inputs:
        return True
    failure: Exception | None = None
    for size in ZERO_SIZES:
        feeds: dict[str, np.ndarray] = {}
        for spec in config.inputs:
            # the first open dimension is usually a batch: one; the others get `size`
            open_dims = [i for i, d in enumerate(spec.dims) if d == -1]
            dims = [
                d if d != -1 else (1 if i == open_dims[0] else size)
                for i, d in enumerate(spec.dims)
            ]
            shape = ([1] if config.max_batch_size > 0 else []) + dims
            dtype = numpy_dtype(spec.datatype)
            feeds[spec.name] = (
                np.zeros(shape, dtype=dtype)
                if spec.datatype != "BYTES"
                else np.full(shape, b"", dtype=object)
            )
        try:
            engine.run(feeds)
            return True
        except FoglineError as exc:
            failure = exc
    log.warning("model %s: no warm-up (zeros are not a valid input: %s)", config.name, failure)
    return False
