"""Metrics shared by the pipeline, the server and the fleet's telemetry: one histogram, the names.

Pure Python (no numpy, no ``prometheus_client``): the fleet controller, which
must start without the ML stack, may import it.

>>> from fogline.metrics import BUCKETS, Histogram, SERVE_REQUEST_SECONDS
>>> latency = Histogram()
>>> latency.observe(0.004)
>>> latency.lines(SERVE_REQUEST_SECONDS)[3]
'fogline_serve_request_seconds_bucket{le="0.005"} 1'
>>> len(latency.cumulative()) == len(BUCKETS) + 1
True
"""

from fogline.metrics._energy import EnergyCollector
from fogline.metrics._histogram import BUCKETS, Histogram
from fogline.metrics._names import (
    ACCURACY_ESTIMATE,
    CAPTURES,
    DRIFT_ALARM,
    DRIFT_ALARMS,
    DRIFT_SCORE,
    END_TO_END,
    ENERGY_JOULES,
    ESTIMATED,
    FAILURE,
    LABELS,
    LIVE_ACCURACY,
    LIVE_LABELLED,
    MEASURED,
    OFFLOAD,
    OFFLOAD_SECONDS,
    PIPELINE_ITEMS,
    PIPELINE_QUEUE_DEPTH,
    PIPELINE_SINK_RESULTS,
    PIPELINE_STAGE_SECONDS,
    PIPELINE_THROUGHPUT,
    SERVE_BATCHES,
    SERVE_COMPUTE_SECONDS,
    SERVE_IN_FLIGHT,
    SERVE_QUEUE_DEPTH,
    SERVE_QUEUE_SECONDS,
    SERVE_REQUEST_SECONDS,
    SERVE_REQUESTS,
    SUCCESS,
    VARIANT_ACTIVE,
    VARIANT_ITEMS,
    VARIANT_SWITCHES,
)

__all__ = [
    "ACCURACY_ESTIMATE",
    "BUCKETS",
    "CAPTURES",
    "DRIFT_ALARM",
    "DRIFT_ALARMS",
    "DRIFT_SCORE",
    "END_TO_END",
    "ENERGY_JOULES",
    "ESTIMATED",
    "FAILURE",
    "LABELS",
    "LIVE_ACCURACY",
    "LIVE_LABELLED",
    "MEASURED",
    "OFFLOAD",
    "OFFLOAD_SECONDS",
    "PIPELINE_ITEMS",
    "PIPELINE_QUEUE_DEPTH",
    "PIPELINE_SINK_RESULTS",
    "PIPELINE_STAGE_SECONDS",
    "PIPELINE_THROUGHPUT",
    "SERVE_BATCHES",
    "SERVE_COMPUTE_SECONDS",
    "SERVE_IN_FLIGHT",
    "SERVE_QUEUE_DEPTH",
    "SERVE_QUEUE_SECONDS",
    "SERVE_REQUESTS",
    "SERVE_REQUEST_SECONDS",
    "SUCCESS",
    "VARIANT_ACTIVE",
    "VARIANT_ITEMS",
    "VARIANT_SWITCHES",
    "EnergyCollector",
    "Histogram",
]
