"""Error messages quote at most a short prefix of what a caller sent (milepost.core.errors.shown)."""

from __future__ import annotations

import pytest

from milepost.core.errors import InvalidArgument, MilepostError, NotFound, shown
from milepost.core.names import check_name
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import pipelines_pb2, routing_pb2

LONG = "n" * 10_000
SHORT_ENOUGH = 300


def test_shown_quotes_short_values_whole_and_cuts_long_ones() -> None:
    assert shown("churn") == "'churn'"
    assert shown(["a", "b"]) == "['a', 'b']"
    cut = shown(LONG)
    assert cut.startswith("'nnn") and cut.endswith("... (10000 characters)") and len(cut) < 100
    assert shown(b"\x00" * 5000).endswith("... (5000 bytes)")
    assert shown(list(range(5000))).endswith("... (5000 items)")
    assert len(shown("\U0001f600" * 1000)) < 100  # escapes cannot make it long either
    assert shown("x" * 10, limit=4) == "'xxx... (10 characters)"


def test_the_name_rule_quotes_a_prefix_and_takes_the_whole_string() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_name("model", LONG)
    assert len(caught.value.message) < SHORT_ENOUGH and "(10000 characters)" in caught.value.message
    for bad in ("churn\n", "../x", "", ".x", "a b"):
        with pytest.raises(InvalidArgument):
            check_name("model", bad)
    assert check_name("model", "churn-v1.2_b") == "churn-v1.2_b"


def calls(client) -> dict:
    """Coordinator calls that carry a 10,000-character name somewhere a message may quote it."""
    stage = pipelines_pb2.StageSpec
    return {
        "deploy endpoint": lambda: client.deploy(LONG, "churn"),
        "deploy model": lambda: client.deploy("api", LONG),
        "push name": lambda: client._call("PushModel", iter([pb.PushModelRequest(
            header=pb.PushModelRequest.Header(name=LONG, format="bundle"))])),
        "push format": lambda: client._call("PushModel", iter([pb.PushModelRequest(
            header=pb.PushModelRequest.Header(name="m", format=LONG))])),
        "fetch model": lambda: client.fetch_model("churn", LONG, "/nonexistent"),
        "policy arm": lambda: client.set_policy("api", routing_pb2.RoutingPolicy(kind="single"),
                                                [pb.ArmSpec(name=LONG, model="churn")]),
        "policy kind": lambda: client.set_policy("api", routing_pb2.RoutingPolicy(kind=LONG),
                                                 [pb.ArmSpec(name="a", model="churn")]),
        "report": lambda: client.report(LONG),
        "undeploy": lambda: client.undeploy(LONG),
        "feedback arm": lambda: client.feedback("api", "k", 1.0, arm=LONG),
        "stage name": lambda: client.submit_pipeline(pipelines_pb2.PipelineSpec(
            name="p", stages=[stage(name=LONG, kind="custom", engine="native")])),
        "stage kind": lambda: client.submit_pipeline(pipelines_pb2.PipelineSpec(
            name="p", stages=[stage(name="a", kind=LONG, engine="native")])),
        "stage dependency": lambda: client.submit_pipeline(pipelines_pb2.PipelineSpec(
            name="p", stages=[stage(name="a", kind="custom", engine="native", depends_on=[LONG])])),
    }


def test_long_names_give_short_messages_over_grpc(cluster, logistic_model) -> None:
    _, bundle_dir, _, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("api", "churn")
        for what, call in calls(client).items():
            with pytest.raises(MilepostError) as caught:
                call()
            assert isinstance(caught.value, (InvalidArgument, NotFound)), (what, caught.value)
            message = caught.value.message
            assert len(message) < SHORT_ENOUGH, (what, message)
            assert "nnnnnnnnnn" in message, (what, message)
