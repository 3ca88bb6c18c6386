"""Fuzz release documents: any ``release.json`` parses, or raises pydantic's ValidationError.

A device reads a release's document (``release.json``, served by the
controller's TUF repository and kept in its slots) with
``ReleaseDocument.model_validate_json``, and catches ``ValidationError``
(a ``ValueError``) — TUF has checked its hash first, but a slot on the
device's disk may be damaged, and the controller reads what an operator
wrote. What must hold: a document parses, or that error is raised; a
parsed document's paths stay inside the release (no ``..``, no absolute
path), its properties (``target_path``, ``total_length``, ``parsed_version``,
``is_expired``) compute, and it writes back to JSON that reads back equal.

    python fuzz/release.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import json
import posixpath
import sys

import atheris
from _harness import fuzz, instrumented, json_value

with instrumented(__name__, ["fogline.security._document", "fogline._names"]):
    from fogline.security import ReleaseDocument

SCHEMA = ReleaseDocument.model_json_schema()


def document(data: bytes) -> bytes:
    """The ``release.json`` an input stands for."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    return json.dumps(json_value(atheris.FuzzedDataProvider(data[1:]), SCHEMA)).encode()


def _inside(path: str) -> bool:
    return not posixpath.isabs(path) and not posixpath.normpath(path).startswith("..")


def TestOneInput(data: bytes) -> None:
    try:
        doc = ReleaseDocument.model_validate_json(document(data))
    except ValueError as exc:  # pydantic's ValidationError
        assert str(exc), "an error without a message"
        return
    assert all(_inside(f.path) for f in doc.files), "a file path escapes the release"
    assert _inside(doc.entry), "the entry escapes the release"
    assert doc.target_path and doc.total_length >= 0
    doc.parsed_version  # noqa: B018 - must compute
    doc.is_expired()
    assert ReleaseDocument.model_validate_json(doc.model_dump_json()) == doc, "round trip"


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
