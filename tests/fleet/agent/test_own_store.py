"""The agent's own store encrypted with the device key (``--encrypt-store``), and a pipeline's it reads."""

from __future__ import annotations

import json
from pathlib import Path

from fogline.fleet.agent._own_store import key_for, open_own_store
from fogline.security import AuditLog, DeviceKey
from fogline.store import ResultStore, is_encrypted


def test_a_plain_telemetry_store_is_encrypted_in_place_and_keeps_its_outbox(tmp_path: Path) -> None:
    # Prepare: telemetry queued by an agent that did not encrypt
    path, key = tmp_path / "telemetry.db", DeviceKey.generate()
    audit = AuditLog(tmp_path / "audit.jsonl")
    with ResultStore(path) as plain:
        plain.queue([("fleet/cam-1/telemetry", b'{"sequence":0}')])

    # Execute: the next start asks for encryption
    with open_own_store(path, key=key, encrypt=True, audit=audit) as store:
        pending = store.pending()

    # Assert: the same message, now in an encrypted file; the change is audited
    assert [m.payload for m in pending] == [b'{"sequence":0}']
    assert is_encrypted(path) and b"sequence" not in path.read_bytes()
    (event,) = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert event["event"] == "store.rekeyed" and event["fields"]["new_key"] == key.fingerprint()

    # Execute / Assert: an encrypted file opens with the key even when not asked to encrypt
    with open_own_store(path, key=key, encrypt=False, audit=audit) as store:
        assert store.stats().pending == 1


def test_a_pipeline_store_is_opened_with_the_key_only_when_encrypted(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    ResultStore(tmp_path / "plain.db").close()
    ResultStore(tmp_path / "encrypted.db", key=key).close()
    assert key_for(tmp_path / "plain.db", key) is None
    assert key_for(tmp_path / "encrypted.db", key) == key
    assert key_for(tmp_path / "encrypted.db", None) is None  # then the store says what is missing
