"""What the pipeline puts in the store's outbox for a ``sync`` result: its topic and payload.

The outbox holds plain ``(topic, payload, key)`` messages; the pipeline
decides both for its results. The payload is the result's
:func:`~fogline.store.envelope` (``{"key", "result_id", "result"}``), the
same JSON every outbox transport has always delivered. The topic is the
outbox transport's ``topic`` template filled from the result (the MQTT
transport's), or ``fogline/{source}/outbox`` for a transport without one
(a file, a webhook: they send every message to the same place).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fogline.pipeline._base import TransportSpec
from fogline.pipeline._mqtt import result_topic
from fogline.store import Record, ResultEncoder, envelope
from fogline.transport.mqtt import TopicTemplate

if TYPE_CHECKING:
    from fogline.pipeline._egress import Egress

#: The topic of a result's outbox message when the transport names none.
DEFAULT_OUTBOX_TOPIC = TopicTemplate("fogline/{source}/outbox")


def outbox_encoder(transport: TransportSpec | None, egress: Egress | None = None) -> ResultEncoder:
    """The :data:`~fogline.store.ResultEncoder` for an outbox that delivers over ``transport``.

    With ``egress``, the result passes its gate first: the message holds only
    what may leave the device, before anything is serialised.

    >>> from fogline.store import Result
    >>> from fogline.pipeline.sinks import MqttTransportSpec
    >>> spec = MqttTransportSpec(url="mqtt://broker.local", topic="site/{model}/{source}")
    >>> record = Record(7, Result("cam/0", 0, 0.0, "digits", "3", {"label": 4}, sync=True))
    >>> topic, payload = outbox_encoder(spec)(record, "k-7")
    >>> topic, payload[:32]
    ('site/digits/cam_0', b'{"key":"k-7","result_id":7,"resu')
    """
    template = getattr(transport, "topic", None)
    if not isinstance(template, TopicTemplate):
        template = DEFAULT_OUTBOX_TOPIC

    def encode(record: Record, key: str) -> tuple[str, bytes]:
        if egress is not None:
            record = Record(record.id, egress.result(record.result))
        return str(result_topic(template, record.result)), envelope(record, key)

    return encode
