"""Model variants switched by load: a real pipeline steps down under a burst and back, losing nothing.

The variants are two real ONNX models with the digits signature (``pixels``
[batch, 1, 8, 8] → ``logits`` [batch, 10]): ``heavy`` multiplies through a
stack of 1024-wide layers (a few milliseconds an item, so a burst really
queues), ``light`` is one small layer. The policy logic is also driven tick
by tick on a clock the test sets, for hysteresis and the file sensor.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import CollectorRegistry, generate_latest

from fogline.cli import main
from fogline.errors import ConfigError
from fogline.examples import digits_model_path
from fogline.model import VariantEngine, load_engine
from fogline.pipeline import Pipeline, PolicySpec, VariantSwitcher, load_spec, plan
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto


def _mlp(path: Path, widths: list[int], *, inputs: int = 64) -> Path:
    """A digits-shaped ONNX model: flatten [batch, 1, 8, 8], then dense layers to 10 logits."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Flatten", ["pixels"], ["h0"], axis=1)]
    weights = []
    sizes = [inputs, *widths, 10]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = numpy_helper.from_array(
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"
        )
        weights.append(w)
        out = "logits" if i == len(sizes) - 2 else f"h{i + 1}"
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [out]))
    side = int(np.sqrt(inputs))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _convolutions(path: Path, scale: int, channels: int) -> Path:
    """The same signature, but milliseconds an item: upscale ``scale`` times, two 3x3 convolutions."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name
        )

    nodes = [
        helper.make_node("Resize", ["pixels", "", "scales"], ["big"], mode="nearest"),
        helper.make_node("Conv", ["big", "c1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2"], ["h2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["h2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "head"], ["logits"]),
    ]
    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")
    graph = helper.make_graph(
        nodes,
        "convolutions",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            scales,
            weight("c1", channels, 1, 3, 3),
            weight("c2", channels, channels, 3, 3),
            weight("head", channels, 10),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("variants")
    return {
        # Heavy enough that the burst fills its queue, light enough that a starved CI core
        # still measures its capacity above twice the line's 60 items/s (the step back up).
        "heavy": _convolutions(folder / "heavy.onnx", 8, 32),
        "light": _mlp(folder / "light.onnx", [16]),
        "wide": _mlp(folder / "wide.onnx", [16], inputs=256),  # 16x16 input: another signature
    }


def _write(folder: Path, text: str) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


PIPELINE = """
name: burst
sources:
  - {{type: dataset, name: line, function: "fogline.examples:digits_stream", loop: true,
     rate: 60, max_items: 360}}
  - {{type: dataset, name: burst, function: "fogline.examples:digits_stream", loop: true,
     rate: 5000, max_items: 1500}}
preprocess: [{{type: normalize, scale: 0.0625}}, {{type: reshape, shape: [1, 8, 8]}}]
model:
  version: "3"
  variants: [{{name: heavy, path: {heavy}}}, {{name: light, path: {light}}}]
  policy: {{max_queue: 40, window_s: 1, down_after_s: 0.3, up_after_s: 1.0, margin: 0.5,
            interval_s: 0.05}}
  max_batch: 8
  threads: 1
postprocess: [{{type: classify}}]
store: {{path: results.db}}
"""


def test_a_burst_steps_down_and_the_calm_back_up_losing_nothing(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: the line at 60 items/s for 6 s, and a burst of 1,500 items at its start,
    # far more than the heavy variant takes (its queue fills), little for the light one.
    spec = load_spec(_write(tmp_path, PIPELINE.format(**{k: str(v) for k, v in models.items()})))
    checked = plan(spec)
    runner = Pipeline(checked)
    registry = CollectorRegistry()
    registry.register(runner.metrics.prometheus_collector("burst"))
    try:
        # Execute
        snapshot = runner.run()
        board = snapshot.extra["variants"]
        text = generate_latest(registry).decode()
    finally:
        runner.close()
        checked.model.engine.close()
    # Assert: down on the queue during the burst, back up once calm, and at most once each way
    # per phase: every switch came only after its condition held for the policy's time.
    switches = board.switches
    assert [(s.before, s.after) for s in switches][:1] == [("heavy", "light")], switches
    assert switches[0].signal == "queue" and switches[0].value > 40
    assert (switches[-1].before, switches[-1].after) == ("light", "heavy"), switches
    assert board.active == "heavy"
    assert "< heavy's" in switches[-1].why  # the line's load fits the heavy variant's capacity
    assert len(switches) % 2 == 0 and len(switches) <= 4, [s.describe() for s in switches]
    for earlier, later in itertools.pairwise(switches):
        assert later.at - earlier.at >= (0.3 if later.after == "light" else 1.0) - 0.05
    # Nothing dropped: every item read was processed and stored, under the variant that answered.
    produced, processed = snapshot.total("produced"), snapshot.total("processed")
    assert produced == processed == 360 + 1500
    assert sum(board.served.values()) == processed
    assert board.served["light"] > 0 and board.served["heavy"] > 0
    with sqlite3.connect(tmp_path / "results.db") as db:
        stored = dict(db.execute("SELECT model_version, count(*) FROM results GROUP BY 1"))
    assert stored == {"3+heavy": board.served["heavy"], "3+light": board.served["light"]}
    assert (
        f'fogline_variant_items_total{{pipeline="burst",variant="light"}} {board.served["light"]}.0'
        in text
    )
    assert 'fogline_variant_active{pipeline="burst",variant="heavy"} 1.0' in text
    assert f'fogline_variant_switches_total{{pipeline="burst"}} {len(switches)}.0' in text


def _engine() -> VariantEngine:
    return VariantEngine(
        [("fp32", load_engine(digits_model_path())), ("int8", load_engine(digits_model_path()))]
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ticks(
    switcher: VariantSwitcher, clock: Clock, seconds: float, step: float = 0.25
) -> list[Any]:
    made = []
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        if (switch := switcher.tick()) is not None:
            made.append(switch)
    return made


def test_a_queue_that_hovers_around_its_limit_does_not_flap() -> None:
    # Prepare: the queue crosses its limit every other tick, never for down_after_s in a row.
    engine = _engine()
    clock = Clock()
    policy = PolicySpec(max_queue=50, down_after_s=1.0, up_after_s=3.0, margin=0.7)
    switcher = VariantSwitcher(policy, engine, versions=("1+fp32", "1+int8"), clock=clock)
    depth = iter([60, 40] * 200)
    switcher.depth = lambda: next(depth)
    try:
        # Execute + Assert: no step down while it hovers; stepped down, no step up while it
        # hovers between limit x margin (35) and the limit.
        assert _ticks(switcher, clock, 20) == []
        level = [60]
        switcher.depth = lambda: level[0]
        assert [s.after for s in _ticks(switcher, clock, 1.5)] == ["int8"]
        hover = iter([45, 36, 49, 40] * 100)
        switcher.depth = lambda: next(hover)
        assert _ticks(switcher, clock, 20) == []
        level[0] = 10
        switcher.depth = lambda: level[0]
        ups = _ticks(switcher, clock, 3.5)
        assert [s.after for s in ups] == ["fp32"] and "queue 10 < 35" in ups[0].why
    finally:
        engine.close()


def test_a_step_up_that_is_soon_undone_doubles_the_wait_for_the_next() -> None:
    # Prepare: calm for long enough to step up, then the queue at once over its limit again,
    # as when the better variant cannot take the load the cheaper one coped with.
    engine = _engine()
    clock = Clock()
    policy = PolicySpec(max_queue=50, down_after_s=1.0, up_after_s=2.0, margin=0.5)
    switcher = VariantSwitcher(policy, engine, versions=("1+fp32", "1+int8"), clock=clock)
    level = [80]
    switcher.depth = lambda: level[0]
    try:
        assert [s.after for s in _ticks(switcher, clock, 1.5)] == ["int8"]
        waits = []
        for _ in range(5):  # Execute: calm until it steps up, then overloaded until it steps down
            level[0], calm_from = 0, clock.now
            ups = []
            while not ups:
                ups = _ticks(switcher, clock, 0.25)
            waits.append(round(clock.now - calm_from))
            level[0] = 80
            assert [s.after for s in _ticks(switcher, clock, 1.5)] == ["int8"]
        # Assert: 2, 4, 8, 16, 16 s (capped at 8 x up_after_s)
        assert waits == [2, 4, 8, 16, 16]
        level[0] = 0  # a step up that holds: the wait is back to up_after_s
        _ticks(switcher, clock, 17)
        assert engine.active == "fp32"
        _ticks(switcher, clock, 20)
        level[0] = 80
        assert [s.after for s in _ticks(switcher, clock, 1.5)] == ["int8"]
        level[0] = 0
        ups = _ticks(switcher, clock, 2.5)
        assert [s.after for s in ups] == ["fp32"] and "for 2 s" in ups[0].why
    finally:
        engine.close()


def test_a_battery_file_steps_down_a_malformed_value_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the battery level comes from a file a user's script writes (not there yet).
    engine = _engine()
    clock = Clock()
    battery = tmp_path / "battery"
    policy = PolicySpec.model_validate(
        {
            "min_battery_percent": 20,
            "sensors": {"battery": {"file": str(battery)}},
            "down_after_s": 1,
            "up_after_s": 2,
            "margin": 0.8,
        },
    )
    switcher = VariantSwitcher(policy, engine, versions=("1+fp32", "1+int8"), clock=clock)
    try:
        # Execute + Assert: no file yet is no reading; a low level steps down after 1 s.
        assert switcher.readings() == {"battery": None}
        battery.write_text("55\n")
        assert _ticks(switcher, clock, 3) == []
        battery.write_text('{"value": 12.5}')
        down = _ticks(switcher, clock, 1.5)
        assert [(s.after, s.signal, s.value) for s in down] == [("int8", "battery", 12.5)]
        assert "battery 12.5% < 20%" in down[0].why
        # A malformed value is logged once and ignored: it neither trips nor blocks a step.
        battery.write_text("full")
        with caplog.at_level("WARNING", logger="fogline.pipeline"):
            assert switcher.readings() == {"battery": None}
            switcher.readings()
        assert [r.getMessage() for r in caplog.records].count(
            f"variant policy: {battery}: ignored a malformed battery reading: "
            "Expecting value: line 1 column 1 (char 0)"
        ) == 1
        battery.write_text("24")  # above 20 but below 20 / 0.8 = 25: not calm enough
        assert _ticks(switcher, clock, 5) == []
        battery.write_text("80")
        assert [s.after for s in _ticks(switcher, clock, 2.5)] == ["fp32"]
    finally:
        switcher.stop()
        engine.close()


def test_an_mqtt_temperature_topic_is_read(mosquitto: Mosquitto) -> None:
    # Prepare: a board whose temperature psutil cannot read publishes it (retained) itself.
    engine = _engine()
    clock = Clock()
    policy = PolicySpec.model_validate(
        {
            "max_temperature_c": 70,
            "down_after_s": 0,
            "sensors": {"temperature": {"url": mosquitto.url, "topic": "board/temp"}},
        },
    )
    switcher = VariantSwitcher(policy, engine, versions=("1+a", "1+b"), clock=clock)
    publisher = MqttPublisher(mosquitto.url)
    try:
        publisher.publish(MqttMessage(Topic("board/temp"), b"81.5", retain=True))
        # Execute: read until the retained reading has arrived.
        deadline = time.monotonic() + 10
        while switcher.readings()["temperature"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # Assert
        switch = switcher.tick()
        assert (
            switch is not None
            and switch.describe() == "fp32 → int8: temperature 81.5 °C > 70 °C for 0 s"
        )
    finally:
        publisher.close()
        switcher.stop()
        engine.close()


BAD = [
    (
        "variants: [{path: M_light, name: a}, {path: M_wide, name: b}]\n  policy: {max_queue: 4}",
        "model.variants: variant 'b' has signature pixels float32 [batch, 1, 16, 16] -> logits "
        "float32 [batch, 10], but 'a' has pixels float32 [batch, 1, 8, 8] -> logits float32 "
        "[batch, 10]; every variant must take and give the same tensors",
    ),
    (
        "variants: [M_light, M_heavy]\n  policy: {max_queue: 4, sensors: {humidity: {file: h}}}",
        "model.policy.sensors: unknown sensor 'humidity'; sensors are cpu, temperature, battery "
        "(latency and queue depth are measured, not read)",
    ),
    (
        "variants: [M_light, M_heavy]\n  policy: {max_cpu_percent: 90, sensors: {battery: {file: b}}}",
        "model.policy: sensors.battery: no `min_battery_percent` to compare its reading with",
    ),
    (
        "variants: [M_light, M_heavy]\n  policy: {min_battery_percent: 20, "
        "sensors: {battery: {file: nowhere/battery}}}",
        "model.policy.sensors.battery.file: no folder TMP/nowhere for the sensor file "
        "(the file itself may appear later)",
    ),
    (
        "variants: [M_light, M_heavy]\n  policy: {window_s: 3}",
        "model.policy: a policy needs at least one limit: slo_p99_ms, max_queue, "
        "max_cpu_percent, max_temperature_c, min_battery_percent",
    ),
    (
        "variants: [M_light, M_light]\n  policy: {max_queue: 4}",
        "model: variants: two are named 'light'; give each a `name:`",
    ),
    (
        "variants: [M_light, M_heavy]",
        "model: `variants` need a `policy`: when to step down and back up",
    ),
    (
        "path: M_light\n  policy: {max_queue: 4}",
        "model: `policy` switches between `variants`; list them (best first)",
    ),
    (
        "variants: [M_light]\n  policy: {max_queue: 4}",
        "model.variants: List should have at least 2 items after validation, not 1",
    ),
]


@pytest.mark.parametrize(("model", "message"), BAD)
def test_bad_variants_and_policies_are_refused_at_check(
    models: dict[str, Path], tmp_path: Path, model: str, message: str
) -> None:
    for name, path in models.items():
        model = model.replace(f"M_{name}", str(path))
    text = (
        'sources: [{type: dataset, function: "fogline.examples:digits_stream"}]\n'
        "preprocess: [{type: normalize, scale: 0.0625}, {type: reshape, shape: [1, 8, 8]}]\n"
        f"model:\n  {model}\n"
    )
    with pytest.raises(ConfigError) as caught:
        plan(load_spec(_write(tmp_path, text)))
    assert str(caught.value).endswith(message.replace("TMP", str(tmp_path))), str(caught.value)


def test_a_sensor_psutil_cannot_read_is_refused_with_what_to_use(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        'sources: [{type: dataset, function: "fogline.examples:digits_stream"}]\n'
        "preprocess: [{type: normalize, scale: 0.0625}, {type: reshape, shape: [1, 8, 8]}]\n"
        f"model:\n  variants: [{models['light']}, {models['heavy']}]\n"
        "  policy: {min_battery_percent: 15}\n"
    )
    status = main(["check", str(_write(tmp_path, text))])
    shown = capsys.readouterr()
    output = " ".join((shown.out + shown.err).split())
    if psutil.sensors_battery() is not None:  # a device with a battery reads it itself
        assert status == 0, output
        return
    assert status == 2 and "Traceback" not in output
    assert (
        "model.policy.min_battery_percent: psutil cannot read the battery on this device; give "
        "`sensors: {battery: {file: PATH}}`"
    ) in output
    (tmp_path / "battery").write_text("90")  # with the file instead, check passes
    text = text.replace(
        "{min_battery_percent: 15}",
        "{min_battery_percent: 15, sensors: {battery: {file: battery}}}",
    )
    status = main(["check", str(_write(tmp_path, text))])
    shown = capsys.readouterr()
    assert status == 0, shown.err
    assert "variants     light → heavy (all loaded), down when battery < 15% for 2 s" in shown.out
