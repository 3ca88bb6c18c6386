"""HTTP for the pipeline: POST JSON to one URL, with every failure a :class:`TransportError`.

:class:`JsonPoster` is what the webhook sink and the HTTP outbox transport
share: one ``httpx.Client`` (connections kept alive), a timeout, fixed
headers, and one rule for what counts as delivered: a 2xx answer. httpx's
own exceptions are mapped here, raised ``from`` the original, as the most
specific subclass: :class:`~fogline.errors.Unreachable` when no connection
could be made, :class:`~fogline.errors.TimedOut` when no answer came in
time, :class:`~fogline.errors.Refused` for a 4xx answer other than 408, 425
and 429 (the request must change first). Used from one thread at a time
(the sink's or the sender's); httpx's client is thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from fogline.errors import ConfigError, Refused, TimedOut, TransportError, Unreachable

#: Statuses that say "try again later" rather than "this request is wrong".
RETRYABLE = frozenset({408, 425, 429})
_EXCERPT = 200


def check_http_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else ``ValueError``.

    >>> check_http_url("https://hooks.example.com/fogline")
    'https://hooks.example.com/fogline'
    >>> check_http_url("hooks.example.com")
    Traceback (most recent call last):
    ...
    ValueError: an HTTP URL starts with http:// or https:// and names a host, got 'hooks.example.com'
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"not an HTTP URL: {url!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"an HTTP URL starts with http:// or https:// and names a host, got {url!r}"
        )
    return url


class JsonPoster:
    """POST JSON bodies to ``url``; returns on 2xx, raises :class:`TransportError` otherwise.

    The error says whether the endpoint was unreachable, failed (5xx, 408,
    425, 429: worth retrying) or rejected the request (other 4xx), with the
    status and the start of the answer's body.

    >>> with JsonPoster("http://127.0.0.1:1/hook", timeout=1) as poster:
    ...     poster.post({"a": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fogline.errors.Unreachable: POST http://127.0.0.1:1/hook: cannot connect: ...
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        try:
            self.url = check_http_url(url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout = timeout
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None
        self._closed = False

    def post(self, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST ``body`` as JSON; the 2xx response, or :class:`TransportError`."""
        where = f"POST {self.url}"
        if self._closed:
            raise TransportError(f"{where}: the poster is closed")
        content = json.dumps(body, separators=(",", ":")).encode()
        try:
            response = self._client.post(
                self.url, content=content, headers={**self.headers, **(headers or {})}
            )
        except httpx.TimeoutException as exc:
            raise TimedOut(f"{where}: no answer within {self.timeout:g} s") from exc
        except httpx.ConnectError as exc:
            raise Unreachable(f"{where}: cannot connect: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise TransportError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response
        text = response.text.strip()
        excerpt = text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if response.status_code >= 500 or response.status_code in RETRYABLE:
            raise TransportError(f"{where}: the endpoint failed: {status}: {excerpt}")
        rejected = Refused if response.status_code >= 400 else TransportError
        raise rejected(f"{where}: the endpoint rejected it: {status}: {excerpt}")

    def close(self) -> None:
        """Close the client (when it made its own); a later :meth:`post` is a TransportError."""
        self._closed = True
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> JsonPoster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
