"""The images source: decoding, labels from folders, corrupt files, patterns."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from fogline.pipeline import Corrupt, Item
from fogline.pipeline.sources import ImagesSpec


def _png(path: Path, rgb: tuple[int, int, int], shape: tuple[int, int] = (4, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.zeros((*shape, 3), np.uint8)
    bgr[:] = rgb[::-1]
    assert cv2.imwrite(str(path), bgr)


def test_images_come_as_rgb_in_name_order_with_folder_labels(tmp_path: Path, reader) -> None:
    _png(tmp_path / "cat" / "b.png", (255, 0, 0))
    _png(tmp_path / "cat" / "a.png", (0, 255, 0), (3, 2))
    _png(tmp_path / "dog" / "c.png", (0, 0, 255))
    spec = ImagesSpec(path=tmp_path, labels_from_folders=True)

    items = reader(spec.build("cam"), 10)

    assert [i.meta["position"] for i in items] == ["cat/a.png", "cat/b.png", "dog/c.png"]
    assert [i.meta["label"] for i in items] == ["cat", "cat", "dog"]
    assert items[0].data.shape == (3, 2, 3)
    assert items[1].data[0, 0].tolist() == [255, 0, 0]  # red stays red: BGR was turned to RGB


def test_an_unreadable_file_is_corrupt_and_reading_goes_on(tmp_path: Path, reader) -> None:
    _png(tmp_path / "1.png", (1, 2, 3))
    (tmp_path / "2.png").write_bytes(b"not a png at all")
    _png(tmp_path / "3.png", (1, 2, 3))

    got = reader(ImagesSpec(path=tmp_path).build("cam"), 10)

    assert [type(g) for g in got] == [Item, Corrupt, Item]
    assert got[1] == Corrupt("cam", "2.png", "not an image OpenCV can decode")
    assert [g.sequence for g in got if isinstance(g, Item)] == [0, 1]


def test_pattern_single_file_and_loop(tmp_path: Path, reader) -> None:
    _png(tmp_path / "a.png", (0, 0, 0))
    _png(tmp_path / "b.jpg", (0, 0, 0))

    assert [f.name for f in ImagesSpec(path=tmp_path, pattern="*.jpg").files()] == ["b.jpg"]
    looped = reader(ImagesSpec(path=tmp_path / "a.png", loop=True).build("cam"), 5)
    assert [i.sequence for i in looped] == [0, 1, 2, 3, 4]


def test_a_folder_without_matching_images_is_refused(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (0, 0, 0))

    with pytest.raises(ValidationError, match=r"no files matching '\*.bmp'"):
        ImagesSpec(path=tmp_path, pattern="*.bmp")
    with pytest.raises(ValidationError, match="no such file"):
        ImagesSpec(path=tmp_path / "missing")


def test_a_loop_over_only_broken_files_ends(tmp_path: Path, reader) -> None:
    (tmp_path / "x.png").write_bytes(b"broken")

    got = reader(ImagesSpec(path=tmp_path, loop=True).build("cam"), 10)

    assert len(got) == 1 and isinstance(got[0], Corrupt)
