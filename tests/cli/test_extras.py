"""The CLI without optional extras: it starts, and a command that needs one names it.

A device that only runs pipelines installs neither the ``fleet`` extra
(python-tuf, Starlette) nor the ``serve`` one. Those packages are hidden
from a child Python here by an import hook, so the test needs no second
environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HIDE = """
import importlib.abc, sys
HIDDEN = {"tuf", "securesystemslib", "starlette", "uvicorn", "grpc", "tritonclient"}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Hide())
from fogline.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def fogline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE, *args], capture_output=True, text=True, timeout=120
    )


def test_the_cli_starts_without_the_fleet_and_serve_extras(tmp_path: Path) -> None:
    assert fogline("--help").returncode == 0
    assert fogline("fleet", "--help").returncode == 0
    done = fogline("keys", "init", "--data", str(tmp_path / "keys"))
    assert done.returncode == 2
    assert "pip install 'fogline[fleet]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "keys").exists()
    served = fogline("serve", "--repository", str(tmp_path))
    assert served.returncode == 2 and "pip install 'fogline[serve]'" in served.stderr


def test_the_protocol_needs_no_crypto_library() -> None:
    code = HIDE.replace(
        "from fogline.cli import main\nraise SystemExit(main(sys.argv[1:]))",
        "import fogline.protocol as p; print(p.DesiredState(generation=1).generation)",
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
