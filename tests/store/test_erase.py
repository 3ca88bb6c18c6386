"""Erasure: what matches goes from every table, and no copy of it stays in the file's bytes.

A real store (SQLite, WAL) holds results of two cameras, their outbox
messages, captures and late labels; ``fogline store erase`` runs as a user
runs it. The proof that nothing is left is the bytes of ``results.db`` and
``results.db-wal`` themselves, searched for a value only the erased camera
produced (checked to be there before the erase, so the search can fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fogline.cli import main
from fogline.errors import ConfigError
from fogline.security import DeviceKey
from fogline.store import (
    Capture,
    Result,
    ResultStore,
    StoredLabel,
    compile_where,
    erase,
    erase_digest,
)

SECRET = "plate-KX71-secret"  # an output only cam-3's results and captures carry


def fill(path: Path) -> None:
    with ResultStore(path) as store:
        results = []
        for n in range(40):
            source = "cam-3" if n % 2 else "cam-1"
            outputs = {"plate": SECRET if source == "cam-3" else "none", "n": n}
            results.append(
                Result(
                    source,
                    n,
                    1_700_000_000.0 + n,
                    "digits",
                    "3",
                    outputs,
                    sync=n < 10,
                    item_id=f"{source}#{n}",
                )
            )
        ids = store.add(results)
        store.add_captures(
            Capture.of(
                np.full((4, 4), n, np.float32),
                item_id=f"{r.source}#{n}",
                source=r.source,
                captured_at=r.captured_at,
                model="digits",
                model_version="3",
                reason="unsure",
                input_name="x",
                answer=r.outputs,
                result_id=i,
            )
            for n, (r, i) in enumerate(zip(results, ids, strict=True))
            if n % 4 in (0, 1)
        )
        store.put_labels(
            StoredLabel(f"{r.source}#{n}", SECRET if r.source == "cam-3" else "x", 1.0, i, "3")
            for n, (r, i) in enumerate(zip(results, ids, strict=True))
            if n < 20
        )


def file_bytes(path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )


def test_erase_removes_from_every_table_and_leaves_no_byte_behind(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    fill(path)
    assert SECRET.encode() in file_bytes(path)  # the search below can find it

    assert main(["store", "erase", str(path), "--where", 'source == "cam-3"']) == 0

    assert SECRET.encode() not in file_bytes(path)
    assert b"cam-3" not in file_bytes(path)
    with ResultStore(path) as store:
        assert {r.result.source for r in store.query(limit=100)} == {"cam-1"}
        assert store.count() == 20 and store.capture_count() == 10
        assert set(store.labels_of([f"cam-1#{n}" for n in range(0, 20, 2)])) == {
            f"cam-1#{n}" for n in range(0, 20, 2)
        }
        assert store.label_counts() == (10, 0)
        stats = store.stats()
        assert (stats.pending, stats.dropped) == (5, 5)  # cam-3's 5 pending messages: never sent
        assert stats.produced == stats.delivered + stats.pending + stats.dropped
    (event,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert event["event"] == "store.erased" and event["fields"]["where"] == "source == ?"
    assert event["fields"]["names"] == ["source"]
    assert (event["fields"]["results"], event["fields"]["outbox"]) == (20, 5)
    assert (event["fields"]["captures"], event["fields"]["labels"]) == (10, 10)
    assert SECRET not in json.dumps(event)
    assert b"cam-3" not in (tmp_path / "audit.jsonl").read_bytes()


def test_the_audit_log_keeps_the_request_s_shape_and_keyed_fingerprint_not_its_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        store.add([Result("cam-1", 0, 1.8e9, "digits", "3", {}, item_id="patient-42")])
    key = DeviceKey.generate()
    monkeypatch.setenv("FOGLINE_DEVICE_KEY", key.hex())
    where = 'item_id == "patient-42" and time >= "2020-01-01"'

    assert main(["store", "erase", str(path), "--where", where]) == 0

    log = (tmp_path / "audit.jsonl").read_bytes()
    assert b"patient-42" not in log and b"2020-01-01" not in log
    fields = json.loads(log)["fields"]
    assert fields["where"] == "item_id == ? and time >= ?"
    assert fields["names"] == ["item_id", "time"] and fields["results"] == 1
    assert fields["request"] == erase_digest(where, key=key)  # who holds the key can confirm it
    assert main(["store", "erase", str(path), "--where", where, "--fingerprint"]) == 0
    assert fields["request"] in capsys.readouterr().out
    assert fields["request"].startswith("hmac-sha256:")
    assert erase_digest(where) != fields["request"]  # without the key it cannot be guessed
    assert erase_digest('item_id == "patient-43"', key=key) != fields["request"]


def test_labels_go_with_their_own_result_not_another_source_s_item_of_the_same_id(
    tmp_path: Path,
) -> None:
    with ResultStore(tmp_path / "results.db") as store:
        ids = store.add(
            [
                Result("cam-1", 0, 1.0, "digits", "3", {}, item_id="frame-7"),
                Result("cam-3", 0, 2.0, "digits", "3", {}, item_id="frame-7@cam3"),
            ]
        )
        # cam-3 reused cam-1's item id for its own later result: the label of cam-1's stays joined.
        store.put_labels([StoredLabel("frame-7", "4", 1.0, ids[0], "3")])
        store.add([Result("cam-3", 1, 3.0, "digits", "3", {}, item_id="frame-7")])

        done = erase(store, 'source == "cam-3"')

        assert (done.results, done.labels) == (2, 0)
        assert set(store.labels_of(["frame-7"])) == {"frame-7"}  # cam-1's result's label


def test_unjoined_labels_go_by_their_own_fields_or_an_item_only_erased_data_had(
    tmp_path: Path,
) -> None:
    with ResultStore(tmp_path / "results.db") as store:
        store.add(
            [
                Result("cam-3", 0, 1.0, "digits", "3", {}, item_id="shared"),
                Result("cam-1", 0, 1.0, "digits", "3", {}, item_id="shared"),
            ]
        )
        store.add_captures(
            [
                Capture.of(
                    np.zeros((2, 2), np.float32),
                    item_id="only-cam3",
                    source="cam-3",
                    captured_at=1.0,
                    model="digits",
                    model_version="3",
                    reason="unsure",
                    input_name="x",
                    answer={},
                )
            ]
        )
        store.put_labels(
            StoredLabel(item, "1", 1.0) for item in ("patient-42", "only-cam3", "shared", "other")
        )
        assert store.label_counts() == (0, 4)

        assert erase(store, 'item_id == "patient-42"').labels == 1  # no result: its own field
        assert erase(store, 'source == "cam-3"').labels == 1  # only-cam3; "shared" is cam-1's too
        assert set(store.labels_of(["patient-42", "only-cam3", "shared", "other"])) == {
            "shared",
            "other",
        }
        assert erase(store, 'source == "cam-1" or item_id == "other"').labels == 2
        assert store.label_counts() == (0, 0)


def test_a_time_range_a_dry_run_and_erasing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.db"
    fill(path)
    where = "time >= 1700000010 and time < 1700000020 and version == '3'"

    assert main(["store", "erase", str(path), "--where", where, "--dry-run"]) == 0
    assert "would erase" in capsys.readouterr().out
    with ResultStore(path) as store:
        assert store.count() == 40
        done = erase(store, where)
        assert (done.results, done.scrubbed) == (10, True)
        assert erase(store, 'source == "nobody"').counts() == dict.fromkeys(
            ("results", "outbox", "captures", "labels"), 0
        )
        assert store.count() == 30
    assert not (tmp_path / "audit.jsonl").exists()  # the library records only when given a log


@pytest.mark.parametrize(
    ("where", "column", "fragment"),
    [
        ('source = "cam-3"', 8, "compare with =="),
        ('source == "a" and colour == "red"', 19, "no field 'colour'"),
        ("source == cam3", 11, "`cam3` is not a value"),
        ('__import__("os").system("x")', 1, "is not a comparison"),
        ("time < 'yesterday'", 8, "not epoch seconds or an ISO date"),
    ],
)
def test_a_bad_where_names_the_column(where: str, column: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_where(where)
    assert f"column {column}" in str(caught.value) and fragment in str(caught.value)


def test_the_cli_answers_a_bad_where_with_exit_2_and_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.db"
    fill(path)
    assert main(["store", "erase", str(path), "--where", 'source == "a" or model ~ "b"']) == 2
    err = capsys.readouterr().err
    assert "invalid syntax at column 24" in err and "Traceback" not in err
    assert main(["store", "erase", str(tmp_path / "none.db"), "--where", "time < 0"]) == 2
    assert "no such store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
