"""How a live source names its stream in positions and messages: its URL without the password.

A position goes into every result, so into the store, the sinks and the
outbox: a camera's ``rtsp://admin:secret@cam/stream`` must not travel with it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown_url(url: str) -> str:
    """``url`` with the password of its user info taken out; other URLs as they are.

    >>> shown_url("rtsp://admin:secret@10.0.0.7:554/stream1")
    'rtsp://admin@10.0.0.7:554/stream1'
    >>> shown_url("opc.tcp://plc:4840")
    'opc.tcp://plc:4840'
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can take apart: nothing to hide that we could find
        return url
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
