"""The dashboard's Learning pages in a real headless Chromium, over a real controller's federated runs.

A real :class:`~fogline.fleet.controller.Controller` runs with a real
Mosquitto (``support.fleet_controller.Setup``); three devices of group
``lab`` are online in its registry. Runs are started through its HTTP API
(``POST /api/fl/runs``, what ``fogline fl start`` sends) and their rounds are
played here the way a device would: each sampled device trains the round's
model on its own part of the digits task and hands its update frames to the
controller (``controller.learning.submit``, where its MQTT handler puts
``fl-update`` messages). The coordinator does the rest for real: it
aggregates, evaluates, gates in ONNX Runtime, signs the release and deploys
the canary. The browser and the pages' fixtures are those of
``test_dashboard``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page, expect

import fleet.controller.test_dashboard as dashboard
from fogline.federated import SplitSpec, decode_weights, encode_update, load_task, split_clients
from fogline.fleet.controller._registry import Inbox
from fogline.protocol import Presence, UpdateChunk, encode_frame
from support.fleet_controller import Setup, wait_for

TASK = "fogline.examples:digits_task"
DEVICES = ("edge-0", "edge-1", "edge-2")
GROUP = "lab"

# The dashboard tests' browser, pages (failing on a script error) and screenshots (failing on
# stray "null" or "NaN" text).
browser = dashboard.browser
page = dashboard.page
shots = dashboard.shots
screenshot = dashboard.screenshot


@dataclass
class Runs:
    """The runs the pages show: two finished ones and one in its second round."""

    canary: dict[str, Any]  # finished, no release before it, deployed as a canary
    second: dict[str, Any]  # finished, gated against the canary's release
    active: dict[str, Any]  # differential privacy, round 2 open with three different answers


class Devices:
    """The lab's devices as the controller sees them: they train what a round hands them."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.learning = setup.controller.learning
        self.task = load_task(TASK)
        parts = split_clients(self.task.train, len(DEVICES), SplitSpec("iid"), seed=0)
        self.shards = dict(zip(DEVICES, parts, strict=True))

    def round(self, run_id: str, number: int) -> dict[str, Any]:
        """The round as the coordinator stored it: sampled devices, the model it sent them."""
        store = self.learning.coordinator().store
        wait_for(f"round {number} of {run_id}", lambda: store.round(run_id, number) is not None)
        found = store.round(run_id, number)
        assert found is not None
        return found

    def train(self, device: str, run_id: str, round_: dict[str, Any]) -> list[bytes]:
        """What ``device`` sends for the round: its change, trained here, in chunks."""
        model: bytes = round_["model"]
        weights = decode_weights(model)
        started = time.perf_counter()
        trainer = self.task.trainer(1)
        update = trainer.fit(
            device, weights, self.shards[device], {"epochs": 1.0}, np.random.default_rng(0)
        )
        loss = trainer.evaluate(update.weights, self.shards[device]).loss
        blob = encode_update(update.weights, weights)
        pieces = [blob[i : i + 600] for i in range(0, len(blob), 600)]
        header = UpdateChunk(
            device_id=device, run=run_id, round=round_["round"], total=len(pieces),
            size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
            num_examples=update.num_examples, loss=loss,
            train_seconds=time.perf_counter() - started, bytes_down=len(model),
        )  # fmt: skip
        return [
            encode_frame(header.model_copy(update={"index": i}), piece)
            for i, piece in enumerate(pieces)
        ]

    def nan(self, device: str, run_id: str, round_: dict[str, Any]) -> list[bytes]:
        """A broken device's update: NaN in every coordinate."""
        weights = decode_weights(round_["model"])
        blob = encode_update(weights.like(np.full(weights.size, np.nan)), weights)
        header = UpdateChunk(
            device_id=device, run=run_id, round=round_["round"], size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(), num_examples=10,
        )  # fmt: skip
        return [encode_frame(header, blob)]

    def send(self, device: str, frames: list[bytes]) -> None:
        for frame in frames:
            self.learning.submit(device, frame)

    def play(self, run_id: str, number: int) -> None:
        """Every sampled device of the round answers with a real update."""
        round_ = self.round(run_id, number)
        for device in round_["sampled"]:
            self.send(device, self.train(device, run_id, round_))

    def start(self, **spec: Any) -> dict[str, Any]:
        made = self.setup.api.post("/api/fl/runs", json={"task": TASK, "group": GROUP, **spec})
        assert made.status_code == 201, made.text
        return dict(made.json())

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self.setup.api.get(f"/api/fl/runs/{run_id}").json())

    def ended(self, run_id: str) -> dict[str, Any]:
        wait_for(f"run {run_id} to end", lambda: self.get(run_id)["status"] not in
                 ("running", "stopping", "finishing"))  # fmt: skip
        return self.get(run_id)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    made = Setup(tmp_path_factory.mktemp("learning"))
    try:
        registry = made.controller.registry
        for device in DEVICES:
            registry.set_group(device, GROUP)
        registry.ingest(Inbox(presence=[(d, Presence(online=True)) for d in DEVICES]))
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def devices(setup: Setup) -> Devices:
    return Devices(setup)


@pytest.fixture(scope="module")
def runs(devices: Devices) -> Runs:
    canary = devices.start(
        release="digits-fl", rounds=2, min_clients=3, seed=0, then="canary", canary_bake=600
    )
    for number in (1, 2):
        devices.play(canary["id"], number)
    canary = devices.ended(canary["id"])
    assert canary["status"] == "finished", canary
    # one round only: worse than the first, let through by a gate loosened on purpose
    second = devices.start(release="digits-fl", rounds=1, min_clients=3, seed=0, max_drop=1.0)
    devices.play(second["id"], 1)
    second = devices.ended(second["id"])
    assert second["status"] == "finished", second

    active = devices.start(
        release="digits-dp", rounds=3, min_clients=2, seed=0, deadline=600,
        dp_noise=0.3, dp_clip=1.0,
    )  # fmt: skip
    devices.play(active["id"], 1)
    round2 = devices.round(active["id"], 2)
    devices.send("edge-0", devices.train("edge-0", active["id"], round2))
    devices.send("edge-1", devices.nan("edge-1", active["id"], round2))
    wait_for(
        "two answers in round 2", lambda: len(devices.get(active["id"])["current"]["updates"]) == 2
    )
    return Runs(canary, second, devices.get(active["id"]))


def open_page(page: Page, setup: Setup, hash_: str) -> None:
    page.goto(f"{setup.controller.base_url}/?token={setup.controller.token}{hash_}")


def shown(accuracy: float) -> str:
    """An accuracy as the page writes it (JavaScript's toFixed rounds a tie up)."""
    value = Decimal(accuracy * 100)
    places = Decimal("1") if value >= 100 else Decimal("0.1")
    return f"{value.quantize(places, ROUND_HALF_UP).normalize():f}%"


# -- the tests (the first one sees the controller before any run) ------------------------------


def test_without_runs_the_learning_page_says_how_to_start_one(
    page: Page, setup: Setup, shots: Path
) -> None:
    assert setup.api.get("/api/fl/runs").json() == []
    open_page(page, setup, "#/")

    page.click("nav.nav >> text=Learning")

    expect(page).to_have_url(f"{setup.controller.base_url}/#/learning")
    expect(page.locator("nav.nav a.active")).to_have_text("Learning")
    expect(page.locator("#runs")).to_contain_text("No federated runs yet.")
    expect(page.locator("#runs code")).to_have_text(
        "fogline fl start --task fogline.examples:digits_task --release NAME --group G"
    )
    screenshot(page, shots, "learning-empty")
    page.goto(f"{setup.controller.base_url}/#/learning/fl-nope")
    expect(page.locator("main")).to_contain_text("No federated run fl-nope.")
    screenshot(page, shots, "learning-no-such-run")


def test_an_api_without_federated_learning_says_so(page: Page, tmp_path: Path) -> None:
    with dashboard.serve_registry(tmp_path) as (url, _):
        page.goto(f"{url}/?token={dashboard.TOKEN}#/learning")

        empty = page.locator("#runs .empty")
        expect(empty.locator("strong")).to_have_text(
            "Federated learning is not available on this controller."
        )
        expect(empty.locator("p")).to_have_text(
            "GET /api/fl/runs answered 404: this controller runs no federated learning."
        )


def test_the_learning_page_lists_each_run_with_its_progress(
    page: Page, setup: Setup, runs: Runs, shots: Path
) -> None:
    open_page(page, setup, "#/learning")

    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-run", runs.active["id"])  # the newest first
    canary = page.locator(f'tr[data-run="{runs.canary["id"]}"]')
    expect(canary.locator(".run-status .badge")).to_have_text("finished")
    expect(canary.locator(".run-round")).to_have_text("2 / 2")
    expect(canary).to_contain_text("fedavg")
    expect(canary).to_contain_text("digits-fl 1.0.0")
    expect(canary.locator(".run-accuracy")).to_have_text(
        shown(runs.canary["rounds"][-1]["accuracy"])
    )
    expect(canary.locator(".run-epsilon")).to_have_text("—")
    expect(page.locator(f'tr[data-run="{runs.second["id"]}"]')).to_contain_text("digits-fl 1.1.0")
    active = page.locator(f'tr[data-run="{runs.active["id"]}"]')
    expect(active.locator(".run-status .badge")).to_have_text("running")
    expect(active.locator(".run-round")).to_have_text("2 / 3")
    expect(active).to_contain_text("DP")
    epsilon = runs.active["rounds"][0]["epsilon"]
    assert epsilon is not None and epsilon > 0
    expect(active.locator(".run-epsilon")).not_to_have_text("—")
    screenshot(page, shots, "learning")

    page.click('.tabs a[href="#/learning?status=active"]')
    expect(rows).to_have_count(1)
    rows.first.locator("td").nth(2).click()  # a row is a link to its run
    expect(page).to_have_url(f"{setup.controller.base_url}/#/learning/{runs.active['id']}")


def test_a_finished_run_shows_its_rounds_gate_release_and_canary(
    page: Page, setup: Setup, runs: Runs, shots: Path
) -> None:
    open_page(page, setup, f"#/learning/{runs.canary['id']}")

    expect(page.locator("#run-head h1 .badge")).to_have_text("finished")
    rows = page.locator("#run-rounds tbody tr")
    expect(rows).to_have_count(2)
    for number in (1, 2):
        row = page.locator(f'#run-rounds tr[data-round="{number}"]')
        expect(row.locator(".badge")).to_have_text("closed")
        expect(row.locator("td").nth(2)).to_have_text("3 of 3")
    accuracy = page.locator('#run-charts [data-chart="accuracy"] [data-series="accuracy"] circle')
    expect(accuracy).to_have_count(2)
    last = runs.canary["rounds"][-1]["accuracy"]
    expect(accuracy.nth(1).locator("title")).to_have_text(f"accuracy: {shown(last)} in round 2")
    for chart in ("loss", "bytes", "devices"):
        expect(page.locator(f'#run-charts [data-chart="{chart}"] circle').first).to_be_attached()
    expect(page.locator('#run-charts [data-chart="epsilon"]')).to_have_count(0)  # no DP
    gate = runs.canary["result"]["gate"]
    expect(page.locator("#run-gate")).to_contain_text(
        f"Gate passed: validation accuracy {shown(gate['accuracy'])}; "
        "no earlier digits-fl release to compare with"
    )
    expect(page.locator("#run-release")).to_contain_text("Signed release digits-fl 1.0.0")
    deployment = runs.canary["result"]["deployment"]
    expect(page.locator("#run-deployment a")).to_have_text(deployment)
    screenshot(page, shots, "learning-run-canary")

    page.click("#run-deployment a")

    expect(page).to_have_url(f"{setup.controller.base_url}/#/deployments/{deployment}")
    expect(page.locator("#deployment")).to_contain_text("digits-fl 1.0.0")


def test_a_run_gated_against_an_earlier_release_shows_both_accuracies(
    page: Page, setup: Setup, runs: Runs, shots: Path
) -> None:
    open_page(page, setup, f"#/learning/{runs.second['id']}")

    gate = runs.second["result"]["gate"]
    assert gate["baseline_version"] == "1.0.0"
    expect(page.locator("#run-gate")).to_contain_text(
        f"Gate passed: validation accuracy {shown(gate['accuracy'])} against "
        f"digits-fl 1.0.0's {shown(gate['baseline'])}"
    )
    expect(page.locator("#run-release")).to_contain_text("digits-fl 1.1.0")
    expect(page.locator("#run-deployment")).to_have_count(0)  # no --then canary
    baseline = page.locator('#run-charts [data-chart="accuracy"] [data-series="digits-fl 1.0.0"]')
    expect(baseline.locator("path")).to_have_count(1)
    expect(page.locator('#run-charts [data-chart="accuracy"] .legend')).to_contain_text(
        "digits-fl 1.0.0"
    )
    screenshot(page, shots, "learning-run-gated")


def test_an_active_run_shows_its_open_round_and_refreshes_itself(
    page: Page, setup: Setup, runs: Runs, devices: Devices, shots: Path
) -> None:
    run_id = runs.active["id"]
    open_page(page, setup, f"#/learning/{run_id}")

    expect(page.locator("#run-head h1 .badge")).to_have_text("running")
    current = page.locator("#current-round")
    expect(current.locator("h2")).to_contain_text("Open round 2")
    expect(current.locator('tr[data-device="edge-0"] .update-status')).to_have_text("accepted")
    refused = current.locator('tr[data-device="edge-1"]')
    expect(refused.locator(".update-status")).to_have_text("refused")
    expect(refused).to_contain_text("NaN")
    expect(current.locator('tr[data-device="edge-2"] .update-status')).to_have_text("waiting")
    expect(page.locator('#run-rounds tr[data-round="2"] .badge')).to_have_text("open")
    expect(page.locator('#run-rounds tr[data-round="1"] td').nth(2)).to_have_text("3 of 3")
    epsilon = page.locator('#run-charts [data-chart="epsilon"] [data-series="ε"] circle')
    expect(epsilon).to_have_count(1)
    screenshot(page, shots, "learning-run-active")

    # the last device answers: the round closes, the next opens, and the page follows by itself
    round2 = devices.round(run_id, 2)
    devices.send("edge-2", devices.train("edge-2", run_id, round2))

    expect(current.locator("h2")).to_contain_text("Open round 3")
    closed = page.locator('#run-rounds tr[data-round="2"]')
    expect(closed.locator(".badge")).to_have_text("closed")
    expect(closed.locator("td").nth(2)).to_have_text("2 of 3")
    expect(epsilon).to_have_count(2)
    screenshot(page, shots, "learning-run-next-round")

    # the operator stops it (what 'fogline fl stop' sends): the open round closes short
    stopped = setup.api.post(f"/api/fl/runs/{run_id}/stop")
    assert stopped.status_code == 200, stopped.text

    expect(page.locator("#run-head h1 .badge")).to_have_text("stopped")
    expect(page.locator("#run-reason")).to_have_text("Stopped: stopped by the operator")
    expect(current.locator("h2")).to_contain_text("Last round 3")
    expect(current.locator(".update-status .badge")).to_have_text(["no answer"] * 3)
    expect(page.locator('#run-rounds tr[data-round="3"] .badge')).to_have_text("failed")
    expect(page.locator("#run-gate")).to_have_text("Not gated: the run ended before the gate.")
    screenshot(page, shots, "learning-run-stopped")
