"""The video source on a real MJPG .avi written by OpenCV."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from fogline.errors import ConfigError
from fogline.pipeline.sources import VideoSpec


def _avi(path: Path, frames: int, fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 16))
    for _ in range(frames):
        writer.write(np.full((16, 32, 3), (0, 0, 255), np.uint8))  # red, in BGR
    writer.release()
    return path


def test_frames_are_rgb_with_their_frame_number(tmp_path: Path, reader) -> None:
    spec = VideoSpec(path=_avi(tmp_path / "clip.avi", 4))

    items = reader(spec.build("cam"), 10)

    assert [i.meta["position"] for i in items] == [f"clip.avi#frame {n}" for n in range(4)]
    red, green, blue = items[0].data[8, 16].tolist()
    assert items[0].data.shape == (16, 32, 3) and red > 200 and green < 50 and blue < 50
    assert spec.policy == "block"


def test_realtime_plays_at_the_files_frame_rate(tmp_path: Path, reader) -> None:
    path = _avi(tmp_path / "clip.avi", 10, fps=20.0)

    started = time.monotonic()
    items = reader(VideoSpec(path=path, realtime=True).build("cam"), 100)
    elapsed = time.monotonic() - started

    assert len(items) == 10
    assert elapsed >= 0.8 * 9 / 20.0  # nine frame periods between the first and the last


def test_loop_starts_the_file_over(tmp_path: Path, reader) -> None:
    path = _avi(tmp_path / "clip.avi", 3)

    items = reader(VideoSpec(path=path, loop=True).build("cam"), 7)

    assert [i.sequence for i in items] == list(range(7))
    assert items[3].meta["position"] == "clip.avi#frame 0"


def test_a_file_opencv_cannot_open_is_a_config_error_at_read(tmp_path: Path) -> None:
    path = tmp_path / "notes.avi"
    path.write_text("not a video")
    source = VideoSpec(path=path).build("cam")

    with pytest.raises(ConfigError, match=r"cannot open video notes\.avi"):
        next(iter(source.read(threading.Event())))


def test_cameras_and_streams_are_live_and_exactly_one_target_is_given(tmp_path: Path) -> None:
    assert VideoSpec(url="rtsp://cam.local/stream").policy == "drop-oldest"
    assert VideoSpec(device=0, policy="drop-newest").policy == "drop-newest"
    with pytest.raises(ValidationError, match="exactly one of"):
        VideoSpec(device=0, url="rtsp://cam.local/stream")
    with pytest.raises(ValidationError, match="exactly one of"):
        VideoSpec()
