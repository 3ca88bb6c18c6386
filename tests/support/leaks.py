"""Search copied bytes for a model: what a thief with a copy of a folder could find."""

from __future__ import annotations

from pathlib import Path


def holds_a_slice_of(blob: bytes, plain: bytes, width: int = 64, step: int = 512) -> bool:
    """Whether a ``width``-byte slice of ``plain``, taken every ``step`` bytes, occurs in ``blob``."""
    return any(plain[i : i + width] in blob for i in range(0, max(1, len(plain) - width), step))


def files_holding(folder: Path, plain: bytes) -> list[Path]:
    """Every file under ``folder`` that holds a slice of ``plain``."""
    assert holds_a_slice_of(plain, plain)  # the search finds what is there
    found, seen = [], set()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.stat().st_ino in seen:
            continue  # a hard link to a file already searched (staged releases are)
        seen.add(path.stat().st_ino)
        if holds_a_slice_of(path.read_bytes(), plain):
            found.append(path)
    return found
