"""Damage a stored file the way a disk does."""

from __future__ import annotations

import os
from pathlib import Path


def flip_byte(file: Path, at: int = 0, *, keep_mtime: bool = False) -> None:
    """Damage a stored file in place; ``keep_mtime`` leaves size, mtime and inode as they were,
    as rot under the file system does."""
    before = file.stat()
    with open(file, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x01]))
    if keep_mtime:
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
