"""The manifest beside a model: written atomically, read strictly, and checked against its file."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fogline.errors import ManifestError
from fogline.model import (
    BACKENDS,
    MANIFEST_NAME,
    PRECISIONS,
    Manifest,
    Signature,
    TensorSpec,
    load_engine,
    sha256_file,
)


@pytest.fixture
def manifest(digits_copy: Path) -> Manifest:
    """The digits model's manifest, described from the model itself."""
    engine = load_engine(digits_copy)
    return Manifest.for_model(
        digits_copy,
        engine.signature,
        name="digits",
        version="3",
        backend=engine.backend,
        precision=engine.precision,
        labels=[str(i) for i in range(10)],
        metrics={"accuracy": 0.97},
    )


def manifest_data(manifest: Manifest) -> dict:
    return manifest.model_dump(mode="json")


def write_yaml(folder: Path, data: object) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- describing and round-tripping -----------------------------------------------------------


def test_for_model_describes_the_file(manifest: Manifest, digits_copy: Path):
    assert manifest.model.path == "model.onnx"
    assert manifest.model.sha256 == sha256_file(digits_copy)
    assert manifest.model.size_bytes == digits_copy.stat().st_size
    assert manifest.engine.backend == "onnxruntime"
    assert manifest.signature().input_names == ("pixels",)
    assert manifest.signature().inputs[0].shape == ("batch", 1, 8, 8)


def test_write_then_read_gives_the_same_manifest(manifest: Manifest, digits_copy: Path):
    # Execute
    written = manifest.write(digits_copy.parent)
    from_file = Manifest.read(written)
    from_folder = Manifest.read(digits_copy.parent)

    # Assert
    assert written == digits_copy.parent / MANIFEST_NAME
    assert from_file == manifest
    assert from_folder == manifest
    assert from_file.signature() == manifest.signature()


def test_write_leaves_no_temp_files(manifest: Manifest, digits_copy: Path):
    # Execute: write twice, the second replacing the first
    manifest.write(digits_copy.parent)
    manifest.write(digits_copy.parent)

    # Assert
    assert sorted(p.name for p in digits_copy.parent.iterdir()) == [MANIFEST_NAME, "model.onnx"]


names = st.text(string.ascii_letters + string.digits + "_:.-/ ", min_size=1, max_size=12)
dims = st.one_of(st.integers(0, 4096), st.none(), names)
specs = st.builds(
    TensorSpec,
    names,
    st.sampled_from(["float32", "int64", "bool", "str"]),
    st.lists(dims, max_size=4).map(tuple),
)


@settings(max_examples=50, deadline=None)
@given(
    inputs=st.lists(specs, min_size=1, max_size=3),
    outputs=st.lists(specs, min_size=1, max_size=3),
    backend=st.sampled_from(BACKENDS),
    precision=st.sampled_from(PRECISIONS),
    producer=st.text(max_size=20),
)
def test_any_signature_survives_the_manifest_round_trip(
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    backend: str,
    precision: str,
    producer: str,
):
    # Prepare
    signature = Signature(tuple(inputs), tuple(outputs), {"ai.onnx": 17}, producer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = folder / "model.bin"
        model.write_bytes(b"weights")
        manifest = Manifest.for_model(
            model, signature, name="m", backend=backend, precision=precision
        )

        # Execute
        manifest.write(folder)
        back = Manifest.read(folder)

    # Assert
    assert back == manifest
    assert back.signature() == signature


# --- verify ----------------------------------------------------------------------------------


def test_verify_passes_for_the_described_file(manifest: Manifest, digits_copy: Path):
    assert manifest.verify(digits_copy.parent) == digits_copy


def test_verify_refuses_a_file_that_grew(manifest: Manifest, digits_copy: Path):
    # Prepare
    with digits_copy.open("ab") as fh:
        fh.write(b"\0")

    # Execute / Assert
    with pytest.raises(ManifestError, match="size") as info:
        manifest.verify(digits_copy.parent)
    assert str(digits_copy) in str(info.value)


def test_verify_refuses_a_file_changed_in_place(manifest: Manifest, digits_copy: Path):
    # Prepare: flip one byte in the middle, keeping the size
    data = bytearray(digits_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    digits_copy.write_bytes(bytes(data))

    # Execute / Assert
    with pytest.raises(ManifestError, match="sha256") as info:
        manifest.verify(digits_copy.parent)
    assert str(digits_copy) in str(info.value)


def test_verify_refuses_a_missing_file(manifest: Manifest, digits_copy: Path):
    digits_copy.unlink()
    with pytest.raises(ManifestError, match="missing"):
        manifest.verify(digits_copy.parent)


# --- reading what is not a manifest ----------------------------------------------------------


def test_read_refuses_malformed_yaml(tmp_path: Path):
    path = tmp_path / MANIFEST_NAME
    path.write_text("name: digits\nengine: {backend: onnxruntime\n  - precision: [\n")

    with pytest.raises(ManifestError, match="not valid YAML") as info:
        Manifest.read(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("", "NoneType")]
)
def test_read_refuses_yaml_that_is_not_a_mapping(text: str, kind: str, tmp_path: Path):
    path = tmp_path / MANIFEST_NAME
    path.write_text(text)

    with pytest.raises(ManifestError, match="mapping") as info:
        Manifest.read(path)
    assert kind in str(info.value)


def test_read_refuses_a_file_that_is_not_text(tmp_path: Path):
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(b"name: digits\nversion: \xff\xfe\x00\x81\n")

    with pytest.raises(ManifestError) as info:
        Manifest.read(path)
    assert str(path) in str(info.value)


def test_read_refuses_a_missing_manifest(tmp_path: Path):
    with pytest.raises(ManifestError, match="cannot read"):
        Manifest.read(tmp_path)


@pytest.mark.parametrize(
    ("key_path", "value"),
    [
        (("engine", "backend"), "tensorrt"),
        (("engine", "precision"), "fp8"),
        (("model", "sha256"), "not-a-hash"),
        (("model", "size_bytes"), -1),
        (("name",), ""),
        (("inputs", 0, "shape"), "batch"),
    ],
)
def test_read_names_the_key_that_is_wrong(
    key_path: tuple, value: object, manifest: Manifest, tmp_path: Path
):
    # Prepare
    data = manifest_data(manifest)
    parent = data
    for key in key_path[:-1]:
        parent = parent[key]
    parent[key_path[-1]] = value
    path = write_yaml(tmp_path, data)

    # Execute / Assert
    with pytest.raises(ManifestError) as info:
        Manifest.read(path)
    message = str(info.value)
    assert ".".join(str(k) for k in key_path) in message
    assert str(path) in message


def test_read_names_an_unknown_key(manifest: Manifest, tmp_path: Path):
    data = manifest_data(manifest)
    data["engine"]["turbo"] = True
    path = write_yaml(tmp_path, data)

    with pytest.raises(ManifestError, match=r"engine\.turbo"):
        Manifest.read(path)


def test_read_names_a_missing_key(manifest: Manifest, tmp_path: Path):
    data = manifest_data(manifest)
    del data["model"]
    path = write_yaml(tmp_path, data)

    with pytest.raises(ManifestError, match="model"):
        Manifest.read(path)
