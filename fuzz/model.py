"""Fuzz model loading: any bytes given as a model file open, or raise a FoglineError.

The bytes are written as ``model.onnx`` and opened with
:func:`fogline.model.open_model` on ONNX Runtime, as ``fogline run`` and the
server open a model: the protobuf is parsed, external data checked to stay
inside the model's folder, the ONNX checker run, then a session created. A
model is data from elsewhere: a truncated, corrupt or hostile file must be
a :class:`~fogline.errors.ModelError` naming the file, never a protobuf,
ONNX or ONNX Runtime exception (or a crash of the process).

The seeds are small real models (an Add, a MatMul with an initializer, a
Gemm + Softmax classifier), so mutations stay close to the format.

    python fuzz/model.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _harness import fuzz, instrumented

with instrumented(
    __name__, ["fogline.model._onnx_file", "fogline.model._open", "fogline.model._signature"]
):
    from fogline.errors import FoglineError
    from fogline.model import open_model

_FOLDER = Path(tempfile.mkdtemp(prefix="fogline-fuzz-model-"))


def TestOneInput(data: bytes) -> None:
    path = _FOLDER / "model.onnx"
    path.write_bytes(data)
    try:
        opened = open_model(path, backend="onnxruntime", threads=1)
    except FoglineError as exc:
        assert str(exc), "an error without a message"
        return
    try:
        assert opened.engine.signature is not None
    finally:
        opened.engine.close()


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
