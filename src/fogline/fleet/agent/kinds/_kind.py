"""The one interface of a release kind: what the agent needs of a model, a pipeline, a server.

The agent knows a release only through its kind: the kind opens the
release's models for the health check, says which child process runs it,
and reads what that child measured from its Prometheus text. Only opening
the models is required; a kind that runs no child (a bare ``model``, read
by another program) or whose child reports nothing keeps the defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from fogline.fleet.agent._supervisor import ChildSpec
from fogline.fleet.agent._telemetry import Scrape
from fogline.model import Engine, ModelReader


class ReleaseKind(ABC):
    """One kind of release: opens its models; optionally runs a child and reads its metrics.

    >>> class Nothing(ReleaseKind):
    ...     name = "nothing"
    ...     def open_engines(self, entry, read=None):
    ...         return []
    >>> Nothing().child(Path("nothing.bin"), cwd=Path("/tmp")), Nothing().scrape("").items
    (None, 0.0)
    """

    #: The kind's name in a release document: one of :data:`fogline.security.KINDS`.
    name: ClassVar[str]

    @abstractmethod
    def open_engines(
        self, entry: Path, read: ModelReader | None = None
    ) -> list[tuple[str, Engine]]:
        """Open every model the release at ``entry`` runs, each named for the health report.

        ``read`` opens model files the agent keeps sealed, in memory
        (:class:`~fogline.security.SealedFiles` with the device key). The caller closes them. A release that is not fit raises a
        :class:`~fogline.errors.FoglineError` saying why (none is left open then).
        """

    def child(self, entry: Path, *, cwd: Path, http_port: int | None = None) -> ChildSpec | None:
        """The child process that runs the release, or None when the agent runs nothing for it.

        ``cwd`` is where the child writes (the release folder is read-only);
        ``http_port`` is the port a kind that serves requests listens on (None: any free one).
        """
        return None

    def scrape(self, text: str) -> Scrape:
        """The cumulative numbers in the child's Prometheus ``text`` (nothing by default)."""
        return Scrape()
