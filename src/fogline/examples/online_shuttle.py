"""The online-learner example's data and model: River's bundled Shuttle set and a detector.

Shuttle (Statlog, 49,097 rows of 9 numeric sensor readings; about 7 % of
them anomalies) ships inside River's wheel, so nothing is downloaded.
``shuttle_stream`` replays it for a ``dataset`` source;
``shuttle_detector`` is the model the example pipeline names with
``online: fogline.examples.online_shuttle:shuttle_detector``: HalfSpaceTrees
expects features in [0, 1], so a running min-max scaler goes first, which
``params`` alone cannot say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import DataError

#: The example pipeline's folder.
ONLINE_ANOMALY = Path(__file__).parent / "online_anomaly"


def shuttle_stream() -> tuple[np.ndarray, np.ndarray]:
    """River's Shuttle set as ``(x, y)``: float32 ``(49097, 9)``, labels ``anomaly``/``normal``."""
    try:
        from river import datasets
    except ImportError as exc:
        raise DataError("the online example needs River: pip install 'fogline[monitor]'") from exc
    rows = [(list(x.values()), y) for x, y in datasets.Shuttle()]
    x = np.array([values for values, _ in rows], np.float32)
    y = np.array(["anomaly" if label else "normal" for _, label in rows])
    return x, y


def shuttle_detector(
    n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int | None = None
) -> Any:
    """``MinMaxScaler() | HalfSpaceTrees(...)``: a River pipeline, scaled as HST needs it."""
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=n_trees, height=height, window_size=window_size, seed=seed
    )
