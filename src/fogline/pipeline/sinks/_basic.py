"""The sinks that need nothing but the standard library: JSON lines, stdout, a shell command.

(The store is not a sink here but the pipeline's ``store:`` section: it is
always on unless disabled, and the outbox lives in it.)
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
from collections.abc import Sequence
from io import FileIO
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import field_validator

from fogline.errors import ConfigError, StoreError, TransportError
from fogline.pipeline._base import OutputPath, SinkSpec, TransportSpec
from fogline.store import JsonlTransport, OutboxMessage, Result


def result_fields(result: Result) -> dict[str, Any]:
    """The flat fields a template or condition sees: the outputs plus source, position, model."""
    return {
        **result.outputs,
        "source": result.source,
        "sequence": result.sequence,
        "position": result.position,
        "captured_at": result.captured_at,
        "model": result.model,
        "model_version": result.model_version,
    }


def template_fields(template: str) -> set[str]:
    """The ``{field}`` names a ``str.format`` template uses; :class:`ConfigError` if malformed.

    >>> sorted(template_fields("fogline/{source}/{label}"))
    ['label', 'source']
    """
    try:
        return {
            name.split(".")[0].split("[")[0]
            for _, name, _, _ in string.Formatter().parse(template)
            if name
        }
    except ValueError as exc:
        raise ConfigError(f"bad template {template!r}: {exc}") from exc


class JsonlSink:
    """Appends one JSON object per result to a file (created with its folder).

    A write the file system refuses (a full disk) is a
    :class:`~fogline.errors.TransportError`, as for every sink: the results
    did not reach the sink's destination (the store, not this file, is the
    durable copy). The file is unbuffered, so a failed write leaves nothing
    behind for the next write or ``close()`` to fail on again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: FileIO | None = path.open("ab", buffering=0)

    def write(self, results: Sequence[Result]) -> None:
        if self._file is None:
            raise TransportError(f"the JSON lines sink {self.path} is closed")
        view = memoryview("".join(json.dumps(r.to_dict()) + "\n" for r in results).encode())
        try:
            while view:
                view = view[self._file.write(view) :]
        except OSError as exc:
            raise TransportError(f"the JSON lines sink {self.path}: cannot write: {exc}") from exc

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                raise TransportError(f"the JSON lines sink {self.path}: {exc}") from exc


class StdoutSink:
    """Prints each result: as JSON, or through a ``format`` template like ``"{source} {label}"``."""

    def __init__(self, template: str | None, stream: TextIO | None = None) -> None:
        self.template = template
        self.stream = stream

    def write(self, results: Sequence[Result]) -> None:
        stream = self.stream or sys.stdout
        for result in results:
            if self.template is None:
                line = json.dumps(result.to_dict())
            else:
                line = self.template.format_map(result_fields(result))
            stream.write(line + "\n")
        stream.flush()


class ShellSink:
    """Runs a command per result, without a shell; ``{field}`` in an argument is filled in.

    A non-zero exit or a timeout is a failure of this sink (counted, logged),
    never of the pipeline.
    """

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self.command = list(command)
        self.timeout = timeout

    def write(self, results: Sequence[Result]) -> None:
        for result in results:
            fields = result_fields(result)
            argv = [arg.format_map(fields) for arg in self.command]
            try:
                done = subprocess.run(argv, capture_output=True, timeout=self.timeout, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TransportError(f"command {argv[0]!r} failed: {exc}") from exc
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip()[-200:]
                raise TransportError(f"command {argv[0]!r} exited with {done.returncode}: {tail}")


class JsonlSinkSpec(SinkSpec):
    """``{type: jsonl, path: out.jsonl}``"""

    type: Literal["jsonl"]
    path: OutputPath

    def build(self) -> JsonlSink:
        return JsonlSink(self.path)


class StdoutSinkSpec(SinkSpec):
    """``{type: stdout, format: "{source} {label} {score:.2f}"}`` (JSON without ``format``)."""

    type: Literal["stdout"]
    format: str | None = None

    def fields(self) -> set[str]:
        return set() if self.format is None else template_fields(self.format)

    def build(self) -> StdoutSink:
        return StdoutSink(self.format)


class ShellSinkSpec(SinkSpec):
    """``{type: shell, command: [notify-send, "digit {label}"], timeout: 10}``"""

    type: Literal["shell"]
    command: list[str]
    timeout: float = 10.0

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value or not value[0]:
            raise ValueError("command must be a non-empty list: the program, then its arguments")
        return value

    def fields(self) -> set[str]:
        return set().union(*(template_fields(arg) for arg in self.command))

    def build(self) -> ShellSink:
        return ShellSink(self.command, self.timeout)


class JsonlTransportSpec(TransportSpec):
    """The outbox delivers to a JSON lines file: ``{type: jsonl, path: outbox.jsonl}``."""

    type: Literal["jsonl"]
    path: OutputPath

    def build(self) -> JsonlTransport:
        return _JsonlTransport(self.path)


class _JsonlTransport(JsonlTransport):
    """The store's :class:`~fogline.store.JsonlTransport`, failing as every transport does.

    It reports a file it cannot open as :class:`~fogline.errors.StoreError`
    and a full disk as a bare ``OSError``; an outbox transport that cannot
    deliver raises :class:`~fogline.errors.TransportError` (the message stays
    pending either way), so both are mapped here, raised ``from`` the original.
    """

    def send_many(self, messages: Sequence[OutboxMessage]) -> None:
        try:
            super().send_many(messages)  # send() goes through here too
        except (StoreError, OSError) as exc:
            raise TransportError(f"cannot deliver to {self.path}: {exc}") from exc

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:
            raise TransportError(f"closing {self.path}: {exc}") from exc


def fields_of(spec: Any) -> set[str]:
    """The result fields a sink spec's templates use (none for sinks without templates)."""
    fields = getattr(spec, "fields", None)
    return set(fields()) if callable(fields) else set()


__all__ = [
    "JsonlSink",
    "JsonlSinkSpec",
    "JsonlTransportSpec",
    "ShellSink",
    "ShellSinkSpec",
    "StdoutSink",
    "StdoutSinkSpec",
    "fields_of",
    "result_fields",
    "template_fields",
]
