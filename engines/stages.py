"""Training stages: finding the user's training function and turning what it returns
into a model bundle the coordinator can register.

Spark and Ray run a training function on their own dataset type (a DataFrame, a Ray
Dataset); what comes back may be a fitted estimator (compiled here with
scoring_core.compile), a CompiledModel, or the path of a bundle the function wrote
itself. Either way the stage's outputs name a verified bundle directory and its version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines import entry_points
from engines.base import StageSpec
from milepost.core.errors import InvalidArgument


def run_custom(stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
    """A custom stage on any engine: ``fn(inputs, **params) -> dict`` (the engine has
    started its cluster session first, so the function finds it)."""
    return run_function(stage, resolve_entry(stage), inputs)


def run_function(stage: StageSpec, fn: Callable[..., Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """``fn(inputs, **params)``: a stage function, whose answer is the dict of the stage's outputs."""
    outputs = fn(dict(inputs), **dict(stage.params))
    if not isinstance(outputs, dict):
        raise InvalidArgument(f"stage {stage.name!r}: a stage function must return a dict, "
                              f"not {type(outputs).__name__}")
    return outputs


def resolve_entry(stage: StageSpec) -> Callable[..., Any]:
    """The stage's function: the callable itself, or an importable "module:function"."""
    if callable(stage.entry):
        return stage.entry
    return entry_points.resolve(stage.entry, f"stage {stage.name!r} entry")


def training_data(stage: StageSpec, inputs: dict[str, Any]) -> str:
    """Where a training stage reads its data: ``inputs["data"]``, a Parquet file or folder."""
    if not inputs.get("data"):
        raise InvalidArgument(f"training stage {stage.name!r} needs inputs['data']: the Parquet training data")
    return str(inputs["data"])


def output_dir(stage: StageSpec, inputs: dict[str, Any]) -> Path:
    """Where a training stage writes its bundle: ``inputs["output"]``, which must not exist yet."""
    out = inputs.get("output")
    if not out:
        raise InvalidArgument(f"training stage {stage.name!r} needs inputs['output']: the directory for the model bundle")
    return Path(out)


def save_trained(result: Any, dest: Path, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn a training function's result into a bundle at ``dest`` (or the bundle it
    already wrote) and return the stage outputs: model path, version and flavor.

    ``lineage`` (where the data and code came from) goes into the bundle's metadata
    before it is saved, so the version is a hash of the lineage too; a bundle the
    function wrote itself keeps the lineage it has."""
    from scoring_core import bundle

    if isinstance(result, (str, Path)):
        path = Path(result)
        version = bundle.bundle_version(path)
    else:
        import scoring_core

        compiled = result if isinstance(result, scoring_core.CompiledModel) else scoring_core.compile(result)
        if lineage:
            compiled.metadata.setdefault("lineage", {}).update(lineage)
        version = compiled.save(dest)
        path = dest
    flavor = str(bundle.read_manifest(path).get("flavor", ""))
    return {"model": str(path), "version": version, "flavor": flavor}
