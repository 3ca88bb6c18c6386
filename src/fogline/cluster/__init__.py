"""Edge clusters: several ``fogline run`` nodes that share one stream through the MQTT broker.

Membership (presence with a last will), load-aware credit dispatch, the
reorder window and the status a user reads with ``fogline cluster status``.
It needs only the transport layer: a dispatcher runs without numpy or ONNX.
"""

__all__: list[str] = []
