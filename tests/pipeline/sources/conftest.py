"""Fixtures for the source tests: a real OPC UA server on loopback, and a bounded reader."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from asyncua import Server

from fogline.pipeline import Corrupt, Item
from fogline.pipeline._base import Source

Reader = Callable[..., list[Item | Corrupt]]


@dataclass(frozen=True)
class OpcServer:
    endpoint: str
    numbers: tuple[str, ...]  # node ids of two float variables that change every 50 ms
    text: str  # node id of a string variable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def opcua_server() -> Iterator[OpcServer]:
    """An asyncua Server on a free loopback port, on its own thread and event loop."""
    endpoint = f"opc.tcp://127.0.0.1:{_free_port()}/fogline/"
    ready: list[OpcServer] = []
    started = threading.Event()
    stop = threading.Event()

    async def serve() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(endpoint)
        ns = await server.register_namespace("urn:fogline:test")
        machine = await server.nodes.objects.add_object(ns, "Machine")
        speed = await machine.add_variable(ns, "speed", 0.0)
        temp = await machine.add_variable(ns, "temp", 20.0)
        name = await machine.add_variable(ns, "name", "press-1")
        async with server:
            ids = (speed.nodeid.to_string(), temp.nodeid.to_string())
            ready.append(OpcServer(endpoint, ids, name.nodeid.to_string()))
            started.set()
            tick = 0
            while not stop.is_set():
                tick += 1
                await speed.write_value(float(tick))
                await temp.write_value(20.0 + tick / 2)
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "the OPC UA test server did not start"
    yield ready[0]
    stop.set()
    thread.join(10)


def read_some(source: Source, limit: int, timeout: float = 10.0) -> list[Item | Corrupt]:
    """Up to ``limit`` items from ``source``, or what came within ``timeout`` seconds."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    got: list[Item | Corrupt] = []
    stream = source.read(stop)
    try:
        for entry in stream:
            got.append(entry)
            if len(got) >= limit:
                break
    finally:
        stream.close()  # type: ignore[attr-defined]
        timer.cancel()
    return got


@pytest.fixture
def reader() -> Reader:
    return read_some
