"""Download a release's files: resumed with HTTP ``Range``, capped at their signed length, hashed.

ngclient cannot resume, so files are downloaded here. Each blob streams into
``DEV/downloads/<sha256>.part`` with an HTTP ``Range`` from what is already
there, reading never more than one byte past its signed length, and is
checked against its signed length and sha256 before it becomes
``DEV/blobs/<sha256>`` (read-only) and anything opens it. A ``.part`` file
outlives a crash or a lost connection and is resumed next time.

httpx's errors are mapped here, raised ``from`` the original, as the most
specific :class:`~fogline.errors.TransportError`: no connection is
:class:`~fogline.errors.Unreachable`, no answer in time
:class:`~fogline.errors.TimedOut`, a 4xx answer (but 408, 425, 429)
:class:`~fogline.errors.Refused`. Bytes that disagree with the signed
metadata are :class:`~fogline.errors.ReleaseRefused`.

Concurrency: blocking I/O, called under the installer's lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from fogline._files import sha256_file
from fogline.errors import Refused, ReleaseRefused, TimedOut, TransportError, Unreachable

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: 4xx statuses that say "try again later" rather than "this request is wrong".
_RETRYABLE = frozenset({408, 425, 429})


class Downloads:
    """The verified blobs of one device folder, fetched from ``targets_url`` when missing.

    ``blobs`` holds the verified files by sha256, ``parts`` the unfinished
    downloads; ``client`` is the installer's httpx client.
    """

    def __init__(self, blobs: Path, parts: Path, targets_url: str, client: httpx.Client) -> None:
        self.blobs = blobs
        self.parts = parts
        self.targets_url = targets_url
        self._client = client

    def blob(self, sha256: str) -> Path:
        """Where the verified file with ``sha256`` is (or will be)."""
        return self.blobs / sha256

    def download(
        self,
        info: TargetFile,
        label: str,
        *,
        keep: Callable[[Path, Path], None] | None = None,
        intact: Callable[[Path], bool] | None = None,
    ) -> Path:
        """The verified blob for ``info``, downloaded (or resumed) when not already here.

        ``keep(part, blob)`` makes the verified download the kept blob (decrypted,
        sealed: :class:`~fogline.fleet.agent._vault.Vault`) and ``intact(blob)`` says
        whether a kept one is whole; by default the bytes are kept as downloaded.
        """
        sha = info.hashes.get("sha256", "")
        if not _SHA256.match(sha):
            raise ReleaseRefused(f"{label} has no sha256 in the signed metadata")
        blob = self.blobs / sha
        if blob.is_file():
            if (intact or functools.partial(_matches, info=info))(blob):
                return blob
            unlink_read_only(blob)
        part = self.parts / f"{sha}.part"
        for attempt in range(2):
            resumed = self._receive(info, part, label)
            try:
                with open(part, "rb") as fh:
                    info.verify_length_and_hashes(fh)
            except tuf_errors.LengthOrHashMismatchError as exc:
                observed = sha256_file(part)
                part.unlink(missing_ok=True)
                if resumed and not attempt:
                    continue  # the kept part may be what was wrong: once more from the start
                raise ReleaseRefused(
                    f"hash mismatch for {label}: the downloaded bytes hash to {observed[:12]}…, "
                    f"the signed metadata says {sha[:12]}…"
                ) from exc
            if keep is not None:
                keep(part, blob)
            else:
                os.chmod(part, 0o444)
                os.replace(part, blob)
            return blob
        raise AssertionError("unreachable")

    def keep_only(self, used: Iterable[str]) -> None:
        """Remove the blobs whose sha256 is not in ``used`` (no staged release holds them)."""
        keep = set(used)
        for blob in self.blobs.iterdir():
            if blob.name not in keep:
                unlink_read_only(blob)

    def _receive(self, info: TargetFile, part: Path, label: str) -> int:
        """Stream ``info`` into ``part`` from where it stops; returns the offset resumed from."""
        length = info.length
        offset = part.stat().st_size if part.exists() else 0
        if offset > length:
            part.unlink()
            offset = 0
        if offset == length:
            return offset
        url = self.targets_url + info.path
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and offset:
                    part.unlink()
                    return self._receive(info, part, label)
                if response.status_code >= 400:
                    raise status_error(
                        f"downloading {label} from {url}: HTTP {response.status_code}",
                        response.status_code,
                    )
                if response.status_code == 206:
                    if _range_start(response.headers.get("content-range")) != offset:
                        raise TransportError(
                            f"downloading {label} from {url}: the server answered another range "
                            f"than bytes={offset}-"
                        )
                    mode = "ab"
                else:
                    offset, mode = 0, "wb"  # the server sent the whole file
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and offset + int(announced) > length:
                    part.unlink(missing_ok=True)
                    raise ReleaseRefused(
                        f"size exceeds metadata: the server announces {offset + int(announced)} "
                        f"bytes for {label}, the signed metadata says {length}"
                    )
                received = offset
                with open(part, mode) as out:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > length:
                            break
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise http_error(f"downloading {label} from {url}: {exc}", exc) from exc
        if received > length:
            part.unlink(missing_ok=True)
            raise ReleaseRefused(
                f"endless data: the server sent more than the {length} bytes the signed metadata "
                f"gives for {label}"
            )
        if received < length:
            part.unlink(missing_ok=True)
            raise ReleaseRefused(
                f"size mismatch for {label}: the server sent {received} bytes, the signed "
                f"metadata says {length}"
            )
        return offset


def http_error(message: str, exc: httpx.HTTPError) -> TransportError:
    """``message`` as the TransportError that httpx's ``exc`` means.

    >>> type(http_error("GET x", httpx.ConnectError("refused"))).__name__
    'Unreachable'
    >>> type(http_error("GET x", httpx.ReadTimeout("slow"))).__name__
    'TimedOut'
    """
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut(message)
    if isinstance(exc, httpx.ConnectError):
        return Unreachable(message)
    return TransportError(message)


def status_error(message: str, status: int) -> TransportError:
    """``message`` as the TransportError an HTTP error ``status`` means: a 4xx refuses.

    >>> [type(status_error("GET x", s)).__name__ for s in (404, 429, 503)]
    ['Refused', 'TransportError', 'TransportError']
    """
    if 400 <= status < 500 and status not in _RETRYABLE:
        return Refused(message)
    return TransportError(message)


def unlink_read_only(path: Path) -> None:
    """Remove a read-only file, quietly when it is already gone."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)
    path.unlink(missing_ok=True)


def _matches(path: Path, info: TargetFile) -> bool:
    try:
        with open(path, "rb") as fh:
            info.verify_length_and_hashes(fh)
        return True
    except (OSError, tuf_errors.LengthOrHashMismatchError):
        return False


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` → 100."""
    match = re.match(r"^bytes (\d+)-\d+/(?:\d+|\*)$", content_range or "")
    return int(match.group(1)) if match else None
