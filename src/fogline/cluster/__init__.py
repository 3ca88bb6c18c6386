"""Edge clusters: several ``fogline run`` nodes that share one stream through the MQTT broker.

Membership (presence with a last will), load-aware credit dispatch, the
reorder window and the status a user reads with ``fogline cluster status``.
It needs only the transport layer: a dispatcher runs without numpy or ONNX.

* :class:`ClusterTopics` and the bodies :class:`Presence`, :class:`Done`,
  :class:`DispatcherStats`: the contract under ``fogline/cluster/<group>/``.
* :class:`Dispatcher`: deals a producer's items to nodes with a free credit,
  re-dispatches a lost node's items, acknowledges an input only once done.
* :class:`ClusterNode`: a node's side (presence, last will, credits, dedupe),
  used by the pipeline's ``mqtt`` source with ``share:``.
* :class:`ReorderWindow`: results back in the producer's order, bounded.
* :func:`read_status`: the retained presence and the dispatcher's stats;
  :func:`forget` clears the presence of nodes that left for good.
* :func:`idempotency_key`: the outbox key of a cluster item's result.

Concurrency: paho's threads receive; the dispatcher has one thread of its
own that owns its state; a node's state is behind a lock (see each module).
"""

from fogline.cluster._dispatcher import Dispatcher, item_id
from fogline.cluster._keys import idempotency_key
from fogline.cluster._node import (
    NODE_KEEPALIVE_S,
    PRESENCE_EVERY_S,
    ClusterNode,
    Dispatch,
    Work,
    default_node_name,
    device_id,
)
from fogline.cluster._reorder import Released, ReorderWindow
from fogline.cluster._status import ClusterStatus, forget, read_status
from fogline.cluster._topics import (
    NODE_STATES,
    OUTCOMES,
    PREFIX,
    ClusterTopics,
    DispatcherStats,
    Done,
    NodeState,
    Outcome,
    Presence,
    check_level,
)

__all__ = [
    "NODE_KEEPALIVE_S",
    "NODE_STATES",
    "OUTCOMES",
    "PREFIX",
    "PRESENCE_EVERY_S",
    "ClusterNode",
    "ClusterStatus",
    "ClusterTopics",
    "Dispatch",
    "Dispatcher",
    "DispatcherStats",
    "Done",
    "NodeState",
    "Outcome",
    "Presence",
    "Released",
    "ReorderWindow",
    "Work",
    "check_level",
    "default_node_name",
    "device_id",
    "forget",
    "idempotency_key",
    "item_id",
    "read_status",
]
