"""The layers of DESIGN.md's component table, enforced.

Every ``import`` in ``src/fogline`` (at module level, inside functions and
under ``TYPE_CHECKING`` alike: each is an arrow between components) must be
one the table allows; a package imports another's public names only (no
``fogline.x._private`` module, no ``_name`` from another package); and the
controller and the transport layer start without the ML stack, checked in
a child interpreter that imports nothing else first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fogline

SRC = Path(fogline.__file__).parent

#: DESIGN.md's component table: component → the components it may import. The modules at
#: the top of the table, ``errors`` (the one error tree), ``_files`` (atomic writes, hashes,
#: private folders) and ``_names`` (the rule for device ids and release names), are above
#: every other, so every component may import them; a component imports itself freely.
FOUNDATION = ("errors", "_files", "_names")
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_names": set(),
    "_files": {"errors"},
    "security": {"_files"},
    "transport": {"security"},
    "protocol": {"transport"},
    # Edge clusters: membership (presence, last will), credit dispatch, reorder window, status.
    "cluster": {"transport"},
    "store": {"_files", "security"},
    "metrics": set(),
    # Energy meters (RAPL, NVML, an estimate) and the deferral of work that can wait.
    "power": {"_files"},
    "model": {"_files", "power"},  # joules per inference in the benchmark
    "data": {"model"},
    "oip": {"model"},
    "optimize": {"model", "data", "power"},
    "monitor": {"model", "data", "metrics", "power"},  # fine-tuning deferred by power and carbon
    # security: sealed models opened in memory, the privacy (egress) policy.
    "pipeline": {
        "model",
        "data",
        "store",
        "transport",
        "metrics",
        "monitor",
        "oip",
        "cluster",
        "security",
        "power",  # energy per inference; sync of non-urgent results deferred
    },
    "serve": {"model", "oip", "metrics", "security", "power"},  # sealed models opened in memory
    "federated": {"protocol", "transport", "model", "data", "security", "store", "power"},
    "fleet.controller": {
        "protocol",
        "store",
        "security",
        "transport",
        "metrics",
        "federated",
        "cluster",  # the dashboard's clusters: the nodes' presence topics
    },
    "fleet.agent": {
        "protocol",
        "store",
        "security",
        "transport",
        "model",
        "pipeline",
        "serve",
        "federated",
        "metrics",  # the metric names it reads back from its children's Prometheus text
        "cluster",
        "power",  # energy in telemetry; rounds and fine-tuning deferred by power and carbon
    },
    # The fleet package itself only names its two roles (and must not load either eagerly).
    "fleet": {"fleet.controller", "fleet.agent"},
    # The bundled example model and its data functions, for the demo and the tests.
    "examples": {"data", "model"},
}
ALLOWED["testing"] = {c for c in ALLOWED if c != "testing"}  # anything but cli
ALLOWED["cli"] = set(ALLOWED)  # everything
ALLOWED["_root"] = {"cli"}  # fogline/__init__.py and __main__.py

#: What starts without numpy, onnx and ONNX Runtime (DESIGN.md: the controller runs rollouts
#: on a machine without the ML stack, and so does ``fogline broker``).
LIGHT = (
    "fogline.fleet.controller",
    "fogline.transport",
    "fogline.protocol",
    "fogline.cluster",
    "fogline.power",
)
HEAVY = ("numpy", "onnx", "onnxruntime")


def component(module: str) -> str:
    """The table's component that ``module`` (``fogline.x.y``) belongs to."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("__init__", "__main__"):
        return "_root"
    if parts[0] == "fleet" and len(parts) > 1 and f"fleet.{parts[1]}" in ALLOWED:
        return f"fleet.{parts[1]}"
    return parts[0]


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(relative.parts)
        yield name.removesuffix(".__init__"), path


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each ``fogline`` import in ``path`` (name None: ``import m``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fogline"):
                    yield node.lineno, alias.name, None
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("fogline")
        ):
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def test_the_table_knows_every_component() -> None:
    unknown = {component(name) for name, _ in modules()} - set(ALLOWED)
    assert not unknown, f"components missing from DESIGN.md's table (and ALLOWED): {unknown}"


def test_every_import_points_the_way_the_table_allows() -> None:
    wrong = []
    for name, path in modules():
        mine = component(name)
        for line, target, imported in imports(path):
            if target == "fogline" and imported is not None and _is_module(imported):
                target = f"fogline.{imported}"  # from fogline import errors
            if target == "fogline":
                continue  # the package's own metadata (fogline.__version__)
            theirs = component(target)
            if theirs in (mine, *FOUNDATION) or theirs in ALLOWED[mine]:
                continue
            wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {mine} imports {target}")
    assert not wrong, "imports DESIGN.md's table forbids:\n" + "\n".join(sorted(set(wrong)))


def _is_module(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").is_file()


def test_no_private_name_is_imported_across_components() -> None:
    wrong = []
    for name, path in modules():
        mine = component(name)
        for line, target, imported in imports(path):
            theirs = component(target)
            if theirs == mine or target == "fogline":
                continue
            parts = target.split(".")[1:]
            private_module = any(p.startswith("_") for p in parts if p not in FOUNDATION)
            private_name = imported is not None and imported.startswith("_")
            if private_module or private_name:
                shown = target + (f" import {imported}" if imported else "")
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {mine} uses {shown}")
    assert not wrong, "private names imported across components:\n" + "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("module", LIGHT)
def test_starts_without_the_ml_stack(module: str) -> None:
    code = (
        f"import sys, {module}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"import {module} loads {done.stdout.strip()}"
