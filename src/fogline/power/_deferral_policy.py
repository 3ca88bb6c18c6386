"""The deferral policy: when work that can wait may run, as the user writes it (YAML → pydantic).

One section, the same wherever work can wait (a pipeline's ``outbox.defer``,
the agent's ``--defer FILE`` for federated rounds and fine-tuning)::

    mains: true                 # only on mains power
    min_battery_percent: 40     # or: on mains, or on a battery at least this full
    windows: ["22:00-06:00"]    # only inside one of these windows (local time, or `tz`)
    tz: Europe/Berlin
    carbon:                     # only while the grid's carbon intensity is low enough
      file: grid.json           # a number or {"g_per_kwh": 180, "at": ...}; or `topic:` (MQTT)
      max_g_per_kwh: 200
      stale_after_s: 3600       # an older value counts as unknown
      if_unknown: wait          # no value, or a stale one: wait (default) or run
    combine: all                # every condition must hold (default), or `any` of them
    check_every_s: 30           # how often waiting work looks again

A condition left out is not checked; an empty policy always allows.
Validated before anything starts, each problem with the path to its key
(:func:`load_defer_policy` for a file of its own).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fogline.errors import ConfigError
from fogline.power._power_supply import POWER_SUPPLY

__all__ = ["CarbonRule", "DeferPolicy", "load_defer_policy", "parse_defer_policy", "window_minutes"]

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def window_minutes(text: str) -> tuple[int, int]:
    """``"22:00-06:00"`` as minutes after midnight, (1320, 360); an end before the start wraps.

    >>> window_minutes("22:00-06:00"), window_minutes("09:30-24:00")
    ((1320, 360), (570, 1440))
    """
    match = _WINDOW.match(text.strip())
    if match is None:
        raise ValueError(
            f"a window is HH:MM-HH:MM (24-hour clock), such as 22:00-06:00, not {text!r}"
        )
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 1440:
        raise ValueError(f"{text!r}: a window ends at 24:00 at the latest")
    if start == end % 1440:
        raise ValueError(f"{text!r}: starts when it ends; leave `windows` out to allow any time")
    return start, end


def _window(text: str) -> str:
    window_minutes(text)
    return text.strip()


def _relative_to_base(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else Path(base) / value


class CarbonRule(BaseModel):
    """``carbon:``: run only while the carbon intensity is at most ``max_g_per_kwh``.

    The value comes from a ``file`` (read at each check) or an MQTT ``topic``
    (subscribed by the pipeline or the agent, on ``url`` when given, else on
    the broker they already use).

    >>> CarbonRule(file="grid.json", max_g_per_kwh=200).if_unknown
    'wait'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    topic: str | None = Field(default=None, min_length=1, max_length=65535)
    url: str | None = Field(default=None, min_length=1)
    max_g_per_kwh: float = Field(gt=0)
    stale_after_s: float = Field(default=3600.0, gt=0)
    if_unknown: Literal["wait", "run"] = "wait"

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _relative_to_base(value, info)

    @field_validator("topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        if value is not None and ("+" in value or "#" in value):
            raise ValueError("one topic, without the wildcards + and #")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CarbonRule:
        if (self.file is None) == (self.topic is None):
            raise ValueError(
                "give `file` (a file holding the value) or `topic` (an MQTT topic), one of them"
            )
        if self.url is not None and self.topic is None:
            raise ValueError("`url` is the broker of a `topic`; a `file` needs none")
        return self


class DeferPolicy(BaseModel):
    """When work that can wait may run; see the module docstring.

    >>> policy = DeferPolicy(mains=True, windows=["22:00-06:00"])
    >>> policy.combine, policy.conditions()
    ('all', ['mains', 'window'])
    >>> DeferPolicy().conditions()
    []
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mains: bool = False
    min_battery_percent: float | None = Field(default=None, ge=0, le=100)
    windows: list[Annotated[str, AfterValidator(_window)]] = Field(default_factory=list)
    tz: str | None = None
    carbon: CarbonRule | None = None
    combine: Literal["all", "any"] = "all"
    check_every_s: float = Field(default=30.0, gt=0)
    #: Where the power supplies are listed (Linux's folder; another for a test or a chroot).
    power_supply: Path = POWER_SUPPLY

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"no time zone named {value!r}; an IANA name such as Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("power_supply")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return _relative_to_base(value, info)

    @model_validator(mode="after")
    def _tz_needs_windows(self) -> DeferPolicy:
        if self.tz is not None and not self.windows:
            raise ValueError("`tz` is the time zone of `windows`; give the windows too")
        return self

    def conditions(self) -> list[str]:
        """The conditions it checks, in the order their reasons are given."""
        named = [
            ("mains", self.mains),
            ("battery", self.min_battery_percent is not None),
            ("window", bool(self.windows)),
            ("carbon", self.carbon is not None),
        ]
        return [name for name, given in named if given]


def _explain(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {str(error['loc'][-1])!r}"
    if error["type"] == "missing":
        return f"{where}: required, but missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] != "value_error" and not isinstance(got, dict | list):
        message += f", got {got!r}"
    return f"{where}: {message}"


def parse_defer_policy(data: object, *, origin: str, base: Path | None = None) -> DeferPolicy:
    """Validate already-parsed YAML ``data``; every problem with the path to its key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a deferral policy is a mapping of keys, got {type(data).__name__}"
        )
    try:
        return DeferPolicy.model_validate(data, context={"base": base} if base else None)
    except ValidationError as exc:
        problems = [_explain(error) for error in exc.errors()]
        if len(problems) == 1:
            raise ConfigError(f"{origin}: {problems[0]}") from None
        raise ConfigError(
            f"{origin}: {len(problems)} problems:\n  " + "\n  ".join(problems)
        ) from None


def load_defer_policy(path: Path) -> DeferPolicy:
    """Read a deferral policy file (YAML); relative paths in it resolve against its folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such deferral policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_defer_policy(data, origin=str(path), base=Path(path).resolve().parent)
