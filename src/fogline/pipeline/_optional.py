"""Optional dependencies, imported when first used, with an error that says what to install.

A device that replays CSV logs should not need OpenCV, pyarrow or asyncua
installed, nor pay for importing them: sources and steps that need one
call :func:`optional` when they are built or run, not when fogline is imported.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from fogline.errors import ConfigError

#: module → (the fogline extra that installs it, what needs it)
EXTRAS = {
    "cv2": ("vision", "images, video and image steps need OpenCV"),
    "pyarrow": ("parquet", "Parquet logs need pyarrow"),
    "pyarrow.parquet": ("parquet", "Parquet logs need pyarrow"),
    "asyncua": ("opcua", "OPC UA sources need asyncua"),
    "zmq": ("zmq", "zmq sources and sinks need pyzmq"),
    "skimage.data": ("privacy", "blurring faces (privacy.redact) needs scikit-image"),
    "skimage.feature": ("privacy", "blurring faces (privacy.redact) needs scikit-image"),
    "skimage.filters": ("privacy", "blurring faces (privacy.redact) needs scikit-image"),
}


def optional(module: str) -> ModuleType:
    """Import ``module``, or raise :class:`ConfigError` naming the extra to install.

    >>> optional("json").__name__
    'json'
    """
    if module == "cv2":  # OpenCV's own warnings would interleave with ours; errors still show
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, why = EXTRAS.get(module, ("", f"this needs {module}"))
        fix = f"pip install 'fogline[{extra}]'" if extra else f"pip install {module}"
        raise ConfigError(f"{why}, which is not installed here: {fix}") from exc
