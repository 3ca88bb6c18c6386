"""The controller's SQLite files encrypted with ``--db-key``: registry and federated runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.cli._controller import _db_key
from fogline.errors import KeyUnavailable, WrongKey
from fogline.federated import RunStore
from fogline.fleet.controller._registry import Registry
from fogline.security import KEY_COMMAND_ENV, KEY_ENV, KEY_FILE_ENV, DeviceKey, init_device_key
from fogline.store import is_encrypted


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, KEY_COMMAND_ENV, KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def test_an_encrypted_registry_keeps_its_rows_and_refuses_other_keys(tmp_path: Path) -> None:
    # Prepare
    key = DeviceKey.generate()
    path = tmp_path / "registry.db"
    registry = Registry(path, key=key)
    token = registry.create_token(group="shop-7")
    registry.close()

    # Assert
    assert is_encrypted(path) and b"shop-7" not in path.read_bytes()
    with pytest.raises(KeyUnavailable, match="the registry is encrypted"):
        Registry(path)
    with pytest.raises(WrongKey, match="registry"):
        Registry(path, key=DeviceKey.generate())
    reopened = Registry(path, key=key)
    try:
        assert reopened.redeem_token(token, "cam-1").group == "shop-7"
    finally:
        reopened.close()


def test_federated_runs_are_encrypted_with_the_same_key(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    RunStore(tmp_path / "federated.db", key=key).close()
    assert is_encrypted(tmp_path / "federated.db")
    with pytest.raises(KeyUnavailable):
        RunStore(tmp_path / "federated.db")


def test_the_controller_asks_for_db_key_when_its_registry_is_encrypted(tmp_path: Path) -> None:
    # A plain or new controller needs no key; an asked-for or encrypted one does
    assert _db_key(tmp_path, None, encrypt=False) is None
    key_file = tmp_path / "db.key"
    key = init_device_key(key_file)
    assert _db_key(tmp_path, key_file, encrypt=False) == key
    Registry(tmp_path / "registry.db", key=key).close()
    with pytest.raises(KeyUnavailable, match="pass --db-key FILE"):
        _db_key(tmp_path, None, encrypt=False)
    with pytest.raises(KeyUnavailable, match="pass --db-key FILE"):
        _db_key(tmp_path / "new", None, encrypt=True)
