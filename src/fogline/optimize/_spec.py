"""``module:name`` specs of the user's own code (a NAS family, a PyTorch factory), imported.

The module is the user's: importing it runs their code, and any error in
it (a syntax error, a ``NameError`` at module level, a missing package)
becomes one :class:`~fogline.errors.ConfigError` that names the spec, the
module's file and, for a syntax error, the line; never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from fogline.errors import ConfigError


def import_spec(spec: str, *, what: str) -> Any:
    """The object ``module:name`` names; ``what`` says what it should be (for the messages).

    >>> import_spec("fogline.examples:digits_eval", what="a data function").__name__
    'digits_eval'
    >>> import_spec("fogline.examples", what="a family")
    Traceback (most recent call last):
    fogline.errors.ConfigError: 'fogline.examples': write a family as module:name
    >>> import_spec("fogline.examples:nothing", what="a family")
    Traceback (most recent call last):
    fogline.errors.ConfigError: fogline.examples:nothing: cannot import 'nothing' from 'fogline.examples' (want a family)
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r}: write {what} as module:name")
    if "" not in sys.path:
        sys.path.insert(0, "")  # a module in the working folder imports too
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else f"line {exc.lineno}"
        raise ConfigError(
            f"{spec}: cannot import {module_name!r}: {type(exc).__name__} in {where}: {exc.msg}"
        ) from exc
    except Exception as exc:  # the user's module ran and failed: say where
        raise ConfigError(
            f"{spec}: cannot import {module_name!r}{_file_of(module_name, exc)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(
            f"{spec}: cannot import {attr!r} from {module_name!r} (want {what})"
        ) from exc


def _file_of(module_name: str, exc: BaseException) -> str:
    """`` (FILE, line N)``: the deepest frame of the error inside the module's own file."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            found = importlib.util.find_spec(module_name)
        except Exception:
            found = None
        path = found.origin if found is not None else None
    if path is None:
        return ""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" ({path}" + ("" if line is None else f", line {line}") + ")"
