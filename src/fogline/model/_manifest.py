"""The model manifest: ``fogline.yaml`` next to the model file.

It says what the model is (name, version, signature, labels, how to
preprocess its input), which file it is (sha256 and size), how to run it
(backend, precision, options) and what the last optimization measured.
The server reads it, and fleet releases sign it; a manifest whose hash does
not match its file is refused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fogline._files import atomic_output, sha256_file
from fogline.errors import ManifestError
from fogline.model._engine import BACKENDS, PRECISIONS
from fogline.model._providers import calibration_table_path
from fogline.model._signature import Signature, TensorSpec

MANIFEST_NAME = "fogline.yaml"


class TensorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    dtype: str
    shape: list[int | str | None]

    def to_spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, tuple(self.shape))


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    extra_files: list[str] = Field(default_factory=list)


class EngineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str
    precision: str
    threads: int | None = None
    graph_optimization: str = "all"
    #: ONNX Runtime's execution providers to ask for, best first (None: the build's best).
    providers: list[str] | None = None
    #: The provider that ran the model when it was measured (``engine.device``), and the
    #: GPU provider asked for that did not start then (ONNX Runtime fell back), if any.
    device: str | None = None
    fallback: str | None = None

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"must be one of {', '.join(BACKENDS)}")
        return value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"must be one of {', '.join(PRECISIONS)}")
        return value


class Manifest(BaseModel):
    """A model's manifest, validated on read and written atomically."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    model: FileEntry
    engine: EngineEntry
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    opset: dict[str, int] = Field(default_factory=dict)
    producer: str = ""
    preprocessing: list[dict[str, Any]] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    #: How the model was made from another (``fogline learn finetune``: the base model's
    #: hash, the data's hashes, epochs, layers, the gate's figures); absent otherwise.
    provenance: dict[str, Any] | None = None
    created: str = Field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @classmethod
    def for_model(
        cls,
        path: Path,
        signature: Signature,
        *,
        name: str,
        version: str = "1",
        backend: str,
        precision: str,
        **extra: Any,
    ) -> Manifest:
        """Describe the model file at ``path`` (its hash is computed here)."""
        path = Path(path)
        extra_files = [p.name for p in _companions(path)]
        return cls(
            name=name,
            version=version,
            model=FileEntry(
                path=path.name,
                sha256=sha256_file(path),
                size_bytes=path.stat().st_size,
                extra_files=extra_files,
            ),
            engine=EngineEntry(backend=backend, precision=precision),
            inputs=[TensorEntry(**t.to_dict()) for t in signature.inputs],
            outputs=[TensorEntry(**t.to_dict()) for t in signature.outputs],
            opset=dict(signature.opset),
            producer=signature.producer,
            **extra,
        )

    def signature(self) -> Signature:
        return Signature(
            tuple(t.to_spec() for t in self.inputs),
            tuple(t.to_spec() for t in self.outputs),
            dict(self.opset),
            self.producer,
        )

    def model_path(self, folder: Path) -> Path:
        return Path(folder) / self.model.path

    def verify(self, folder: Path, *, data: bytes | None = None) -> Path:
        """Check that the model file is present and is the one described.

        ``data``: the model's bytes as they will be loaded (a sealed file opened
        in memory); then those are checked, not the file on disk.
        """
        path = self.model_path(folder)
        if not path.is_file():
            raise ManifestError(f"{path}: the model file named by the manifest is missing")
        size = path.stat().st_size if data is None else len(data)
        if size != self.model.size_bytes:
            raise ManifestError(
                f"{path}: size {size} bytes, the manifest says {self.model.size_bytes}"
            )
        digest = sha256_file(path) if data is None else hashlib.sha256(data).hexdigest()
        if digest != self.model.sha256:
            raise ManifestError(
                f"{path}: sha256 {digest[:12]}…, the manifest says {self.model.sha256[:12]}…"
            )
        return path

    def write(self, folder: Path) -> Path:
        """Write ``folder/fogline.yaml`` atomically (temp file, then rename)."""
        target = Path(folder) / MANIFEST_NAME
        data = self.model_dump(mode="json")
        if data["provenance"] is None:
            del data["provenance"]  # manifests without one read the same as before
        for key in ("providers", "device", "fallback"):
            if data["engine"][key] is None:
                del data["engine"][key]
        text = yaml.safe_dump(data, sort_keys=False)
        with atomic_output(target, mode=None) as tmp:
            tmp.write_text(text)
        return target

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read a manifest file (or the ``fogline.yaml`` in a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = yaml.safe_load(path.read_bytes())
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: a manifest is a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ManifestError(f"{path}: {where}: {first['msg']}") from exc


def _companions(path: Path) -> list[Path]:
    """Files a model needs beside it: OpenVINO's .bin, ONNX external data, TensorRT's INT8
    calibration table."""
    if path.suffix.lower() == ".xml":
        return [path.with_suffix(".bin")]
    beside = (path.with_name(path.name + ".data"), calibration_table_path(path))
    return [p for p in beside if p.is_file()]
