"""Stolen disk: a pipeline with ``store: {encrypt: true}`` leaves nothing readable in its folder.

The bundled digits pipeline (raw digits → normalize → the real model →
classify, every result stored, queued for sync and captured) runs with its
store encrypted by a device key kept outside the data folder. The folder is
copied while the store is still open — its ``-wal`` and ``-shm`` there, as on a
device taken while running — and every file of the copy is searched for a
late label, an output value and the bytes of an input the model saw. The same
search over a plain run finds all three, so it is a search that can succeed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from fogline.cli import main
from fogline.errors import KeyUnavailable
from fogline.examples import PIXEL_SCALE, digits_model_path
from fogline.pipeline import Pipeline, load_spec, plan
from fogline.security import KEY_COMMAND_ENV, KEY_ENV, KEY_FILE_ENV, KeySource, init_device_key
from fogline.store import ResultStore, StoredLabel
from support.digits_pipeline import LABELS, write_spec

ITEMS = 48
LATE_LABEL = "late-label-7f3a9c"


def spec(encrypt: bool) -> dict[str, Any]:
    return {
        "name": "digits",
        "sources": [
            {
                "type": "dataset",
                "name": "scanner",
                "function": "fogline.examples:digits_stream",
                "max_items": ITEMS,
            }
        ],
        "preprocess": [
            {"type": "normalize", "scale": PIXEL_SCALE},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 16, "max_wait_ms": 2},
        "postprocess": [{"type": "classify", "labels": LABELS, "min_score": 0.9}],
        "store": {"path": "results.db", "sync": True, "encrypt": encrypt},
        "capture": {"when": "score <= 1"},  # every item: its input is kept in the store
    }


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, KEY_COMMAND_ENV, KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def run_and_copy(tmp_path: Path, name: str, key_file: Path | None) -> tuple[Path, list[bytes]]:
    """Run the pipeline into ``tmp_path/name``, copy that folder while the store is open;
    return the copy and what was stored (a late label, an output value, an input's bytes)."""
    data = tmp_path / name
    data.mkdir()
    pipeline = write_spec(tmp_path, spec(encrypt=key_file is not None), f"{name}.yaml")
    checked = plan(load_spec(pipeline, outputs=data), keys=KeySource(file=key_file))
    runner = Pipeline(checked)
    try:
        runner.run()
        store = runner.store
        assert store is not None and store.count() == ITEMS
        first = store.query(limit=1)[0]
        # A late label, stored as the pipeline's label joiner stores one
        store.put_labels([StoredLabel(str(first.result.item_id), LATE_LABEL, 2.0, first.id, "1")])
        frame = store.captures(limit=1)[0].capture.array()
        needles = [
            LATE_LABEL.encode(),
            repr(first.result.outputs["score"]).encode(),
            frame.tobytes(),
        ]
        copy = tmp_path / f"{name}-copy"
        shutil.copytree(data, copy)  # the thief's copy, taken while the store is open
    finally:
        runner.close()
        checked.model.engine.close()
    return copy, needles


def found(folder: Path, needles: list[bytes]) -> dict[str, list[int]]:
    """For every file under ``folder``: which needles (by index) its bytes contain."""
    return {
        str(path.relative_to(folder)): [i for i, n in enumerate(needles) if n in path.read_bytes()]
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_copied_folder_reveals_nothing_and_opens_only_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the device key lives outside the data folder (a key file, or a TPM)
    key_file = tmp_path / "keys" / "device.key"
    init_device_key(key_file)

    # Execute
    plain_copy, plain_needles = run_and_copy(tmp_path, "plain", None)
    copy, needles = run_and_copy(tmp_path, "device", key_file)

    # Assert: the search finds everything in a plain store ...
    assert found(plain_copy, plain_needles)["results.db-wal"] == [0, 1, 2]
    # ... and nothing in any file of the encrypted one, WAL and shared memory included
    hits = found(copy, needles)
    assert {"results.db", "results.db-wal", "results.db-shm"} <= set(hits)
    assert hits == {name: [] for name in hits}

    # Assert: without the key, the copy does not open, and says why
    db = copy / "results.db"
    with pytest.raises(KeyUnavailable, match="the store is encrypted"):
        ResultStore(db)
    assert main(["capture", "list", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    assert "the store is encrypted" in err and "--device-key" in err

    # Assert: with the key, everything is there
    with ResultStore(db, key=KeySource(file=key_file).load()) as store:
        assert store.count() == ITEMS
        assert store.capture_count() == ITEMS
        assert store.stats().pending == ITEMS
        assert LATE_LABEL in {label.label for label in store.labels_of(
            [str(r.result.item_id) for r in store.query()]).values()}  # fmt: skip
    assert main(["capture", "list", str(db), "--device-key", str(key_file), "--json"]) == 0
    assert capsys.readouterr().out.count("\n") == 20  # the newest 20, the default


def test_check_says_the_key_is_missing_naming_store_encrypt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = write_spec(tmp_path, spec(encrypt=True))

    assert main(["check", str(pipeline)]) == 2

    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: store.encrypt: no device key: pass --device-key FILE"), err
