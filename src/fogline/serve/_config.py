"""What the server knows about a model before loading it: a Triton-style configuration.

These value objects are filled from a model's ``config.pbtxt`` (Triton's
format), from a fogline manifest, or left at their defaults for a bare model
file, whose signature then comes from the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from fogline.errors import ConfigError


@dataclass(frozen=True)
class TensorConfig:
    """One input or output: its name, OIP datatype and dims (-1 = any; no batch dim if batched).

    >>> TensorConfig("pixels", "FP32", (1, 8, 8)).dims
    (1, 8, 8)
    """

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: the latest ``count``, all, or ``versions``.

    >>> VersionPolicy().select([1, 3, 2])
    [3]
    >>> VersionPolicy("all").select([1, 3, 2])
    [1, 2, 3]
    >>> VersionPolicy("specific", versions=(1, 4)).select([1, 2, 3])
    [1]
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ConfigError(f"version_policy must be latest, all or specific; got {self.kind!r}")
        if self.kind == "latest" and self.count < 1:
            raise ConfigError(f"version_policy latest needs num_versions >= 1; got {self.count}")

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.count :]


WarmupData = Literal["zero", "random", "file"]


@dataclass(frozen=True)
class WarmupInput:
    """One input of a warm-up sample: datatype, dims and where its data comes from.

    ``dims`` leave out the batch dimension (as the config's do) and must all
    be known. ``data`` is ``zero``, ``random`` or ``file``: the file's name,
    relative to the model's ``warmup/`` folder, holds the raw row-major
    bytes of one sample (BYTES elements each a 4-byte little-endian length
    and the bytes), as Triton reads it.

    >>> WarmupInput("pixels", "FP32", (1, 8, 8), "file", "digit.bin").file
    'digit.bin'
    >>> WarmupInput("pixels", "FP32", (-1, 8), "zero")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: warm-up input 'pixels': dims [-1, 8] must all be known sizes (>= 0)
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    data: WarmupData
    file: str = ""

    def __post_init__(self) -> None:
        where = f"warm-up input {self.name!r}"
        if any(d < 0 for d in self.dims):
            raise ConfigError(f"{where}: dims {list(self.dims)} must all be known sizes (>= 0)")
        if self.data not in ("zero", "random", "file"):
            raise ConfigError(f"{where}: data must be zero, random or file; got {self.data!r}")
        if (self.data == "file") != bool(self.file):
            raise ConfigError(f"{where}: a file is named exactly when the data comes from one")
        if self.file:
            path = PurePosixPath(self.file.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or self.file.startswith("."):
                raise ConfigError(
                    f"{where}: input_data_file {self.file!r} must name a file inside the "
                    "model's warmup/ folder"
                )


@dataclass(frozen=True)
class WarmupSample:
    """One of Triton's ``model_warmup`` entries: a request every new version must answer first.

    The inputs are repeated ``batch_size`` times into one batch, which is run
    ``runs`` times (Triton's ``count``; its 0 means once).

    >>> sample = WarmupSample("one", 1, (WarmupInput("pixels", "FP32", (1, 8, 8), "zero"),))
    >>> sample.runs
    1
    """

    name: str
    batch_size: int
    inputs: tuple[WarmupInput, ...]
    runs: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.runs < 1:
            raise ConfigError(
                f"warm-up sample {self.name!r}: batch_size and runs must be at least 1; got "
                f"{self.batch_size} and {self.runs}"
            )
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"warm-up sample {self.name!r}: an input is given twice")


@dataclass(frozen=True)
class ModelConfig:
    """The fields of a Triton model configuration that fogline acts on.

    ``max_batch_size > 0`` means the first dimension of every input and
    output is the batch and is left out of ``dims`` (Triton's convention).
    ``max_queue_delay_us`` and ``preferred_batch_sizes`` configure the shared
    micro-batcher when ``dynamic_batching`` is on; ``instance_count`` is how
    many batches run at once; ``max_queue_size`` (Triton's
    ``default_queue_policy``) bounds the items waiting, past which requests
    are refused as overloaded. ``reject_non_finite`` refuses NaN/Inf inputs.
    ``idle_dispatch`` (a fogline parameter, on unless the config sets it
    ``"false"``) sends a request that finds the model idle at once rather
    than after the queue delay, which Triton would wait out. ``warmup`` holds
    the samples a version must answer before it takes traffic (none: a
    best-effort run on zeros).
    """

    name: str
    platform: str = ""
    max_batch_size: int = 0
    inputs: tuple[TensorConfig, ...] = ()
    outputs: tuple[TensorConfig, ...] = ()
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    max_queue_size: int = 0  # 0: the server's default bound
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = 1
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    reject_non_finite: bool = False
    idle_dispatch: bool = True
    warmup: tuple[WarmupSample, ...] = ()
