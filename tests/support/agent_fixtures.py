"""What the agent tests share: a real Mosquitto, a release server, a fake controller, an agent.

``tests/fleet/agent/conftest.py`` makes the fixtures available to every test
there; :func:`make_agent` is the agent those tests run in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.fleet.agent._agent import Agent, AgentConfig
from fogline.transport.mqtt import MqttUrl
from support.broker import Mosquitto
from support.fleet_agent import FakeController, ReleaseServer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[ReleaseServer]:
    server = ReleaseServer(tmp_path / "controller")
    yield server
    server.close()


@pytest.fixture
def controller(broker: Mosquitto) -> Iterator[FakeController]:
    fake = FakeController(broker.url)
    yield fake
    fake.close()


def make_agent(
    tmp_path: Path,
    broker: Mosquitto,
    releases: ReleaseServer,
    device: str = "cam-1",
    **extra: object,
) -> Agent:
    """An agent for ``device`` (data in ``tmp_path/device``); ``agent.lines`` are its events."""
    config = AgentConfig.model_validate(
        {
            "broker": MqttUrl.parse(broker.url),
            "controller": releases.url,
            "data": tmp_path / device,
            "device_id": device,
            "trusted_root": releases.root,
            "telemetry_period": 0.3,
            "retry_max": 2.0,
            **extra,
        }
    )
    lines: list[str] = []
    agent = Agent(config, on_event=lines.append)
    agent.lines = lines  # type: ignore[attr-defined]  # what the CLI would print, for messages
    return agent
