"""The outbox idempotency key of a cluster item's result: the same on every node."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("5b0c3c8e-6f1e-4d0a-9a4e-0c1a57e2f001")  # fogline cluster results


def idempotency_key(group: str, item_id: str) -> str:
    """A UUID (version 5) from the group and the producer's item id.

    Two nodes that processed the same item (one was thought dead, or a
    done was lost) queue their results under one key, so a receiver that
    dedupes on it applies the effect once.

    >>> idempotency_key("digits", "cam-1:17") == idempotency_key("digits", "cam-1:17")
    True
    >>> idempotency_key("digits", "cam-1:17") == idempotency_key("lines", "cam-1:17")
    False
    """
    return str(uuid.uuid5(_NAMESPACE, f"{group}\x00{item_id}"))
