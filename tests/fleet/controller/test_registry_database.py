"""The registry opens through ``store.open_database``, and files the older code made still open."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fogline.errors import StoreFormatError
from fogline.fleet.controller._registry import MIGRATIONS, SCHEMA_VERSION, Registry


def tables(path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def without_release_keys(listed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The tables with the columns later steps added taken out again: the devices' v3 columns
    (release key, revocation) and the telemetry rows' v4 energy columns."""
    v3 = ", release_key TEXT, revoked_at REAL"
    v4 = ", joules REAL, joules_per_item REAL, energy TEXT, energy_measured INTEGER"
    return [(name, sql.replace(v3, "").replace(v4, "")) for name, sql in listed]


def created_as_before(path: Path) -> None:
    """Make a registry exactly as ``Registry()`` did before it used ``open_database``."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version=1;")
        conn.execute("COMMIT")


def test_a_new_registry_has_the_schema_the_old_code_made_and_the_monitoring_table(
    tmp_path: Path,
) -> None:
    # Execute
    Registry(tmp_path / "new.db").close()
    created_as_before(tmp_path / "old.db")

    # Assert
    new = tables(tmp_path / "new.db")
    old = tables(tmp_path / "old.db")
    assert without_release_keys([t for t in new if not t[0].startswith("monitoring")]) == old
    assert {t[0] for t in new if t[0].startswith("monitoring")} == {
        "monitoring", "monitoring_device", "monitoring_release",
    }  # fmt: skip
    with closing(sqlite3.connect(tmp_path / "new.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_registry_the_old_code_made_opens_with_what_it_held(tmp_path: Path) -> None:
    # Prepare: every registry.db written so far was made this way (user_version 1)
    path = tmp_path / "registry.db"
    created_as_before(path)
    before = tables(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO devices (id, grp, online) VALUES ('dev-a', 'line', 0)")

    # Execute
    registry = Registry(path)
    try:
        device = registry.device("dev-a")
        token = registry.create_token(group="line")
        registry.redeem_token(token, "dev-b")
        ids = sorted(d.id for d in registry.devices())
    finally:
        registry.close()

    # Assert: migrated to the current version, the monitoring table and the devices' release
    # keys added, nothing else changed
    assert device is not None and device.group == "line"
    assert ids == ["dev-a", "dev-b"]
    after = tables(path)
    assert without_release_keys([t for t in after if not t[0].startswith("monitoring")]) == before
    assert "monitoring" in {t[0] for t in after}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_registry_tables_without_a_version_are_refused_untouched(tmp_path: Path) -> None:
    # Prepare: the registry's tables with user_version 0. fogline never wrote such a file (the
    # tables and the version were always one transaction), so it was made by something else.
    path = tmp_path / "registry.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(MIGRATIONS[0])
    before = tables(path)

    # Execute / Assert: a clear refusal, not "table devices already exists" half way through
    with pytest.raises(StoreFormatError, match=r"registry\.db: .* not a fogline registry"):
        Registry(path)
    assert tables(path) == before


def test_a_registry_from_a_newer_fogline_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(
        StoreFormatError, match=rf"registry schema version {SCHEMA_VERSION + 1} .* newer fogline"
    ):
        Registry(path)
