"""Edge clusters on the controller: heard through a real Mosquitto, served by the API, drawn in Chromium.

A real broker with the fleet's passwords and ACL, a real controller
(:class:`~fogline.fleet.controller.Controller`) and the dashboard in the
headless Chromium of ``test_dashboard``. Node ``node-a`` is a real
``fogline run`` of a cluster node with ``FOGLINE_DEVICE_ID=cam-1`` in its
environment, as the fleet agent runs it, on the site's own (anonymous)
broker, which the controller also reads (``cluster_broker``). Fleet device
``cam-2`` stands in for the rest of the group on the fleet's broker (its
ACL lets every device use ``fogline/cluster/#``), saying what a node and a
dispatcher say in :mod:`fogline.cluster`'s bodies: a node that names a
device the fleet does not know, the dispatcher's stats, a malformed
presence. The page lists the group, links the known device, and shows
``node-a`` offline once it is killed with SIGKILL (its last will).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

import fleet.controller.test_dashboard as dashboard
from fogline.cluster import DispatcherStats, Presence
from fogline.fleet.controller import Controller, ControllerConfig
from fogline.security import init_keys
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl
from support.broker import free_port
from support.digits_pipeline import digits_spec, write_spec
from support.fleet_controller import wait_for

browser = dashboard.browser
page = dashboard.page
shots = dashboard.shots
GROUP = "line-3"


@dataclass
class Site:
    controller: Controller
    member: paho.Client
    api: httpx.Client
    node: subprocess.Popen[bytes]

    def say(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 as device cam-2 and wait for the broker's PUBACK."""
        info = self.member.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()

    def groups(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/clusters")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


#: What the group's dispatcher says (retained), as each test publishes it.
_STATS = DispatcherStats(
    "running", "cams/in", 2, queued=3, dispatched=40, completed=37, at=1.0,
    nodes={"node-b": {"completed": 19, "outstanding": 1, "redispatched": 2}},
)  # fmt: skip


def presence(node: str, state: str, device: str | None, took: int) -> Presence:
    return Presence(
        node, state, 2, took=took, finished=took - 1, in_flight=1, lag_ms=12.5, at=time.time(),
        pipeline="digits", device=device,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("clusters")
    init_keys(folder / "controller")
    broker = LocalBroker(BrokerConfig(folder=folder / "broker", port=free_port(), auth=True))
    site = LocalBroker(BrokerConfig(folder=folder / "site", port=free_port(), auth=False))
    broker.start()
    site.start()
    node = None
    try:
        user = broker.add_controller()
        cam2 = broker.add_device("cam-2")
        url = MqttUrl.parse(broker.url)
        node = start_node(folder, site.url)
        controller = Controller(
            ControllerConfig(
                data=folder / "controller",
                broker=MqttUrl(url.host, url.port, False, user.user, user.password),
                http_port=0,
                verify_seconds=None,
                tick_seconds=0.1,
                cluster_broker=site.url,
            )
        ).start()
        member = paho.Client(CallbackAPIVersion.VERSION2, "cam-2", protocol=paho.MQTTv5)
        member.username_pw_set(cam2.user, cam2.password)
        member.connect(url.host, url.port)
        member.loop_start()
        try:
            assert controller.wait_connected(30)
            controller.registry.set_group("cam-1", "line")  # a device the fleet knows
            api = httpx.Client(
                base_url=controller.base_url,
                headers={"Authorization": f"Bearer {controller.token}"},
                timeout=30,
            )
            yield Site(controller, member, api, node)
        finally:
            member.disconnect()
            member.loop_stop()
            controller.stop()
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait()
        site.stop()
        broker.stop()


def start_node(folder: Path, url: str) -> subprocess.Popen[bytes]:
    """``fogline run`` of a digits cluster node as the fleet agent starts it (its device's id)."""
    source = {
        "type": "mqtt", "name": "items", "url": url, "topic": f"fogline/cluster/{GROUP}/in",
        "share": GROUP, "node": "node-a", "window": 2, "shape": [1, 8, 8],
    }  # fmt: skip
    path = write_spec(folder, digits_spec(name="digits", sources=[source]), "node.yaml")
    argv = [
        sys.executable,
        "-m",
        "fogline",
        "run",
        str(path),
        "--no-live",
        "--output-dir",
        str(folder),
    ]
    env = {**os.environ, "FOGLINE_DEVICE_ID": "cam-1"}
    log = open(folder / "node.log", "wb")  # noqa: SIM115  # the child keeps it
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def test_the_api_lists_each_groups_nodes_and_dispatcher_with_their_devices(site: Site) -> None:
    ghost = presence("node-b", "online", "ghost", 19)
    site.say(f"fogline/cluster/{GROUP}/nodes/node-b", ghost.payload())
    site.say(f"fogline/cluster/{GROUP}/dispatcher", _STATS.payload())
    site.say(f"fogline/cluster/{GROUP}/nodes/node-c", b'{"node": "node-c", "state": "asleep"}')

    wait_for("both nodes and the dispatcher", lambda: _complete(site.groups()), timeout=120)

    [group] = site.groups()
    assert group["group"] == GROUP
    assert group["dispatcher"]["dispatched"] == 40 and group["dispatcher"]["state"] == "running"
    a, b = group["nodes"]  # node-c's state is no state: dropped, counted
    assert (a["node"], a["state"], a["device"], a["device_known"]) == (
        "node-a",
        "online",
        "cam-1",
        True,
    )
    assert (a["took"], a["finished"], a["in_flight"], a["window"]) == (0, 0, 0, 2)
    assert a["pipeline"] == "digits"
    assert (b["device"], b["device_known"], b["lag_ms"]) == ("ghost", False, 12.5)
    wait_for("the malformed presence counted", lambda: site.controller.clusters.rejected == 1)


def _complete(groups: list[dict[str, Any]]) -> bool:
    nodes = {n["node"]: n["state"] for g in groups for n in g["nodes"]}
    return nodes == {"node-a": "online", "node-b": "online"} and groups[0]["dispatcher"] is not None


def test_the_clusters_page_shows_nodes_links_devices_and_a_node_going_offline(
    site: Site, page: Page, shots: Path
) -> None:
    # node-b is a presence the test speaks for: said again here and after the kill, so the
    # controller does not call it silent (10 s unheard) on a slow machine.
    ghost = f"fogline/cluster/{GROUP}/nodes/node-b"
    site.say(ghost, presence("node-b", "online", "ghost", 19).payload())
    site.say(f"fogline/cluster/{GROUP}/dispatcher", _STATS.payload())  # as the test above says it
    wait_for("the node online", lambda: _complete(site.groups()), timeout=120)
    page.goto(f"{site.controller.base_url}/?token={site.controller.token}#/clusters")

    block = page.locator(f'section.cluster[data-group="{GROUP}"]')
    expect(block.locator("h2")).to_contain_text("2 of 2 nodes online")
    expect(block.locator('[data-count="dispatched"]')).to_contain_text("dispatched 40")
    row = block.locator('tr[data-node="node-a"]')
    expect(row.locator('[data-field="state"]')).to_have_text("online")
    expect(row.locator('[data-field="in_flight"]')).to_have_text("0 of 2")
    expect(block.locator('tr[data-node="node-b"] [data-field="lag"]')).to_have_text("12.5 ms")
    expect(block.locator('tr[data-node="node-b"] [data-field="device"] a')).to_have_count(0)
    expect(block.locator('tr[data-node="node-b"] [data-field="dealt"]')).to_have_text(
        "19 done · 1 out · 2 re-dispatched"
    )
    dashboard.screenshot(page, shots, "clusters")

    # Execute: the node dies; the broker publishes its last will
    site.node.send_signal(signal.SIGKILL)
    site.node.wait()
    site.say(ghost, presence("node-b", "online", "ghost", 19).payload())

    expect(row.locator('[data-field="state"]')).to_have_text("offline")  # the page refreshes
    expect(block.locator("h2")).to_contain_text("1 of 2 nodes online")
    row.locator('[data-field="device"] a').click()
    expect(page).to_have_url(f"{site.controller.base_url}/#/devices/cam-1")
