"""``fogline fleet deploy`` and ``fleet rollout status`` as processes, against a real controller.

The controller, broker and simulated devices are the ones of
``tests/fleet/controller/test_controller.py`` (``support.fleet_controller``: a real
Mosquitto, real TUF installs).
"""

from __future__ import annotations

from pathlib import Path

from support.fleet_controller import Setup, wait_for
from support.fleet_controller import run_cli as fogline


def test_deploy_status_and_watch_show_the_current_rollout_and_its_criteria(setup: Setup) -> None:
    setup.devices(2)
    # What the walkthrough does before its first deploy: wait for the agents to come online.
    too_many = fogline(setup, "fleet", "devices", "--wait", "3", "--wait-timeout", "2")
    assert too_many.returncode == 2 and "of the 3 devices waited for are online" in too_many.stderr
    waited = fogline(setup, "fleet", "devices", "--wait", "2")
    assert waited.returncode == 0, waited.stderr
    assert "sim-0" in waited.stdout and "sim-1" in waited.stdout

    # An explicit opt-out of the telemetry requirement, and status saying so.
    made = fogline(setup, "fleet", "deploy", "tiny", "1.0.0", "--strategy", "all", "--bake", "0",
                   "--no-require-telemetry")  # fmt: skip
    assert made.returncode == 0, made.stderr
    first = made.stdout.split()[0]
    assert setup.finished(first)["criteria"]["require_telemetry"] is False
    shown = fogline(setup, "fleet", "rollout", "status")
    assert shown.returncode == 0, shown.stderr
    assert f"{first} tiny 1.0.0 → default: succeeded" in shown.stdout
    assert "criteria: error rate ≤ 5.0%; no telemetry required; bake 0 s" in shown.stdout

    # The default: telemetry from every device covering the bake; --watch redraws until it ends.
    made = fogline(setup, "fleet", "deploy", "tiny", "1.1.0", "--canary", "1", "--bake", "2")
    assert made.returncode == 0, made.stderr
    second = made.stdout.split()[0]
    watched = fogline(setup, "fleet", "rollout", "status", second, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert f"{second} tiny 1.1.0 → default: succeeded, wave 2 of 2" in watched.stdout
    assert watched.stdout.count(second) == 1, watched.stdout  # drawn in place, not reprinted
    assert "criteria: error rate ≤ 5.0%; telemetry from every device covering the bake" in (
        watched.stdout
    )

    # Without an id: the latest (none is running), not the whole history; --all has both.
    latest = fogline(setup, "fleet", "rollout", "status")
    assert second in latest.stdout and first not in latest.stdout
    history = fogline(setup, "fleet", "rollout", "status", "--all")
    assert history.stdout.index(first) < history.stdout.index(second)


def test_a_damaged_release_is_listed_as_such_and_not_deployed(setup: Setup) -> None:
    setup.devices(1)
    wait_for("1 device", lambda: len(setup.api.get("/api/devices").json()) == 1)
    document = setup.repo.targets_dir / "releases" / "tiny" / "1.1.0.json"
    blob = next(
        setup.repo.targets_dir / path
        for path in (f["blob_path"] for f in _files(document))
        if path.startswith("blobs/")
    )
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # a bit flipped on the controller's disk
    blob.chmod(0o644)
    blob.write_bytes(bytes(damaged))

    refused = fogline(setup, "fleet", "deploy", "tiny", "1.1.0", "--canary", "1")
    assert refused.returncode == 2, refused.stdout
    assert "release tiny 1.1.0 is damaged on the controller" in refused.stderr
    assert "model.onnx hash differs" in refused.stderr and "Traceback" not in refused.stderr
    listed = fogline(setup, "fleet", "releases")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "1.1.0" in line)
    assert "damaged: model.onnx hash differs" in row
    intact = next(line for line in listed.stdout.splitlines() if "1.0.0" in line)
    assert "ok" in intact and "damaged" not in intact


def _files(document: Path) -> list[dict[str, str]]:
    """The files a signed release document names, with the blob each is stored as."""
    import json

    body = json.loads(document.read_bytes())
    files = body.get("files") or body.get("signed", {}).get("files")
    return [{**f, "blob_path": f"blobs/{f['sha256']}"} for f in files]
