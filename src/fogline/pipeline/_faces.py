"""Blur the faces in an image before it leaves the device (``privacy.redact: [faces]``).

The detector is OpenCV's LBP frontal-face cascade as scikit-image ships it
(``skimage.data.lbp_frontal_face_cascade_filename()``), run by
``skimage.feature.Cascade``: it is on disk once scikit-image is installed, so
nothing is downloaded. (OpenCV 5 dropped its cascade classifier and the Haar
files ``cv2.data.haarcascades`` used to hold; its replacement, YuNet, needs a
model file fetched from elsewhere.) Each face found is widened by a quarter
of its size on every side and Gaussian-blurred; the image is searched again
until the detector finds no face in it (a few passes at most).

Detection is not cheap (tens of milliseconds for a small image, more for a
large one: see ``benchmarks/_privacy_egress.py``); it runs on images that
leave, which a policy keeps rare, not on every frame a pipeline reads.

An image is an array of rank 2 (HW), or rank 3 with 1 or 3 channels last (HWC)
or first (CHW); uint8, or floats in 0..1 or 0..255. Anything else is not an
image and comes back as it was: redaction cannot tell a face in it.

Concurrency: one detector per :class:`FaceBlur`, guarded by a lock (the
cascade keeps scratch state); the runner's store writer and source threads
share one.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fogline.pipeline._optional import optional

#: Faces smaller than this many pixels across (in the searched image) are not looked for.
MIN_FACE = 20
#: A larger image is searched at a stride that brings its long side to this many pixels, so a
#: face narrower than ``MIN_FACE / DETECT_SIDE`` of the long side (1/16) may go unnoticed.
DETECT_SIDE = 320
#: How many times an image is searched again after blurring what was found.
PASSES = 4


class FaceBlur:
    """Finds and blurs faces; :meth:`blur` returns a new array and how many faces it blurred.

    >>> blur = FaceBlur()
    >>> image = np.zeros((64, 64, 3), np.uint8)
    >>> out, faces = blur.blur(image)
    >>> faces, out.shape
    (0, (64, 64, 3))
    """

    def __init__(self) -> None:
        data = optional("skimage.data")
        feature = optional("skimage.feature")
        self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self._lock = threading.Lock()

    def faces(self, image: Any) -> list[tuple[int, int, int, int]]:
        """The faces in ``image`` as ``(row, column, height, width)`` boxes; none if not an image."""
        view = _hwc_uint8(image)
        if view is None:
            return []
        height, width = view.shape[:2]
        if min(height, width) < MIN_FACE:
            return []
        shrink = max(1, -(-max(height, width) // DETECT_SIDE))  # ceil: the long side fits
        small = view[::shrink, ::shrink] if shrink > 1 else view
        with self._lock:
            found = self._cascade.detect_multi_scale(
                img=small if small.shape[2] == 3 else np.repeat(small, 3, axis=2),
                scale_factor=1.2,
                step_ratio=1,
                min_size=(MIN_FACE, MIN_FACE),
                max_size=small.shape[:2],
            )
        return [
            (int(f["r"]) * shrink, int(f["c"]) * shrink, int(f["height"]) * shrink,
             int(f["width"]) * shrink)
            for f in found
        ]  # fmt: skip

    def blur(self, image: Any) -> tuple[Any, int]:
        """``image`` with every face found blurred (a copy), and how many faces it held.

        Blurring can leave a face-like patch beside the first box, so the image
        is searched again, up to :data:`PASSES` times, until nothing is found.
        """
        blurred, found = image, 0
        for _ in range(PASSES):
            boxes = self.faces(blurred)
            if not boxes:
                break
            blurred = self._blur(blurred, boxes)
            found = found or len(boxes)  # the faces in the image; later passes catch leftovers
        return blurred, found

    def _blur(self, image: Any, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
        filters = optional("skimage.filters")
        array = np.array(image, copy=True)
        first = _channels_first(array)
        work = np.moveaxis(array, 0, -1) if first else array
        height, width = work.shape[:2]
        for row, col, h, w in boxes:
            margin = max(h, w) // 4
            r0, c0 = max(0, row - margin), max(0, col - margin)
            r1, c1 = min(height, row + h + margin), min(width, col + w + margin)
            patch = work[r0:r1, c0:c1].astype(np.float64)
            blurred = filters.gaussian(
                patch,
                sigma=max(2.0, (r1 - r0) / 6),
                channel_axis=-1 if patch.ndim == 3 else None,
                preserve_range=True,
            )
            work[r0:r1, c0:c1] = blurred.astype(work.dtype)
        return np.moveaxis(work, -1, 0) if first else work


def _channels_first(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3)


def _hwc_uint8(image: Any) -> np.ndarray | None:
    """The image as HWC uint8 for the detector, or None when it is not an image."""
    try:
        array = np.asarray(image)
    except (ValueError, TypeError):
        return None
    if array.dtype.kind not in "uif" or array.ndim not in (2, 3) or array.size == 0:
        return None
    if array.ndim == 2:
        array = array[:, :, None]
    elif _channels_first(array):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] not in (1, 3):
        return None
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    top = float(np.nanmax(array)) if array.size else 0.0
    scale = 255.0 if top <= 1.0 else 1.0
    return np.ascontiguousarray(np.clip(array * scale, 0, 255).astype(np.uint8))


__all__ = ["FaceBlur"]
