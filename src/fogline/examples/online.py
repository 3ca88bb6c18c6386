"""The online-learner examples' data and models, from data sets that ship inside River.

Nothing is downloaded: River's wheel carries these files.

- :func:`shuttle_stream`: Shuttle (Statlog), 49,097 rows of 9 numeric sensor
  readings, about 7 % of them anomalies. :func:`shuttle_detector` is the
  model ``online_anomaly/pipeline.yaml`` names with
  ``online: fogline.examples.online:shuttle_detector``: HalfSpaceTrees
  expects features in [0, 1], so a running min-max scaler goes first, which
  ``params`` alone cannot say.
- :func:`phishing_stream`: Phishing, 1,250 web pages described by 9 features
  in [0, 1], labelled ``phishing`` or ``legitimate``;
  ``online_labels/pipeline.yaml`` learns it from late labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import DataError

#: The example pipelines' folders.
ONLINE_ANOMALY = Path(__file__).parent / "online_anomaly"
ONLINE_LABELS = Path(__file__).parent / "online_labels"


def _river_set(name: str) -> Any:
    try:
        from river import datasets
    except ImportError as exc:
        raise DataError("the online examples need River: pip install 'fogline[monitor]'") from exc
    return getattr(datasets, name)()


def shuttle_stream() -> tuple[np.ndarray, np.ndarray]:
    """River's Shuttle set as ``(x, y)``: float32 ``(49097, 9)``, labels ``anomaly``/``normal``."""
    rows = [(list(x.values()), y) for x, y in _river_set("Shuttle")]
    x = np.array([values for values, _ in rows], np.float32)
    y = np.array(["anomaly" if label else "normal" for _, label in rows])
    return x, y


def phishing_stream() -> tuple[np.ndarray, np.ndarray]:
    """River's Phishing set as ``(x, y)``: float32 ``(1250, 9)``, ``phishing``/``legitimate``."""
    rows = [(list(x.values()), y) for x, y in _river_set("Phishing")]
    x = np.array([values for values, _ in rows], np.float32)
    y = np.array(["phishing" if label else "legitimate" for _, label in rows])
    return x, y


def shuttle_detector(
    n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int | None = None
) -> Any:
    """``MinMaxScaler() | HalfSpaceTrees(...)``: a River pipeline, scaled as HST needs it."""
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=n_trees, height=height, window_size=window_size, seed=seed
    )
