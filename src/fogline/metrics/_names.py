"""The metric names fogline exposes: what the pipeline and the server write, telemetry reads.

The fleet agent scrapes its children's Prometheus endpoints and reads these
series back (each release kind's ``scrape`` in ``fogline.fleet.agent.kinds``), so a name here is a
contract with every scraper: renaming one breaks dashboards and the fleet's
telemetry alike. Counters are named without ``_total``, which the exposition
adds; a histogram's series add ``_bucket``, ``_sum`` and ``_count``.

>>> PIPELINE_ITEMS + "_total", SERVE_REQUEST_SECONDS + "_bucket"
('fogline_pipeline_items_total', 'fogline_serve_request_seconds_bucket')
"""

from __future__ import annotations

# -- a pipeline run (labels: pipeline, then those named) --------------------------------------

#: Counter: items by ``source`` and ``outcome`` (produced, processed, held, dropped, ...).
PIPELINE_ITEMS = "fogline_pipeline_items"
#: Histogram: per-item latency of each ``stage``; :data:`END_TO_END` is capture to stored.
PIPELINE_STAGE_SECONDS = "fogline_pipeline_stage_seconds"
#: The ``stage`` of :data:`PIPELINE_STAGE_SECONDS` that times an item from capture to stored.
END_TO_END = "end_to_end"
#: Gauge: items waiting in each ``queue``.
PIPELINE_QUEUE_DEPTH = "fogline_pipeline_queue_depth"
#: Counter: results per ``sink`` and ``outcome`` (written, failed, dropped).
PIPELINE_SINK_RESULTS = "fogline_pipeline_sink_results"
#: Gauge: processed items per second since the start.
PIPELINE_THROUGHPUT = "fogline_pipeline_throughput"

#: Gauge: 1 for the model ``variant`` that runs now, 0 for the others (``model.variants``).
VARIANT_ACTIVE = "fogline_variant_active"
#: Counter: items each model ``variant`` computed.
VARIANT_ITEMS = "fogline_variant_items"
#: Counter: switches between model variants.
VARIANT_SWITCHES = "fogline_variant_switches"

# -- monitoring a pipeline's model (labels: pipeline, then those named) -------------------------

#: Gauge: the latest score of each ``drift`` stage (``stage``: its name, ``detector``).
DRIFT_SCORE = "fogline_drift_score"
#: Gauge: 1 while a drift stage's alarm is raised, else 0 (``stage``, ``detector``).
DRIFT_ALARM = "fogline_drift_alarm"
#: Counter: alarms raised by each drift stage (an alarm counts once when it is raised).
DRIFT_ALARMS = "fogline_drift_alarms"
#: Counter: labels received, by ``outcome`` (joined, unknown, invalid, expired, duplicate,
#: dropped).
LABELS = "fogline_labels"
#: Gauge: live accuracy (classification) or mean absolute error (regression) from joined
#: labels, by ``model_version``, ``window`` (items) and ``metric`` (accuracy or mae).
LIVE_ACCURACY = "fogline_live_accuracy"
#: Gauge: labelled items inside that window (how much the figure above rests on).
LIVE_LABELLED = "fogline_live_labelled"
#: Gauge: accuracy estimated without labels from calibrated confidence (an estimate, CBPE).
ACCURACY_ESTIMATE = "fogline_accuracy_estimate"
#: Counter: items an ``offload`` step considered, by ``remote`` (its URL) and ``outcome``
#: (offloaded, local, timeout, refused, error, over_budget, busy, circuit_open).
OFFLOAD = "fogline_offload"
#: Histogram: time an item waited for the remote model (answered or not), by ``remote``.
OFFLOAD_SECONDS = "fogline_offload_seconds"
#: Counter: hard examples considered for capture, by ``outcome`` (stored, capped).
CAPTURES = "fogline_captures"

# -- the inference server (labels: model, version, then those named) --------------------------

#: Counter: inference requests by ``outcome``, :data:`SUCCESS` or :data:`FAILURE`.
SERVE_REQUESTS = "fogline_serve_requests"
#: The ``outcome`` of a request that was answered.
SUCCESS = "success"
#: The ``outcome`` of a request that failed.
FAILURE = "failure"
#: Histogram: a request's time from arrival at the model to its answer (queue + compute).
SERVE_REQUEST_SECONDS = "fogline_serve_request_seconds"
#: Gauge: requests inside a model version now.
SERVE_IN_FLIGHT = "fogline_serve_in_flight"
#: Gauge: items waiting in a version's batcher.
SERVE_QUEUE_DEPTH = "fogline_serve_queue_depth"
#: Counter: time items waited in a version's batcher before their batch ran, summed.
SERVE_QUEUE_SECONDS = "fogline_serve_queue_seconds"
#: Counter: time the engine spent running a version's batches, summed.
SERVE_COMPUTE_SECONDS = "fogline_serve_compute_seconds"
#: Counter: batches the engine ran, by ``size``.
SERVE_BATCHES = "fogline_serve_batches"

# -- energy (a pipeline run and the server alike; labels: source, kind, detail) ----------------

#: Counter: joules the process's work used since it started, by the meter's ``source`` (rapl,
#: nvml, cpu-time), ``kind`` (:data:`MEASURED` or :data:`ESTIMATED`) and ``detail`` (what it
#: read: ``RAPL package-0``, ``CPU time x 10 W per core``). Over the items counted in the same
#: period, it is the release's energy per inference.
ENERGY_JOULES = "fogline_energy_joules"
#: The ``kind`` of a figure read from an energy counter (RAPL, NVML).
MEASURED = "measured"
#: The ``kind`` of a figure estimated from CPU time and a declared power per core.
ESTIMATED = "estimated"
