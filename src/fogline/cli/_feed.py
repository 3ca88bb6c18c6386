"""One feed for ``fogline cluster feed`` and ``fogline zmq feed``: a data set as JSON items, paced.

Both commands stand in for a camera gateway. They read the data set the
same way as the pipeline's ``dataset`` source (``.npz`` or
``module:function``), send the same bodies ``{"data": [...], "id":
"<prefix>-<n>", "label": "..."}`` and pace them the same way; only the
transport differs. The id prefix is ``feed-<random hex>``, new each run,
unless given, so two runs into one store or one dispatcher never share ids.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fogline.errors import ConfigError


def id_prefix(given: str | None) -> str:
    """``given``, or ``feed-<6 random hex digits>``, new each run.

    >>> id_prefix("item"), id_prefix(None).startswith("feed-"), id_prefix(None) != id_prefix(None)
    ('item', True, True)
    """
    return given or f"feed-{secrets.token_hex(3)}"


def load_items(data: str) -> tuple[Any, Any]:
    """``(x, y)`` of a data set (``.npz`` or ``module:function``); ``y`` is None without labels.

    Anything wrong is a :class:`~fogline.errors.ConfigError` naming ``--data``.
    """
    from fogline.pipeline.sources import DatasetSpec

    try:
        spec = DatasetSpec(path=Path(data)) if data.endswith(".npz") else DatasetSpec(function=data)
        return spec.arrays()
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--data: {reason}") from exc
    except ConfigError as exc:
        raise ConfigError(f"--data: {exc}") from exc


def bodies(
    x: Any, y: Any, prefix: str, *, count: int | None = None, loop: bool = False
) -> Iterator[tuple[str, bytes]]:
    """Each item's id and JSON body: ``count`` of them (default: all), from the start when ``loop``.

    The id is also in the body; a sender that can carry it beside the payload (an MQTT 5
    ``item-id`` user property) spares the dispatcher parsing the body to find it.

    >>> import numpy as np
    >>> [(i, json.loads(b)) for i, b in bodies(np.ones((2, 1, 2)), np.array([3, 4]), "t", count=3, loop=True)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('t-0', {'data': [1.0, 1.0], 'id': 't-0', 'label': '3'}),
     ('t-1', {'data': [1.0, 1.0], 'id': 't-1', 'label': '4'}),
     ('t-2', {'data': [1.0, 1.0], 'id': 't-2', 'label': '3'})]
    """
    n = 0
    while len(x) and (count is None or n < count):
        for index in range(len(x)):
            if count is not None and n >= count:
                return
            item = f"{prefix}-{n}"
            body: dict[str, Any] = {"data": x[index].ravel().tolist(), "id": item}
            if y is not None:
                body["label"] = str(y[index].item())
            yield item, json.dumps(body).encode()
            n += 1
        if not loop:
            return


class Pacer:
    """Waits so that items go out ``rate`` a second (0: no wait); a late item does not bunch up.

    >>> pacer = Pacer(0)
    >>> pacer.wait(threading.Event())
    True
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    def wait(self, stop: threading.Event) -> bool:
        """Wait for the next item's time; False when ``stop`` was set meanwhile."""
        if not self.interval:
            return not stop.is_set()
        self._next = max(self._next + self.interval, time.monotonic() - 0.1)
        delay = self._next - time.monotonic()
        return not (stop.wait(delay) if delay > 0 else stop.is_set())
