"""Edge clusters on the controller: heard through a real Mosquitto, served by the API, drawn in Chromium.

A real broker with the fleet's passwords and ACL, a real controller
(:class:`~fogline.fleet.controller.Controller`) and the dashboard in the
headless Chromium of ``test_dashboard``. The cluster's members log in as
the fleet device ``cam-1`` (the ACL lets every device use
``fogline/cluster/#``) and say what a node and a dispatcher say, retained,
in :mod:`fogline.cluster`'s bodies: one node names the device, one a device
the fleet does not know. The page lists both under their group, links the
known device, and shows a node that went offline.
"""

from __future__ import annotations

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

    def say(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 as device cam-1 and wait for the broker's PUBACK."""
        info = self.member.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()

    def groups(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/clusters")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


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
    broker.start()
    try:
        user = broker.add_controller()
        device = broker.add_device("cam-1")
        url = MqttUrl.parse(broker.url)
        controller = Controller(
            ControllerConfig(
                data=folder / "controller",
                broker=MqttUrl(url.host, url.port, False, user.user, user.password),
                http_port=0,
                verify_seconds=None,
                tick_seconds=0.1,
            )
        ).start()
        member = paho.Client(CallbackAPIVersion.VERSION2, "cam-1", protocol=paho.MQTTv5)
        member.username_pw_set(device.user, device.password)
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
            yield Site(controller, member, api)
        finally:
            member.disconnect()
            member.loop_stop()
            controller.stop()
    finally:
        broker.stop()


def test_the_api_lists_each_groups_nodes_and_dispatcher_with_their_devices(site: Site) -> None:
    stats = DispatcherStats("running", "cams/in", 2, queued=3, dispatched=40, completed=37, at=1.0)
    site.say(
        f"fogline/cluster/{GROUP}/nodes/node-a", presence("node-a", "online", "cam-1", 21).payload()
    )
    site.say(
        f"fogline/cluster/{GROUP}/nodes/node-b", presence("node-b", "online", "ghost", 19).payload()
    )
    site.say(f"fogline/cluster/{GROUP}/dispatcher", stats.payload())
    site.say(f"fogline/cluster/{GROUP}/nodes/node-c", b'{"node": "node-c", "state": "asleep"}')

    wait_for("both nodes and the dispatcher", lambda: _complete(site.groups()), timeout=20)

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
    assert (a["took"], a["finished"], a["in_flight"], a["lag_ms"]) == (21, 20, 1, 12.5)
    assert (b["device"], b["device_known"]) == ("ghost", False)
    wait_for("the malformed presence counted", lambda: site.controller.clusters.rejected == 1)


def _complete(groups: list[dict[str, Any]]) -> bool:
    return bool(groups) and len(groups[0]["nodes"]) == 2 and groups[0]["dispatcher"] is not None


def test_the_clusters_page_shows_nodes_links_devices_and_a_node_going_offline(
    site: Site, page: Page, shots: Path
) -> None:
    site.say(
        f"fogline/cluster/{GROUP}/nodes/node-a", presence("node-a", "online", "cam-1", 21).payload()
    )
    site.say(
        f"fogline/cluster/{GROUP}/nodes/node-b", presence("node-b", "online", "ghost", 19).payload()
    )
    page.goto(f"{site.controller.base_url}/?token={site.controller.token}#/clusters")

    block = page.locator(f'section.cluster[data-group="{GROUP}"]')
    expect(block.locator("h2")).to_contain_text("2 of 2 nodes online")
    expect(block.locator('[data-count="dispatched"]')).to_contain_text("dispatched 40")
    row = block.locator('tr[data-node="node-a"]')
    expect(row.locator('[data-field="state"]')).to_have_text("online")
    expect(row.locator('[data-field="in_flight"]')).to_have_text("1 of 2")
    expect(row.locator('[data-field="lag"]')).to_have_text("12.5 ms")
    expect(block.locator('tr[data-node="node-b"] [data-field="device"] a')).to_have_count(0)
    dashboard.screenshot(page, shots, "clusters")

    # Execute: node-a's last will (what the broker publishes when a node dies)
    site.say(
        f"fogline/cluster/{GROUP}/nodes/node-a",
        presence("node-a", "offline", "cam-1", 21).payload(),
    )

    expect(row.locator('[data-field="state"]')).to_have_text("offline")  # the page refreshes
    expect(block.locator("h2")).to_contain_text("1 of 2 nodes online")
    row.locator('[data-field="device"] a').click()
    expect(page).to_have_url(f"{site.controller.base_url}/#/devices/cam-1")
