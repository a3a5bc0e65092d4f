"""Training stages: finding the user's training function and turning what it returns
into a model bundle the coordinator can register.

Spark and Ray run a training function on their own dataset type (a DataFrame, a Ray
Dataset); what comes back may be a fitted estimator (compiled here with
scoring_core.compile), a CompiledModel, or the path of a bundle the function wrote
itself. Either way the stage's outputs name a verified bundle directory and its version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from engines import entry_points
from engines.base import StageSpec
from milepost.core.errors import InvalidArgument, PermissionDenied, shown
from milepost.core.settings import env_var


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
    """The stage's function: the callable itself, or an importable "module:function" (a
    function defined in that module, named without attribute paths)."""
    if callable(stage.entry):
        return stage.entry
    return entry_points.resolve(stage.entry, f"stage {stage.name!r} entry", defined_here=True)


def within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved ``path`` is one of the resolved ``roots`` or below one: the one test
    of confinement, for stage paths and for the links inside a dataset."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def confined(value: Any, what: str, roots: Sequence[str | Path], *, base: Path) -> str:
    """The dataset path ``value`` (a stage's ``what``, e.g. "params.data") made absolute and
    checked to lie inside one of ``roots``, after following symlinks: the path to hand the
    engine. A relative path is taken from ``base``. URIs pass only below a root that is a URI
    prefix (``s3://bucket/ml/``); ``file://`` URIs are local paths.

    PermissionDenied names ``what`` and at most the path's last part, never the whole path
    (the agent's layout is not the caller's business, and the value may be huge)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidArgument(f"{what} must be a non-empty path")
    last = value.rstrip("/").rsplit("/", 1)[-1] or value
    refused = PermissionDenied(f"{what} {shown('.../' + last, 48)} is outside this agent's data roots: its data "
                               f"directory and {env_var('data_roots')}")
    local_roots = [Path(r).expanduser().resolve() for r in map(str, roots) if "://" not in r]
    if "://" in value:
        parsed = urlparse(value)
        if parsed.scheme != "file":
            uri_roots = [str(r).rstrip("/") + "/" for r in roots if "://" in str(r)]
            segments = parsed.path.split("/")
            if ".." in segments or "." in segments or not any(value.startswith(r) for r in uri_roots):
                raise refused
            return value
        if parsed.netloc not in ("", "localhost"):
            raise refused
        value = unquote(parsed.path)
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not within(path, local_roots):
        raise refused
    return str(path)


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
