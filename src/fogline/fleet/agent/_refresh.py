"""Refresh the device's copy of a release repository's signed metadata (python-tuf ngclient).

:class:`MetadataRefresh` runs ngclient's ``Updater`` from the trust anchor
given at enrolment (``DEV/trust/root.json``) into its verified cache
(``DEV/tuf/``): signatures, thresholds, version rollback, freeze and root
rotation are ngclient's checks, not ours. Metadata travels over the
installer's httpx client (one timeout, one connection pool), and
python-tuf's exceptions are mapped here into fogline's: a failed check is
:class:`~fogline.errors.ReleaseRefused`, the network a
:class:`~fogline.errors.TransportError` subclass.

Concurrency: blocking I/O, called under the installer's lock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
from tuf.ngclient import FetcherInterface, Updater  # type: ignore[attr-defined]

from fogline.errors import ConfigError, ReleaseRefused, TransportError
from fogline.fleet.agent._download import http_error, status_error


class MetadataRefresh:
    """Refreshed, verified metadata of the repository at ``metadata_url``.

    ``trust_file`` is the repository's ``root.json`` given at enrolment,
    ``cache`` the folder ngclient keeps the verified metadata in.
    """

    def __init__(
        self, trust_file: Path, cache: Path, metadata_url: str, client: httpx.Client
    ) -> None:
        self.trust_file = trust_file
        self.cache = cache
        self.metadata_url = metadata_url
        self._fetcher = _HttpxFetcher(client)

    def refresh(self) -> Updater:
        """A refreshed Updater. Retried once: without consistent snapshots a publish that
        happens between our timestamp and snapshot reads looks like a version mismatch."""
        try:
            bootstrap = self.trust_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.trust_file}: {exc.strerror or exc}") from exc
        for attempt in range(2):
            try:
                with tuf_failures("refreshing the release metadata"):
                    updater = Updater(
                        str(self.cache),
                        self.metadata_url,
                        fetcher=self._fetcher,
                        bootstrap=bootstrap,
                    )
                    updater.refresh()
                return updater
            except ReleaseRefused:
                if attempt:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")


def target_info(updater: Updater, path: str) -> TargetFile | None:
    """The signed length and hashes of target ``path``, or None when the targets lack it."""
    with tuf_failures(f"looking up {path}"):
        info: TargetFile | None = updater.get_targetinfo(path)
        return info


class _HttpxFetcher(FetcherInterface):
    """ngclient's metadata downloads over the installer's httpx client (one timeout, one pool)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return _chunks(response, url)


def _chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.HTTPError as exc:
        raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
    finally:
        response.close()


@contextlib.contextmanager
def tuf_failures(what: str) -> Iterator[None]:
    """python-tuf's exceptions as fogline's: refusals are ReleaseRefused, the network TransportError."""
    try:
        yield
    except tuf_errors.UnsignedMetadataError as exc:
        raise ReleaseRefused(f"bad signature while {what}: {exc}") from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise ReleaseRefused(
            f"expired metadata while {what} (a freeze attack, or a repository no longer "
            f"re-signed): {exc}"
        ) from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise ReleaseRefused(f"metadata rollback while {what}: {exc}") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise ReleaseRefused(f"hash mismatch while {what}: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise ReleaseRefused(f"bad metadata while {what}: {exc}") from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise ReleaseRefused(f"endless data while {what}: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        raise _network_error(what, exc) from exc


def _network_error(what: str, exc: tuf_errors.DownloadError) -> TransportError:
    """The most specific TransportError for a failed metadata download (see _download)."""
    cause = exc.__cause__
    message = f"{what}: {exc}" + (f" ({cause})" if cause else "")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return status_error(message, exc.status_code)
    if isinstance(cause, httpx.HTTPError):
        return http_error(message, cause)
    return TransportError(message)
