"""Write a file so that readers see the old one or the whole new one, never a part.

The writer is :func:`fogline._files.atomic_output` (synced to disk before the
rename); this module only keeps the model's name for it, with the mode a new
file usually gets (0666 less the umask) rather than a fixed one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fogline._files import atomic_output


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('whole', ['a.txt'])
    """
    with atomic_output(target, mode=None) as tmp:
        yield tmp
