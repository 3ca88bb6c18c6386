"""The fleet dashboard in a real headless Chromium (Debian's ``chromium``) driven by Playwright.

The controller's HTTP app (API + dashboard) runs on uvicorn on a loopback
port, over a real SQLite registry filled through its own methods: devices
report their state and telemetry (``Registry.ingest``), deployments are made
and judged by ``Rollouts`` — one canary refuses its release and one fails its
health check, each rolled back by the rollout logic; one is running. Each test
saves a screenshot under pytest's tmp folder and prints its path, after
checking that the page shows no stray ``null``, ``undefined`` or ``NaN``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from fogline.fleet.controller._api import ApiContext, application
from fogline.fleet.controller._dashboard import dashboard_routes
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._rollout import RolloutPlan, Rollouts
from fogline.protocol import DeviceState, Presence, ReleaseMetrics, ReleaseStatus, Telemetry

TOKEN = "operator-token-for-the-dashboard-test"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # generous: a shared 2-core machine stalls now and then
#: An SVG path through at least 20 points ("M x y L x y L x y ...").
_MANY_POINTS = re.compile(r"^M[\d.]+ [\d.]+( L[\d.]+ [\d.]+){19,}")


def chromium_path() -> str:
    """Debian's chromium (or $FOGLINE_CHROMIUM); the test fails, loudly, without one."""
    path = os.environ.get("FOGLINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium not found (looked for $FOGLINE_CHROMIUM, 'chromium' on PATH, {path}): "
            "the dashboard is tested in a real browser. Install Debian's chromium with "
            "scripts/ensure-chromium (or: apt-get install chromium), or point "
            "FOGLINE_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    return path


# -- the server -------------------------------------------------------------------------------


@dataclass
class Fleet:
    url: str
    registry: Registry
    rollouts: Rollouts
    published: list[Any]
    refused_deployment: str
    failed_deployment: str
    running_deployment: str


class Served:
    """uvicorn on a free loopback port in a thread, stopped by :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def releases() -> list[dict[str, Any]]:
    """Release documents as the controller's repository lists them."""

    def doc(
        name: str, version: str, kind: str, sizes: list[int], age_days: float
    ) -> dict[str, Any]:
        created = time.time() - age_days * 86400
        return {
            "name": name,
            "version": version,
            "kind": kind,
            "entry": "model.onnx",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created + 365 * 86400)),
            "files": [
                {"path": f"file{i}.bin", "length": size, "sha256": f"{i:064x}"}
                for i, size in enumerate(sizes)
            ],
            "description": "",
        }

    return [
        doc("digits", "1.0.0", "model", [1_200_000], 20),
        doc("digits", "1.1.0", "model", [1_250_000, 4_096], 1),
        doc("vad", "2.0.0", "serve", [2_300_000, 512, 80], 3),
    ]


def state(device_id: str, generation: int = 0, **releases: ReleaseStatus) -> DeviceState:
    return DeviceState(device_id=device_id, generation=generation, releases=releases, agent="0.1.0")


def active(version: str) -> ReleaseStatus:
    return ReleaseStatus(version=version, phase="active")


def fill(registry: Registry, rollouts: Rollouts) -> tuple[str, str, str]:
    """Five devices in two groups, 20 minutes of telemetry, three deployments.

    In group ``lab`` the canary (gate-1, enrolled with a token) first refuses
    one release, then fails the health check of the next: both are rolled
    back by the rollout logic. In ``line-a`` a canary converged and bakes.
    """
    for device_id, group, tags in [
        ("cam-1", "line-a", ["north"]),
        ("cam-2", "line-a", ["north"]),
        ("cam-3", "line-a", ["south"]),
        ("gate-2", "lab", []),
    ]:
        registry.set_group(device_id, group, tags)
    registry.redeem_token(registry.create_token(group="lab"), "gate-1")
    registry.ingest(
        Inbox(
            states=[
                state("cam-1", digits=active("1.0.0"), vad=active("2.0.0")),
                state(
                    "cam-2",
                    digits=active("1.0.0"),
                    vad=ReleaseStatus(version="2.0.0", target="2.1.0", phase="verifying"),
                ),
                state("cam-3", digits=active("1.0.0")),
                state("gate-1", digits=active("1.0.0")),
                state("gate-2", digits=active("1.0.0")),
            ],
            presence=[(d, Presence(online=d != "cam-3")) for d in ("cam-1", "cam-2", "cam-3")]
            + [("gate-1", Presence(online=True)), ("gate-2", Presence(online=True))],
        )
    )
    now = time.time()
    reports = []
    for step in range(40):  # every 30 s over the last 20 minutes
        t = now - 1200 + step * 30
        for index, device_id in enumerate(("cam-1", "cam-2", "cam-3", "gate-1", "gate-2")):
            if device_id == "cam-3" and step > 30:
                continue  # went offline
            metrics = {
                "digits": ReleaseMetrics(
                    items=600,
                    items_per_second=20 + index * 3 + 4 * math.sin(step / 4 + index),
                    p50_ms=4 + index,
                    p99_ms=12 + index * 2 + 3 * math.cos(step / 5),
                    errors=1 if step % 7 == index else 0,
                )
            }
            reports.append(
                (
                    f"{device_id}-{step}",
                    Telemetry(
                        device_id=device_id,
                        time=t,
                        sequence=step,
                        versions={"digits": "1.0.0"},
                        metrics=metrics,
                        cpu_percent=30 + 10 * math.sin(step / 6 + index),
                        memory_mb=180 + index * 20 + step / 2,
                    ),
                )
            )
    registry.ingest(Inbox(telemetry=reports))

    # A canary that refuses its release (expired metadata): rolled back, it runs 1.0.0 again.
    refused = rollouts.create(
        "digits", "1.0.1", "lab", strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=0)
    )
    canary = next(d.device_id for d in refused.devices if d.status == "assigned")
    refusal = ReleaseStatus(
        version="1.0.0",
        target="1.0.1",
        phase="refused",
        error="release digits 1.0.1 expired at 2025-01-31T00:00:00+00:00: refused",
    )
    generation = registry.desired(canary).generation
    registry.ingest(Inbox(states=[state(canary, generation, digits=refusal)]))
    rollouts.tick()
    generation = registry.desired(canary).generation
    registry.ingest(Inbox(states=[state(canary, generation, digits=active("1.0.0"))]))
    # A canary whose health check fails on its device: the rollout rolls it back by itself.
    failed = rollouts.create(
        "digits", "1.1.0", "lab", strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=0)
    )
    canary = next(d.device_id for d in failed.devices if d.status == "assigned")
    broken = ReleaseStatus(
        version="1.0.0",
        target="1.1.0",
        phase="failed",
        error="health check: p99 84.0 ms over the 50 ms budget",
    )
    generation = registry.desired(canary).generation
    registry.ingest(Inbox(states=[state(canary, generation, digits=broken)]))
    rollouts.tick()
    # A canary on line-a that converged and is baking; the rest of the group waits.
    running = rollouts.create(
        "digits",
        "1.1.0",
        "line-a",
        strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=3600),
    )
    first = next(d.device_id for d in running.devices if d.status == "assigned")
    generation = registry.desired(first).generation
    registry.ingest(
        Inbox(states=[state(first, generation, digits=active("1.1.0"), vad=active("2.0.0"))])
    )
    rollouts.tick()
    return refused.id, failed.id, running.id


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    registry = Registry(tmp_path_factory.mktemp("controller") / "registry.db")
    published: list[Any] = []
    rollouts = Rollouts(registry, published.extend)
    refused, failed, running = fill(registry, rollouts)
    app = application(
        ApiContext(
            registry=registry,
            rollouts=rollouts,
            releases=releases,
            enrol=lambda device_id: {},
            token=TOKEN,
            wake=lambda: None,
        ),
        dashboard=dashboard_routes(),
    )
    served = Served(app)
    try:
        yield Fleet(served.url, registry, rollouts, published, refused, failed, running)
    finally:
        served.stop()
        registry.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

    def console(message: ConsoleMessage) -> None:
        # A 401 or 404 from the API is logged by Chromium as a failed resource: expected.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(f"console: {message.text}")

    opened.on("console", console)
    yield opened
    context.close()
    assert errors == [], "the dashboard logged errors (a script error or a CSP violation)"


#: Text that means a script put a missing or wrong value on the page.
STRAY = ("null", "undefined", "NaN", "[object Object]")

_FIND_STRAY = """(stray) => {
  const found = [];
  const where = (el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}`
    + `${el.className && typeof el.className === "string" ? "." + el.className.split(" ")[0] : ""}`;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    if (stray.includes(text)) found.push(`${where(node.parentElement)}: ${JSON.stringify(text)}`);
  }
  for (const el of document.body.querySelectorAll("[title], [aria-label]")) {
    for (const name of ["title", "aria-label"]) {
      const text = (el.getAttribute(name) ?? "").trim();
      if (stray.includes(text) || /\\b(undefined|NaN)\\b|\\[object Object\\]/.test(text)) {
        found.push(`${where(el)}[${name}]: ${JSON.stringify(text)}`);
      }
    }
  }
  return found;
}"""


def stray_text(page: Page) -> list[str]:
    """Where the page shows a text node (or a tooltip) that is only ``null``, ``undefined``…"""
    found: list[str] = page.evaluate(_FIND_STRAY, list(STRAY))
    return found


def screenshot(page: Page, shots: Path, name: str) -> Path:
    """Check the page for stray text (every page a test looks at), then save a screenshot."""
    assert stray_text(page) == [], f"{name}: stray text on the page"
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def open_dashboard(page: Page, fleet: Fleet, hash_: str = "#/") -> None:
    page.goto(f"{fleet.url}/?token={TOKEN}{hash_}")


# -- the tests --------------------------------------------------------------------------------


def test_the_pages_are_served_with_a_strict_policy(fleet: Fleet) -> None:
    index = httpx.get(f"{fleet.url}/")
    script = httpx.get(f"{fleet.url}/dashboard/app.js")
    missing = httpx.get(f"{fleet.url}/dashboard/nothing.js")
    api = httpx.get(f"{fleet.url}/api/devices")

    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert 'src="dashboard/app.js"' in index.text
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["referrer-policy"] == "no-referrer"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == "no-cache"
    assert missing.status_code == 404
    assert api.status_code == 401  # the pages are public; the data is not


def test_overview_shows_counts_versions_charts_and_events(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    open_dashboard(page, fleet)

    expect(page.locator('[data-count="devices"] .card-value')).to_have_text("5")
    expect(page.locator('[data-count="online"] .card-value')).to_have_text("4")
    expect(page.locator('[data-count="offline"] .card-value')).to_have_text("1")
    expect(page.locator('[data-count="failed"] .card-value')).to_have_text("1")
    expect(page.locator('[data-count="rolling out"] .card-value')).to_have_text("1")
    digits = page.locator('.release-block[data-release="digits"]')
    expect(digits.locator('[data-label="1.1.0"] .bar-value')).to_have_text("1 of 5")
    expect(digits.locator('[data-label="1.0.0"] .bar-value')).to_have_text("4 of 5")
    expect(page.locator("#running")).to_contain_text("digits 1.1.0")
    expect(page.locator("#recent-events")).to_contain_text("rolled back on 1 device:")
    for chart in ("throughput", "p99", "errors", "reporting"):
        path = page.locator(f'#fleet-charts [data-chart="{chart}"] svg .series path').first
        expect(path).to_have_attribute("d", _MANY_POINTS)
        assert page.locator(f'#fleet-charts [data-chart="{chart}"] svg circle').count() >= 20
    assert page.locator('#fleet-charts [data-chart="throughput"] .grid text').count() >= 6
    assert "token=" not in page.url  # moved to session storage, out of the address bar
    screenshot(page, shots, "overview")

    ticks = page.locator('#fleet-charts [data-chart="throughput"] .grid text')
    before = ticks.all_text_contents()
    page.select_option("#fleet-charts >> xpath=.. >> select.range", "900")  # the last 15 min
    expect(ticks).not_to_have_text(before)
    path = page.locator('#fleet-charts [data-chart="throughput"] svg .series path').first
    expect(path).to_have_attribute("d", _MANY_POINTS)


def test_devices_table_shows_versions_phases_and_filters_by_group(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    open_dashboard(page, fleet, "#/devices")

    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(5)
    cam1 = page.locator('tr[data-device="cam-1"]')
    expect(cam1.locator('td[data-release="digits"]')).to_contain_text("1.1.0")
    expect(cam1.locator('td[data-release="digits"] .badge')).to_have_text("active")
    cam2 = page.locator('tr[data-device="cam-2"]')
    expect(cam2.locator('td[data-release="vad"]')).to_contain_text("2.0.0 → 2.1.0")
    expect(cam2.locator('td[data-release="vad"] .badge')).to_have_text("verifying")
    expect(page.locator('tr[data-device="cam-3"]')).to_contain_text("offline")
    failed = page.locator("tr.row-bad")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("failed")
    expect(failed).to_contain_text("health check: p99 84.0 ms over the 50 ms budget")
    screenshot(page, shots, "devices")

    page.select_option("#group-filter", "lab")
    expect(rows).to_have_count(2)
    expect(page.locator("#device-count")).to_have_text("2 of 5 devices")
    assert "group=lab" in page.url
    page.fill("#device-search", "gate-2")
    expect(rows).to_have_count(1)
    screenshot(page, shots, "devices-lab")


def test_device_page_has_desired_and_reported_state_and_charts(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    open_dashboard(page, fleet, "#/devices")
    page.locator('tr[data-device="cam-2"] td').nth(2).click()  # a row is a link to its device

    expect(page).to_have_url(_ends_with("#/devices/cam-2"))
    expect(page.locator("#device-head h1")).to_contain_text("cam-2")
    vad = page.locator('#desired-reported tr[data-release="vad"]')
    expect(vad).to_contain_text("none set")
    expect(vad).to_contain_text("verifying")
    digits = page.locator('#desired-reported tr[data-release="digits"]')
    expect(digits).to_contain_text("1.0.0")
    for chart in ("throughput", "latency", "errors", "cpu", "memory"):
        path = page.locator(f'#device-charts [data-chart="{chart}"] svg .series path').first
        expect(path).to_have_attribute("d", _MANY_POINTS)
    expect(page.locator('#device-charts [data-chart="latency"] .legend')).to_contain_text("p50")
    screenshot(page, shots, "device-cam-2")

    page.goto(f"{fleet.url}/#/devices/cam-1")  # the token stays in the tab
    expect(page.locator('#desired-reported tr[data-release="digits"] td').nth(1)).to_have_text(
        "1.1.0"
    )


def test_device_page_lists_the_rollbacks_and_refusals_that_involved_it(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    open_dashboard(page, fleet, "#/devices/gate-1")

    events = page.locator("#device-events li.event")
    refusal = events.filter(has=page.locator(".ev-kind", has_text="refused"))
    expect(refusal).to_have_count(1)
    expect(refusal).to_contain_text("digits 1.0.1 refused: release digits 1.0.1 expired at")
    expect(refusal.locator("a")).to_have_text(fleet.refused_deployment)
    failure = events.filter(has=page.locator(".ev-kind", has_text="failed"))
    expect(failure).to_contain_text("digits 1.1.0 failed: health check: p99 84.0 ms")
    rollbacks = events.filter(has=page.locator(".ev-kind", has_text="rollback"))
    expect(rollbacks).to_have_count(2)
    expect(rollbacks.nth(0)).to_contain_text("digits 1.1.0 rolled back on 1 device: gate-1: failed")
    expect(rollbacks.nth(1)).to_contain_text(
        "digits 1.0.1 rolled back on 1 device: gate-1: refused"
    )
    expect(rollbacks.nth(1).locator("a")).to_have_text(fleet.refused_deployment)
    expect(events.filter(has=page.locator(".ev-kind", has_text="enrolled"))).to_contain_text(
        "enrolled in group lab"
    )
    expect(events.filter(has=page.locator(".ev-kind", has_text="deployment"))).to_have_count(2)
    screenshot(page, shots, "device-gate-1")

    # gate-2 waited in a later wave of both lab deployments: neither touched it.
    page.goto(f"{fleet.url}/#/devices/gate-2")
    expect(page.locator("#device-events")).to_contain_text("no events for this device yet")
    screenshot(page, shots, "device-gate-2")


def test_the_events_api_answers_for_one_device(fleet: Fleet) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    mine = httpx.get(f"{fleet.url}/api/events?device=gate-1", headers=auth).json()
    theirs = httpx.get(f"{fleet.url}/api/events?device=cam-3", headers=auth).json()

    kinds = [e["kind"] for e in mine]
    assert kinds[:2] == ["rollback", "failed"]  # newest first
    assert {"enrolled", "deployment", "refused", "rollback", "failed"} == set(kinds)
    assert all(e["device_id"] in ("gate-1", None) for e in mine)
    assert theirs == []  # waiting in line-a's second wave


def test_releases_table(page: Page, fleet: Fleet, shots: Path) -> None:
    open_dashboard(page, fleet, "#/releases")

    rows = page.locator("#releases tbody tr")
    expect(rows).to_have_count(3)
    newest = page.locator('tr[data-release="digits@1.1.0"] td')
    expect(newest.nth(2)).to_have_text("model")
    expect(newest.nth(3)).to_have_text("2")
    expect(newest.nth(4)).to_have_text("1.2 MiB")
    expect(newest.nth(5)).to_have_text("1 d ago")
    expect(newest.nth(6)).to_contain_text("in 363 d")
    expect(newest.nth(7)).to_have_text("1 device")
    expect(page.locator('tr[data-release="vad@2.0.0"] td').nth(7)).to_have_text("2 devices")
    screenshot(page, shots, "releases")


def test_deployments_show_wave_progress_and_the_rollback_reason(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    open_dashboard(page, fleet, "#/deployments")

    failed = page.locator(f'[data-deployment="{fleet.failed_deployment}"]')
    expect(failed.locator(".dep-head .badge")).to_have_text("rolled-back")
    expect(failed.locator(".reason")).to_contain_text(
        "gate-1: failed: health check: p99 84.0 ms over the 50 ms budget"
    )
    expect(failed.locator('[data-wave="1"] .wave-counts')).to_have_text("1 rolled-back")
    expect(failed.locator('[data-wave="2"] .wave-counts')).to_have_text("1 waiting")
    running = page.locator(f'[data-deployment="{fleet.running_deployment}"]')
    expect(running.locator(".dep-head .badge")).to_have_text("running")
    expect(running.locator('[data-wave="1"] .wave-counts')).to_have_text("1 converged")
    expect(running.locator('[data-wave="2"] .wave-counts')).to_have_text("2 waiting")
    expect(running.locator('[data-wave="2"] .progress .seg.st-waiting')).to_have_count(1)
    screenshot(page, shots, "deployments")

    failed.locator("h2 a").click()
    expect(page.locator("#deployment-events")).to_contain_text("rolled back on 1 device:")
    expect(page.locator("#deployment-devices tr[data-device='gate-1']")).to_contain_text(
        "rolled-back"
    )
    expect(page.locator("#rollback")).to_have_count(0)  # nothing left to roll back
    screenshot(page, shots, "deployment-rolled-back")


def test_the_roll_back_button_rolls_a_running_deployment_back(
    page: Page, fleet: Fleet, shots: Path
) -> None:
    made = fleet.rollouts.create(
        "vad", "2.1.0", "lab", strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=600)
    )
    open_dashboard(page, fleet, f"#/deployments/{made.id}")
    expect(page.locator("#deployment .dep-head .badge")).to_have_text("running")
    screenshot(page, shots, "deployment-running")
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    page.click("#rollback")

    expect(page.locator("#deployment .dep-head .badge")).to_have_text("rolled-back")
    expect(page.locator("#deployment .reason")).to_contain_text("rolled back from the dashboard")
    assert questions and "Roll back vad 2.1.0 on group lab?" in questions[0]
    after = fleet.rollouts.get(made.id)
    assert after is not None and after.status == "rolled-back"
    assert after.reason == "rolled back from the dashboard"
    screenshot(page, shots, "deployment-after-rollback")


def test_cancelling_the_confirm_leaves_the_deployment_running(page: Page, fleet: Fleet) -> None:
    open_dashboard(page, fleet, f"#/deployments/{fleet.running_deployment}")
    # The canary converged but sent nothing on 1.1.0 yet: the bake says whose telemetry it needs.
    canary = next(d for d in fleet.rollouts.get(fleet.running_deployment).devices if d.wave == 0)  # type: ignore[union-attr]
    expect(page.locator("#deployment .bake")).to_contain_text(
        f"telemetry still needed from {canary.device_id} (no report on it yet)"
    )
    expect(page.locator("#deployment .dep-foot")).to_contain_text(
        "Success criteria: error rate ≤ 5.0%; telemetry from every device covering the bake."
    )
    expect(page.locator("#rollback")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.dismiss())

    page.click("#rollback")

    page.wait_for_timeout(500)  # let a (wrong) POST land, if the page sent one
    found = fleet.rollouts.get(fleet.running_deployment)
    assert found is not None and found.status == "running"


def test_a_wrong_token_shows_the_token_prompt(page: Page, fleet: Fleet, shots: Path) -> None:
    page.goto(f"{fleet.url}/?token=not-the-token#/devices")

    prompt = page.locator("#token-prompt")
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text("admin.token")
    expect(prompt).to_contain_text("refused the token")
    screenshot(page, shots, "token-prompt")

    page.fill("#token-input", TOKEN)
    page.click("#token-prompt button")
    expect(page.locator("#devices tbody tr")).to_have_count(5)


def test_the_page_refreshes_by_itself(page: Page, tmp_path: Path) -> None:
    with serve_registry(tmp_path) as (url, registry):
        page.goto(f"{url}/?token={TOKEN}#/devices")
        expect(page.locator("#devices")).to_contain_text("No devices yet")

        registry.set_group("cam-9", "line-b")
        registry.ingest(Inbox(states=[state("cam-9", digits=active("1.0.0"))]))

        expect(page.locator('tr[data-device="cam-9"]')).to_contain_text("line-b")
        expect(page.locator("#live")).to_contain_text("live")


def test_an_empty_fleet_says_what_to_do(page: Page, tmp_path: Path, shots: Path) -> None:
    with serve_registry(tmp_path) as (url, _):
        page.goto(f"{url}/?token={TOKEN}")
        expect(page.locator("#versions")).to_contain_text("No devices yet")
        expect(page.locator("#versions")).to_contain_text("fogline agent")
        expect(page.locator('#fleet-charts [data-chart="throughput"]')).to_contain_text(
            "no data in this period"
        )
        screenshot(page, shots, "empty-overview")
        page.click("text=Devices")
        expect(page.locator("#devices")).to_contain_text("fogline fleet token")
        screenshot(page, shots, "empty-devices")
        page.click("text=Releases")
        expect(page.locator("#releases")).to_contain_text("fogline release create")
        screenshot(page, shots, "empty-releases")
        page.click("text=Deployments")
        expect(page.locator("#deployments")).to_contain_text("fogline fleet deploy")
        screenshot(page, shots, "empty-deployments")
        page.goto(f"{url}/#/devices/nobody")
        expect(page.locator("main")).to_contain_text("No device nobody.")
        screenshot(page, shots, "no-such-device")
        page.goto(f"{url}/#/deployments/d-none")
        expect(page.locator("main")).to_contain_text("No deployment d-none.")
        screenshot(page, shots, "no-such-deployment")
        page.goto(f"{url}/#/nowhere")
        expect(page.locator("main")).to_contain_text("no such page")
        screenshot(page, shots, "not-found")


def test_charts_of_a_model_release_say_it_has_no_workload(
    page: Page, tmp_path: Path, shots: Path
) -> None:
    with serve_registry(tmp_path, releases) as (url, registry):
        # probe-1 runs only a model release, which runs its health check and nothing else:
        # its telemetry is a heartbeat of empty metrics (zero items), with the agent's CPU and
        # memory; cam-9 runs a server that has not reported yet.
        registry.ingest(Inbox(states=[state("probe-1", digits=active("1.0.0"))]))
        now = time.time()
        heartbeats = [
            (
                f"probe-1:{i}",
                Telemetry(
                    device_id="probe-1", time=now - 10 * i, sequence=i,
                    versions={"digits": "1.0.0"}, metrics={"digits": ReleaseMetrics()},
                    cpu_percent=1.5, memory_mb=150.0, period=10.0,
                ),
            )
            for i in range(1, 4)
        ]  # fmt: skip
        registry.ingest(Inbox(telemetry=heartbeats))
        page.goto(f"{url}/?token={TOKEN}#/devices/probe-1")

        for chart in ("throughput", "latency", "errors"):
            expect(
                page.locator(f'#device-charts [data-chart="{chart}"] .chart-empty')
            ).to_have_text(
                "no workload: a model release runs only its health check; throughput, latency "
                "and errors appear when a pipeline or serve release runs"
            )
        for chart in ("cpu", "memory"):  # the agent's own use is real, and charted
            expect(page.locator(f'#device-charts [data-chart="{chart}"] svg')).to_have_count(1)
            expect(
                page.locator(f'#device-charts [data-chart="{chart}"] .chart-empty')
            ).to_have_count(0)
        screenshot(page, shots, "device-model-only")
        page.goto(f"{url}/#/")
        expect(page.locator('#fleet-charts [data-chart="p99"] .chart-empty')).to_contain_text(
            "no workload"
        )

        registry.ingest(Inbox(states=[state("cam-9", vad=active("2.0.0"))]))
        page.goto(f"{url}/#/devices/cam-9")
        expect(page.locator('#device-charts [data-chart="throughput"] .chart-empty')).to_have_text(
            "no data in this period"
        )
        screenshot(page, shots, "device-serve-no-telemetry")
        page.goto(f"{url}/#/")
        expect(page.locator('#fleet-charts [data-chart="p99"] .chart-empty')).to_have_text(
            "no data in this period"
        )


@contextlib.contextmanager
def serve_registry(
    folder: Path, listed: Callable[[], list[dict[str, Any]]] = list
) -> Iterator[tuple[str, Registry]]:
    """A dashboard over a registry of its own, for tests that change or need an empty one."""
    registry = Registry(folder / "registry.db")
    app = application(
        ApiContext(
            registry=registry,
            rollouts=Rollouts(registry, lambda changed: None),
            releases=listed,
            enrol=lambda device_id: {},
            token=TOKEN,
            wake=lambda: None,
        ),
        dashboard=dashboard_routes(),
    )
    served = Served(app)
    try:
        yield served.url, registry
    finally:
        served.stop()
        registry.close()


def _ends_with(suffix: str) -> re.Pattern[str]:
    return re.compile(re.escape(suffix) + "$")
