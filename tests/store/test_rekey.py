"""``fogline.store.rekey``: encrypt, change the key, decrypt — and a kill -9 leaves old or new.

Real SQLCipher files; the crash checks SIGKILL a real child process at the
moment the new file would replace the old one, just before and just after.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fogline.errors import ConfigError, KeyUnavailable, StoreError, WrongKey
from fogline.security import AuditLog, DeviceKey
from fogline.store import Result, ResultStore, is_encrypted, rekey


def filled(path: Path, key: DeviceKey | None, n: int = 30) -> Path:
    with ResultStore(path, key=key) as store:
        store.add(
            [
                Result("cam0", i, 1.0 + i, "digits", "3", {"label": f"d{i}"}, sync=True)
                for i in range(n)
            ]
        )
    return path


def contents(path: Path, key: DeviceKey | None) -> tuple[list[object], int]:
    with ResultStore(path, key=key) as store:
        return [r.result.outputs for r in store.query()], store.stats().pending


def test_rekey_encrypts_rotates_and_decrypts(tmp_path: Path) -> None:
    # Prepare
    path = filled(tmp_path / "results.db", None)
    first, second = DeviceKey.generate(), DeviceKey.generate()
    expected = contents(path, None)
    audit = AuditLog(tmp_path / "audit.jsonl")

    # Execute / Assert: plain → first key → second key → plain, the same rows each time
    done = rekey(path, old_key=None, new_key=first, audit=audit)
    assert (done.before, done.after) == ("plain", "encrypted") and is_encrypted(path)
    assert contents(path, first) == expected
    rekey(path, old_key=first, new_key=second, audit=audit)
    assert contents(path, second) == expected
    with pytest.raises(WrongKey):
        ResultStore(path, key=first)
    rekey(path, old_key=second, new_key=None, audit=audit)
    assert not is_encrypted(path) and contents(path, None) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.lock",
        "results.db",
        "results.db.lock",  # the open lock (kept: it is never renamed)
    ]

    # Assert: each one is an audit event naming the keys by fingerprint only
    events = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["store.rekeyed"] * 3
    assert events[1]["fields"]["old_key"] == first.fingerprint()
    assert events[1]["fields"]["new_key"] == second.fingerprint()
    assert first.hex() not in audit.path.read_text()


def test_rekey_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    plain = filled(tmp_path / "plain.db", None)
    key = DeviceKey.generate()
    encrypted = filled(tmp_path / "encrypted.db", key)
    with pytest.raises(ConfigError, match="already plain"):
        rekey(plain, old_key=None, new_key=None)
    with pytest.raises(ConfigError, match="not encrypted; give no old key"):
        rekey(plain, old_key=key, new_key=DeviceKey.generate())
    with pytest.raises(KeyUnavailable, match="encrypted"):
        rekey(encrypted, old_key=None, new_key=DeviceKey.generate())
    with pytest.raises(WrongKey):
        rekey(encrypted, old_key=DeviceKey.generate(), new_key=None)
    with pytest.raises(StoreError, match="no such database"):
        rekey(tmp_path / "missing.db", old_key=None, new_key=key)
    assert contents(encrypted, key)[1] == 30  # untouched


HOLD = """
import sys
from fogline.store import ResultStore
store = ResultStore(sys.argv[1])
store.count()
print("open", flush=True)
sys.stdin.read()
"""


def test_rekey_refuses_a_store_another_process_has_open(tmp_path: Path) -> None:
    # Prepare: a real process holds the store open (as a running pipeline does)
    path = filled(tmp_path / "results.db", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"

        # Execute / Assert
        with pytest.raises(StoreError, match="open in another process"):
            rekey(path, old_key=None, new_key=DeviceKey.generate())
        assert not is_encrypted(path)
    finally:
        holder.communicate("", timeout=30)
    rekey(path, old_key=None, new_key=DeviceKey.generate())  # once it is closed
    assert is_encrypted(path)


# A pipeline that opens the store with the key it had and adds a row, once told to.
LATE_WRITER = """
import sys
from fogline.errors import FoglineError
from fogline.security import DeviceKey
from fogline.store import Result, ResultStore
path, key = sys.argv[1:]
sys.stdin.readline()
print("opening", flush=True)
try:
    with ResultStore(path, key=DeviceKey.from_hex(key, "old"), timeout=60) as store:
        store.add([Result("late", 0, 1.0, "digits", "3", {"label": "late"})])
    print("added", flush=True)
except FoglineError as exc:
    print("refused:", exc, flush=True)
"""


def test_a_store_opened_during_a_rekey_loses_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a second process that opens the store while the copy is being made
    from fogline.store import _rekey

    path = filled(tmp_path / "results.db", old := DeviceKey.generate())
    new = DeviceKey.generate()
    expected = contents(path, old)
    writer = subprocess.Popen(
        [sys.executable, "-c", LATE_WRITER, str(path), old.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    real_finish = _rekey._finish

    def finish_while_it_writes(copy: Path, key: DeviceKey | None) -> None:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "opening\n"
        # Unlocked, it writes to the old file now, before the rename; locked, it waits.
        with contextlib.suppress(subprocess.TimeoutExpired):
            writer.wait(timeout=1.5)
        real_finish(copy, key)

    monkeypatch.setattr(_rekey, "_finish", finish_while_it_writes)

    # Execute
    try:
        rekey(path, old_key=old, new_key=new)
    finally:
        said, _ = writer.communicate(timeout=60)

    # Assert: the writer's row is in the new file, or the writer was told it was not stored
    outputs, pending = contents(path, new)
    if said == "added\n":
        assert sorted(map(str, outputs)) == sorted(map(str, [{"label": "late"}, *expected[0]]))
    else:
        assert said.startswith("refused:") and "did not open with the device key" in said
        assert (outputs, pending) == expected


# A child that rekeys and is SIGKILLed around the rename that puts the new file in place.
CRASH = """
import os, signal, sys
from fogline.security import DeviceKey
from fogline.store import rekey
path, old, new, when = sys.argv[1:]
real = os.replace
def crash(src, dst):
    if when == "after":
        real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = crash
rekey(path, old_key=DeviceKey.from_hex(old, "old"), new_key=DeviceKey.from_hex(new, "new"))
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_during_rekey_leaves_the_old_file_or_the_new_one(tmp_path: Path, when: str) -> None:
    # Prepare
    old, new = DeviceKey.generate(), DeviceKey.generate()
    path = filled(tmp_path / "results.db", old)
    expected = contents(path, old)

    # Execute: SIGKILL just before (or just after) the new file replaces the old one
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(path), old.hex(), new.hex(), when],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert child.returncode == -9, child.stderr

    # Assert: one whole store, readable with exactly one of the keys
    survivor, other = (old, new) if when == "before" else (new, old)
    assert contents(path, survivor) == expected
    with pytest.raises(WrongKey):
        ResultStore(path, key=other)
    # A rekey after the crash clears the copy it left and works
    rekey(path, old_key=survivor, new_key=other)
    assert contents(path, other) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
