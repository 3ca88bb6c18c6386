"""Fine-tuning the bundled digits model on shifted digits, behind the gate, in real ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from fogline.errors import ConfigError, DataError
from fogline.examples import digits_model_path, digits_split
from fogline.federated import softmax_onnx
from fogline.model import Manifest, sha256_file
from fogline.monitor import FinetuneOptions, GateOptions, finetune, judge
from fogline.monitor._head import find_head

BASE = digits_model_path().parent
TORCH_SOURCE = "fogline.examples.digits_torch:teacher"


def shift(images: np.ndarray, pixels: int = 1) -> np.ndarray:
    """The camera moved: every image slides right by ``pixels``, the gap filled with black."""
    moved = np.zeros_like(images)
    moved[..., pixels:] = images[..., :-pixels]
    return moved


def ort_accuracy(model: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixels": pixels})
    return float(np.mean(np.argmax(logits, axis=1) == labels))


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Captured items (300 shifted, 200 as before), the shifted holdout and the original eval set."""
    root = tmp_path_factory.mktemp("finetune-data")
    X, y = digits_split("train")
    Xe, ye = digits_split("eval")
    captured = np.concatenate([shift(X[:300]), X[300:500]])
    files = {
        "captured": (captured, y[:500]),
        "shuffled": (captured, np.random.default_rng(1).permutation(y[:500])),
        "holdout": (shift(Xe), ye),
        "original": (Xe, ye),
        "replay": (X[500:900], y[500:900]),
        "inverted": ((1.0 - X[:300]).astype(np.float32), y[:300]),
        "inverted-holdout": ((1.0 - Xe).astype(np.float32), ye),
    }
    paths = {}
    for name, (pixels, labels) in files.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], pixels=pixels, labels=labels)
    return paths


def run(
    sets: dict[str, Path],
    out: Path,
    data: str = "captured",
    original: str | None = "original",
    base: Path = BASE,
    **gate: float,
):
    return finetune(
        base,
        str(sets[data]),
        str(sets["holdout"]),
        out,
        original=None if original is None else str(sets[original]),
        options=FinetuneOptions(epochs=10, l2=0.1),
        gate=GateOptions(**{"min_gain": 0.02, "max_forgetting": 0.05, **gate}),
    )


def test_head_refit_beats_the_base_on_shifted_digits_and_passes_the_gate(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    result = run(sets, tmp_path / "candidate")

    assert result.passed, result.verdict.reason
    folder = result.folder
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".png") == [
        "fogline.yaml",
        "model.onnx",
        "report.json",
        "report.md",
    ]
    manifest = Manifest.read(folder)
    manifest.verify(folder)
    assert (manifest.name, manifest.version) == ("digits", "1.1")
    assert manifest.provenance is not None
    assert manifest.provenance["finetuned_from"]["sha256"] == sha256_file(BASE / "model.onnx")
    assert manifest.provenance["layers"] == "last"
    assert manifest.provenance["data"]["items"] == 500
    # The figures, measured again here straight in ONNX Runtime.
    pixels, labels = np.load(sets["holdout"])["pixels"], np.load(sets["holdout"])["labels"]
    before = ort_accuracy(BASE / "model.onnx", pixels, labels)
    after = ort_accuracy(folder / "model.onnx", pixels, labels)
    assert after > before + 0.15
    assert result.verdict.holdout == pytest.approx((before, after))
    report = json.loads((folder / "report.json").read_text())
    assert report["passed"] is True
    assert report["candidate"]["sha256"] == sha256_file(folder / "model.onnx")
    assert "the gate passed" in (folder / "report.md").read_text()


def test_only_the_last_layer_changes(sets: dict[str, Path], tmp_path: Path) -> None:
    result = run(sets, tmp_path / "candidate")

    def weights(path: Path) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}

    old, new = weights(BASE / "model.onnx"), weights(result.folder / "model.onnx")
    changed = sorted(k for k in old if not np.array_equal(old[k], new[k]))
    assert changed == ["head.3.bias", "head.3.weight"]


def test_forgetting_on_the_original_data_is_measured_on_both_models(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    result = run(sets, tmp_path / "candidate")

    original = np.load(sets["original"])
    before = ort_accuracy(BASE / "model.onnx", original["pixels"], original["labels"])
    after = ort_accuracy(result.folder / "model.onnx", original["pixels"], original["labels"])
    assert result.verdict.original == pytest.approx((before, after))
    assert result.verdict.forgetting == pytest.approx(before - after)
    assert 0 < result.verdict.forgetting <= 0.05


def test_replaying_original_data_forgets_less(sets: dict[str, Path], tmp_path: Path) -> None:
    plain = run(sets, tmp_path / "plain", max_forgetting=1.0)
    replayed = finetune(
        BASE,
        str(sets["captured"]),
        str(sets["holdout"]),
        tmp_path / "replayed",
        original=str(sets["original"]),
        replay=str(sets["replay"]),
        options=FinetuneOptions(epochs=10, l2=0.1),
        gate=GateOptions(max_forgetting=1.0),
    )

    assert replayed.verdict.forgetting < plain.verdict.forgetting
    assert replayed.report["replay"]["items"] == 400
    assert replayed.report["data"]["items"] == 500


def test_the_same_candidate_fails_a_gate_that_allows_no_forgetting(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    result = run(sets, tmp_path / "strict", max_forgetting=0.0)

    assert not result.passed
    assert "forgotten" in result.verdict.reason
    assert not (result.folder / "model.onnx").exists()


def test_a_candidate_trained_on_shuffled_labels_fails_and_leaves_no_model(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    result = run(sets, tmp_path / "bad", data="shuffled")

    assert not result.passed
    assert result.verdict.holdout[1] < result.verdict.holdout[0] + 0.02
    assert sorted(p.name for p in result.folder.iterdir()) == [
        "report.json",
        "report.md",
        "report.png",
    ]
    report = json.loads((result.folder / "report.json").read_text())
    assert report["passed"] is False and report["candidate"] is None
    assert "FAILED" in (result.folder / "report.md").read_text()
    assert list(tmp_path.iterdir()) == [result.folder]  # no scratch folder left beside it


def test_a_fine_tuned_model_is_gated_on_the_same_original_data_next_time(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    first = run(sets, tmp_path / "first")
    assert first.passed

    again = finetune(
        first.folder,
        str(sets["captured"]),
        str(sets["holdout"]),
        tmp_path / "again",
        options=FinetuneOptions(epochs=2, l2=0.1),
        gate=GateOptions(min_gain=0.0, max_forgetting=1.0),
    )

    assert again.report["original"]["spec"] == str(sets["original"].resolve())
    assert again.report["original"]["sha256"] == first.report["original"]["sha256"]
    if again.passed:  # a second pass over the same data may gain nothing: then no model is kept
        assert Manifest.read(again.folder).version == "1.2"


def test_an_installed_release_is_gated_on_its_canary_set(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    # The agent's layout: DEV/releases/<name>/<version>/ beside its document <version>.json.
    release = tmp_path / "releases" / "digits" / "1.0.0"
    shutil.copytree(BASE, release, ignore=shutil.ignore_patterns("*.pt", "pipeline.yaml"))
    original = np.load(sets["original"])
    np.savez(release / "canary.npz", x=original["pixels"][:100], y=original["labels"][:100])
    (release.parent / "1.0.0.json").write_text(json.dumps({"canary": {"data": "canary.npz"}}))

    result = run(sets, tmp_path / "out", original=None, base=release)

    assert result.report["original"]["spec"] == str(release / "canary.npz")
    assert result.report["original"]["items"] == 100


def test_bad_input_leaves_nothing_behind(sets: dict[str, Path], tmp_path: Path) -> None:
    np.savez(tmp_path / "unlabelled.npz", pixels=np.load(sets["holdout"])["pixels"])
    with pytest.raises(DataError, match="holds no labels"):
        finetune(
            BASE,
            str(tmp_path / "unlabelled.npz"),
            str(sets["holdout"]),
            tmp_path / "out",
            original=str(sets["original"]),
        )
    with pytest.raises(ConfigError, match="--original"):
        finetune(BASE, str(sets["captured"]), str(sets["holdout"]), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unlabelled.npz"]


def test_the_whole_network_from_its_pytorch_source(sets: dict[str, Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    # Two threads before, whatever the worker's default (one under pytest-xdist), so that
    # "put back" is told apart from "left at one".
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = finetune(
            BASE,
            str(sets["inverted"]),
            str(sets["inverted-holdout"]),
            tmp_path / "all",
            original=str(sets["original"]),
            options=FinetuneOptions(
                layers="all", epochs=5, learning_rate=0.003, torch_source=TORCH_SOURCE, threads=1
            ),
            gate=GateOptions(min_gain=0.5, max_forgetting=1.0),
        )
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    assert result.passed, result.verdict.reason
    assert after == 2  # set to one for the training, then put back
    assert result.report["training"]["threads"] == 1
    assert result.verdict.holdout[1] > 0.6  # inverted digits: the base gets almost none right
    manifest = Manifest.read(result.folder)
    assert manifest.provenance is not None and manifest.provenance["layers"] == "all"
    changed = onnx.load(str(result.folder / "model.onnx")).graph.initializer
    assert len(changed) >= 8


def test_a_pytorch_source_that_is_not_the_model_is_refused(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match=r"differ from the model's|output has shape"):
        finetune(
            BASE,
            str(sets["captured"]),
            str(sets["holdout"]),
            tmp_path / "wrong",
            original=str(sets["original"]),
            options=FinetuneOptions(
                layers="all", epochs=1, torch_source="fogline.examples.digits_torch:student"
            ),
        )
    assert not (tmp_path / "wrong").exists()


def test_a_matmul_add_softmax_head_is_found() -> None:
    weights = {"W": np.ones((64, 10), np.float32), "b": np.zeros(10, np.float32)}
    head = find_head(softmax_onnx(weights, "pixels"))

    assert (head.node_type, head.weight_name, head.bias_name) == ("MatMul+Add", "W", "b")
    assert head.features == "pixels" and not head.transposed


def test_too_few_held_out_items_are_refused_before_anything_is_written(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    X, y = digits_split("eval")
    few = tmp_path / "few.npz"
    np.savez(few, pixels=shift(X[:5]), labels=y[:5])

    with pytest.raises(ConfigError, match="5 held-out item"):
        finetune(
            BASE, str(sets["captured"]), str(few), tmp_path / "out",
            original=str(sets["original"]), options=FinetuneOptions(epochs=1),
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_gate_fails_on_figures_it_could_not_measure_and_asks_for_a_gain() -> None:
    nan = float("nan")
    assert not judge((nan, nan), (0.99, 0.99), GateOptions()).passed
    assert not judge((0.5, 0.9), (nan, 0.99), GateOptions()).passed
    with pytest.raises(ConfigError, match="between 0 and 1"):
        GateOptions(min_gain=-0.5)
