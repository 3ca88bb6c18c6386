"""Which SQLite a connection goes through: the standard library's, or SQLCipher's with a key.

A file opened without a key is plain SQLite through :mod:`sqlite3`, as fast as
ever and with nothing more installed. A file opened with a
:class:`~fogline.security.DeviceKey` goes through SQLCipher (the
``sqlcipher3`` module of the ``sqlcipher3-binary`` wheel, which bundles its
own SQLite): every page, of the file and of its ``-wal``, is AES-256 with a
per-page HMAC. The key handed to SQLCipher is the device key's ``"store"``
sub-key given as a raw key (``x'…'``), so opening costs no PBKDF2.

SQLCipher's exceptions are not subclasses of :mod:`sqlite3`'s, so code that
maps database failures catches :func:`database_errors` (both families, the
second only once SQLCipher was loaded) rather than ``sqlite3.Error``.

What a file is, is read from its first bytes: a plain SQLite file starts with
``SQLite format 3``; an encrypted one starts with its random salt and is a
whole number of 4096-byte pages. An encrypted file is never opened without
its key as a new empty database, and a plain one is never "opened" with a
key (SQLCipher would fail on it): both are refused, saying what to do.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sqlite3
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

from fogline.errors import ConfigError, KeyUnavailable, StoreError, StoreFormatError, WrongKey

if TYPE_CHECKING:
    from fogline.security import DeviceKey

#: The first 16 bytes of every plain SQLite file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLCipher 4's page size: an encrypted file is a whole number of these.
CIPHER_PAGE = 4096
#: Where the device key may come from, for messages that ask for it.
_PASS_KEY = (
    "pass the device key (--device-key FILE, or $FOGLINE_DEVICE_KEY_FILE, $FOGLINE_DEVICE_KEY "
    "or $FOGLINE_DEVICE_KEY_COMMAND)"
)
_SQLCIPHER = "sqlcipher3"

FileKind = Literal["new", "plain", "encrypted", "other"]


def database_errors(kind: str = "Error") -> tuple[type[Exception], ...]:
    """The exception classes named ``kind`` (``"Error"``, ``"OperationalError"``, ...) of
    every SQLite driver loaded: :mod:`sqlite3`'s, and SQLCipher's once a key was used.

    >>> database_errors() == (sqlite3.Error,) or len(database_errors()) == 2
    True
    """
    found: list[type[Exception]] = [getattr(sqlite3, kind)]
    cipher = sys.modules.get(_SQLCIPHER)
    if cipher is not None:
        found.append(getattr(cipher, kind))
    return tuple(found)


def file_kind(path: Path) -> FileKind:
    """What the file at ``path`` holds, from its size and first bytes (nothing is opened as SQLite).

    ``"new"``: missing or empty; ``"plain"``: plain SQLite; ``"encrypted"``: no
    SQLite header and a whole number of SQLCipher pages (or random bytes that
    happen to look so: only the key tells); ``"other"``: neither.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
            size = fh.seek(0, 2)
    except FileNotFoundError:
        return "new"
    except OSError:
        return "other"  # a folder, unreadable: opening says what is wrong
    if size == 0:
        return "new"
    if head == SQLITE_HEADER:
        return "plain"
    return "encrypted" if size % CIPHER_PAGE == 0 else "other"


def is_encrypted(path: str | Path) -> bool:
    """Whether ``path`` looks like an encrypted database (one that needs a key to open).

    >>> import pathlib, tempfile
    >>> is_encrypted(pathlib.Path(tempfile.mkdtemp()) / "results.db")  # not there yet
    False
    """
    return file_kind(Path(path)) == "encrypted"


def raw_key(key: DeviceKey) -> str:
    """SQLCipher's spelling of the store sub-key as a raw key: ``x'<64 hex>'`` (no PBKDF2)."""
    return f"x'{key.derive('store').hex()}'"


@functools.cache
def sqlcipher() -> Any:
    """The ``sqlcipher3`` module, or a :class:`ConfigError` saying which extra to install."""
    try:
        module = importlib.import_module(_SQLCIPHER)
    except ImportError as exc:
        raise ConfigError(
            "encryption at rest needs sqlcipher3 (not installed here): "
            "pip install 'fogline[secure]'"
        ) from exc
    # Its own SQLite logs a failed page HMAC (a wrong key) on stderr; the error is raised anyway.
    with contextlib.closing(module.connect(":memory:")) as conn:
        conn.execute("PRAGMA cipher_log_level = NONE")
    return module


class _Held(sqlite3.Connection):
    """A connection that holds its file's open lock (:mod:`._open_lock`) until it is closed."""

    held: IO[bytes] | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.held is not None:
                self.held.close()


@functools.cache
def _held_cipher(module: Any) -> type:
    """SQLCipher's connection class, holding its open lock like :class:`_Held`."""

    def close(self: Any) -> None:
        try:
            module.Connection.close(self)
        finally:
            if self.held is not None:
                self.held.close()

    return type("_HeldCipher", (module.Connection,), {"held": None, "close": close})


def connect(
    path: Path,
    *,
    key: DeviceKey | None,
    timeout: float = 5.0,
    what: str = "database",
    cipher: bool = False,
    held: IO[bytes] | None = None,
) -> sqlite3.Connection:
    """A connection to ``path`` (autocommit, shareable between threads), its key checked.

    Without a key: plain :mod:`sqlite3`, or :class:`KeyUnavailable` when the
    file looks encrypted. With a key: SQLCipher, :class:`WrongKey` when the
    key does not open the file, :class:`StoreFormatError` when the file is
    plain SQLite (encrypt it with ``fogline store rekey``). Errors name the file.
    ``cipher`` opens a plain file through SQLCipher's SQLite too (to attach an
    encrypted copy of it). ``held`` (the file's open lock) is closed with the
    connection, or here when it does not open.
    """
    try:
        conn = _connect(path, key, timeout, what, cipher)
    except BaseException:
        if held is not None:
            held.close()
        raise
    conn.held = held  # type: ignore[attr-defined]
    return conn


def _connect(
    path: Path, key: DeviceKey | None, timeout: float, what: str, cipher: bool
) -> sqlite3.Connection:
    kind = file_kind(path)
    if key is None and kind == "encrypted":
        raise KeyUnavailable(f"{path}: the {what} is encrypted; {_PASS_KEY}")
    if key is not None and kind == "plain":
        raise StoreFormatError(
            f"{path}: the {what} is not encrypted, but a device key was given; encrypt it with "
            f"`fogline store rekey {path} --new-key FILE`, or open it without a key"
        )
    if key is None and not cipher:
        try:
            return sqlite3.connect(
                path,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=_Held,
            )
        except sqlite3.Error as exc:
            raise _cannot_open(path, what, exc) from exc
    module = sqlcipher()
    try:
        conn = module.connect(
            str(path),
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_held_cipher(module),
        )
    except module.Error as exc:
        raise _cannot_open(path, what, exc) from exc
    try:
        if key is not None:
            conn.execute(f'PRAGMA key = "{raw_key(key)}"')
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except module.OperationalError as exc:  # locked, unreadable: not the key's fault
        conn.close()
        raise _cannot_open(path, what, exc) from exc
    except module.DatabaseError as exc:
        conn.close()
        if kind == "other" or key is None:
            raise StoreFormatError(f"{path}: not a SQLite database ({exc})") from exc
        raise WrongKey(
            f"{path}: the {what} did not open with the device key {key.fingerprint()} "
            f"(from {key.origin}): it was encrypted with another key, or altered"
        ) from exc
    return cast(sqlite3.Connection, conn)


def _cannot_open(path: Path, what: str, exc: Exception) -> StoreError:
    return StoreError(f"{path}: cannot open the {what}: {exc}")
