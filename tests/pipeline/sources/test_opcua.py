"""The OPC UA source against a real asyncua server on loopback."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from fogline.errors import ConfigError
from fogline.pipeline import Corrupt, Item
from fogline.pipeline.sources import OpcuaSpec


def test_each_publish_is_one_vector_of_the_latest_values(opcua_server, reader) -> None:
    spec = OpcuaSpec(
        endpoint=opcua_server.endpoint, nodes=list(opcua_server.numbers), interval_ms=50
    )

    got = reader(spec.build("plc"), 6)

    items = [g for g in got if isinstance(g, Item)]
    assert len(items) == 6
    assert [i.sequence for i in items] == list(range(6))
    for item in items:
        assert item.data.dtype == np.float32 and item.data.shape == (2,)
        speed, temp = item.data
        assert abs(temp - (20.0 + speed / 2)) <= 0.5  # both current: at most a tick apart
    speeds = [float(i.data[0]) for i in items]
    assert speeds == sorted(speeds) and speeds[-1] > speeds[0]


def test_a_value_that_is_not_a_number_is_corrupt(opcua_server, reader) -> None:
    spec = OpcuaSpec(
        endpoint=opcua_server.endpoint, nodes=[opcua_server.numbers[0], opcua_server.text]
    )

    got = reader(spec.build("plc"), 1)

    assert isinstance(got[0], Corrupt)
    assert "'press-1' is not a number" in got[0].reason


def test_an_unknown_node_is_refused_when_reading_starts(opcua_server, reader) -> None:
    spec = OpcuaSpec(endpoint=opcua_server.endpoint, nodes=["ns=2;i=99999"])

    with pytest.raises(ConfigError, match=r"ns=2;i=99999"):
        reader(spec.build("plc"), 1)


def test_an_absent_server_is_a_config_error() -> None:
    spec = OpcuaSpec(endpoint="opc.tcp://127.0.0.1:9/", nodes=["ns=2;i=2"])

    with pytest.raises(ConfigError, match="cannot connect"):
        next(iter(spec.build("plc").read(threading.Event())))


def test_spec_checks_endpoint_and_node_ids_and_defaults_to_drop_oldest() -> None:
    with pytest.raises(ValidationError, match=r"opc\.tcp://"):
        OpcuaSpec(endpoint="http://plc", nodes=["ns=2;i=2"])
    with pytest.raises(ValidationError, match="not an OPC UA node id"):
        OpcuaSpec(endpoint="opc.tcp://plc:4840", nodes=["speed"])
    assert OpcuaSpec(endpoint="opc.tcp://plc:4840", nodes=["i=1"]).policy == "drop-oldest"
    assert OpcuaSpec(endpoint="opc.tcp://plc:4840", nodes=["i=1"], policy="block").policy == "block"
