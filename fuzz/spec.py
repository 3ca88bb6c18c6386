"""Fuzz the pipeline spec: any YAML or JSON file gives a PipelineSpec or a ConfigError.

Half the inputs are taken as the file's text, byte for byte (YAML syntax,
anchors, tags, encodings); the other half drive a generator that follows
:class:`fogline.pipeline.PipelineSpec`'s JSON schema, so the keys, ``type:``
tags and enums are mostly right and the fuzzer reaches deep keys (a sink's
``fields``, a model's ``variants``, the ``privacy:`` rules) with values that
are not. The file is then read with :func:`fogline.pipeline.load_spec`, the
way ``fogline run`` and ``fogline check`` read it.

    python fuzz/spec.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris
import yaml
from _harness import fuzz, instrumented, json_value

#: The spec, its shared parts, and the specs of every source, stage and sink (their validators).
PARSERS = [
    "fogline.pipeline._spec",
    "fogline.pipeline._base",
    "fogline.pipeline._rules",
    "fogline.pipeline._capture",
    "fogline.pipeline._labels",
    "fogline.pipeline._variants",
    "fogline.pipeline.sources",
    "fogline.pipeline.stages",
    "fogline.pipeline.sinks",
    "fogline.security._policy",  # the privacy: section
]

with instrumented(__name__, PARSERS):
    from fogline.errors import FoglineError
    from fogline.pipeline import PipelineSpec, load_spec

SCHEMA = PipelineSpec.model_json_schema()
_FOLDER = Path(tempfile.mkdtemp(prefix="fogline-fuzz-spec-"))


def file_text(data: bytes) -> bytes:
    """The pipeline file an input stands for."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    fdp = atheris.FuzzedDataProvider(data[1:])
    value = json_value(fdp, SCHEMA)
    if fdp.ConsumeBool():
        return json.dumps(value).encode()
    return yaml.safe_dump(value, allow_unicode=fdp.ConsumeBool()).encode()


def TestOneInput(data: bytes) -> None:
    path = _FOLDER / "pipeline.yaml"
    path.write_bytes(file_text(data))
    try:
        spec = load_spec(path, outputs=_FOLDER / "out")
    except FoglineError as exc:
        assert str(exc), "an error without a message"
        return
    assert isinstance(spec, PipelineSpec)


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
