"""The controller: registry, rollouts, the release repository over HTTP, the API and dashboard.

It speaks :mod:`fogline.protocol` with the agents through an MQTT 5 broker
(:mod:`fogline.transport.mqtt`), keeps everything in one SQLite registry
(:func:`fogline.store.open_database`) and serves the signed repository of
:mod:`fogline.security`. It never imports the data plane (``model``,
``pipeline``, ``serve``): importing it loads neither numpy nor ONNX, so it
runs on a machine without the ML stack.

Concurrency: the MQTT client's network thread queues what arrives; one
worker thread stores it in batches and advances the rollouts; the API and
dashboard run on uvicorn's event loop in their own thread.
"""

from fogline.fleet.controller._artifacts import repository_app, repository_routes
from fogline.fleet.controller._controller import (
    Controller,
    ControllerConfig,
    ControllerStats,
    operator_token,
)
from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._deployment import Deployment, DeploymentDevice, describe
from fogline.fleet.controller._plan import RolloutPlan, devices_in
from fogline.fleet.controller._registry import Device, Inbox, Registry
from fogline.fleet.controller._release_keys import DeviceKeys, ReleaseKeys, controller_key_source
from fogline.fleet.controller._rollout import Rollouts

__all__ = [
    "Controller",
    "ControllerConfig",
    "ControllerStats",
    "Criteria",
    "Deployment",
    "DeploymentDevice",
    "Device",
    "DeviceKeys",
    "Inbox",
    "Registry",
    "ReleaseKeys",
    "RolloutPlan",
    "Rollouts",
    "controller_key_source",
    "describe",
    "devices_in",
    "operator_token",
    "repository_app",
    "repository_routes",
]
