"""The Open Inference Protocol: its datatypes and tensor codec, and a client :class:`RemoteEngine`.

The server (:mod:`fogline.serve`) and the client share the codec here; the
client runs a model on any server that speaks the protocol (``fogline
serve``, Triton, KServe) over HTTP or gRPC, behind the one
:class:`~fogline.model.Engine` interface.

>>> from fogline.oip import ModelUrl
>>> ModelUrl.parse("grpc://127.0.0.1:8001/digits-teacher").name
'digits-teacher'
"""

from fogline.oip._client import (
    GRPC_CHANNEL_ARGS,
    Answer,
    RemoteEngine,
    signature_from_metadata,
    signature_problem,
)
from fogline.oip._datatypes import (
    FROM_NAME,
    MAX_EXTENT,
    MAX_RANK,
    TO_NAME,
    TO_NUMPY,
    check_shape,
    datatype_of,
    datatype_of_output,
    decode,
    dtype_name,
    element_count,
    encode,
    numpy_dtype,
)
from fogline.oip._url import FORMS, ModelUrl

__all__ = [
    "FORMS",
    "FROM_NAME",
    "GRPC_CHANNEL_ARGS",
    "MAX_EXTENT",
    "MAX_RANK",
    "TO_NAME",
    "TO_NUMPY",
    "Answer",
    "ModelUrl",
    "RemoteEngine",
    "check_shape",
    "datatype_of",
    "datatype_of_output",
    "decode",
    "dtype_name",
    "element_count",
    "encode",
    "numpy_dtype",
    "signature_from_metadata",
    "signature_problem",
]
