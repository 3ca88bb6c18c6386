"""Federated learning across the fleet: strategies, the client trainer, rounds, secure aggregation, privacy.

The strategies, secure aggregation, the privacy accountant, the client
trainers, ``fogline fl simulate`` (rounds in one process) and the
:class:`Coordinator` the controller runs for rounds across the fleet.
"""

from fogline.federated._candidate import CandidateRefused, check_candidate, install_candidate
from fogline.federated._client import (
    ClientTrainer,
    Evaluation,
    SoftmaxTrainer,
    TorchTrainer,
    load_weights,
    weights_from_module,
)
from fogline.federated._codec import decode_update, decode_weights, encode_update, encode_weights
from fogline.federated._coordinator import Coordinator, FleetHooks
from fogline.federated._export import export_model, export_weights, softmax_onnx
from fogline.federated._gate import next_version
from fogline.federated._privacy import (
    GaussianMechanism,
    PrivacyAccountant,
    PrivacyConfig,
    PrivacySpent,
    clip_update,
)
from fogline.federated._run_store import RunStore
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
from fogline.federated._secagg_wire import SecAggDevice
from fogline.federated._simulate import (
    RoundRecord,
    SimulationConfig,
    SimulationResult,
    Task,
    history_json,
    load_device_data,
    load_task,
    simulate,
)
from fogline.federated._split import SplitSpec, split_clients

__all__ = [
    "CandidateRefused",
    "ClientTrainer",
    "Coordinator",
    "EncryptedShare",
    "Evaluation",
    "FieldQuantizer",
    "FleetHooks",
    "GaussianMechanism",
    "KeyAdvert",
    "MaskedInput",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacySpent",
    "RoundRecord",
    "RunStore",
    "SecAggClient",
    "SecAggDevice",
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
    "check_candidate",
    "clip_update",
    "decode_update",
    "decode_weights",
    "encode_update",
    "encode_weights",
    "export_model",
    "export_weights",
    "history_json",
    "install_candidate",
    "load_device_data",
    "load_task",
    "load_weights",
    "next_version",
    "simulate",
    "softmax_onnx",
    "split_clients",
    "upload_cost",
    "weights_from_module",
]
