"""The lock that keeps a database file from being replaced while a fogline process has it open.

``fogline store rekey`` writes a new file and renames it over the old one; a
process that opened the old file meanwhile would go on writing to the old
inode, and its rows would be lost. So every :func:`~fogline.store.open_database`
connection holds a *shared* ``flock`` on ``FILE.lock`` (beside the file, never
renamed) for as long as it is open, taken before the file is opened; a rekey
holds it *exclusive* from before its checks until the new file is in place.
A rekey is refused while any connection is open; an open during a rekey waits
for it (up to the connection's busy timeout), then opens the new file, or
says the file is being rekeyed.

SQLite's own locks cannot do this: they are on the file's inode, which the
rename replaces, and in WAL mode ``BEGIN EXCLUSIVE`` does not even keep
readers out. ``flock`` locks belong to an open file, so closing some other
descriptor of ``FILE.lock`` in the same process does not drop them (as it
would ``fcntl`` record locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fogline.errors import StoreError


def lock_file(path: Path) -> Path:
    """Where the open lock of the database at ``path`` is: ``results.db`` → ``results.db.lock``."""
    return path.with_name(path.name + ".lock")


def hold_shared(path: Path, timeout: float) -> IO[bytes] | None:
    """The shared open lock of ``path``, held until the returned file is closed.

    None where there is nothing to lock (``:memory:``) or the folder is not
    writable (a rekey could not write its new file there either).
    """
    if str(path) == ":memory:":
        return None
    lock = lock_file(path)
    try:
        fh = open(lock, "a+b")  # noqa: SIM115 - it lives as long as the connection
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.close()
                raise StoreError(
                    f"{path}: being rekeyed (`fogline store rekey` holds {lock.name}); "
                    "open it again when that has finished, with the key it was given"
                ) from None
            time.sleep(0.05)
        except BaseException:
            fh.close()
            raise


@contextlib.contextmanager
def hold_exclusive(path: Path) -> Iterator[None]:
    """The exclusive open lock of ``path``; :class:`StoreError` at once when a connection has it open."""
    lock = lock_file(path)
    with open(lock, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{path}: open in another process (a pipeline, agent or controller?) or in this "
                "one; stop it, then rekey"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
