"""Explanations on the data plane: request parameter ``explain`` on ModelInfer.

With ``explain`` true (a bool parameter, or the string "true"), the answer carries two more
outputs beside the model's own:

- ``contributions``: FP64, [n, n_features + 1], each feature's contribution to the output
  margin (the raw score before the link) and the bias last, summing to the margin; for a
  model with several margins (multiclass) [n, n_groups * (n_features + 1)], margin by
  margin, as LightGBM's ``pred_contrib`` lays them out (scoring_core.explain);
- ``explanation``: BYTES, [n], a one-line summary a row: the features that moved the
  decision most, and by how much.

Only a deployment of the native engine hosted on this agent is explained, and only when one
deployment answered: a route that scored on another agent, or an ensemble or shadow of
several deployments, is FAILED_PRECONDITION naming what to call instead; so is a model the
core cannot explain (an MLP, an ensemble without node covers). Explanations cost far more
than scoring (a tree ensemble's TreeSHAP is hundreds of times its walk), so they are only
computed when asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.inline import must_not_block, refuse_blocking

if TYPE_CHECKING:
    from agent.dataplane import InferenceResponse
    from agent.deployments import DeploymentTable

EXPLAIN_PARAMETER = "explain"
CONTRIBUTIONS_OUTPUT = "contributions"
SUMMARY_OUTPUT = "explanation"
_TRUE, _FALSE = ("true", "1"), ("false", "0", "")


def requested(parameters: Mapping[str, str]) -> bool:
    """Whether the request asks for an explanation (``explain``: true/false)."""
    value = parameters.get(EXPLAIN_PARAMETER)
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidArgument(f"request parameter {EXPLAIN_PARAMETER!r} must be true or false, got {value!r}")


def attach(deployments: DeploymentTable, response: InferenceResponse, batch: pa.RecordBatch) -> InferenceResponse:
    """``response`` with the contributions and summaries of ``batch`` (the decoded inputs)
    as two more outputs. On an event loop it refuses (WouldBlock): it runs on a worker."""
    if must_not_block():
        refuse_blocking("an explanation is computed on a worker")
    if len(response.deployments) != 1:
        raise FailedPrecondition(
            f"explain: {len(response.deployments)} deployments answered ({', '.join(response.deployments)}); "
            "an explanation is of one model: call one deployment (request parameter milepost-deployment) "
            "or an endpoint with a single route")
    deployment_id = response.deployments[0]
    hosted = deployments.get(deployment_id)
    if hosted is None:
        raise FailedPrecondition(
            f"explain: deployment {deployment_id!r} scored on another agent; call that agent, or the "
            "deployment by id (request parameter milepost-deployment) where it runs")
    model = _native(hosted.model)
    if model is None:
        raise FailedPrecondition(
            f"explain: deployment {deployment_id!r} runs on engine {hosted.engine!r}; explanations are given "
            "for deployments of the native engine (scoring_core bundles)")
    contributions, explanations = model.explain(batch)
    n = batch.num_rows
    flat = np.ascontiguousarray(contributions, np.float64).reshape(n, -1)
    width = flat.shape[1] if n else _width(contributions)
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float64()), width),
        pa.array([e.text for e in explanations], pa.string()),
    ]
    out = response.batch
    for name, column in zip((CONTRIBUTIONS_OUTPUT, SUMMARY_OUTPUT), columns):
        out = out.append_column(name, column)
    return dataclasses.replace(response, batch=out)


def _width(contributions: np.ndarray) -> int:
    return int(np.prod(contributions.shape[1:]))


def _native(loaded: Any) -> Any:
    """The native engine's model under its wrappers (the micro-batcher), or None."""
    from engines.native import NativeModel

    while not isinstance(loaded, NativeModel):
        loaded = getattr(loaded, "model", None)
        if loaded is None:
            return None
    return loaded
