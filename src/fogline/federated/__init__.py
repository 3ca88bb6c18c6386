"""Federated learning across the fleet: strategies, the client trainer, rounds, secure aggregation, privacy.

Work in progress (issue 12): the strategies, secure aggregation and the
privacy accountant land first, each with its own tests; rounds over the
broker and ``fogline fl`` come next.
"""

from fogline.federated._privacy import (
    GaussianMechanism,
    PrivacyAccountant,
    PrivacyConfig,
    PrivacySpent,
    clip_update,
)
from fogline.federated._secagg import SecAggClient, SecAggResult, SecAggServer
from fogline.federated._secagg_field import FieldQuantizer, UploadCost, upload_cost
from fogline.federated._secagg_messages import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    SecAggParams,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = [
    "EncryptedShare",
    "FieldQuantizer",
    "GaussianMechanism",
    "KeyAdvert",
    "MaskedInput",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacySpent",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "UnmaskRequest",
    "UnmaskResponse",
    "UploadCost",
    "clip_update",
    "upload_cost",
]
