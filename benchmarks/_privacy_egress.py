"""The egress gate: what cutting a result down to what may leave costs, and blurring faces.

- the gate per result (the digits example's policy: four fields allowed, the
  position hashed with HMAC-SHA256 under a device-derived key), beside the
  anchor every sink that leaves already pays: serialising the result to JSON;
- blurring the faces in an image (scikit-image's copy of OpenCV's LBP
  frontal-face cascade, then a Gaussian blur, searched again until none is
  found), per 128x128 and 640x480 frame (the committed test face, doubled, on
  a grey field), beside a frame period at 30 fps (33 ms): it runs only on images
  that leave, not on every frame a pipeline reads.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from fogline.pipeline import Egress, FaceBlur
from fogline.security import FieldHasher, PrivacyPolicy
from fogline.store import Result

FACE = Path(__file__).parents[1] / "tests" / "pipeline" / "data" / "face.png"
POLICY = {
    "fields": {"allow": ["label", "score", "confident", "position"], "hash": ["position"]},
    "raw": "never",
}


def _median_us(call: object, n: int) -> float:
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            call()  # type: ignore[operator]
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def _result() -> Result:
    top = [{"label": "8", "score": 0.764112}, {"label": "9", "score": 0.233575}]
    outputs = {"label": "8", "score": 0.764112, "top_k": top, "confident": False, "rules": []}
    return Result(
        "scanner", 161, 1.7e9, "digits", "1", outputs,
        sync=True, position="fogline.examples:digits_stream#161", item_id="digits#161",
    )  # fmt: skip


def run(quick: bool) -> list[str]:
    n = 2_000 if quick else 50_000
    result = _result()
    gate = Egress(PrivacyPolicy.model_validate(POLICY), frozenset(), FieldHasher(b"k" * 32))
    gate_us = _median_us(lambda: gate.result(result), n)
    json_us = _median_us(lambda: json.dumps(result.to_dict()), n)
    print(f"egress gate: {gate_us:.1f} µs per result; JSON of the result {json_us:.1f} µs")

    from skimage.io import imread

    face = imread(FACE)
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[100:356, 200:456] = np.repeat(np.repeat(face, 2, axis=0), 2, axis=1)  # a 54 px face
    faces = FaceBlur()
    frames = 5 if quick else 30
    lines = [
        f"egress gate: {gate_us:.1f} µs per result "
        f"(anchor: serialising it to JSON, {json_us:.1f} µs)"
    ]
    for name, image in (("128x128", face), ("640x480", frame)):
        found = faces.blur(image)[1]
        ms = _median_us(lambda image=image: faces.blur(image), frames) / 1000
        print(f"faces in a {name} frame: {found} found and blurred in {ms:.1f} ms")
        lines.append(
            f"face blur, {name} frame: {ms:.1f} ms ({found} face) "
            "(anchor: a frame period at 30 fps, 33 ms)"
        )
    return lines
