"""Pipeline sources: where items come from.

One module per kind, each a pydantic spec (``type:`` in the YAML) and a
runtime class whose ``read(stop)`` yields :class:`~fogline.pipeline.Item`
or :class:`~fogline.pipeline.Corrupt` until it is exhausted or ``stop`` is
set. ``SPECS`` lists the spec classes for the pipeline's discriminated union.
"""

from __future__ import annotations

from fogline.pipeline._base import SourceSpec
from fogline.pipeline.sources._csv import CsvSpec
from fogline.pipeline.sources._dataset import DatasetSource, DatasetSpec
from fogline.pipeline.sources._images import ImagesSource, ImagesSpec
from fogline.pipeline.sources._mqtt import (
    MqttSource,
    MqttSourceSpec,
    cluster_key,
    decode_image,
    decode_json,
)
from fogline.pipeline.sources._opcua import OpcuaSource, OpcuaSpec
from fogline.pipeline.sources._pacing import Pacer
from fogline.pipeline.sources._parquet import ParquetSpec
from fogline.pipeline.sources._stdin import StdinSource, StdinSpec
from fogline.pipeline.sources._synthetic import SyntheticSource, SyntheticSpec
from fogline.pipeline.sources._table import BadRow, Row, TableReplay, TableSpec, parse_time
from fogline.pipeline.sources._video import VideoSource, VideoSpec
from fogline.pipeline.sources._zmq import ZmqSource, ZmqSourceSpec

SPECS: tuple[type[SourceSpec], ...] = (
    ImagesSpec,
    VideoSpec,
    CsvSpec,
    ParquetSpec,
    DatasetSpec,
    SyntheticSpec,
    StdinSpec,
    OpcuaSpec,
    MqttSourceSpec,
    ZmqSourceSpec,
)

__all__ = [
    "SPECS",
    "BadRow",
    "CsvSpec",
    "DatasetSource",
    "DatasetSpec",
    "ImagesSource",
    "ImagesSpec",
    "MqttSource",
    "MqttSourceSpec",
    "OpcuaSource",
    "OpcuaSpec",
    "Pacer",
    "ParquetSpec",
    "Row",
    "StdinSource",
    "StdinSpec",
    "SyntheticSource",
    "SyntheticSpec",
    "TableReplay",
    "TableSpec",
    "VideoSource",
    "VideoSpec",
    "ZmqSource",
    "ZmqSourceSpec",
    "cluster_key",
    "decode_image",
    "decode_json",
    "parse_time",
]
