"""Reading pipeline specs (YAML or JSON) into the PipelineSpec message.

Paths in a stage's ``data``, ``source``, ``sink`` and ``output`` parameters are
resolved against the spec file's folder, so a spec and its data can travel
together; absolute paths and URIs (``scheme://``) are left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from milepost.core.errors import InvalidArgument
from milepost.v1 import pipelines_pb2, types_pb2

PATH_PARAMETERS = ("data", "source", "sink", "output")


def load_spec(path: Path) -> pipelines_pb2.PipelineSpec:
    import yaml

    text = path.read_text()
    try:
        doc = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise InvalidArgument(f"{path}: not a valid pipeline spec: {err}") from err
    return spec_from_dict(doc, base=path.resolve().parent)


def spec_from_dict(doc: Any, base: Path) -> pipelines_pb2.PipelineSpec:
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
        raise InvalidArgument("a pipeline spec is an object with a name and a list of stages")
    spec = pipelines_pb2.PipelineSpec(name=str(doc.get("name", "")))
    for i, stage in enumerate(doc["stages"]):
        if not isinstance(stage, dict):
            raise InvalidArgument(f"stage #{i + 1} must be an object")
        unknown = set(stage) - {"name", "kind", "engine", "depends_on", "resources", "selector", "params"}
        if unknown:
            raise InvalidArgument(f"stage {stage.get('name', i + 1)!r}: unknown field(s) {sorted(unknown)}")
        params = dict(stage.get("params") or {})
        for key in PATH_PARAMETERS:
            value = params.get(key)
            if isinstance(value, str) and value and "://" not in value and "${" not in value and not Path(value).is_absolute():
                params[key] = str(base / value)
        resources = stage.get("resources") or {}
        spec.stages.add(
            name=str(stage.get("name", "")), kind=str(stage.get("kind", "")), engine=str(stage.get("engine", "")),
            depends_on=[str(d) for d in stage.get("depends_on") or []],
            resources=types_pb2.ResourceRequest(
                cpu=float(resources.get("cpu", 0)), memory_bytes=int(resources.get("memory_bytes", 0)),
                gpus=int(resources.get("gpus", 0)), gpu_memory_bytes=int(resources.get("gpu_memory_bytes", 0)),
                device=str(resources.get("device", "")),
            ),
            selector={str(k): str(v) for k, v in (stage.get("selector") or {}).items()},
            params_json=json.dumps(params, sort_keys=True),
        )
    return spec
