"""PyTriton serving one ONNX model: Triton's C++ server with a Python inference function.

    benchmarks/.venv-pytriton/bin/python benchmarks/_pytriton_onnx.py MODEL.onnx HTTP GRPC METRICS

Runs in benchmarks/.venv-pytriton (made by bench_serve.py with a Python other
than fogline's when one is found: PyTriton's stub failed under Python
3.11.7). The function is what PyTriton's docs show: ``@batch`` hands it the
stacked batch of Triton's dynamic batcher (max batch ``MAX_BATCH``, queue
delay ``DELAY_US``), it calls ``session.run`` with the benchmark's threads
(``ONNX_THREADS`` intra-op, inter-op 1, ONNX Runtime's default spinning;
``ONNX_PROVIDERS``, bench_serve's ``--provider``).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ["ONNX_THREADS"])
options.inter_op_num_threads = 1
providers = os.environ["ONNX_PROVIDERS"].split(",")  # bench_serve's --provider, CPU last
session = ort.InferenceSession(sys.argv[1], options, providers=providers)
(given,) = session.get_inputs()
(answer,) = session.get_outputs()


@batch
def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    (result,) = session.run(None, inputs)
    return {answer.name: result}


def stop(signum: int, frame: object) -> None:
    raise SystemExit(0)  # leave the with block: PyTriton stops its tritonserver


signal.signal(signal.SIGTERM, stop)
config = TritonConfig(
    http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), metrics_port=int(sys.argv[4])
)
with Triton(config=config) as triton:
    triton.bind(
        model_name="mobilenet",
        infer_func=infer,
        inputs=[Tensor(name=given.name, dtype=np.float32, shape=tuple(given.shape[1:]))],
        outputs=[Tensor(name=answer.name, dtype=np.float32, shape=tuple(answer.shape[1:]))],
        config=ModelConfig(
            max_batch_size=int(os.environ["MAX_BATCH"]),
            batcher=DynamicBatcher(max_queue_delay_microseconds=int(os.environ["DELAY_US"])),
        ),
    )
    triton.serve()
