"""Item ids and late labels in the store: the ``labels`` migration, joins by id, live accuracy."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import ConfigError
from fogline.store import (
    SCHEMA_VERSION,
    JsonlTransport,
    OutboxSender,
    Result,
    ResultStore,
    Retention,
    StoredLabel,
)

# The schema as fogline wrote it at version 3 (positions, a plain outbox, no item ids),
# written out on purpose: the test must keep describing those files however the code changes.
VERSION_3 = """
CREATE TABLE results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    captured_at   REAL    NOT NULL,
    model         TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    outputs       TEXT    NOT NULL,
    sync          INTEGER NOT NULL
);
ALTER TABLE results ADD COLUMN position TEXT;
CREATE INDEX results_captured_at ON results (captured_at);
CREATE INDEX results_source ON results (source, captured_at);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    key        TEXT    NOT NULL UNIQUE,
    result_id  INTEGER UNIQUE REFERENCES results (id),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
INSERT INTO counters (name, value) VALUES ('delivered', 0), ('dropped', 0), ('produced', 1);
INSERT INTO results (source, sequence, captured_at, model, model_version, outputs, sync, position)
    VALUES ('cam0', 0, 1700000000.0, 'digits', '3', '{"label":"4"}', 1, 'a.png'),
           ('cam0', 1, 1700000001.0, 'digits', '3', '{"label":"7"}', 0, 'b.png');
INSERT INTO outbox (topic, payload, key, result_id)
    VALUES ('fogline/cam0/outbox', X'7B7D', 'key-1', 1);
PRAGMA user_version = 3;
"""


def schema(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()


@pytest.fixture
def version_3_store(tmp_path: Path) -> Path:
    path = tmp_path / "v3" / "results.db"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(VERSION_3)
    return path


def result(n: int, item_id: str | None, version: str = "1.0", label: str = "4") -> Result:
    return Result("cam0", n, 1_700_000_000.0 + n, "digits", version, {"label": label}, False,
                  f"#{n}", item_id)  # fmt: skip


def test_a_version_3_store_gains_item_ids_and_labels_and_keeps_what_it_held(
    version_3_store: Path, tmp_path: Path
) -> None:
    # Execute: open it with this fogline, read the old rows, store a result with an id, label it
    with ResultStore(version_3_store) as store:
        old = [record.result for record in store.query()]
        (new_id,) = store.add([result(2, "cam0-2", version="3")])
        store.put_labels([StoredLabel("cam0-2", "4", 1_700_000_010.0, new_id, "3", correct=True)])
        joined = store.results_by_item(["cam0-2", "never"])
        with JsonlTransport(tmp_path / "sent.jsonl") as transport:
            sent = OutboxSender(store, transport).deliver_once()
        figures = store.accuracy((10,))

    # Assert: old rows have no id, the old message went out as it was, the new result joins
    with closing(sqlite3.connect(version_3_store)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [(r.position, r.item_id, r.outputs["label"]) for r in old] == [
        ("a.png", None, "4"),
        ("b.png", None, "7"),
    ]
    assert sent == 1 and (tmp_path / "sent.jsonl").read_text() == "{}\n"
    assert list(joined) == ["cam0-2"] and joined["cam0-2"].id == new_id
    assert [(f.model_version, f.labelled, f.accuracy) for f in figures] == [("3", 1, 1.0)]


def test_a_migrated_version_3_store_has_the_schema_of_a_new_one(
    version_3_store: Path, tmp_path: Path
) -> None:
    ResultStore(version_3_store).close()
    ResultStore(tmp_path / "new.db").close()

    assert schema(version_3_store) == schema(tmp_path / "new.db")


def test_an_item_id_travels_in_the_outbox_envelope_and_an_id_less_result_reads_as_before(
    tmp_path: Path,
) -> None:
    with ResultStore(tmp_path / "r.db") as store:
        ids = store.add(
            [
                Result("cam0", 0, 1.0, "m", "1", {"label": "3"}, True, item_id="digits#0"),
                Result("cam0", 1, 2.0, "m", "1", {"label": "5"}, True),
            ]
        )
        pending = store.pending()
        got = [store.get(i) for i in ids]

    bodies = [json.loads(m.payload)["result"] for m in pending]
    assert bodies[0]["item_id"] == "digits#0"
    assert "item_id" not in bodies[1]
    assert [r.result.item_id if r else "gone" for r in got] == ["digits#0", None]


def test_a_reused_item_id_names_its_newest_result(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.db") as store:
        first = store.add([result(0, "digits#5"), result(1, "digits#6")])
        again = store.add([result(2, "digits#5", version="2.0")])
        found = store.results_by_item(["digits#5", "digits#6", "digits#7"])

    assert {k: v.id for k, v in found.items()} == {"digits#5": again[0], "digits#6": first[1]}
    assert found["digits#5"].result.model_version == "2.0"


def test_accuracy_reads_the_last_n_joined_labels_per_model_version(tmp_path: Path) -> None:
    # Prepare: version 1.0 right on 3 of its first 10 labels and all of its last 10;
    # version 2.0 wrong on every one; one label not joined yet, which counts nowhere
    labels = [StoredLabel(f"a{n}", "1", 100.0 + n, n + 1, "1.0", correct=n >= 7) for n in range(20)]
    labels += [
        StoredLabel(f"b{n}", "1", 200.0 + n, 100 + n, "2.0", correct=False) for n in range(5)
    ]
    labels.append(StoredLabel("c0", "1", 300.0))

    with ResultStore(tmp_path / "r.db") as store:
        store.put_labels(labels)
        figures = store.accuracy((10, 1000))
        only = store.accuracy((10,), model_version="2.0")
        with pytest.raises(ConfigError, match="windows are at least 1"):
            store.accuracy((0,))

    table = [(f.model_version, f.window, f.labelled, f.correct, f.accuracy) for f in figures]
    assert table == [
        ("1.0", 10, 10, 10, 1.0),
        ("1.0", 1000, 20, 13, 0.65),
        ("2.0", 10, 5, 0, 0.0),
        ("2.0", 1000, 5, 0, 0.0),
    ]
    assert [(f.model_version, f.labelled) for f in only] == [("2.0", 5)]


def test_a_regressors_labels_read_as_mean_absolute_error(tmp_path: Path) -> None:
    errors = [0.5, 1.5, 2.0, 0.0]
    with ResultStore(tmp_path / "r.db") as store:
        store.put_labels(
            StoredLabel(f"p{n}", 3.0, float(n), n + 1, "1", error=e) for n, e in enumerate(errors)
        )
        (last_two,) = store.accuracy((2,))
        stored = store.labels_of(["p1"])["p1"]

    assert (last_two.metric, last_two.labelled, last_two.mae) == ("mae", 2, 1.0)
    assert last_two.accuracy is None and last_two.value == 1.0
    assert stored.label == 3.0 and stored.error == 1.5 and stored.joined


def test_a_later_label_for_an_item_replaces_the_earlier_one(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.db") as store:
        store.put_labels([StoredLabel("x", "1", 1.0)])
        store.put_labels([StoredLabel("x", {"class": "2"}, 2.0, 7, "1", correct=False)])
        (label,) = store.labels_of(["x"]).values()

    assert label == StoredLabel("x", {"class": "2"}, 2.0, 7, "1", correct=False)


def test_retention_by_age_also_forgets_old_labels(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.db", retention=Retention(max_age_s=100)) as store:
        store.put_labels([StoredLabel("old", "1", 1_000.0), StoredLabel("new", "1", 1_950.0)])
        store.apply_retention(now=2_000.0)
        kept = store.labels_of(["old", "new"])

    assert list(kept) == ["new"]


def test_a_reused_item_id_keeps_the_earlier_runs_joined_label_in_the_accuracy_history(
    tmp_path: Path,
) -> None:
    # Prepare: run 1 (version 1.0) and run 2 (version 1.1) both answer "digits#17"
    with ResultStore(tmp_path / "r.db") as store:
        (first,) = store.add([result(0, "digits#17", "1.0")])
        (second,) = store.add([result(1, "digits#17", "1.1")])

        # Execute: each run's label joins its own result
        store.put_labels([StoredLabel("digits#17", "7", 3.0, first, "1.0", correct=False)])
        store.put_labels([StoredLabel("digits#17", "7", 4.0, second, "1.1", correct=True)])
        figures = store.accuracy((100,))
        newest = store.labels_of(["digits#17"])["digits#17"]

    assert [(f.model_version, f.labelled, f.accuracy) for f in figures] == [
        ("1.0", 1, 0.0),
        ("1.1", 1, 1.0),
    ]
    assert (newest.result_id, newest.model_version) == (second, "1.1")


def test_retention_by_rows_forgets_the_labels_of_results_it_removed(tmp_path: Path) -> None:
    # Prepare: 5 results, each labelled; the store keeps 2 results
    with ResultStore(tmp_path / "r.db", retention=Retention(max_rows=2)) as store:
        ids = store.add([result(n, f"i{n}") for n in range(5)])
        store.put_labels(
            StoredLabel(f"i{n}", "4", 10.0 + n, id_, "1.0", correct=True)
            for n, id_ in enumerate(ids)
        )

        # Execute
        store.apply_retention()
        kept = store.labels_of([f"i{n}" for n in range(5)])
        (figure,) = store.accuracy((100,))

    assert sorted(kept) == ["i3", "i4"]
    assert figure.labelled == 2
