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
    """Interpreters of another minor version than this one (PATH, then pyenv's), newest first."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    found: dict[str, str] = {}
    for minor in ("3.13", "3.12", "3.10"):
        if minor == mine:
            continue
        on_path = shutil.which(f"python{minor}")
        candidates = ([on_path] if on_path else []) + sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python{minor}"))
        )
        if candidates:
            found[minor] = candidates[0]
    return list(found.values())


# --- the naive server ----------------------------------------------------------------------------


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
