"""Federated learning across the fleet: strategies, the client trainer, rounds, secure aggregation, privacy.

Work in progress (issue 12): the strategies, secure aggregation, the
privacy accountant, the client trainers and ``fogline fl simulate`` (rounds
in one process) have landed; rounds over the broker come next.
"""

from fogline.federated._client import (
    ClientTrainer,
    Evaluation,
    SoftmaxTrainer,
    TorchTrainer,
    load_weights,
    weights_from_module,
)
from fogline.federated._codec import decode_update, decode_weights, encode_update, encode_weights
from fogline.federated._export import export_model, softmax_onnx
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
from fogline.federated._simulate import (
    RoundRecord,
    SimulationConfig,
    SimulationResult,
    Task,
    history_json,
    load_task,
    simulate,
)
from fogline.federated._split import SplitSpec, split_clients

__all__ = [
    "ClientTrainer",
    "EncryptedShare",
    "Evaluation",
    "FieldQuantizer",
    "GaussianMechanism",
    "KeyAdvert",
    "MaskedInput",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacySpent",
    "RoundRecord",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "SimulationConfig",
    "SimulationResult",
    "SoftmaxTrainer",
    "SplitSpec",
    "Task",
    "TorchTrainer",
    "UnmaskRequest",
    "UnmaskResponse",
    "UploadCost",
    "clip_update",
    "decode_update",
    "decode_weights",
    "encode_update",
    "encode_weights",
    "export_model",
    "history_json",
    "load_task",
    "load_weights",
    "simulate",
    "softmax_onnx",
    "split_clients",
    "upload_cost",
    "weights_from_module",
]
