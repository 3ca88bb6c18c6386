"""The servers bench_serve.py measures fogline against, each in a venv of its own.

Nothing here touches fogline's venv: the naive FastAPI server, MLServer and
PyTriton are installed by pip (the registry configured for pip here) into
``benchmarks/.venv-naive``, ``.venv-mlserver`` and ``.venv-pytriton`` on the
first run, and later runs reuse them (delete the folder to reinstall). A
rival that cannot be installed or started is reported with the reason, as
:class:`Unavailable`, never silently skipped.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Unavailable(Exception):
    """A rival server that cannot run here; the message says why."""


@dataclass(frozen=True)
class Venv:
    """A benchmark-only venv: its folder name, what pip installs, and an import that proves it."""

    name: str
    packages: tuple[str, ...]
    probe: str

    @property
    def folder(self) -> Path:
        return HERE / f".venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"


NAIVE = Venv("naive", ("fastapi", "uvicorn[standard]", "onnxruntime", "numpy"), "fastapi, uvicorn")
# MLServer 1.7's inference workers call asyncio.get_event_loop() with no loop set, which
# uvloop 0.22 turned into an error (every worker dies at start): the uvloop it was made with.
MLSERVER = Venv("mlserver", ("mlserver==1.7.*", "uvloop<0.22", "onnxruntime", "numpy"), "mlserver")
PYTRITON = Venv("pytriton", ("nvidia-pytriton", "onnxruntime", "numpy"), "pytriton")


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def version_of(python: Path, distribution: str) -> tuple[str, str]:
    """(``distribution``'s version, the Python's version) as the venv's interpreter sees them."""
    code = (
        "import importlib.metadata as m, sys; "
        f"print(m.version({distribution!r}), '.'.join(map(str, sys.version_info[:3])))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    found = done.stdout.split()
    return (found[0], found[1]) if len(found) == 2 else ("?", "?")


def ensure(venv: Venv, interpreter: str = "python3") -> Path:
    """The venv's interpreter, made with ``interpreter`` and pip-installed on first use."""
    probe = [str(venv.python), "-c", f"import {venv.probe}"]
    if venv.python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return venv.python
    log(f"making {venv.folder} with {interpreter} (once): pip install {' '.join(venv.packages)}")
    if not venv.python.exists():
        made = subprocess.run(
            [interpreter, "-m", "venv", str(venv.folder)], capture_output=True, text=True
        )
        if made.returncode != 0:
            raise Unavailable(f"{interpreter} -m venv failed: {made.stderr.strip()[-300:]}")
    done = subprocess.run(
        [str(venv.python), "-m", "pip", "install", "-q", *venv.packages],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"pip could not install {' '.join(venv.packages)}: {' / '.join(tail)}")
    return venv.python


def other_pythons() -> list[str]:
    """Interpreters of another minor version than this one (pyenv's, then PATH), 3.12 first."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    found: dict[str, str] = {}
    for minor in ("3.12", "3.13", "3.10"):  # 3.12: the one PyTriton's stub was seen to run on
        if minor == mine:
            continue
        on_path = shutil.which(f"python{minor}")
        # pyenv's shim on PATH answers "command not found" for a version not enabled globally:
        # its real interpreters come first, and a shim is never taken.
        candidates = sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python{minor}"))
        ) + ([on_path] if on_path and "/shims/" not in on_path else [])
        if candidates:
            found[minor] = candidates[0]
    return list(found.values())


# --- the naive server ----------------------------------------------------------------------------

NAIVE_SERVER = '''\
"""FastAPI + one InferenceSession.run per request, speaking just enough OIP for tritonclient."""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ["NAIVE_THREADS"])
options.inter_op_num_threads = 1
providers = os.environ["ONNX_PROVIDERS"].split(",")  # bench_serve's --provider, CPU last
session = ort.InferenceSession(sys.argv[1], options, providers=providers)
output_names = [o.name for o in session.get_outputs()]
inline = os.environ["NAIVE_MODE"] == "inline"
app = FastAPI()


@app.get("/v2/health/ready")
def ready() -> Response:
    return Response(status_code=200)


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    body = await request.body()
    length = int(request.headers.get("inference-header-content-length", len(body)))
    header = json.loads(body[:length])
    feeds, offset = {}, length
    for spec in header["inputs"]:
        size = spec["parameters"]["binary_data_size"]
        array = np.frombuffer(body, np.float32, size // 4, offset)
        feeds[spec["name"]] = array.reshape(spec["shape"])
        offset += size
    if inline:
        outputs = session.run(None, feeds)
    else:
        outputs = await run_in_threadpool(session.run, None, feeds)
    blobs = [np.ascontiguousarray(o, np.float32).tobytes() for o in outputs]
    answer = {
        "model_name": name,
        "outputs": [
            {
                "name": n,
                "datatype": "FP32",
                "shape": list(o.shape),
                "parameters": {"binary_data_size": len(b)},
            }
            for n, o, b in zip(output_names, outputs, blobs)
        ],
    }
    text = json.dumps(answer).encode()
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


# --- the floor (a reference, not a rival: the round trip with no server work) --------------------

FLOOR_SERVER = '''\
"""The round trip's floor: read each request whole, send a canned OIP answer; no model."""

import asyncio
import json
import sys

import httptools
import uvloop

logits = bytes(4000)  # [1, 1000] FP32, the size of the real answer
header = json.dumps(
    {
        "model_name": "floor",
        "outputs": [
            {
                "name": "logits",
                "datatype": "FP32",
                "shape": [1, 1000],
                "parameters": {"binary_data_size": len(logits)},
            }
        ],
    }
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\\r\\ncontent-type: application/octet-stream\\r\\n"
    b"inference-header-content-length: %d\\r\\ncontent-length: %d\\r\\n\\r\\n"
    % (len(header), len(header) + len(logits))
) + header + logits
EMPTY = b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n"


class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body = []

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        whole = b"".join(self.body)  # what any server that uses the body must do
        self.body = []
        self.transport.write(ANSWER if whole else EMPTY)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()


uvloop.run(main())
'''


def naive_command(script: Path, onnx: Path, port: int) -> list[str]:
    return [str(ensure(NAIVE)), str(script), str(onnx), str(port)]


# --- MLServer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLServerPorts:
    http: int
    grpc: int
    metrics: int


def mlserver_folder(
    folder: Path, onnx: Path, ports: MLServerPorts, max_batch: int, delay_s: float
) -> Path:
    """MLServer's settings.json and one model's model-settings.json (the custom ONNX runtime)."""
    root = folder / "mlserver"
    (root / "mobilenet").mkdir(parents=True, exist_ok=True)
    settings = {
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        "metrics_dir": str(root / ".metrics"),  # else a .metrics folder in the working directory
        "host": "127.0.0.1",
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "mobilenet",
        "implementation": "_mlserver_onnx.OnnxRuntimeModel",
        "max_batch_size": max_batch,
        "max_batch_time": delay_s,
        "parameters": {"uri": str(onnx)},
    }
    (root / "mobilenet" / "model-settings.json").write_text(json.dumps(model))
    return root


def mlserver_command(root: Path) -> tuple[list[str], dict[str, str]]:
    python = ensure(MLSERVER)
    mlserver = python.parent / "mlserver"
    return [str(mlserver), "start", str(root)], {"PYTHONPATH": str(HERE)}


# --- PyTriton ------------------------------------------------------------------------------------


def pytriton_python() -> Path:
    """PyTriton's venv, made with another Python than fogline's (its stub failed under 3.11.7)."""
    if PYTRITON.python.exists():
        return ensure(PYTRITON)
    pythons = other_pythons()
    if not pythons:
        raise Unavailable(
            f"no Python other than {sys.version.split()[0]} here (PATH, ~/.pyenv), and its "
            "Python backend's stub fails under this one"
        )
    return ensure(PYTRITON, pythons[0])


def pytriton_command(onnx: Path, http: int, grpc: int, metrics: int) -> list[str]:
    return [
        str(pytriton_python()),
        str(HERE / "_pytriton_onnx.py"),
        *(str(onnx), str(http), str(grpc), str(metrics)),
    ]


def pytriton_env(python: Path) -> dict[str, str]:
    """Where Triton's Python backend stub finds libpython (pyenv's builds have no rpath to it)."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    libdir = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout
    paths = [libdir.strip(), os.environ.get("LD_LIBRARY_PATH", "")]
    return {"LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}
