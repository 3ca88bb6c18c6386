"""The ``model`` kind: a model file, or a folder with a fogline manifest, that another program reads.

The agent checks the model and keeps it active; it runs no process for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.model import Engine, ModelReader, open_model


class ModelKind(ReleaseKind):
    """A bare model: its one engine is checked, nothing is run.

    >>> ModelKind().child(Path("model.onnx"), cwd=Path("/tmp")) is None
    True
    """

    name: ClassVar[str] = "model"

    def open_engines(
        self, entry: Path, read: ModelReader | None = None
    ) -> list[tuple[str, Engine]]:
        opened = open_model(entry, read=read)
        return [(f"{opened.name} {opened.version}", opened.engine)]
