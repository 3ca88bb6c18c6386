"""The agent's side of the fleet policy: written once per change, audited, pipelines restarted."""

from __future__ import annotations

import json
from pathlib import Path

from fogline.fleet.agent._privacy import DevicePrivacy
from fogline.protocol import FleetPrivacy
from fogline.security import FLEET_POLICY_ENV, read_policy


def test_a_new_policy_is_written_audited_and_restarts_the_pipelines_once(tmp_path: Path) -> None:
    restarts: list[int] = []
    privacy = DevicePrivacy(tmp_path, restart=lambda: restarts.append(1))
    never = FleetPrivacy(policy={"raw": "never"}).model_dump_json().encode()

    privacy.on_message(never)
    privacy.on_message(never)  # the retained message again, on a reconnect
    privacy.on_message(b'{"policy": {"raw": "sometimes"}}')  # malformed: the last good one stays
    privacy.on_message(b"")  # the retained message cleared: no fleet default any more

    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["fields"]["policy"] and e["fields"]["policy"]["raw"] for e in events] == [
        "never",
        None,
    ]
    assert len(restarts) == 2
    assert privacy.path.read_text() == "null"
    assert privacy.env() == {FLEET_POLICY_ENV: str(privacy.path)}


def test_the_file_it_writes_is_what_a_pipeline_reads(tmp_path: Path) -> None:
    privacy = DevicePrivacy(tmp_path, restart=lambda: None)

    privacy.on_message(FleetPrivacy(policy={"redact": ["faces"]}).model_dump_json().encode())

    assert read_policy(privacy.path).redact == ("faces",)


def test_no_fleet_default_means_no_policy_for_the_pipelines(
    tmp_path: Path, monkeypatch: object
) -> None:
    from fogline.security import fleet_policy_from_env

    privacy = DevicePrivacy(tmp_path, restart=lambda: None)
    monkeypatch.setenv(FLEET_POLICY_ENV, str(privacy.path))  # type: ignore[attr-defined]

    assert fleet_policy_from_env() is None
