"""ZeroMQ's value objects and sockets: endpoints parse or say why, CURVE lets in only the keys it knows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import ConfigError, Refused, TimedOut
from fogline.transport.zmq import (
    CurveClient,
    CurveServer,
    KeyPair,
    ZmqEndpoint,
    ZmqSocket,
    probe_bind,
    write_keypair,
)
from support.ports import free_port


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://host:5557", "starts with tcp:// or ipc://"),
        ("tcp://host", "no port"),
        ("tcp://host:port", "port is a number"),
        ("tcp://host:70000", "a port is 1 to 65535"),
        ("tcp://:5557", "needs a host name"),
        ("tcp://bad host:5557", "needs a host name"),
        ("tcp://[::1]5557", "tcp://[v6-address]:port"),
        ("ipc://", "needs a file path"),
        ("ipc://" + "x" * 200, "at most 107 bytes"),
    ],
)
def test_a_malformed_endpoint_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        ZmqEndpoint.parse(text)


@given(st.sampled_from(["127.0.0.1", "::1", "cam-1.local", "*"]), st.integers(1, 65535))
def test_an_endpoint_round_trips_through_its_text(host: str, port: int) -> None:
    endpoint = ZmqEndpoint("tcp", host=host, port=port)
    assert ZmqEndpoint.parse(str(endpoint)) == endpoint


def test_key_files_are_certificates_and_the_secret_one_is_private(tmp_path: Path) -> None:
    public, secret = write_keypair(tmp_path, "camera")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert KeyPair.load(public).secret is None
    assert KeyPair.load(secret, secret=True).public == KeyPair.load(public).public
    with pytest.raises(ConfigError, match="only a public key"):
        KeyPair.load(public, secret=True)
    with pytest.raises(ConfigError, match="exists"):
        write_keypair(tmp_path, "camera")


def test_curve_lets_in_the_allowed_key_and_refuses_the_others(tmp_path: Path) -> None:
    # Prepare: a server that allows the camera's key; the camera, an intruder, a wrong server key
    for name in ("server", "camera", "intruder"):
        write_keypair(tmp_path, name)
    server, camera, intruder = (
        KeyPair.load(tmp_path / f"{name}.key_secret", secret=True)
        for name in ("server", "camera", "intruder")
    )
    endpoint = ZmqEndpoint("tcp", host="127.0.0.1", port=free_port())
    pull = ZmqSocket(
        "pull", endpoint, bind=True, curve=CurveServer(server, frozenset({camera.public}))
    )
    good = ZmqSocket("push", endpoint, bind=False, curve=CurveClient(camera, server.public))
    bad = ZmqSocket(
        "push", endpoint, bind=False, curve=CurveClient(intruder, server.public), send_timeout=0.5
    )
    wrong = ZmqSocket(
        "push", endpoint, bind=False, curve=CurveClient(camera, intruder.public), send_timeout=0.5
    )
    try:
        # Execute and assert: the camera's message arrives; the others are refused, and say so
        good.send([b"from the camera"])
        assert pull.receive(timeout=5.0) == [b"from the camera"]
        with pytest.raises(Refused, match="the key is not allowed"):
            bad.send([b"from the intruder"])
        with pytest.raises(Refused, match="handshake failed"):
            wrong.send([b"to the wrong server"])
        assert pull.receive(timeout=0.3) is None
        assert pull.refused >= 2
    finally:
        for sock in (good, bad, wrong, pull):
            sock.close()


def test_a_push_with_no_peer_times_out_and_a_busy_port_cannot_be_bound() -> None:
    endpoint = ZmqEndpoint("tcp", host="127.0.0.1", port=free_port())
    with ZmqSocket("push", endpoint, bind=True, send_timeout=0.2) as push:
        with pytest.raises(TimedOut, match="no peer took the message"):
            push.send([b"nobody"])
        with pytest.raises(ConfigError, match="the address is in use"):
            probe_bind(endpoint)
        with pytest.raises(ConfigError, match="the address is in use"):
            ZmqSocket("pull", endpoint, bind=True)
    probe_bind(endpoint)  # free again once closed


def test_an_ipc_path_in_use_is_refused_not_taken_over(tmp_path: Path) -> None:
    # ZeroMQ itself would unlink a running process's socket file and bind a new one
    endpoint = ZmqEndpoint("ipc", path=str(tmp_path / "work.sock"))
    with ZmqSocket("pull", endpoint, bind=True) as pull:
        with pytest.raises(ConfigError, match="in use"):
            probe_bind(endpoint)
        with pytest.raises(ConfigError, match="in use"):
            ZmqSocket("pull", endpoint, bind=True)
        with ZmqSocket("push", endpoint, bind=False) as push:  # the first still has its socket
            push.send([b"still here"])
            assert pull.receive(timeout=5.0) == [b"still here"]
    probe_bind(endpoint)  # a stale file (or none) after close: free
    with pytest.raises(ConfigError, match="no folder"):
        probe_bind(ZmqEndpoint("ipc", path=str(tmp_path / "nowhere" / "x.sock")))
