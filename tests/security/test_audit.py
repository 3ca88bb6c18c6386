"""The audit log: each kind of damage is found and located; checkpoints are signed and checked.

Every test writes a real log with :class:`AuditLog` (fsynced, signed with a
real Ed25519 key), damages its bytes as someone with the file would, and
runs the same verifier ``fogline audit verify`` runs.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from fogline.cli import main
from fogline.security import (
    SENT_CHECKPOINT,
    AuditLog,
    AuditSigner,
    Checkpoint,
    keep_sent_checkpoint,
    line_hash,
    load_public_key,
    verify_log,
)


def written(folder: Path, events: int = 10, every: int | None = None) -> AuditLog:
    log = AuditLog.signed(folder / "audit.jsonl", checkpoint_every=every)
    for n in range(events):
        log.record("release.installed", release="digits", version=f"1.{n}")
    return log


def lines_of(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def edit_value(lines: list[bytes]) -> list[bytes]:
    """Line 4's version changed; its hash left as it was."""
    lines[3] = lines[3].replace(b'"1.3"', b'"9.9"')
    return lines


def edit_and_rehash(lines: list[bytes]) -> list[bytes]:
    """Line 4 changed and its hash made again: the next line's prev gives it away."""
    entry = json.loads(lines[3])
    entry["fields"]["version"] = "9.9"
    entry["hash"] = line_hash(entry)
    lines[3] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return lines


def delete_one(lines: list[bytes]) -> list[bytes]:
    del lines[4]
    return lines


def delete_two(lines: list[bytes]) -> list[bytes]:
    del lines[4:6]
    return lines


def swap(lines: list[bytes]) -> list[bytes]:
    lines[3], lines[4] = lines[4], lines[3]
    return lines


def move_later(lines: list[bytes]) -> list[bytes]:
    moved = lines.pop(2)
    lines.insert(6, moved)
    return lines


def cut_start(lines: list[bytes]) -> list[bytes]:
    return lines[3:]


def torn_end(lines: list[bytes]) -> list[bytes]:
    lines[-1] = lines[-1][:40]
    return lines


def garbage_line(lines: list[bytes]) -> list[bytes]:
    lines.insert(5, b"rm -rf /\n")
    return lines


# (damage, the line reported, its seq, kind, a fragment of the message)
CASES: list[tuple[Callable[[list[bytes]], list[bytes]], int, int | None, str, str]] = [
    (edit_value, 4, 4, "edited", "does not match its own hash"),
    (edit_and_rehash, 4, 4, "edited", "line 5's prev does not match"),
    (delete_one, 5, 6, "deleted", "seq 5 is missing"),
    (delete_two, 5, 7, "deleted", "seq 5 to 6 are missing"),
    (swap, 5, 4, "reordered", "seq 4 belongs before line 4"),
    (move_later, 7, 3, "reordered", "seq 3 belongs before line 3"),
    (cut_start, 1, 4, "truncated", "starts at seq 4: seq 1 to 3 cut"),
    (torn_end, 10, None, "malformed", "a write cut short"),
    (garbage_line, 6, None, "malformed", "not an audit entry"),
]


@pytest.mark.parametrize(
    ("damage", "line", "seq", "kind", "fragment"), CASES, ids=[c[0].__name__ for c in CASES]
)
def test_each_kind_of_damage_is_found_where_it_is(
    tmp_path: Path,
    damage: Callable[[list[bytes]], list[bytes]],
    line: int,
    seq: int | None,
    kind: str,
    fragment: str,
) -> None:
    log = written(tmp_path)
    assert verify_log(log.path).intact
    log.path.write_bytes(b"".join(damage(lines_of(log))))

    report = verify_log(log.path)

    assert not report.intact
    first = report.damages[0]
    assert (first.line, first.seq, first.kind) == (line, seq, kind), report.damages
    assert fragment in first.message, first.message
    assert len(report.damages) == 1, report.damages  # one damage, one report: no noise after it


def test_a_log_cut_at_its_end_is_found_against_a_checkpoint_kept_elsewhere(
    tmp_path: Path,
) -> None:
    log = written(tmp_path, events=8)
    sent = log.checkpoint()  # what telemetry carried to the controller (seq 8)
    assert sent is not None and sent.seq == 8
    log.path.write_bytes(b"".join(lines_of(log)[:5]))  # the last events and the checkpoint gone

    alone = verify_log(log.path)
    against = verify_log(log.path, external=sent)

    assert alone.intact  # the chain alone cannot show a cut at the end
    (damage,) = against.damages
    assert damage.kind == "truncated" and damage.line == 6
    assert "ends at seq 5" in damage.message and "covers seq 8" in damage.message


def test_a_log_rewritten_with_a_fresh_chain_is_found_by_its_checkpoints(tmp_path: Path) -> None:
    log = written(tmp_path, events=6)
    sent = log.checkpoint()
    assert sent is not None
    # Someone with the file (not the key) writes a new history from scratch, chain and all.
    forged = AuditLog(tmp_path / "forged.jsonl")
    for n in range(6):
        forged.record("release.installed", release="digits", version=f"6.{n}")

    report = verify_log(forged.path, external=sent)

    (damage,) = report.damages
    assert (damage.line, damage.seq, damage.kind) == (6, 6, "forged")
    assert "rewritten" in damage.message


def test_a_forged_checkpoint_signature_is_found(tmp_path: Path) -> None:
    log = written(tmp_path, events=4)
    log.checkpoint()
    lines = lines_of(log)
    entry = json.loads(lines[-1])
    signature = bytearray.fromhex(entry["fields"]["signature"])
    signature[0] ^= 1
    entry["fields"]["signature"] = signature.hex()
    entry["hash"] = line_hash(entry)  # the chain kept whole: only the signature is wrong
    lines[-1] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))

    (damage,) = verify_log(log.path).damages

    assert (damage.line, damage.seq, damage.kind) == (5, 5, "forged")
    assert "does not match" in damage.message


def test_a_checkpoint_by_another_key_is_refused_when_a_key_is_trusted(tmp_path: Path) -> None:
    log = written(tmp_path, events=3)
    log.checkpoint()
    other = AuditSigner(tmp_path / "other" / "audit.key")

    assert verify_log(log.path, trusted=load_public_key(log.signer.public_file)).intact  # type: ignore[union-attr]
    (damage,) = verify_log(log.path, trusted=other.public_key()).damages

    assert damage.kind == "forged" and "not by the trusted key" in damage.message


def test_checkpoints_every_n_and_on_demand_and_the_key_file_is_private(tmp_path: Path) -> None:
    log = written(tmp_path, events=10, every=4)
    again = log.checkpoint()
    same = log.checkpoint()  # nothing new since: the same checkpoint, no new line

    report = verify_log(log.path)

    assert report.intact and report.events == 10
    assert report.checkpoints == 3 and again == same == report.last_checkpoint
    assert again is not None and again.seq == report.last_seq - 1
    assert stat.S_IMODE(log.signer.key_file.stat().st_mode) == 0o600  # type: ignore[union-attr]
    assert Checkpoint.from_dict(json.loads(json.dumps(again.as_dict()))) == again


def test_the_cli_prints_intact_or_exits_2_with_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = written(tmp_path, events=5, every=3)
    kept = tmp_path / "kept.json"
    point = log.checkpoint()
    assert point is not None
    kept.write_text(json.dumps(point.as_dict()))

    assert main(["audit", "verify", str(log.path), "--checkpoint", str(kept)]) == 0
    out = capsys.readouterr().out
    assert "intact: 5 events, last checkpoint seq 6 signed by ed25519:" in out

    log.path.write_bytes(b"".join(delete_one(lines_of(log))))
    assert main(["audit", "verify", str(log.path)]) == 2
    err = capsys.readouterr().err
    assert "line 5 (seq 6): deleted: seq 5 is missing before this line" in err

    assert main(["audit", "show", str(log.path), "--event", "audit.checkpoint"]) == 0
    assert "audit.checkpoint" in capsys.readouterr().out
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such audit log" in capsys.readouterr().err


def test_a_write_cut_short_is_stepped_over_and_shown_where_it_is(tmp_path: Path) -> None:
    log = written(tmp_path, events=3)
    with open(log.path, "ab") as fh:
        fh.write(b'{"event":"release.installed","fields":{"rel')  # power lost mid-write

    after = log.record("release.refused", release="digits", version="2.0")
    point = log.checkpoint()

    assert after["seq"] == 4 and point is not None and point.seq == 4
    (damage,) = verify_log(log.path).damages
    assert (damage.line, damage.kind) == (4, "malformed")
    assert len(lines_of(log)) == 6  # the fragment kept on a line of its own, as evidence


def test_a_tail_cut_is_never_called_intact_and_strict_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: 7 events with a checkpoint after every 3 lines, then the last line dropped
    log = written(tmp_path, events=7, every=3)
    log.path.write_bytes(b"".join(lines_of(log)[:-1]))  # `head -n -1`: the last checkpoint

    # Execute / Assert: the chain is whole, but the end is said to be unproven, and where
    assert main(["audit", "verify", str(log.path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "intact:" not in out and "chain intact, end not vouched for: 7 events" in out
    assert "2 events after seq 6, the last one a signed checkpoint vouches for" in out
    assert "--checkpoint FILE" in out and "--device DEV --controller URL" in out
    assert main(["audit", "verify", str(log.path), "--strict"]) == 1
    report = verify_log(log.path)
    assert (report.vouched_seq, report.unvouched) == (6, 2)


def test_a_device_log_is_checked_against_the_agent_s_copy_of_its_last_sent_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: an agent's data folder whose last sent checkpoint (seq 9) has a copy kept
    log = written(tmp_path, events=7, every=3)  # checkpoints vouch for seq 3, 6 and 9
    sent = log.checkpoint()
    assert sent is not None and sent.seq == 9
    copy = tmp_path / SENT_CHECKPOINT
    assert keep_sent_checkpoint(copy, sent)
    whole = lines_of(log)

    # Execute: cut back to the earlier checkpoint: the log ends on a valid one and looks whole
    log.path.write_bytes(b"".join(whole[:7]))

    # Assert: the copy finds the cut with no option given; the earlier one never replaces it
    assert main(["audit", "verify", str(log.path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "truncated: the log ends at seq 7" in err and "covers seq 9" in err
    earlier = Checkpoint.from_dict(json.loads(whole[6])["fields"])
    assert earlier.seq == 6 and not keep_sent_checkpoint(copy, earlier)
    assert json.loads(copy.read_text())["seq"] == 9
    log.path.write_bytes(b"".join(whole))
    assert main(["audit", "verify", str(log.path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "intact: 7 events" in out and "the last checkpoint the agent sent" in out
