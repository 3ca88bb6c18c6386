"""How a deployment is cut into waves: :class:`RolloutPlan`, its wave sizes and :func:`devices_in`.

A plan is ``all`` (one wave), ``canary`` (N devices or N%, then the rest) or
``waves`` (cumulative sizes such as ``["10%", "50%", "100%"]``), with how
long each wave bakes and how long it may take to converge. It is a value:
validated on creation, stored with its deployment as JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def _size(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"a wave size must be at least 1 device, got {value}")
        return value
    match = _PERCENT.match(value.strip())
    if not match or not 0 < float(match.group(1)) <= 100:
        raise ValueError(f"a wave size is a device count or a percentage like '10%', got {value!r}")
    return value.strip()


Size = Annotated[int | str, AfterValidator(_size)]


def devices_in(size: int | str, total: int) -> int:
    """How many of ``total`` devices a size means (a percentage rounds up, at least one).

    >>> devices_in("10%", 25), devices_in(3, 2), devices_in("100%", 7)
    (3, 2, 7)
    """
    if isinstance(size, int):
        return min(size, total)
    return min(total, max(1, math.ceil(total * float(size.rstrip("%")) / 100)))


class RolloutPlan(BaseModel):
    """How a deployment is cut into waves and how long each is watched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["all", "canary", "waves"] = "canary"
    canary: Size = 1
    waves: list[Size] = Field(default_factory=list)
    bake_seconds: float = Field(default=60.0, ge=0)
    timeout_seconds: float = Field(default=600.0, gt=0)

    def cut(self, device_ids: Sequence[str]) -> list[list[str]]:
        """The waves, in order; each device in exactly one.

        >>> RolloutPlan(kind="canary", canary="25%").cut(list("abcdefgh"))
        [['a', 'b'], ['c', 'd', 'e', 'f', 'g', 'h']]
        >>> RolloutPlan(kind="waves", waves=[1, "50%"]).cut(list("abcd"))
        [['a'], ['b'], ['c', 'd']]
        """
        ids = list(device_ids)
        if self.kind == "all" or not ids:
            return [ids] if ids else []
        bounds = (
            [devices_in(self.canary, len(ids))]
            if self.kind == "canary"
            else [devices_in(size, len(ids)) for size in self.waves]
        )
        waves: list[list[str]] = []
        start = 0
        for bound in [*bounds, len(ids)]:
            if bound > start:
                waves.append(ids[start:bound])
                start = bound
        return waves
