"""The egress policy when a pipeline is checked: leaks refused by name, the fleet default, faces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.cli import main
from fogline.errors import KeyUnavailable, PolicyError
from fogline.pipeline import load_spec, plan
from fogline.security import FLEET_POLICY_ENV, FieldHasher, PrivacyPolicy
from fogline.store import Result
from support.digits_pipeline import digits_spec, write_spec
from support.echo_model import echo_model

FACE = Path(__file__).parent / "data" / "face.png"  # skimage.data.astronaut(), 128x128


def _echo(tmp_path: Path, name: str = "pipeline.yaml", **overrides: Any) -> Path:
    spec = {
        "name": "echo",
        "sources": [{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "count": 3}],
        "model": {"path": str(echo_model(tmp_path / "echo.onnx"))},
        "sinks": [
            {"type": "stdout"},
            {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "topic": "site/{source}"},
        ],
        "privacy": {"raw": "never"},
        **overrides,
    }
    return write_spec(tmp_path, spec, name)


def test_check_and_run_refuse_a_sink_that_would_send_a_raw_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _echo(tmp_path)

    checked = main(["check", str(path)])
    said_by_check = capsys.readouterr().err
    ran = main(["run", str(path), "--no-live"])
    said_by_run = capsys.readouterr().err

    expected = "error: sinks[1] (mqtt): sends raw input 'image' but privacy.raw is never"
    assert (checked, ran) == (2, 2)
    for said in (said_by_check, said_by_run):
        assert " ".join(said.split()).startswith(expected) and "Traceback" not in said
    assert not (tmp_path / "results.db").exists()  # run refused before it started


def test_a_local_sink_gets_everything_and_a_dropped_raw_field_passes_the_check(
    tmp_path: Path,
) -> None:
    path = _echo(tmp_path, privacy={"raw": "never", "fields": {"drop": ["image"]}})

    checked = plan(load_spec(path))
    checked.model.engine.close()

    assert checked.egress is not None and checked.egress.raw_fields == {"image"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"sinks": [{"type": "stdout"}],
             "outbox": {"transport": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883"}}},
            "outbox (mqtt): sends raw input 'image' but privacy.raw is never",
        ),
        (
            {"sinks": [{"type": "shell", "command": ["logger", "{position}"]}],
             "privacy": {"fields": {"allow": ["brightness"]}}},
            "sinks[0] (shell): its template uses 'position', which privacy.fields keeps",
        ),
        (
            {"privacy": {"fields": {"drop": ["imgae"]}}},
            "privacy.fields.drop: no result has 'imgae'",
        ),
        (
            {"sinks": [{"type": "stdout"}],
             "sources": [{"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "topic": "in",
                          "share": "cams", "shape": [1, 8, 8]}]},
            "sources[0] (mqtt, share: done messages): sends raw input 'image' but privacy.raw "
            "is never",
        ),
    ],
)  # fmt: skip
def test_each_way_out_is_checked(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        plan(load_spec(_echo(tmp_path, **overrides)))

    assert str(refused.value).startswith(message)


def test_an_offload_step_is_refused_when_raw_inputs_may_not_leave(tmp_path: Path) -> None:
    offload = {"type": "offload", "url": "http://127.0.0.1:9/v2/models/teacher", "sample": 0.1}
    spec = digits_spec(
        sources=[{"type": "synthetic", "shape": [1, 8, 8], "count": 1}],
        privacy={"raw": "captured-only"},
    )
    spec["postprocess"].append(offload)
    path = write_spec(tmp_path, spec)

    with pytest.raises(PolicyError) as refused:
        plan(load_spec(path))

    assert str(refused.value).startswith(
        "postprocess[1] (offload): sends items' model input to http://127.0.0.1:9/v2/models/"
        "teacher but privacy.raw is captured-only"
    )


def test_the_fleet_default_applies_and_a_pipeline_cannot_loosen_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = tmp_path / "fleet-policy.yaml"
    fleet.write_text("raw: never\nfields: {drop: [position]}\n")
    monkeypatch.setenv(FLEET_POLICY_ENV, str(fleet))
    silent = _echo(tmp_path, "a.yaml", sinks=[{"type": "stdout"}], privacy=None)
    loosens = _echo(tmp_path, "b.yaml", sinks=[{"type": "stdout"}], privacy={"raw": "allowed"})

    merged = plan(load_spec(silent))
    merged.model.engine.close()
    with pytest.raises(PolicyError) as refused:
        plan(load_spec(loosens))

    assert merged.egress is not None
    assert (merged.egress.policy.raw, merged.egress.policy.fields.drop) == ("never", ("position",))
    assert str(refused.value).startswith(
        "privacy.raw: 'allowed' is looser than the fleet default 'never'"
    )


def test_faces_are_found_and_blurred_until_none_is_found() -> None:
    from skimage.io import imread

    from fogline.pipeline._egress import Egress
    from fogline.pipeline._faces import FaceBlur

    image = imread(FACE)
    faces = FaceBlur()
    policy = PrivacyPolicy.model_validate({"raw": "allowed", "redact": ["faces"]})
    gate = Egress(policy, frozenset({"image"}), FieldHasher(None), faces)
    result = Result("cam", 0, 0.0, "m", "1", {"image": image.tolist(), "n": 1})

    found = faces.faces(image)
    out = np.asarray(gate.result(result).outputs["image"], dtype=np.uint8)
    as_floats, _ = faces.blur(image.astype(np.float32) / 255)  # a normalised copy, same face

    assert len(found) == 1  # the astronaut's face
    assert out.shape == image.shape and faces.faces(out) == []
    assert faces.faces(as_floats) == []
    assert np.array_equal(out[100:], image[100:])  # far from the face, nothing changed


def _store_with_a_face(
    tmp_path: Path, policy: dict[str, Any] | None, key: Any = None, record: bool = True
) -> Path:
    from skimage.io import imread

    from fogline.pipeline._egress import Egress, record_policy
    from fogline.store import Capture, ResultStore

    path = tmp_path / "results.db"
    image = imread(FACE).astype(np.float32) / 255  # as a model takes it: HWC, 0..1
    with ResultStore(path, key=key) as store:
        store.add_captures(
            [Capture.of(image, item_id="door#1", source="door", captured_at=1.0, model="m",
                        model_version="1", reason="score < 0.6", input_name="pixels",
                        answer={"label": "person"})]
        )  # fmt: skip
    gate = None if policy is None else Egress(PrivacyPolicy.model_validate(policy), frozenset(),
                                               FieldHasher(None))  # fmt: skip
    if record:
        record_policy(gate, path, "door")
    return path


def test_exported_captures_have_their_faces_blurred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fogline.pipeline._faces import FaceBlur

    store = _store_with_a_face(tmp_path, {"raw": "captured-only", "redact": ["faces"]})

    status = main(["capture", "export", str(store), "--out", str(tmp_path / "data.npz")])

    assert status == 0, capsys.readouterr().err
    assert "blurred 1 face(s)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["data.npz"]  # no unblurred copy
    with np.load(tmp_path / "data.npz") as data:
        assert FaceBlur().faces(data["pixels"][0]) == []


def test_captures_may_not_leave_when_raw_inputs_never_may(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store_with_a_face(tmp_path, {"raw": "never"})

    status = main(["capture", "export", str(store), "--out", str(tmp_path / "data.npz")])

    assert status == 2
    assert "its pipeline runs with privacy.raw never" in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.glob("*.npz"))


def test_the_private_digits_example_checks_under_its_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fogline.examples import digits_model_path
    from fogline.security import DeviceKey

    path = digits_model_path().parents[1] / "digits_private" / "pipeline.yaml"
    spec = load_spec(path)
    with pytest.raises(KeyUnavailable, match=r"store\.encrypt"):
        plan(spec)  # its store is encrypted: no key, no run

    monkeypatch.setenv("FOGLINE_DEVICE_KEY", DeviceKey.generate().hex())
    checked = plan(spec)
    checked.model.engine.close()

    assert checked.egress is not None
    assert checked.egress.policy.raw == "never" and checked.egress.faces is not None


def test_check_says_what_the_policy_covers_and_warns_of_an_unkeyed_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fogline.security import init_device_key

    for name in ("FOGLINE_DEVICE_KEY", "FOGLINE_DEVICE_KEY_FILE", "FOGLINE_DEVICE_KEY_COMMAND"):
        monkeypatch.delenv(name, raising=False)
    path = _echo(tmp_path, sinks=[{"type": "stdout"}],
                 privacy={"raw": "never", "fields": {"hash": ["item_id"]}})  # fmt: skip
    init_device_key(tmp_path / "device.key")

    unkeyed = main(["check", str(path)])
    said_unkeyed = " ".join(capsys.readouterr().out.split())
    keyed = main(["check", str(path), "--device-key", str(tmp_path / "device.key")])
    said_keyed = " ".join(capsys.readouterr().out.split())

    assert (unkeyed, keyed) == (0, 0)
    assert "hashed (SHA-256, no device key): item_id" in said_unkeyed
    assert "warning: privacy.fields.hash: item_id are hashed with plain SHA-256" in said_unkeyed
    assert "hashed (HMAC-SHA256, device key): item_id" in said_keyed
    assert "warning" not in said_keyed
    for said in (said_unkeyed, said_keyed):  # telemetry is listed, but has nothing to gate
        assert "covers: http, mqtt, outbox, shell, zmq;" in said
        assert "telemetry carries no result fields" in said


def test_an_encrypted_store_without_its_recorded_policy_exports_only_when_told_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fogline.security import DeviceKey

    key = DeviceKey.generate()
    monkeypatch.setenv("FOGLINE_DEVICE_KEY", key.hex())
    store = _store_with_a_face(tmp_path, None, key=key, record=False)  # copied without its policy
    out = tmp_path / "data.npz"
    never = _echo(tmp_path, "never.yaml", sinks=[{"type": "stdout"}])
    captured = _echo(tmp_path, "captured.yaml", sinks=[{"type": "stdout"}],
                     privacy={"raw": "captured-only"})  # fmt: skip

    unknown = main(["capture", "export", str(store), "--out", str(out)])
    said_unknown = " ".join(capsys.readouterr().err.split())
    refused = main(["capture", "export", str(store), "--out", str(out), "--pipeline", str(never)])
    said_refused = " ".join(capsys.readouterr().err.split())
    left_out = list(tmp_path.glob("*.npz"))
    allowed = main(
        ["capture", "export", str(store), "--out", str(out), "--pipeline", str(captured)]
    )

    assert (unknown, refused) == (2, 2) and left_out == []
    assert "no privacy policy is recorded for this encrypted store" in said_unknown
    assert "--pipeline PIPELINE.yaml" in said_unknown
    assert "its pipeline runs with privacy.raw never" in said_refused
    assert allowed == 0, capsys.readouterr().err
    assert out.exists()


def test_the_fleet_default_holds_for_a_store_without_its_recorded_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = tmp_path / "fleet-policy.yaml"
    fleet.write_text("raw: never\n")
    monkeypatch.setenv(FLEET_POLICY_ENV, str(fleet))
    store = _store_with_a_face(tmp_path, None, record=False)  # a plain store, policy file gone

    status = main(["capture", "export", str(store), "--out", str(tmp_path / "data.npz")])

    assert status == 2
    assert "its pipeline runs with privacy.raw never" in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.glob("*.npz"))
