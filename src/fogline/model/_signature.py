"""What a model takes and gives: tensor specs and the model signature.

A dimension is an ``int`` when fixed, a ``str`` when the model names a
dynamic dimension (``"batch"``), and ``None`` when it is dynamic and unnamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from fogline.errors import SignatureMismatch

Dim = int | str | None

#: The dtypes a tensor spec may carry, by their numpy names.
DTYPES = frozenset(
    {
        "bool",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "str",
    }
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input or output.

    >>> spec = TensorSpec("pixels", "float32", ("batch", 1, 8, 8))
    >>> spec.is_dynamic, spec.rank
    (True, 4)
    >>> spec.accepts_shape((32, 1, 8, 8))
    True
    >>> spec.accepts_shape((32, 8, 8))
    False
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tensor needs a non-empty name")
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}")
        for dim in self.shape:
            if isinstance(dim, bool) or not (dim is None or isinstance(dim, int | str)):
                raise ValueError(f"tensor {self.name!r}: bad dimension {dim!r}")
            if isinstance(dim, int) and dim < 0:
                raise ValueError(f"tensor {self.name!r}: negative dimension {dim}")

    @cached_property
    def numpy_dtype(self) -> np.dtype[Any] | None:
        """The numpy dtype, or None for ``str`` tensors (numpy holds those as objects)."""
        return None if self.dtype == "str" else np.dtype(self.dtype)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when a concrete ``shape`` fits this spec."""
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape, strict=True))

    def concrete_shape(self, batch: int = 1, fill: int = 1) -> tuple[int, ...]:
        """A shape to build a sample with: the first dynamic dim is ``batch``."""
        out: list[int] = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int):
                out.append(d)
            else:
                out.append(batch if i == 0 else fill)
        return tuple(out)

    def describe_shape(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, with where it came from."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: Mapping[str, int] = field(default_factory=dict)
    producer: str = ""

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def check_feeds(self, feeds: Mapping[str, np.ndarray], where: str = "inputs") -> None:
        """Raise :class:`SignatureMismatch` naming the first input that does not fit."""
        if len(feeds) == len(self.inputs) and all(  # the common case, cheaply: an exact fit
            (array := feeds.get(spec.name)) is not None
            and array.dtype == spec.numpy_dtype
            and array.shape == spec.shape
            for spec in self.inputs
        ):
            return
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise SignatureMismatch(
                f"{where}: missing input(s) {', '.join(missing)}; "
                f"the model takes {', '.join(self.input_names)}"
            )
        unknown = [n for n in feeds if n not in self.input_names]
        if unknown:
            raise SignatureMismatch(
                f"{where}: unknown input(s) {', '.join(unknown)}; "
                f"the model takes {', '.join(self.input_names)}"
            )
        for spec in self.inputs:
            array = feeds[spec.name]
            if str(array.dtype) != spec.dtype and not (
                spec.dtype == "str" and array.dtype.kind in "UO"
            ):
                raise SignatureMismatch(
                    f"{where}: input {spec.name!r} has dtype {array.dtype}, "
                    f"the model expects {spec.dtype}"
                )
            if not spec.accepts_shape(tuple(array.shape)):
                raise SignatureMismatch(
                    f"{where}: input {spec.name!r} has shape {list(array.shape)}, "
                    f"the model expects {spec.describe_shape()}"
                )

    def sample_feeds(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs that fit the signature, for warm-up and benchmarks."""
        rng = np.random.default_rng(seed)
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = spec.concrete_shape(batch)
            if spec.dtype.startswith("float"):
                feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == "bool":
                feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
            elif spec.dtype == "str":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            else:
                feeds[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
        return feeds

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opset": dict(self.opset),
            "producer": self.producer,
        }
