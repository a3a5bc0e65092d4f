"""Pipeline specs a caller may send a real coordinator: bounded in size and nesting, with
finite numbers and endpoint names by the one name rule, refused before a run exists."""

from __future__ import annotations

import json
import time

import pytest

from milepost.core.errors import InvalidArgument, ResourceExhausted
from milepost.v1 import pipelines_pb2
from tests.conftest import wait_until


def spec(*stages: dict, name: str = "p") -> pipelines_pb2.PipelineSpec:
    message = pipelines_pb2.PipelineSpec(name=name)
    for stage in stages:
        params = stage.get("params", {})
        message.stages.add(
            name=stage["name"], kind=stage["kind"], engine=stage.get("engine", ""),
            params_json=params if isinstance(params, str) else json.dumps(params),
        )
    return message


def submit_refused(cluster, request: pipelines_pb2.PipelineSpec, error: type, *needles: str) -> str:
    with cluster.client as client:
        started = time.monotonic()
        with pytest.raises(error) as caught:
            client.submit_pipeline(request)
        elapsed = time.monotonic() - started
        assert client.runs() == []  # nothing stored, and ListRuns still answers
    message = caught.value.message
    for needle in needles:
        assert needle in message, message
    assert len(message) < 300, message
    assert elapsed < 30, f"refusal took {elapsed:.1f}s"
    return message


def test_a_60_mb_spec_is_refused_at_once(cluster) -> None:
    """gRPC itself refuses it on arrival: the coordinator takes requests of at most 8 MiB."""
    huge = spec({"name": "a", "kind": "custom", "engine": "native", "params": {"blob": "x" * (60 << 20)}})
    assert huge.ByteSize() > 60 << 20
    submit_refused(cluster, huge, ResourceExhausted, "larger than max")


def test_a_spec_over_the_spec_limit_is_refused_naming_the_setting(cluster) -> None:
    big = spec({"name": "a", "kind": "custom", "engine": "native", "params": {"blob": "x" * (1 << 20)}})
    submit_refused(cluster, big, ResourceExhausted, "max_pipeline_spec_bytes", "262144")


def test_deeply_nested_params_are_invalid_argument_not_internal(cluster) -> None:
    deep = "[" * 50_000 + "]" * 50_000  # json.loads alone raises RecursionError on this
    with pytest.raises(RecursionError):
        json.loads(deep)
    request = spec({"name": "a", "kind": "custom", "engine": "native", "params": '{"x": ' + deep + "}"})
    submit_refused(cluster, request, InvalidArgument, "50001 levels deep", "max_pipeline_spec_depth")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_params_with_nan_or_infinite_numbers_are_refused(cluster, literal) -> None:
    request = spec({"name": "a", "kind": "custom", "engine": "native", "params": '{"lr": ' + literal + "}"})
    submit_refused(cluster, request, InvalidArgument, "finite")


@pytest.mark.parametrize("endpoint", ["../x", "/etc/passwd", "a/b", ".hidden", "x\n", "e" * 10_000])
def test_a_deploy_stage_cannot_name_an_endpoint_outside_the_name_rule(cluster, endpoint) -> None:
    request = spec({"name": "d", "kind": "deploy", "params": {"endpoint": endpoint, "model": "m"}})
    submit_refused(cluster, request, InvalidArgument, "stage 'd'", "endpoint name")
    with cluster.client as client:
        assert client.endpoints() == []


def test_a_deploy_stage_with_a_bad_number_fails_its_stage_saying_which(cluster) -> None:
    """A number that can only be known when the stage runs is checked then, and fails the
    stage with a message (not 'internal error')."""
    request = spec({"name": "d", "kind": "deploy", "params": {"endpoint": "e", "model": "m", "replicas": "many"}})
    with cluster.client as client:
        run_id = client.submit_pipeline(request).run_id
        run = wait_until(lambda: (r := client.run(run_id)).state in ("FAILED", "SUCCEEDED") and r)
    assert run.state == "FAILED"
    assert "replicas must be a finite number" in run.stages[0].message, run.stages[0].message


def test_a_long_pipeline_name_is_refused_with_a_short_message(cluster) -> None:
    request = spec({"name": "a", "kind": "custom", "engine": "native"}, name="p" * 10_000)
    submit_refused(cluster, request, InvalidArgument, "pipeline name", "10000 characters")


def test_a_spec_within_the_bounds_still_runs(cluster) -> None:
    nested: dict = {"leaf": 1.5}
    for _ in range(10):  # 21 levels, under the default 32
        nested = {"n": [nested]}
    request = spec({"name": "d", "kind": "deploy", "params": {"endpoint": "e", "model": "m", "extra": nested}})
    with cluster.client as client:
        run_id = client.submit_pipeline(request).run_id
        assert [r.run_id for r in client.runs()] == [run_id]
        run = wait_until(lambda: (r := client.run(run_id)).state in ("FAILED", "SUCCEEDED") and r)
    assert "model 'm' is not registered" in run.stages[0].message  # it ran as far as the model look-up


def test_a_canary_deploy_stage_still_starts_its_canary(cluster, logistic_model, tmp_path) -> None:
    """The numbers of a deploy stage, checked when it runs, still go through: numbers, and
    numbers as text (what a ${stage.output} gives)."""
    from sklearn.linear_model import LogisticRegression

    import scoring_core

    _, bundle_dir, _, rows = logistic_model
    other = LogisticRegression(C=0.01).fit(rows, (rows[:, 0] > 0).astype(int))
    candidate = scoring_core.compile(other).save(tmp_path / "candidate")
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("api", "churn")
        client.push_model(tmp_path / "candidate", "churn-next")
        params = {"endpoint": "api", "model": f"churn-next:{candidate}", "policy": "canary",
                  "steps": [10, "50", 100], "window_s": "30", "max_error_rate": 0.2, "min_requests": 5}
        run_id = client.submit_pipeline(spec({"name": "d", "kind": "deploy", "params": params})).run_id
        run = wait_until(lambda: (r := client.run(run_id)).state in ("FAILED", "SUCCEEDED") and r, timeout=60)
        assert run.state == "SUCCEEDED", run.stages[0].message
        (endpoint,) = client.endpoints()
    policy = endpoint.routing
    assert policy.kind == "canary" and list(policy.steps) == [10, 50, 100] and policy.window_s == 30
    assert policy.gates.max_error_rate == 0.2 and policy.gates.min_requests == 5
