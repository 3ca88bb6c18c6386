"""Non-urgent results: an outbox that sends only when the deferral policy allows.

``outbox.defer`` (a :class:`~fogline.power.DeferPolicy`) marks the outbox as
carrying results that can wait: they are durable in the store as always (the
outbox is the store's), and :class:`DeferralGate` lets the outbox's sender hand them to the
transport only while the policy allows (on mains, in a window, on clean
power). Urgent results take a sink (``mqtt``, ``http``...), which sends at
once as before. While the policy says wait, the outbox grows up to its
``limit``; size it for the longest wait (its ``policy`` says what a full
outbox does).

A ``carbon.topic`` is subscribed here, where the transport may be imported
(:class:`CarbonSubscription`); :mod:`fogline.power` only keeps the latest value.

Concurrency: the sender's one thread asks its :class:`DeferralGate` (which
looks at the policy every ``check_every_s``) and delivers; the subscription
has its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fogline.errors import ConfigError
from fogline.power import CarbonFeed, DeferPolicy, Deferral, Verdict
from fogline.transport.mqtt import MqttSubscriber, MqttUrl, Topic, to_url

log = logging.getLogger("fogline.pipeline")

__all__ = ["CarbonSubscription", "DeferralGate", "carbon_broker"]


def carbon_broker(policy: DeferPolicy, fallback: MqttUrl | str | None) -> MqttUrl | None:
    """The broker of the policy's ``carbon.topic`` (its ``url``, else ``fallback``); None: no topic.

    Raises :class:`ConfigError` when there is a topic but no broker, or either is malformed.
    """
    carbon = policy.carbon
    if carbon is None or carbon.topic is None:
        return None
    try:
        Topic(carbon.topic)
        url = carbon.url if carbon.url is not None else fallback
        if url is None:
            raise ConfigError(
                "carbon.topic: give carbon.url, the MQTT broker that carries the topic"
            )
        return to_url(url)
    except ValueError as exc:
        raise ConfigError(f"carbon: {exc}") from None


class CarbonSubscription:
    """Subscribe to a carbon-intensity topic and hand each message to a :class:`CarbonFeed`.

    Retained messages arrive on subscribing, so a device that starts late
    gets the last value at once (publish it retained). The broker replays a
    retained message on every subscribe and reconnect, so its arrival says
    nothing of its age: one without ``at`` counts as of unknown age, unless
    it carries an MQTT 5 message expiry (the broker drops it once expired,
    so one still handed out is within the age its publisher allowed). A
    refusal the subscriber cannot retry past (an ACL) goes to the feed's
    ``error``, so the verdict names it.
    """

    def __init__(self, url: MqttUrl, topic: str, feed: CarbonFeed) -> None:
        self.feed = feed
        self._subscriber = MqttSubscriber(url, topic, qos=1, maxsize=16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="fogline-carbon", daemon=True)
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscriber.wait_subscribed(timeout)

    def _pump(self) -> None:
        told: str | None = None
        while not self._stop.is_set():
            message = self._subscriber.get(timeout=0.25)
            if message is not None:
                replayed = message.retain and message.expiry_s is None
                self.feed.offer(message.payload, received_at=time.time(), retained=replayed)
            error = self._subscriber.error
            if error is not None and error != told:
                told = error
                self.feed.refused(error)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._subscriber.close()


class DeferralGate:
    """An :class:`~fogline.store.OutboxSender` ``gate``: may the outbox send now, under ``deferral``?

    Looks at the policy again every ``check_every_s`` of ``clock`` (the
    sender's), and logs each new reason (beyond its numbers) with how many
    messages wait.

    >>> from fogline.power import DeferPolicy, Deferral
    >>> gate = DeferralGate(Deferral(DeferPolicy()), pending=lambda: 0)
    >>> gate()
    (True, 'allowed: no condition set')
    """

    def __init__(
        self,
        deferral: Deferral,
        *,
        pending: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        what: str = "outbox",
    ) -> None:
        self.deferral = deferral
        self.what = what
        self.verdict: Verdict | None = None
        self._pending = pending
        self._clock = clock
        self._checked_at = float("-inf")

    def __call__(self) -> tuple[bool, str]:
        verdict = self.check()
        return verdict.allowed, verdict.reason

    def check(self, *, force: bool = False) -> Verdict:
        """The current verdict, looked at again every ``check_every_s`` (or now, ``force``)."""
        now = self._clock()
        verdict = self.verdict
        if force or verdict is None or now - self._checked_at >= self.deferral.policy.check_every_s:
            fresh = self.deferral.check()
            if verdict is None or fresh.gist != verdict.gist:
                log.info("%s (%d message(s) pending): %s", self.what, self._pending(), fresh.reason)
            self.verdict, self._checked_at = fresh, now
            return fresh
        return verdict
