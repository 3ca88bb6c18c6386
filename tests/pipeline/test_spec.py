"""Loading and checking pipeline files: every problem is named by its key path, before anything runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import ConfigError
from fogline.pipeline import ArraySpec, load_spec, plan
from support.digits_pipeline import LABELS, digits_spec, write_spec


def test_a_good_file_loads_and_its_pieces_fit(tmp_path: Path):
    checked = plan(load_spec(write_spec(tmp_path, digits_spec())))
    try:
        assert checked.arrival == {"digits": ArraySpec((1, 8, 8), "float32")}
        assert checked.model.name == "digits"
        assert {"label", "score", "confident"} <= checked.produced
        assert checked.spec.store is not False
        assert checked.spec.store.path == tmp_path / "results.db"  # beside the file, by default
    finally:
        checked.model.engine.close()


def test_outputs_go_to_the_output_folder_and_inputs_stay_beside_the_file(tmp_path: Path):
    """How a fleet agent runs a pipeline from a read-only release folder."""
    release, work = tmp_path / "release", tmp_path / "work"
    release.mkdir()
    spec = digits_spec(
        sinks=[{"type": "jsonl", "name": "review", "path": "review.jsonl"}],
        store={"path": "results.db"},
    )
    loaded = load_spec(write_spec(release, spec), outputs=work)
    assert loaded.store is not False and loaded.store.path == work.resolve() / "results.db"
    assert loaded.sinks[0].path == work.resolve() / "review.jsonl"  # type: ignore[union-attr]
    beside = load_spec(write_spec(release, spec))
    assert beside.store is not False and beside.store.path == release.resolve() / "results.db"


def mutate(change: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(digits_spec())
    for key, value in change.items():
        spec[key] = value
    return spec


CSV_64 = "a" + "".join(f",c{i}" for i in range(63)) + "\n" + ",".join(["1"] * 64) + "\n"

BAD = {
    "resize size is a string": (
        {
            "sources": [{"type": "images", "path": "pics"}],
            "preprocess": [{"type": "resize", "size": "224"}],
        },
        "preprocess[0].size: expected two integers",
    ),
    "unknown source type": ({"sources": [{"type": "camera"}]}, "sources[0]: unknown type 'camera'"),
    "source without type": ({"sources": [{"path": "x"}]}, "sources[0]: missing `type:`"),
    "no sources": ({"sources": []}, "sources: List should have at least 1 item"),
    "unknown model key": (
        {"model": {"path": "m.onnx", "batch": 4}},
        "model.batch: unknown key 'batch'",
    ),
    "unknown execution provider": (
        {"model": {"path": "__MODEL__", "providers": ["gpu"]}},
        "model.providers[0]: unknown execution provider 'gpu'",
    ),
    "a provider the build lacks": (
        {"model": {"path": "__MODEL__", "providers": ["cpu", "MIGraphXExecutionProvider"]}},
        "model.path: execution provider(s) MIGraphXExecutionProvider are not available",
    ),
    "missing model file": ({"model": {"path": "nowhere/m.onnx"}}, "model.path: no such model file"),
    "negative max wait": (
        {"model": {"path": "__MODEL__", "max_wait_ms": -1}},
        "model.max_wait_ms: Input should be greater than or equal to 0, got -1",
    ),
    "images into an 8x8 model": (
        {"sources": [{"type": "images", "path": "pics"}]},
        "sources[0] (images0): the model's input 'pixels' takes (1, 8, 8) float32 per item, "
        "but the source gives (?, ?, 3) uint8 HWC; add a `layout` step with `to: chw`; "
        "fix the size with a `resize`, `letterbox` or `crop` step; make it one channel with "
        "`colour` `to: gray`; add a `normalize` step (to float32)",
    ),
    "csv rows need a reshape": (
        {"sources": [{"type": "csv", "path": "rows.csv"}]},
        "the source gives (64,) float32; add a `reshape` step with `shape: [1, 8, 8]`",
    ),
    "uint8 into a float model": (
        {
            "sources": [{"type": "synthetic", "shape": [1, 8, 8], "dtype": "uint8", "count": 1}],
            "preprocess": [{"type": "reshape", "shape": [1, 8, 8]}],
        },
        "add a `normalize` step (to float32)",
    ),
    "a rule with a typo": (
        {"rules": [{"name": "hot", "when": "lable == '7'"}]},
        "rules[0].when: the condition \"lable == '7'\" uses lable, which no result has",
    ),
    "a rule that does not parse": (
        {"rules": [{"name": "hot", "when": "score >"}]},
        "rules[0].when: cannot parse the condition 'score >'",
    ),
    "a rule naming a missing sink": (
        {
            "rules": [{"name": "hot", "when": "score > 0.9", "then": ["revew"]}],
            "sinks": [{"type": "jsonl", "name": "review", "path": "r.jsonl"}],
        },
        "rules[0].then: no sink named 'revew'; did you mean 'review'?",
    ),
    "a template with an unknown field": (
        {"sinks": [{"type": "stdout", "format": "{source} {lable}"}]},
        "sinks[0]: the template uses lable, which no result has",
    ),
    "two sinks with one name": (
        {"sinks": [{"type": "stdout"}, {"type": "stdout"}]},
        "sinks: two sinks are named 'stdout'",
    ),
    "an outbox without a store": (
        {"store": False, "outbox": {"transport": {"type": "jsonl", "path": "o.jsonl"}}},
        "outbox: the outbox lives in the store",
    ),
    "a post step reading a missing output": (
        {"postprocess": [{"type": "classify", "output": "probs", "labels": LABELS}]},
        "postprocess[0] (classify):",
    ),
}


@pytest.mark.parametrize("change, message", BAD.values(), ids=list(BAD))
def test_a_bad_file_is_refused_with_the_path_to_the_problem(
    tmp_path: Path, change: dict[str, Any], message: str
):
    (tmp_path / "pics").mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "pics" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "rows.csv").write_text(CSV_64)
    spec = mutate(change)
    if spec["model"].get("path") == "__MODEL__":
        spec["model"]["path"] = digits_spec()["model"]["path"]
    path = write_spec(tmp_path, spec)

    with pytest.raises(ConfigError) as caught:
        plan(load_spec(path)).model.engine.close()

    assert message in str(caught.value)


def test_the_model_providers_are_written_out_and_asked_for(tmp_path: Path):
    spec = digits_spec()
    spec["model"]["providers"] = ["cpu"]
    loaded = load_spec(write_spec(tmp_path, spec))
    assert loaded.model.providers == ["CPUExecutionProvider"]
    checked = plan(loaded)
    try:
        assert checked.model.engine.device == "CPUExecutionProvider"
    finally:
        checked.model.engine.close()


def test_yaml_syntax_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("sources:\n  - type: dataset\n    function: [unclosed\nmodel: {}\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: line \d+, column \d+"):
        load_spec(path)


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path):
    spec = mutate(
        {"model": {"path": "nowhere.onnx", "max_batch": 0}, "sources": [{"type": "nope"}]}
    )
    with pytest.raises(ConfigError) as caught:
        load_spec(write_spec(tmp_path, spec))
    text = str(caught.value)
    assert "3 problems" in text
    assert "sources[0]: unknown type 'nope'" in text
    assert "model.path" in text and "model.max_batch" in text


def test_a_missing_file_and_a_non_mapping_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such pipeline file"):
        load_spec(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a pipeline is a mapping of keys, got list"):
        load_spec(tmp_path / "list.yaml")


def test_a_missing_optional_library_is_named_with_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import sys

    import cv2
    import numpy as np

    (tmp_path / "pics").mkdir()
    cv2.imwrite(str(tmp_path / "pics" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    spec = mutate(
        {
            "sources": [{"type": "images", "path": "pics"}],
            "preprocess": [
                {"type": "colour", "to": "gray"},
                {"type": "resize", "size": [8, 8]},
                {"type": "normalize", "scale": 0.0625},
                {"type": "layout", "to": "chw"},
            ],
        }
    )
    path = write_spec(tmp_path, spec)
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed

    with pytest.raises(ConfigError) as caught:
        plan(load_spec(path)).model.engine.close()

    assert "sources[0] (images): images, video and image steps need OpenCV" in str(caught.value)
    assert "pip install 'fogline[vision]'" in str(caught.value)
