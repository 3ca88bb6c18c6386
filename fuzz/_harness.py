"""What every fuzz target shares: instrumenting fogline, running libFuzzer, building JSON.

A target is a script ``fuzz/<name>.py`` with ``TestOneInput(data: bytes)``
and ``main()``. Run as a script, it imports fogline *instrumented* (atheris
adds coverage feedback to fogline's own modules only, so libFuzzer steers
towards new branches of our parsers, not of numpy's); imported by pytest to
replay regression inputs, it imports fogline as it is.

:func:`json_value` turns fuzzer bytes into a JSON-like value guided by a JSON
schema (pydantic's ``model_json_schema()``): keys, ``type:`` tags and enum
values come from the schema most of the time, so mutations reach deep keys
instead of dying at the first unknown one; the rest of the time it makes
something the schema does not expect.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import atheris


@contextlib.contextmanager
def instrumented(module_name: str, include: list[str]) -> Iterator[None]:
    """Instrument the ``include`` modules (and their submodules) imported inside the block.

    Only when the target runs as a script. Only the modules that parse the
    input: instrumenting every fogline module a parser's package imports
    (the whole pipeline, the model layer, the store) took 20 s at start-up,
    and their branches are not what the fuzzer should steer by.
    """
    if module_name != "__main__":
        yield
        return
    # atheris 3 matches ``include`` by top-level package only, so every other fogline
    # module is named in ``exclude`` (matched exactly) instead.
    others = [
        name
        for name in _fogline_modules()
        if not any(name == wanted or name.startswith(wanted + ".") for wanted in include)
    ]
    with atheris.instrument_imports(include=["fogline"], exclude=others):
        yield


def _fogline_modules() -> list[str]:
    """Every module of the fogline package, from its files (nothing is imported)."""
    spec = importlib.util.find_spec("fogline")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    names = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("fogline", *parts)))
    return names


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Hand ``sys.argv`` (corpus folders, ``-max_total_time=``, ...) to libFuzzer and run."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


#: Values that break parsers more often than random ones.
_AWKWARD: tuple[Any, ...] = (
    0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**400, 0.5, -0.0, 1e308, float("inf"), float("nan"),
    "", " ", "../x", "/etc/passwd", "a" * 300, "\x00", "é", "${x}", "1.0.0", "*", "#", "+",
    True, False, None, [], {},
)  # fmt: skip


def json_value(fdp: atheris.FuzzedDataProvider, schema: dict[str, Any], depth: int = 0) -> Any:
    """A value for ``schema`` (a node of a JSON schema whose ``$defs`` are in ``schema["$defs"]``)."""
    return _Builder(fdp, schema.get("$defs", {})).value(schema, depth)


class _Builder:
    def __init__(self, fdp: atheris.FuzzedDataProvider, defs: dict[str, Any]) -> None:
        self.fdp = fdp
        self.defs = defs

    def value(self, node: dict[str, Any], depth: int) -> Any:
        fdp = self.fdp
        if depth > 6 or fdp.remaining_bytes() == 0:
            return self.scalar()
        if fdp.ConsumeIntInRange(0, 15) == 0:  # sometimes: anything at all
            return self.wild(depth)
        if "$ref" in node:
            return self.value(self.defs.get(node["$ref"].rsplit("/", 1)[-1], {}), depth)
        for key in ("anyOf", "oneOf", "allOf"):
            if node.get(key):
                return self.value(fdp.PickValueInList(node[key]), depth)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return fdp.PickValueInList(node["enum"])
        kind = node.get("type")
        if isinstance(kind, list) and kind:
            kind = fdp.PickValueInList(kind)
        if kind == "object" or "properties" in node:
            return self.mapping(node, depth)
        if kind == "array":
            items = node.get("items", {})
            count = fdp.ConsumeIntInRange(0, 3)
            return [self.value(items, depth + 1) for _ in range(count)]
        if kind == "string":
            return self.text()
        if kind == "integer":
            return fdp.ConsumeIntInRange(-2, 2**20) if fdp.ConsumeBool() else self.scalar()
        if kind == "number":
            return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else self.scalar()
        if kind == "boolean":
            return fdp.ConsumeBool()
        if kind == "null":
            return None
        return self.scalar()

    def mapping(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        fdp = self.fdp
        properties: dict[str, Any] = node.get("properties", {})
        required = set(node.get("required", ()))
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            if key in required or fdp.ConsumeIntInRange(0, 3) == 0:
                out[key] = self.value(sub, depth + 1)
        if fdp.ConsumeIntInRange(0, 7) == 0:  # a key the schema does not know
            out[self.text()] = self.scalar()
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and fdp.ConsumeBool():
            out[self.text()] = self.value(extra, depth + 1)
        return out

    def text(self) -> str:
        fdp = self.fdp
        if fdp.ConsumeIntInRange(0, 3) == 0:
            choice = fdp.PickValueInList(list(_AWKWARD))
            return choice if isinstance(choice, str) else str(choice)
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))

    def scalar(self) -> Any:
        return self.fdp.PickValueInList(list(_AWKWARD))

    def wild(self, depth: int) -> Any:
        fdp = self.fdp
        pick = fdp.ConsumeIntInRange(0, 4)
        if pick == 0 and depth < 6:
            return [self.wild(depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        if pick == 1 and depth < 6:
            return {self.text(): self.wild(depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}
        if pick == 2:
            return self.text()
        return self.scalar()
