"""Image files as a source: one file, or every image in a folder tree, decoded by OpenCV."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from fogline.pipeline._base import ArraySpec, ExistingPath, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._optional import optional

#: Suffixes the default pattern picks (what OpenCV decodes), compared lower-case.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImagesSpec(SourceSpec):
    """Images from ``path`` (a file or a folder searched recursively), in name order.

    ``pattern`` filters file names (``"*.png"``; default: every image suffix
    OpenCV reads). ``labels_from_folders`` sets each item's ``meta["label"]``
    to the name of the folder holding the file (``cats/01.png`` → ``cats``), as
    image data sets are usually arranged. Items carry RGB uint8 HWC arrays.

    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> import cv2
    >>> _ = cv2.imwrite(str(folder / "a.png"), np.zeros((4, 6, 3), np.uint8))
    >>> spec = ImagesSpec(path=folder)
    >>> spec.output().describe(), [f.name for f in spec.files()]
    ('(?, ?, 3) uint8 HWC', ['a.png'])
    """

    needs = ("cv2",)

    type: Literal["images"] = "images"
    path: ExistingPath
    pattern: str | None = None
    loop: bool = False
    labels_from_folders: bool = False

    @model_validator(mode="after")
    def _has_images(self) -> ImagesSpec:
        if not self.files():
            what = repr(self.pattern) if self.pattern else "images"
            raise ValueError(f"{self.path}: holds no files matching {what}")
        return self

    def files(self) -> list[Path]:
        """The image files, sorted (a single file when ``path`` is one)."""
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file() and self._matches(p.name))

    def _matches(self, name: str) -> bool:
        if self.pattern is not None:
            return fnmatch.fnmatch(name, self.pattern)
        return name.lower().endswith(IMAGE_SUFFIXES)

    def output(self) -> ArraySpec:
        return ArraySpec((None, None, 3), "uint8", "HWC")

    def build(self, name: str) -> ImagesSource:
        root = self.path if self.path.is_dir() else self.path.parent
        return ImagesSource(
            name, self.files(), root, loop=self.loop, labels=self.labels_from_folders
        )


class ImagesSource:
    """Reads ``files`` in order (again and again with ``loop``); a file it cannot decode is Corrupt."""

    def __init__(
        self, name: str, files: list[Path], root: Path, *, loop: bool = False, labels: bool = False
    ) -> None:
        self.name = name
        self._files = files
        self._root = root
        self._loop = loop
        self._labels = labels

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        cv2 = optional("cv2")
        sequence = 0
        while True:
            decoded = 0
            for file in self._files:
                if stop.is_set():
                    return
                position = file.relative_to(self._root).as_posix()
                bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if bgr is None:
                    yield Corrupt(self.name, position, "not an image OpenCV can decode")
                    continue
                meta: dict[str, object] = {"position": position}
                if self._labels:
                    meta["label"] = file.parent.name
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Item(self.name, sequence, time.time(), rgb, meta)
                sequence += 1
                decoded += 1
            # A pass that decoded nothing would loop forever on the same broken files.
            if not self._loop or decoded == 0:
                return
