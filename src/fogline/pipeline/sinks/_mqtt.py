"""MQTT out of the pipeline: the live :class:`MqttSink` and the outbox's :class:`MqttTransport`.

Both publish JSON through one :class:`~fogline.transport.mqtt.MqttPublisher`
and wait for the broker's acknowledgement. The sink is the live feed (one
message per result, on a topic made from the result, optionally retained);
the transport is the durable path: it carries outbox messages, which the
sender retries until acknowledged, under their idempotency key, each to the
topic the pipeline gave it when it queued the result (the transport spec's
``topic`` template, see :func:`~fogline.pipeline.sinks.outbox_encoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import PositiveFloat, field_validator

from fogline.errors import ConfigError, ItemError, TransportError
from fogline.pipeline._base import SinkSpec, TransportSpec
from fogline.pipeline._mqtt import RESULT_FIELDS, result_topic
from fogline.store import OutboxMessage, Result
from fogline.transport.mqtt import (
    BrokerUrl,
    MqttMessage,
    MqttPublisher,
    MqttUrl,
    Topic,
    TopicTemplate,
    TopicTemplateField,
    json_payload,
)


def _template(topic: TopicTemplate | str) -> TopicTemplate:
    try:
        return topic if isinstance(topic, TopicTemplate) else TopicTemplate(topic)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


class MqttSink:
    """Publish each result as JSON (``Result.to_dict()``) to ``topic`` filled from that result.

    ``write`` returns once the broker acknowledged the whole batch, and
    raises :class:`~fogline.errors.TransportError` when it did not (nothing
    is retried here: the live feed keeps up rather than catching up; the
    outbox is the durable path). A result whose topic or payload cannot be
    made (a ``{field}`` it lacks, a value that is not JSON) is skipped; the
    rest are sent, then one :class:`~fogline.errors.ItemError` names it.
    """

    def __init__(
        self,
        url: MqttUrl | str,
        topic: TopicTemplate | str = "fogline/{source}/results",
        *,
        qos: int = 1,
        retain: bool = False,
        client_id: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ConfigError(f"QoS is 0, 1 or 2, got {qos!r}")
        self.topic = _template(topic)
        self.qos = qos
        self.retain = retain
        self.publisher = MqttPublisher(url, client_id=client_id, timeout=timeout)

    def write(self, results: Sequence[Result]) -> None:
        messages = []
        bad: list[ItemError] = []
        for result in results:
            try:
                topic = result_topic(self.topic, result)
                payload = json_payload(result.to_dict())
            except (ValueError, TypeError) as exc:
                where = result.position or f"{result.source}#{result.sequence}"
                bad.append(ItemError(str(exc), where))
                continue
            messages.append(MqttMessage(topic, payload, self.qos, self.retain))
        if messages:
            self.publisher.publish(*messages)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ItemError(f"not published: {bad[0]}{more}", bad[0].position)

    def close(self) -> None:
        self.publisher.close()


class MqttTransport:
    """An outbox :class:`~fogline.store.OutboxTransport`: each message's payload to its topic.

    The payload goes as it is (for a result, its envelope ``key``,
    ``result_id``, ``result`` as JSON); the idempotency key is also the MQTT 5
    user property ``idempotency-key``, so a receiver can dedupe without
    parsing. ``send`` returns only after the broker acknowledged (QoS 1 or 2)
    and raises :class:`TransportError` otherwise, so the sender keeps the
    message and retries it.
    """

    def __init__(
        self,
        url: MqttUrl | str,
        *,
        qos: int = 1,
        client_id: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if qos not in (1, 2):
            raise ConfigError(f"the outbox needs acknowledged delivery: qos 1 or 2, got {qos!r}")
        self.qos = qos
        self.publisher = MqttPublisher(url, client_id=client_id, timeout=timeout)

    def send(self, message: OutboxMessage) -> None:
        self.send_many([message])

    def send_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish all, in order, and wait for every acknowledgement (one round trip)."""
        try:
            topics = [Topic(message.topic) for message in messages]
        except ValueError as exc:
            raise TransportError(f"an outbox message cannot be published: {exc}") from exc
        self.publisher.publish(
            *(
                MqttMessage(
                    topic,
                    message.payload,
                    self.qos,
                    user_properties=(("idempotency-key", message.key),),
                )
                for topic, message in zip(topics, messages, strict=True)
            )
        )

    def close(self) -> None:
        self.publisher.close()

    def __enter__(self) -> MqttTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MqttSinkSpec(SinkSpec):
    """``type: mqtt`` sink: ``url``, ``topic`` template, ``qos``, ``retain``, ``client_id``, ``timeout``.

    The topic's ``{fields}`` are the result's own (:data:`RESULT_FIELDS`) and
    its output keys; :meth:`fields` lets the pipeline check them at load time
    against what post-processing produces.

    >>> spec = MqttSinkSpec(url="mqtt://broker.local", topic="fogline/{source}/{label}")
    >>> spec.url.port, sorted(spec.topic.fields), spec.qos
    (1883, ['label', 'source'], 1)
    """

    type: Literal["mqtt"] = "mqtt"
    url: BrokerUrl
    topic: TopicTemplateField = TopicTemplate("fogline/{source}/results")
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    client_id: str | None = None
    timeout: PositiveFloat = 10.0

    def fields(self) -> set[str]:
        """The result fields the topic template uses."""
        return set(self.topic.fields)

    def build(self) -> MqttSink:
        return MqttSink(
            self.url,
            self.topic,
            qos=self.qos,
            retain=self.retain,
            client_id=self.client_id,
            timeout=self.timeout,
        )


class MqttTransportSpec(TransportSpec):
    """``outbox.transport`` of ``type: mqtt``: ``url``, ``topic`` (result fields only), ``qos`` 1|2.

    The topic is filled from each result when the pipeline queues it
    (:func:`~fogline.pipeline.sinks.outbox_encoder`), from the result's own
    fields only (:data:`RESULT_FIELDS`): outputs differ from result to
    result, and a message that can never be sent would hold up the outbox.

    >>> from pydantic import ValidationError
    >>> try:
    ...     MqttTransportSpec(url="mqtt://broker.local", topic="site/{label}")
    ... except ValidationError as exc:
    ...     print(exc.errors()[0]["msg"])
    Value error, topic 'site/{label}' uses {label}, which is not one of: captured_at, model, model_version, sequence, source
    """

    type: Literal["mqtt"] = "mqtt"
    url: BrokerUrl
    topic: TopicTemplateField = TopicTemplate("fogline/{source}/outbox")
    qos: Literal[1, 2] = 1
    client_id: str | None = None
    timeout: PositiveFloat = 10.0

    @field_validator("topic")
    @classmethod
    def _result_fields_only(cls, topic: TopicTemplate) -> TopicTemplate:
        try:
            topic.check(RESULT_FIELDS)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return topic

    def build(self) -> MqttTransport:
        return MqttTransport(self.url, qos=self.qos, client_id=self.client_id, timeout=self.timeout)
