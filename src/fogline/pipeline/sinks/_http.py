"""HTTP out of the pipeline: the webhook :class:`HttpSink` and the outbox's :class:`HttpTransport`.

Both POST JSON through a :class:`~fogline.pipeline._http.JsonPoster`; a 2xx
answer is delivery, anything else a :class:`~fogline.errors.TransportError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import httpx
from pydantic import AfterValidator, Field, PositiveFloat

from fogline.errors import TransportError
from fogline.pipeline._base import SinkSpec, TransportSpec
from fogline.pipeline._http import JsonPoster, check_http_url
from fogline.store import OutboxMessage, Result

HttpUrl = Annotated[str, AfterValidator(check_http_url)]


class HttpSink:
    """POST each batch of results to a webhook as one JSON array of ``Result.to_dict()``.

    One request per ``write`` keeps a busy pipeline from opening a request
    per result. A failed POST raises :class:`~fogline.errors.TransportError`
    and is not retried (the live feed keeps up rather than catching up; the
    outbox is the durable path).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.poster = JsonPoster(url, headers=headers, timeout=timeout, client=client)

    def write(self, results: Sequence[Result]) -> None:
        if results:
            self.poster.post([result.to_dict() for result in results])

    def close(self) -> None:
        self.poster.close()


class HttpTransport:
    """An outbox :class:`~fogline.store.OutboxTransport`: POST each payload, keyed by ``Idempotency-Key``.

    The body is the message's payload, a JSON document (for a result, its
    envelope ``{"key", "result_id", "result"}``, which holds the key as
    well); the topic is not sent: the URL is the destination.
    A 2xx answer means delivered. Every other outcome raises
    :class:`~fogline.errors.TransportError` and the sender retries with
    backoff: 5xx, 408, 425, 429 and unreachable endpoints are temporary; any
    other 4xx means the endpoint rejected the message, and because delivery
    is ordered it holds up the messages behind it until the endpoint (or the
    message) is fixed; the status and the start of the answer are recorded
    in the store as the message's last error.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.poster = JsonPoster(url, headers=headers, timeout=timeout, client=client)

    def send(self, message: OutboxMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError as exc:
            raise TransportError(
                f"outbox message {message.id}: the payload is not JSON ({exc})"
            ) from exc
        # Compact JSON read and written again is the same bytes.
        self.poster.post(body, {"Idempotency-Key": message.key})

    def close(self) -> None:
        self.poster.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpSinkSpec(SinkSpec):
    """``type: http`` sink (a webhook): ``url``, ``headers``, ``timeout`` seconds.

    >>> HttpSinkSpec(url="https://hooks.example.com/x", headers={"Authorization": "Bearer t"}).timeout
    5.0
    """

    type: Literal["http"] = "http"
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveFloat = 5.0

    def build(self) -> HttpSink:
        return HttpSink(self.url, headers=self.headers, timeout=self.timeout)


class HttpTransportSpec(TransportSpec):
    """``outbox.transport`` of ``type: http``: ``url``, ``headers``, ``timeout`` seconds."""

    type: Literal["http"] = "http"
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveFloat = 5.0

    def build(self) -> HttpTransport:
        return HttpTransport(self.url, headers=self.headers, timeout=self.timeout)
