"""Encryption at rest: a store opened with a device key is SQLCipher, and refuses the wrong key.

Real SQLCipher files in ``tmp_path``; the keys are real device keys.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.errors import KeyUnavailable, StoreError, StoreFormatError, WrongKey
from fogline.security import DeviceKey
from fogline.store import (
    Capture,
    ResultStore,
    StoredLabel,
    database_errors,
    is_encrypted,
    open_connection,
    open_database,
)

MakeResult = Any

SECRET = "label-only-in-the-store"


@pytest.fixture(scope="module")
def key() -> DeviceKey:
    return DeviceKey.generate()


def files_of(db: Path) -> bytes:
    """Every byte of the store: the file, its WAL, its shared memory."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def fill(store: ResultStore, make_result: MakeResult, frame: np.ndarray) -> list[int]:
    """A result (queued in the outbox), a capture of its input and its late label."""
    ids = store.add([make_result(outputs={"label": SECRET}, sync=True, item_id="item-1")])
    capture = Capture.of(
        frame, item_id="item-1", source="cam0", captured_at=1.0, model="digits",
        model_version="3", reason="score < 0.6", input_name="pixels", answer={"label": SECRET},
    )  # fmt: skip
    store.add_captures([capture])
    store.put_labels([StoredLabel("item-1", SECRET + "-late", 2.0, ids[0], "3", correct=True)])
    return ids


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_store_round_trips_and_an_encrypted_one_holds_nothing_readable(
    db_path: Path, key: DeviceKey, make_result: MakeResult, encrypted: bool
) -> None:
    # Prepare
    frame = np.arange(64, dtype=np.float32).reshape(1, 8, 8) * 1.37
    store = ResultStore(db_path, key=key if encrypted else None)
    ids = fill(store, make_result, frame)

    # Assert: while open (WAL and shared memory there), nothing of it is readable on disk,
    # where the same search finds all of it in a plain store
    on_disk = files_of(db_path)
    assert Path(f"{db_path}-wal").exists()
    needles = (SECRET.encode(), (SECRET + "-late").encode(), frame.tobytes(), b"SQLite format 3")
    assert [needle in on_disk for needle in needles] == [not encrypted] * len(needles)
    store.close()
    assert is_encrypted(db_path) == encrypted

    # Execute / Assert: with the key, everything is there
    with ResultStore(db_path, key=key if encrypted else None) as reopened:
        assert reopened.get(ids[0]).result.outputs == {"label": SECRET}
        assert reopened.pending()[0].key
        (captured,) = reopened.captures()
        assert np.array_equal(captured.capture.array(), frame)
        assert reopened.labels_of(["item-1"])["item-1"].label == SECRET + "-late"


def test_no_key_another_key_and_a_key_for_a_plain_file_are_refused(
    tmp_path: Path, key: DeviceKey, make_result: MakeResult
) -> None:
    # Prepare
    encrypted, plain = tmp_path / "encrypted.db", tmp_path / "plain.db"
    with ResultStore(encrypted, key=key) as store:
        store.add([make_result()])
    ResultStore(plain).close()
    before = encrypted.read_bytes()

    # Execute / Assert
    with pytest.raises(KeyUnavailable, match=r"encrypted\.db: the store is encrypted; pass"):
        ResultStore(encrypted)
    with pytest.raises(WrongKey, match=r"encrypted\.db: the store did not open with the device"):
        ResultStore(encrypted, key=DeviceKey.generate())
    with pytest.raises(StoreFormatError, match=r"plain\.db: the store is not encrypted.*rekey"):
        ResultStore(plain, key=key)
    # Nothing was written by the refused opens: never a new empty store in its place
    assert encrypted.read_bytes() == before
    with ResultStore(encrypted, key=key) as store:
        assert store.count() == 1


def test_a_wrong_key_prints_nothing_on_stderr(
    db_path: Path, key: DeviceKey, capfd: pytest.CaptureFixture[str]
) -> None:
    ResultStore(db_path, key=key).close()
    with pytest.raises(WrongKey):
        ResultStore(db_path, key=DeviceKey.generate())
    assert capfd.readouterr().err == ""  # SQLCipher's own log is silenced


def test_open_database_migrates_an_encrypted_file(tmp_path: Path, key: DeviceKey) -> None:
    # Prepare: version 1, encrypted
    path = tmp_path / "notes.db"
    steps = ["CREATE TABLE notes (text TEXT)", "ALTER TABLE notes ADD COLUMN time REAL"]
    with closing(open_database(path, steps[:1], what="notebook", key=key)) as conn:
        conn.execute("INSERT INTO notes VALUES ('kept')")

    # Execute: a newer fogline opens it
    with closing(open_database(path, steps, what="notebook", key=key)) as conn:
        rows = conn.execute("SELECT text, time FROM notes").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]

    # Assert
    assert rows == [("kept", None)] and version == 2
    with pytest.raises(KeyUnavailable, match="the notebook is encrypted"):
        open_database(path, steps, what="notebook")


def test_sqlcipher_failures_are_store_errors(db_path: Path, key: DeviceKey) -> None:
    # SQLCipher's exceptions are not sqlite3's: the store maps both families
    with ResultStore(db_path, key=key) as store:
        assert store._conn is not None
        with pytest.raises(database_errors()) as raw:
            store._conn.execute("SELECT * FROM no_such_table")
        assert not isinstance(raw.value, sqlite3.Error)  # the case the mapping is for
        with pytest.raises(StoreError, match="no such table"), store._read() as conn:
            conn.execute("SELECT * FROM no_such_table")


def test_open_connection_checks_the_key_without_migrating(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "federated.db"
    ResultStore(path, key=key).close()
    with pytest.raises(KeyUnavailable):
        open_connection(path, key=None)
    with closing(open_connection(path, key=key)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] > 0
