"""``fogline keys device init|show`` and ``fogline store rekey``, as a user types them.

In this process (a new one per command would cost seconds each): an uncaught
error would raise here rather than return 2.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fogline.cli import main
from fogline.cli._app import console
from fogline.security import KEY_COMMAND_ENV, KEY_ENV, KEY_FILE_ENV, read_key_file
from fogline.store import Result, ResultStore, is_encrypted


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, KEY_COMMAND_ENV, KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as a log's, whatever COLUMNS held when fogline.cli was imported.

    The CLI's console takes its width once, at import; a pytest-xdist worker has
    COLUMNS=80 by then, and a key's path in a table cell would be cut short.
    """
    monkeypatch.setattr(console, "width", 200)


def fogline(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, " ".join(out.split()), " ".join(err.split())


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_keys_device_init_and_show_never_print_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Execute
    path = tmp_path / "dev" / "keys" / "device.key"
    status, out, _ = fogline(capsys, "keys", "device", "init", "--out", path)

    # Assert: a 0600 key file, its fingerprint printed, key.created in the device's audit log
    key = read_key_file(path)
    assert status == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.fingerprint() in out and key.hex() not in out
    (event,) = [json.loads(line) for line in (tmp_path / "dev" / "audit.jsonl").open()]
    assert event["event"] == "key.created" and event["fields"]["fingerprint"] == key.fingerprint()

    # Execute / Assert: show, from the environment
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    status, out, _ = fogline(capsys, "keys", "device", "show")
    assert status == 0 and key.fingerprint() in out and str(path) in out
    assert key.hex() not in out

    # Execute / Assert: a second init keeps the key
    status, _, err = fogline(capsys, "keys", "device", "init", "--out", path)
    assert_one_line_error(status, err, "a device key is already there", "--force")
    assert read_key_file(path) == key


def test_store_rekey_encrypts_and_commands_then_need_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a plain store, two keys
    db = tmp_path / "results.db"
    with ResultStore(db) as store:
        store.add([Result("cam0", i, 1.0, "digits", "3", {"label": "4"}) for i in range(5)])
    for name in ("one.key", "two.key"):
        assert fogline(capsys, "keys", "device", "init", "--out", tmp_path / name)[0] == 0
    one, two = tmp_path / "one.key", tmp_path / "two.key"

    # Execute / Assert: a key on the plain store says how to encrypt it
    status, _, err = fogline(capsys, "accuracy", db, "--device-key", one)
    assert_one_line_error(status, err, "not encrypted", "fogline store rekey")

    # Execute / Assert: encrypt it, then rotate the key
    status, out, _ = fogline(capsys, "store", "rekey", db, "--new-key", one)
    assert status == 0 and "plain → key" in out and is_encrypted(db)
    status, _, err = fogline(capsys, "accuracy", db)
    assert_one_line_error(status, err, "results.db: the store is encrypted", "--device-key")
    assert fogline(capsys, "accuracy", db, "--device-key", one)[0] == 0
    status, out, _ = fogline(capsys, "store", "rekey", db, "--device-key", one, "--new-key", two)
    assert status == 0 and read_key_file(two).fingerprint() in out
    status, _, err = fogline(capsys, "capture", "list", db, "--device-key", one)
    assert_one_line_error(status, err, "did not open with the device key")
    assert fogline(capsys, "capture", "list", db, "--device-key", two)[0] == 0

    # Execute / Assert: decrypt it; each change is in the audit log beside the store
    status, out, _ = fogline(capsys, "store", "rekey", db, "--device-key", two, "--decrypt")
    assert status == 0 and "→ plain" in out and not is_encrypted(db)
    with ResultStore(db) as store:
        assert store.count() == 5
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").open()]
    assert events.count("store.rekeyed") == 3


def test_store_rekey_needs_one_of_new_key_or_decrypt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ResultStore(tmp_path / "results.db").close()
    status, _, err = fogline(capsys, "store", "rekey", tmp_path / "results.db")
    assert_one_line_error(status, err, "give --new-key FILE", "--decrypt")
