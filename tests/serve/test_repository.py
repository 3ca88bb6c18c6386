"""The model repository: Triton's layout, names, manifests, version policies, fingerprints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fogline.errors import ConfigError, ModelNotFound
from fogline.examples import digits_model_path
from fogline.model import Manifest, Signature, TensorSpec, load_engine
from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._pbtxt import DEFAULT_MAX_BATCH_SIZE
from fogline.serve._repository import Repository

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


def test_a_folder_with_an_unsafe_name_is_a_problem_not_a_model(tmp_path: Path) -> None:
    add_version(tmp_path, "a..b", "1")

    assert Repository(tmp_path).model_names() == []
    assert "not a model name" in Repository(tmp_path).problems()["a..b"]
