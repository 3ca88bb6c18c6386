"""Run schemathesis against a live server's ``/openapi.json`` and say what it found.

Its command line (``schemathesis run``), in a subprocess, as a user would
run it: the *coverage* phase (boundary and just-outside values of every
parameter and body field, missing and extra keys, wrong types) and the
*fuzzing* phase (``max_examples`` drawn requests per operation, fitting
and not), each request sent with ``headers`` (the bearer token). The checks:
no 5xx, and a status, content type and body that the description allows.
A fixed seed makes a run repeatable.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def cases(self) -> tuple[int, int]:
        """(generated, passed) test cases, as its summary says."""
        found = re.search(r"(\d+) generated, (\d+) passed", self.output)
        return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def run_schemathesis(
    base_url: str,
    *,
    headers: dict[str, str],
    max_examples: int,
    seed: int = 1,
    exclude_operation_ids: tuple[str, ...] = (),
) -> Run:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        base_url + "/openapi.json",
        "--phases", "coverage,fuzzing",
        "--max-examples", str(max_examples),
        "--checks", ",".join(CHECKS),
        "--seed", str(seed),
        "--no-color",
    ]  # fmt: skip
    for operation_id in exclude_operation_ids:
        command += ["--exclude-operation-id", operation_id]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.TemporaryDirectory() as scratch:  # its cache folder (.schemathesis/) goes here
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=scratch)
    return Run(done.returncode, done.stdout + done.stderr)
