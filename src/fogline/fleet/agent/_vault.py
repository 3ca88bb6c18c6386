"""How a device keeps release files at rest: models sealed with its device key, nothing decrypted on disk.

A downloaded file is checked against its signed length and sha256 first
(:mod:`._download`), exactly as it came. Then :meth:`Vault.keep` turns it
into the blob the device keeps, in memory:

* a file of an encrypted release is decrypted with the release's data key
  (unwrapped from its signed keys document with the device's X25519 key)
  and its plain sha256 checked against the release document;
* a model file (``.onnx``, ``.tflite``, ``.xml``, ``.bin``) is sealed with the
  device key (:func:`fogline.security.seal_model`); other files (a pipeline's
  YAML, a repository's ``config.pbtxt``, a sample) are kept plain, as
  programs read them by name.

The blob is written once, read-only, and the download removed. What is
hashed afterwards (:meth:`Vault.check`, on recovery and before a rollback)
is the plain content: a sealed blob is opened in memory and its bytes
hashed against the document's ``content_sha256``, so a sealed file swapped
for another is found as a plain one is. A plain download of a plain release
lies in ``DEV/downloads/`` until it is verified and sealed; an encrypted
release never has plain bytes of a model on disk at all.

Without a device key (an installer made for tests or tools) files are kept
as downloaded, as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fogline._files import atomic_write, sha256_file
from fogline.errors import ReleaseRefused, WrongKey
from fogline.security import (
    DeviceKey,
    ReleaseDocument,
    ReleaseFile,
    decrypt_file,
    is_model_file,
    is_sealed,
    seal_model,
    unseal_model,
)


class Vault:
    """The device key (or None) and what it does to the files a device keeps."""

    def __init__(self, key: DeviceKey | None) -> None:
        self.key = key

    def seals(self, item: ReleaseFile) -> bool:
        return self.key is not None and is_model_file(item.path)

    def transforms(self, item: ReleaseFile) -> bool:
        """Whether the kept blob differs from the downloaded bytes."""
        return item.plain_sha256 is not None or self.seals(item)

    def keep(
        self,
        part: Path,
        blob: Path,
        item: ReleaseFile,
        doc: ReleaseDocument,
        data_key: bytes | None,
    ) -> None:
        """Make the verified download ``part`` (``item`` of ``doc``) the kept ``blob``."""
        data = part.read_bytes()
        if item.plain_sha256 is not None:
            if data_key is None:
                raise ReleaseRefused(
                    f"file {item.path} of {doc.name} {doc.version} is encrypted and no data key "
                    "was unwrapped for it"
                )
            data = decrypt_file(data, data_key, doc.name, doc.version, item.path)
            if hashlib.sha256(data).hexdigest() != item.plain_sha256:
                raise ReleaseRefused(
                    f"file {item.path} of {doc.name} {doc.version}: the decrypted bytes do not "
                    "match the plain sha256 of the signed release document"
                )
        if self.seals(item):
            assert self.key is not None
            data = seal_model(data, self.key)
        atomic_write(blob, data, mode=0o444)
        part.unlink(missing_ok=True)

    def read(self, path: Path) -> bytes:
        """The plain bytes of a kept file (a sealed one opened in memory)."""
        return self._plain(path.read_bytes(), path)

    def check(self, path: Path, item: ReleaseFile) -> str | None:
        """What is wrong with kept file ``path`` as ``item``, or None when it is intact."""
        if not self.transforms(item):
            size = path.stat().st_size
            if size != item.length:
                return f"has {size} bytes, not {item.length}"
            return None if sha256_file(path) == item.sha256 else "does not match its sha256"
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if self.seals(item) and not is_sealed(raw):
            return "is not sealed (a plain file was put in its place)"
        try:
            data = self._plain(raw, path)
        except WrongKey:
            return "does not open with this device's key"
        if hashlib.sha256(data).hexdigest() != item.content_sha256:
            return "does not match its sha256"
        return None

    def _plain(self, raw: bytes, path: Path) -> bytes:
        if is_sealed(raw) and self.key is not None:
            return unseal_model(raw, self.key, where=str(path))
        return raw

    def intact(self, path: Path, item: ReleaseFile) -> bool:
        """Whether kept file ``path`` is ``item``, whole (a blob already here is not fetched)."""
        return path.is_file() and self.check(path, item) is None
