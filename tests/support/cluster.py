"""A cluster node run in the test's process: a :class:`ClusterNode` and a thread that "processes".

It takes ``service_s`` per item (a sleep), then settles it as a pipeline's
store writer does, and records which item ids it processed.
"""

from __future__ import annotations

import threading
import time

from fogline.cluster import ClusterNode


class Worker:
    """A node that takes ``service_s`` per item and records which ids it processed."""

    def __init__(
        self, url: str, name: str, service_s: float, window: int = 2, group: str = "g"
    ) -> None:
        self.node = ClusterNode(url, group, node=name, window=window)
        self.service_s = service_s
        self.processed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def start(self) -> Worker:
        self.node.start()
        assert self.node.wait_subscribed(10)
        self.thread.start()
        return self

    def _work(self) -> None:
        while not self.stop.is_set():
            work = self.node.get(0.05)
            if work is None or work.id is None:
                continue
            time.sleep(self.service_s)
            self.processed.append(work.id)
            self.node.settled([work.id], "processed", [{"by": self.node.node}])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.node.close()
