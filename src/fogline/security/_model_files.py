"""Model files sealed with the device key: what the agent keeps on disk, opened in memory only.

A device agent stores every model file of a release (``.onnx``, ``.tflite``,
an OpenVINO ``.xml`` and its ``.bin``; ONNX external data; PyTorch, pickled
scikit-learn and safetensors weights: :data:`MODEL_FILE_SUFFIXES`) sealed with its device key
(:func:`seal_model`, the ``"model"`` sub-key, AES-256-GCM), so a copied data
folder holds no usable model. Whatever runs one — the agent's health check,
``fogline run``, ``fogline serve`` — reads it through a :class:`SealedFiles`
reader: a sealed file is unsealed in memory and handed to the engine as
bytes (:data:`fogline.model.ModelReader`); a plain file is left to the
engine. Nothing decrypted is written anywhere.

The associated data is a fixed label, not the file's name: blobs are shared
by content between releases whose files have other names. What binds a
sealed file to its place is the hash check after unsealing (the release
document's sha256, or the manifest's), as for a plain file.

>>> import pathlib, tempfile
>>> key = DeviceKey.generate()
>>> file = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
>>> _ = file.write_bytes(seal_model(b"weights", key))
>>> SealedFiles(key)(file), is_model_file("model/model.onnx"), is_model_file("pipeline.yaml")
(b'weights', True, False)
"""

from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

from fogline.errors import KeyUnavailable, ModelFormatError, WrongKey
from fogline.security._sealing import SEAL_MAGIC, DeviceKey, KeySource, is_sealed, seal, unseal

#: The files of a release the agent seals: models and their weights. fogline's engines
#: read the first four from memory; code of one's own opens the others with
#: :class:`SealedFiles` (``torch.load``, ``joblib.load`` and ``safetensors.torch.load``
#: take bytes). What stays plain is read by name as text: pipeline YAML,
#: ``config.pbtxt``, labels, samples.
MODEL_FILE_SUFFIXES = (
    ".onnx", ".tflite", ".xml", ".bin",  # models fogline runs
    ".onnx_data", ".data",  # ONNX external data
    ".pt", ".pth", ".safetensors",  # PyTorch weights
    ".pkl", ".joblib",  # pickled models (scikit-learn)
)  # fmt: skip
#: The sub-key sealed models use (:meth:`DeviceKey.derive`).
MODEL_PURPOSE = "model"
_AAD = b"fogline release file"


def is_model_file(path: str | Path) -> bool:
    """Whether the release file at ``path`` (relative or not) is one the agent keeps sealed."""
    return PurePosixPath(str(path)).suffix.lower() in MODEL_FILE_SUFFIXES


def seal_model(data: bytes, key: DeviceKey) -> bytes:
    """``data`` (a model file's bytes) sealed with ``key`` for keeping at rest."""
    return seal(data, key, purpose=MODEL_PURPOSE, aad=_AAD)


def unseal_model(blob: bytes, key: DeviceKey, *, where: str = "model file") -> bytes:
    """The plain bytes of a :func:`seal_model` blob; :class:`WrongKey` naming ``where``."""
    try:
        return unseal(blob, key, purpose=MODEL_PURPOSE, aad=_AAD)
    except WrongKey as exc:
        raise WrongKey(f"{where}: {exc} (key {key.fingerprint()} from {key.origin})") from exc


class SealedFiles:
    """A :data:`~fogline.model.ModelReader`: a sealed file's plain bytes, None for a plain one.

    ``keys`` is the device key, or where to find it (:class:`KeySource`:
    ``--device-key``, ``$FOGLINE_DEVICE_KEY_FILE``, ...); it is loaded on the
    first sealed file, so a reader for plain models needs no key at all.
    """

    def __init__(self, keys: KeySource | DeviceKey | None = None) -> None:
        self._source = keys if isinstance(keys, KeySource) else KeySource()
        self._key = keys if isinstance(keys, DeviceKey) else None
        self._lock = threading.Lock()

    def key(self, path: Path) -> DeviceKey:
        with self._lock:
            if self._key is None:
                try:
                    self._key = self._source.load()
                except KeyUnavailable as exc:
                    raise KeyUnavailable(f"{path} is sealed with a device key; {exc}") from exc
            return self._key

    def __call__(self, path: Path) -> bytes | None:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(SEAL_MAGIC))
                if head != SEAL_MAGIC:
                    return None  # a plain file: the engine reads it itself
                fh.seek(0)
                blob = fh.read()  # one buffer: a model may be hundreds of MB
        except FileNotFoundError:
            return None  # the engine says that it is missing, as for any model
        except OSError as exc:
            raise ModelFormatError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
        if not is_sealed(blob):
            raise ModelFormatError(f"{path}: a sealed model cut short ({len(blob)} bytes)")
        return unseal_model(blob, self.key(path), where=str(path))
