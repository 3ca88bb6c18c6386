"""A learner's ``finetune:`` section: read from ``learner.yaml``, refused with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.errors import ConfigError
from fogline.fleet.agent.kinds import LearnerKind, load_learner


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "learner.yaml"
    path.write_text(text)
    return path


def test_a_finetune_only_learner_needs_no_federated_task(tmp_path: Path) -> None:
    entry = write(tmp_path, "finetune: {release: digits, store: results.db, every_s: 60}\n")
    spec = load_learner(entry)
    assert spec.task is None and spec.finetune is not None
    assert (spec.finetune.every_s, spec.finetune.min_labelled, spec.finetune.holdout) == (
        60.0, 200, 0.25,
    )  # fmt: skip
    assert LearnerKind().open_engines(entry) == []  # its health check passes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finetune: {release: digits, store: r.db, every_s: 0}\n", "finetune.every_s"),
        ("finetune: {release: digits, store: r.db, holdout: 1.5}\n", "finetune.holdout"),
        ("finetune: {release: digits, store: ../r.db}\n", "finetune.store"),
        ("finetune: {release: digits, store: r.db, layers: some}\n", "finetune.layers"),
        ("finetune: {release: digits, store: r.db, canary: {min_accuracy: 2}}\n",
         "finetune.canary.min_accuracy"),
        ("finetune: {store: r.db}\n", "finetune.release"),
        ("epochs: 2\n", "a learner names a federated 'task' and 'data', or a 'finetune:'"),
    ],
)  # fmt: skip
def test_a_bad_finetune_section_is_refused_with_its_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        load_learner(write(tmp_path, text))
