"""The ``fogline`` command: one sub-command per capability, thin on purpose.

Each command parses its options, calls the library, and prints. Every
:class:`~fogline.errors.FoglineError` becomes one line on stderr and exit
status 2; option errors are reported by the CLI library, also with status 2.
"""

from __future__ import annotations

from rich.text import Text

# Importing the command modules registers them on ``app``.
from fogline.cli import (  # noqa: F401
    _accuracy,
    _agent,
    _audit,
    _bench,
    _broker,
    _ca,
    _capture,
    _cluster,
    _controller,
    _demo,
    _distill,
    _fl,
    _fl_fleet,
    _fleet,
    _fleet_health,
    _fleet_policy,
    _fleet_revoke,
    _inspect,
    _keys,
    _keys_device,
    _keys_seal,
    _learn,
    _optimize,
    _release,
    _run,
    _serve,
    _store,
    _store_erase,
    _store_keys,
    _zmq,
)
from fogline.cli._app import app, console_err
from fogline.errors import FoglineError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fogline`` script; returns the exit status."""
    try:
        app(args=argv, prog_name="fogline")  # standalone: usage errors exit 2 by themselves
    except FoglineError as exc:
        message = Text("error: ", style="bold red") + Text(str(exc))
        console_err.print(message, highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


__all__ = ["app", "main"]
