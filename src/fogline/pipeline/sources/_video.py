"""Video as a source: a file, a local camera (``device``) or a stream (``url``), via OpenCV.

A file is read frame by frame, as fast as the pipeline takes them or, with
``realtime``, at the file's own frame rate. A camera or stream is live: its
queue drops the oldest frame when the pipeline falls behind (a stale frame is
worth nothing), and a frame it fails to deliver is reported as
:class:`Corrupt` while the source keeps trying for a while.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from fogline.errors import ConfigError
from fogline.pipeline._base import ArraySpec, ExistingPath, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._optional import optional
from fogline.pipeline.sources._pacing import Pacer
from fogline.pipeline.sources._shown import shown_url

#: How long a live source keeps retrying failed grabs before it ends.
LIVE_RETRY_S = 3.0
#: Open and read timeouts for network streams, so a dead camera cannot hang the source.
STREAM_TIMEOUT_MS = 5000
#: Frame rate assumed when a file does not state one (``realtime`` playback).
DEFAULT_FPS = 25.0


class VideoSpec(SourceSpec):
    """Frames of a video file (``path``), a camera (``device: 0``) or a stream (``url``).

    Give exactly one of the three. ``loop`` starts a file over at its end;
    ``realtime`` plays a file at its recorded frame rate instead of as fast as
    possible. A camera or stream defaults to ``policy: drop-oldest``. An
    item's ``meta["position"]`` is ``"clip.avi#frame 120"``, ``"camera
    0#frame 120"`` or the stream's URL (without its password) and ``#frame N``.

    >>> spec = VideoSpec(device=0)
    >>> spec.policy, spec.is_live, spec.output().describe()
    ('drop-oldest', True, '(?, ?, 3) uint8 HWC')
    """

    needs = ("cv2",)

    type: Literal["video"] = "video"
    path: ExistingPath | None = None
    device: int | None = Field(None, ge=0)
    url: str | None = None
    loop: bool = False
    realtime: bool = False

    @property
    def is_live(self) -> bool:
        """A camera or a network stream (not a file)."""
        return self.path is None

    @model_validator(mode="after")
    def _one_target(self) -> VideoSpec:
        given = [k for k in ("path", "device", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "video takes exactly one of `path` (a file), `device` (a camera index) or "
                f"`url` (rtsp:// or http://); got {', '.join(given) or 'none'}"
            )
        if self.is_live and "policy" not in self.model_fields_set:
            object.__setattr__(self, "policy", "drop-oldest")  # frozen model: set once, here
        return self

    def output(self) -> ArraySpec:
        return ArraySpec((None, None, 3), "uint8", "HWC")

    def build(self, name: str) -> VideoSource:
        target: str | int
        if self.path is not None:
            target = str(self.path)
        elif self.device is not None:
            target = self.device
        else:
            assert self.url is not None
            target = self.url
        return VideoSource(name, target, loop=self.loop, realtime=self.realtime)


class VideoSource:
    """Reads frames from ``target`` (a file path, a camera index or a stream URL) as RGB."""

    def __init__(
        self, name: str, target: str | int, *, loop: bool = False, realtime: bool = False
    ) -> None:
        self.name = name
        self._target = target
        self._live = isinstance(target, int) or "://" in target
        self._loop = loop and not self._live
        self._realtime = realtime and not self._live
        if isinstance(target, int):
            self._label = f"camera {target}"
        else:
            self._label = shown_url(target) if self._live else target.rsplit("/", 1)[-1]

    def _open(self) -> Any:  # a cv2.VideoCapture
        cv2 = optional("cv2")
        if isinstance(self._target, int):
            capture = cv2.VideoCapture(self._target)
        elif self._live:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            capture = cv2.VideoCapture(self._target, cv2.CAP_ANY, params)
        else:
            capture = cv2.VideoCapture(self._target)
        if not capture.isOpened():
            capture.release()
            raise ConfigError(
                f"cannot open {'' if isinstance(self._target, int) else 'video '}{self._label}: "
                "OpenCV could not open it "
                "(missing device, unsupported format, or unreachable stream)"
            )
        return capture

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        cv2 = optional("cv2")
        capture = self._open()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            period = 1.0 / (fps if fps and fps > 0 else DEFAULT_FPS)
            pacer = Pacer(stop) if self._realtime else None
            sequence = frame = 0
            failing_since: float | None = None
            while not stop.is_set():
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    if self._live:
                        now = time.monotonic()
                        failing_since = failing_since or now
                        yield Corrupt(
                            self.name, f"{self._label}#frame {frame}", "frame grab failed"
                        )
                        frame += 1
                        if now - failing_since > LIVE_RETRY_S or stop.wait(0.05):
                            return
                        continue
                    if not self._loop or frame == 0:
                        return
                    capture.release()
                    capture = self._open()  # reopening is the seek every container supports
                    frame = 0
                    continue
                failing_since = None
                if pacer is not None and not pacer.wait(frame * period):
                    return
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                meta = {"position": f"{self._label}#frame {frame}"}
                yield Item(self.name, sequence, time.time(), rgb, meta)
                sequence += 1
                frame += 1
        finally:
            capture.release()
