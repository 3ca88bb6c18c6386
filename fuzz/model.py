"""Fuzz model loading: any bytes given as a model file open, or raise a FoglineError.

The bytes are written as ``model.onnx`` and opened with
:func:`fogline.model.open_model` on ONNX Runtime, as ``fogline run`` and the
server open a model: the protobuf is parsed, external data checked to stay
inside the model's folder, the ONNX checker run, then a session created.
Then they are opened again from memory (``read=``, the way a sealed model is
opened: its decrypted bytes, never the file), which must give the same
verdict. A model is data from elsewhere: a truncated, corrupt or hostile
file must be a :class:`~fogline.errors.ModelError` naming the file, never a
protobuf, ONNX or ONNX Runtime exception (or a crash of the process).

The seeds are small real models (an Add; a Gemm with initializers and a
Softmax), so mutations stay close to the format.

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


def _opens(path: Path, data: bytes | None) -> bool:
    """Whether the model opens, from the file or (``data``) from memory; False on a FoglineError."""
    read = None if data is None else (lambda _: data)
    try:
        opened = open_model(path, backend="onnxruntime", threads=1, read=read)
    except FoglineError as exc:
        assert str(exc), "an error without a message"
        return False
    try:
        assert opened.engine.signature is not None
    finally:
        opened.engine.close()
    return True


def TestOneInput(data: bytes) -> None:
    path = _FOLDER / "model.onnx"
    path.write_bytes(data)
    from_disk = _opens(path, None)
    path.write_bytes(b"")  # from memory, the file's bytes must not be what is read
    from_memory = _opens(path, data)
    assert from_disk == from_memory, f"opens from disk: {from_disk}, from memory: {from_memory}"


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
