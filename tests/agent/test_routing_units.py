"""Policies and combiners on their own: no servers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from agent.routing import combiners
from milepost.core.errors import FailedPrecondition, Unavailable
from milepost.core.routing.policy import Arm, build, unit_interval
from milepost.core.routing.split import pick_by_weight
from milepost.v1 import routing_pb2


def policy(kind: str, arms: list[tuple[str, float]], generation: int = 1, **params):
    spec = routing_pb2.RoutingPolicy(
        kind=kind, arms=[routing_pb2.Arm(name=n, deployment_id=f"dep-{n}", weight=w) for n, w in arms], **params
    )
    return build("ep", spec, generation)


def everywhere(arm: Arm) -> bool:
    return True


def test_unit_interval_is_stable_uniform_and_salted_by_endpoint() -> None:
    assert unit_interval("ep", "k") == unit_interval("ep", "k")
    assert unit_interval("ep", "k") != unit_interval("other", "k")
    points = np.array([unit_interval("ep", str(i)) for i in range(4000)])
    assert points.min() >= 0 and points.max() < 1
    assert abs(points.mean() - 0.5) < 0.02


def test_pick_by_weight_never_picks_an_empty_slice() -> None:
    arms = [Arm("a"), Arm("b"), Arm("c")]
    assert pick_by_weight(arms, [0, 1, 0], 0.0).name == "b"
    assert pick_by_weight(arms, [1, 0, 1], 0.5).name == "c"
    assert pick_by_weight(arms, [1, 0, 0], 0.999999).name == "a"


def test_bad_policies_are_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition, match="weights"):
        policy("split", [("a", 0), ("b", 0)])
    with pytest.raises(FailedPrecondition, match="exactly one"):
        build("ep", routing_pb2.RoutingPolicy(kind="single", arms=[routing_pb2.Arm(name="a")]), 1)
    with pytest.raises(FailedPrecondition, match="stacker"):
        policy("ensemble", [("a", 1), ("b", 1)], combiner="stacking")
    with pytest.raises(FailedPrecondition, match="bandit"):
        policy("bandit", [("a", 1), ("b", 1)], bandit="ucb")


def test_thompson_with_unbounded_rewards_uses_normal_posteriors() -> None:
    rewards = [routing_pb2.ArmReward(arm="a", count=50, sum=50 * 3.0, sum_squares=50 * (9 + 4)),
               routing_pb2.ArmReward(arm="b", count=50, sum=50 * 5.0, sum_squares=50 * (25 + 4))]
    p = policy("bandit", [("a", 0), ("b", 0)], bandit="thompson", rewards=rewards)
    assert not p.bernoulli
    picks = Counter(p.choose(f"k{i}", everywhere).arms[0].name for i in range(500))
    assert picks["b"] > 480
    assert p.choose("same", everywhere) == p.choose("same", everywhere)
    later = policy("bandit", [("a", 0), ("b", 0)], generation=2, bandit="thompson", rewards=rewards)
    # A new route table with the same rewards leaves every key on its arm.
    assert [later.choose(f"k{i}", everywhere) for i in range(50)] == [p.choose(f"k{i}", everywhere) for i in range(50)]


def test_split_unavailable_names_the_arm() -> None:
    p = policy("split", [("a", 1), ("b", 0)])
    with pytest.raises(Unavailable, match="'a'"):
        p.choose("k", lambda arm: arm.name == "b")


def batch(values: list[list[float]]) -> pa.RecordBatch:
    flat = pa.array(np.asarray(values, dtype=np.float64).reshape(-1))
    return pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(flat, len(values[0]))], names=["probabilities"])


def test_vote_answers_shares_with_ties_to_the_lowest_class() -> None:
    outputs = [("a", batch([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])),
               ("b", batch([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))]
    shares = combiners.vote(outputs).column(0).values.to_numpy().reshape(2, 3)
    np.testing.assert_array_equal(shares, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert np.argmax(shares[0]) == 0  # a tie goes to the lowest class index


def test_vote_on_labels_takes_the_most_frequent_value_ties_to_the_smallest() -> None:
    labels = [pa.array([1, 2, 3], pa.int64()), pa.array([2, 2, 1], pa.int64()), pa.array([1, 3, 2], pa.int64())]
    outputs = [(n, pa.RecordBatch.from_arrays([c], names=["label"])) for n, c in zip("abc", labels)]
    voted = combiners.vote(outputs)
    assert voted.column(0).to_pylist() == [1, 2, 1] and voted.schema.field(0).type == pa.int64()


def test_mean_of_integer_columns_is_float64_and_weights_are_normalised() -> None:
    outputs = [(n, pa.RecordBatch.from_arrays([pa.array([v], pa.int32())], names=["x"])) for n, v in (("a", 1), ("b", 4))]
    combined = combiners.mean(outputs, [1.0, 2.0])
    assert combined.schema.field(0).type == pa.float64() and combined.column(0).to_pylist() == [3.0]


def test_stacking_input_matches_the_stacker_schema_or_says_why_not() -> None:
    features = combiners.stacking_features([("a", batch([[0.25, 0.75]])), ("b", pa.RecordBatch.from_arrays([pa.array([2.0])], names=["p"]))])
    np.testing.assert_array_equal(features, [[0.25, 0.75, 2.0]])
    named = pa.schema([(f"f{i}", pa.float32()) for i in range(3)])
    assert combiners.stacking_input(features, named, ["a", "b"]).schema == named
    tensor = pa.schema([("input", pa.list_(pa.float32(), 3))])
    assert combiners.stacking_input(features, tensor, ["a", "b"]).column(0).type == pa.list_(pa.float32(), 3)
    with pytest.raises(FailedPrecondition, match="give 3 features"):
        combiners.stacking_input(features, pa.schema([("f0", pa.float32())]), ["a", "b"])


def test_weights_are_taken_as_given_and_refused_naming_the_arm() -> None:
    assert policy("split", [("a", 0), ("b", 2)]).weights == (0, 2)
    assert {policy("split", [("a", 0), ("b", 2)]).choose(f"k{i}", everywhere).arms[0].name for i in range(200)} == {"b"}
    with pytest.raises(FailedPrecondition, match=r"arm weights are all 0 \('a', 'b'\)"):
        policy("split", [("a", 0), ("b", 0)])
    with pytest.raises(FailedPrecondition, match=r"arm weights are all 0 .*weighted combiner"):
        policy("ensemble", [("a", 0), ("b", 0)], combiner="weighted")
    policy("ensemble", [("a", 0), ("b", 0)], combiner="mean")  # mean ignores weights
    with pytest.raises(FailedPrecondition, match="arm 'b' has weight nan"):
        policy("split", [("a", 1), ("b", float("nan"))])
    with pytest.raises(FailedPrecondition, match="arm 'a' has weight -0.5"):
        policy("split", [("a", -0.5), ("b", 1)])


def test_an_arm_spec_without_a_weight_counts_once_and_one_of_zero_gets_none() -> None:
    from milepost.v1 import coordinator_pb2

    assert Arm.from_spec(coordinator_pb2.ArmSpec(name="a", model="m")).weight == 1.0
    assert Arm.from_spec(coordinator_pb2.ArmSpec(name="a", model="m", weight=0.0)).weight == 0.0


def test_canary_gates_left_unset_take_the_defaults_and_explicit_ones_are_kept() -> None:
    from milepost.core.routing import spec

    unset = policy("canary", [("a", 1), ("b", 1)]).spec
    assert unset.gates.max_error_rate == spec.DEFAULT_MAX_ERROR_RATE and unset.gates.min_requests == spec.DEFAULT_MIN_REQUESTS
    assert list(unset.steps) == list(spec.DEFAULT_CANARY_STEPS) and unset.window_s == spec.DEFAULT_CANARY_WINDOW_S
    strict = policy("canary", [("a", 1), ("b", 1)], gates=routing_pb2.CanaryGates(max_error_rate=0, min_requests=1)).spec
    assert strict.gates.max_error_rate == 0 and strict.gates.min_requests == 1
    with pytest.raises(FailedPrecondition, match="min_requests must be >= 1"):
        policy("canary", [("a", 1), ("b", 1)], gates=routing_pb2.CanaryGates(min_requests=0))


def test_a_policy_other_than_single_has_no_single_arm_to_start_from() -> None:
    from milepost.core.routing import spec

    single = routing_pb2.RoutingPolicy(kind="single", arms=[routing_pb2.Arm(name="primary", deployment_id="d")])
    assert spec.single_arm("ep", single, "a canary").name == "primary"
    bandit = routing_pb2.RoutingPolicy(kind="bandit", arms=[routing_pb2.Arm(name="a"), routing_pb2.Arm(name="b")])
    with pytest.raises(FailedPrecondition, match=r"'ep' is a bandit over arms a, b; a canary .*milepost promote ep --arm"):
        spec.single_arm("ep", bandit, "a canary")
    canary = routing_pb2.RoutingPolicy(kind="canary", arms=[routing_pb2.Arm(name="a"), routing_pb2.Arm(name="b")])
    with pytest.raises(FailedPrecondition, match="promote or roll back first"):
        spec.single_arm("ep", canary, "a canary")


def test_served_keys_remember_the_newest_arm_of_the_newest_keys() -> None:
    from agent.routing.served_keys import ServedKeys

    clock = iter(range(100))
    keys = ServedKeys(2, clock=lambda: float(next(clock)))
    keys.record("ep", "k1", "a")
    keys.record("ep", "k2", "b")
    keys.record("ep", "k1", "b")  # served again, on another arm: k1 is now the newest
    keys.record("ep", "k3", "a")  # over capacity: k2, the oldest, is forgotten
    assert keys.arm_for("ep", "k1") == ("b", 2.0)
    assert keys.arm_for("ep", "k2") is None
    assert keys.arm_for("ep", "k3") == ("a", 3.0)
    assert keys.arm_for("other", "k3") is None and len(keys) == 2
    off = ServedKeys(0)
    off.record("ep", "k", "a")
    assert off.arm_for("ep", "k") is None
