"""A real ``fogline serve`` subprocess holding the digits teacher, to stop and start mid-test,
and a small HTTP server that answers the protocol's metadata but garbles inference."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from fogline.examples import digits_offload_path
from fogline.testing import free_port

TEACHER = "digits-teacher"


def teacher_repository(root: Path) -> Path:
    """A repository with the teacher and ``flat``, a model whose signature fits nothing here."""
    shutil.copytree(digits_offload_path() / "models", root)
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 64])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["scores"])], "flat", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "flat" / "1").mkdir(parents=True)
    onnx.save(model, root / "flat" / "1" / "model.onnx")
    return root


class Served:
    """``fogline serve --repository ROOT`` on fixed ports: start, pause (SIGSTOP), resume, kill."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.http_port, self.grpc_port = free_port(), free_port()
        self.process: subprocess.Popen[str] | None = None

    def url(self, protocol: str = "http", model: str = TEACHER) -> str:
        if protocol == "http":
            return f"http://127.0.0.1:{self.http_port}/v2/models/{model}"
        return f"grpc://127.0.0.1:{self.grpc_port}/{model}"

    def start(self, timeout: float = 30.0) -> Served:
        command = [
            sys.executable, "-m", "fogline", "serve", "--repository", str(self.repository),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), "--threads", "1",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        ready = threading.Event()
        lines: list[str] = []

        def read(stream: Any) -> None:
            for line in stream:
                lines.append(line)
                if f"model {TEACHER} v1: READY" in line:
                    ready.set()

        threading.Thread(target=read, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("fogline serve did not start:\n" + "".join(lines))
        return self

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.process = None


class Garbling(BaseHTTPRequestHandler):
    """Answers model metadata as the teacher would; inference with ``Garbling.answer``."""

    answer: bytes = b"not json"
    delay_s: float = 0.0
    arrivals: list[float]  # when each inference call arrived (time.monotonic())

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        meta = {
            "name": TEACHER, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        }  # fmt: skip
        self._send(json.dumps(meta).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).arrivals.append(time.monotonic())
        time.sleep(type(self).delay_s)  # a remote that takes this long per call
        self._send(type(self).answer)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def garbling_server(answer: bytes, delay_s: float = 0.0) -> ThreadingHTTPServer:
    """A started server whose inference answers are ``answer`` after ``delay_s``;
    ``shutdown()`` it after; ``server.RequestHandlerClass.arrivals`` are the calls' arrivals."""
    handler = type("Garbled", (Garbling,), {"answer": answer, "delay_s": delay_s, "arrivals": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The teacher behind a real ``fogline serve``, for a module's tests (import this name)."""
    server = Served(teacher_repository(tmp_path_factory.mktemp("oip") / "models")).start()
    try:
        yield server
    finally:
        server.kill()
