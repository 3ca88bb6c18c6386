"""An MLServer runtime for one ONNX model: what a user writes to serve ONNX Runtime on MLServer.

Runs inside benchmarks/.venv-mlserver (``mlserver start`` imports it by the
``implementation`` of model-settings.json; bench_serve.py puts this folder on
its PYTHONPATH). MLServer 1.7 ships no ONNX runtime of its own, so this is
the few lines its docs show for a custom runtime: load the session in
``load``, decode the request with the numpy codec, ``session.run``, encode.
Threads as every other server in the benchmark (``ONNX_THREADS`` intra-op,
inter-op 1, ONNX Runtime's default spinning) and providers (``ONNX_PROVIDERS``,
bench_serve's ``--provider``); MLServer's adaptive batching
(``max_batch_size`` / ``max_batch_time`` in model-settings.json) hands
``predict`` the stacked batch.
"""

from __future__ import annotations

import os

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ["ONNX_THREADS"])
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        providers = os.environ["ONNX_PROVIDERS"].split(",")
        self.session = ort.InferenceSession(uri, options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        outputs = self.session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self.output_names, outputs, strict=True)
            ],
        )
