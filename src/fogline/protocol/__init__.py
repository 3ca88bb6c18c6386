"""What devices and the controller say to each other: fleet topics and message bodies.

One module per conversation: :mod:`._fleet` (desired state, device state,
telemetry, commands, presence), :mod:`._monitoring` (a model's drift and live
accuracy inside telemetry) and :mod:`._rounds` (federated rounds) and :mod:`._offers` (a
fine-tuned model a device offers). This package
depends on pydantic only, so a controller, an agent or a tool can speak it
without the ML stack.
"""

from fogline.protocol._fleet import (
    DEFAULT_PREFIX,
    DEVICE_ID_PATTERN,
    TOPIC_KINDS,
    AuditCheckpoint,
    Command,
    DesiredState,
    DeviceId,
    DeviceState,
    DeviceTopics,
    Phase,
    Presence,
    ReleaseMetrics,
    ReleaseName,
    ReleaseStatus,
    Telemetry,
    check_device_id,
    device_filter,
    parse_device_topic,
)
from fogline.protocol._monitoring import (
    AccuracyEstimate,
    DriftReading,
    LiveAccuracy,
    Monitoring,
)
from fogline.protocol._offers import OFFER_TOPIC_KINDS, OfferAck, OfferChunk
from fogline.protocol._privacy import FleetPrivacy, privacy_topic
from fogline.protocol._rounds import (
    ACTIVE_RUN_STATUSES,
    FL_TOPIC_KINDS,
    STAGES,
    RoundTask,
    RunSpec,
    SecAggSettings,
    UpdateAck,
    UpdateChunk,
    decode_frame,
    encode_frame,
)

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "DEFAULT_PREFIX",
    "DEVICE_ID_PATTERN",
    "FL_TOPIC_KINDS",
    "OFFER_TOPIC_KINDS",
    "STAGES",
    "TOPIC_KINDS",
    "AccuracyEstimate",
    "AuditCheckpoint",
    "Command",
    "DesiredState",
    "DeviceId",
    "DeviceState",
    "DeviceTopics",
    "DriftReading",
    "FleetPrivacy",
    "LiveAccuracy",
    "Monitoring",
    "OfferAck",
    "OfferChunk",
    "Phase",
    "Presence",
    "ReleaseMetrics",
    "ReleaseName",
    "ReleaseStatus",
    "RoundTask",
    "RunSpec",
    "SecAggSettings",
    "Telemetry",
    "UpdateAck",
    "UpdateChunk",
    "check_device_id",
    "decode_frame",
    "device_filter",
    "encode_frame",
    "parse_device_topic",
    "privacy_topic",
]
