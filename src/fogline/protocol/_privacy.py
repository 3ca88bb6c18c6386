"""The fleet's default egress policy on the wire: one retained message every device reads.

The controller publishes :class:`FleetPrivacy` retained at QoS 1 on
``{prefix}/fleet/privacy`` whenever the operator sets it, and again on every
connect; a device that reconnects after a week reads the latest at once. The
policy itself travels as a JSON object and is validated by whoever reads it
with :class:`fogline.security.PrivacyPolicy` (this layer does not import
security); ``policy: null`` means the fleet has no default.

>>> privacy_topic("fogline")
'fogline/fleet/privacy'
>>> FleetPrivacy(policy={"raw": "never"}, set_at=1.0).model_dump_json()
'{"policy":{"raw":"never"},"set_at":1.0}'
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def privacy_topic(prefix: str) -> str:
    """The retained topic of the fleet's default egress policy."""
    return f"{prefix}/fleet/privacy"


class FleetPrivacy(BaseModel):
    """The fleet default: a policy (``None``: none) and when the operator set it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    policy: dict[str, Any] | None = None
    set_at: float = Field(default_factory=time.time)


__all__ = ["FleetPrivacy", "privacy_topic"]
