"""split, canary and bandit policies through a real agent: ratios, stickiness, readiness."""

from __future__ import annotations

import math
from collections import Counter

import grpc
import numpy as np

from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.v1 import routing_pb2
from tests.agent.mesh import arm, code_of, direct, infer, route


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_split_ratio_within_tolerance_sticky_per_key_and_answers_are_the_arms(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("ab", "split", [arm("a", "dep-a", weight=90), arm("b", "dep-b", weight=10)],
                          {"dep-a": [a1], "dep-b": [a1]}))
    stub = mesh.inference()
    row = mesh.rows[:1]
    expected = {"a": direct(mesh, "dep-a", row), "b": direct(mesh, "dep-b", row)}
    n = 2000
    arms = Counter()
    for i in range(n):
        answer = infer(stub, "ab", row, **{"milepost-key": f"user-{i}"})
        arms[answer.arm] += 1
        if i < 40:
            np.testing.assert_array_equal(answer.values, expected[answer.arm])
            assert answer.deployment == {"a": "dep-a", "b": "dep-b"}[answer.arm]
    assert set(arms) == {"a", "b"}
    assert within_binomial(arms["b"], n, 0.10), arms

    for i in range(0, 60, 3):
        seen = {infer(stub, "ab", row, **{"milepost-key": f"sticky-{i}"}).arm for _ in range(4)}
        assert len(seen) == 1


def test_split_without_key_is_random_and_a_custom_key_parameter_is_read(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("ab-custom", "split", [arm("a", "dep-a", weight=1), arm("b", "dep-b", weight=1)],
                          {"dep-a": [a1], "dep-b": [a1]}, key_parameter="customer"))
    stub = mesh.inference()
    row = mesh.rows[:1]
    unkeyed = Counter(infer(stub, "ab-custom", row).arm for _ in range(200))
    assert within_binomial(unkeyed["a"], 200, 0.5)
    keyed = {infer(stub, "ab-custom", row, customer="c-17").arm for _ in range(10)}
    assert len(keyed) == 1


def test_canary_gives_the_candidate_its_step_percent_and_keeps_keys_while_ramping(mesh) -> None:
    a1 = mesh.address("a1")

    def canary(step: int) -> routing_pb2.Route:
        return route("can", "canary", [arm("stable", "dep-a"), arm("next", "dep-b")],
                     {"dep-a": [a1], "dep-b": [a1]}, steps=[5, 25, 50, 100], step=step)

    stub = mesh.inference()
    row = mesh.rows[:1]
    mesh.set_routes(canary(1))
    n = 1000
    at_25 = {i: infer(stub, "can", row, **{"milepost-key": f"k{i}"}).arm for i in range(n)}
    assert within_binomial(sum(a == "next" for a in at_25.values()), n, 0.25)

    mesh.set_routes(canary(2))
    at_50 = {i: infer(stub, "can", row, **{"milepost-key": f"k{i}"}).arm for i in range(n)}
    assert within_binomial(sum(a == "next" for a in at_50.values()), n, 0.50)
    assert all(at_50[i] == "next" for i, a in at_25.items() if a == "next")  # no key leaves the candidate

    mesh.set_routes(canary(3))
    assert {infer(stub, "can", row, **{"milepost-key": f"k{i}"}).arm for i in range(50)} == {"next"}


def bandit_route(mesh, algorithm: str, epsilon: float = 0.0) -> routing_pb2.Route:
    a1 = mesh.address("a1")
    rewards = [routing_pb2.ArmReward(arm="a", count=200, sum=40, sum_squares=40),
               routing_pb2.ArmReward(arm="b", count=200, sum=120, sum_squares=120)]
    return route(f"bandit-{algorithm}", "bandit", [arm("a", "dep-a"), arm("b", "dep-b")],
                 {"dep-a": [a1], "dep-b": [a1]}, bandit=algorithm, epsilon=epsilon, rewards=rewards)


def test_bandits_send_most_traffic_to_the_arm_with_better_rewards(mesh) -> None:
    mesh.set_routes(bandit_route(mesh, "thompson"), bandit_route(mesh, "epsilon_greedy", epsilon=0.2))
    stub = mesh.inference()
    row = mesh.rows[:1]
    n = 300
    thompson = Counter(infer(stub, "bandit-thompson", row, **{"milepost-key": f"t{i}"}).arm for i in range(n))
    greedy = Counter(infer(stub, "bandit-epsilon_greedy", row, **{"milepost-key": f"g{i}"}).arm for i in range(n))
    assert thompson["b"] > 0.9 * n, thompson
    # epsilon 0.2: b gets 0.8 + 0.2/2 = 90% on average
    assert within_binomial(greedy["b"], n, 0.9), greedy
    # sticky within a generation
    assert len({infer(stub, "bandit-epsilon_greedy", row, **{"milepost-key": "g-same"}).arm for _ in range(8)}) == 1


def test_bandit_explores_arms_without_rewards_first(mesh) -> None:
    a1 = mesh.address("a1")
    rewards = [routing_pb2.ArmReward(arm="a", count=500, sum=450, sum_squares=450)]
    mesh.set_routes(route("explore", "bandit", [arm("a", "dep-a"), arm("b", "dep-b")], {"dep-a": [a1], "dep-b": [a1]},
                          bandit="thompson", rewards=rewards))
    stub = mesh.inference()
    assert {infer(stub, "explore", mesh.rows[:1], **{"milepost-key": f"e{i}"}).arm for i in range(30)} == {"b"}


def test_split_arm_without_replica_hands_over_and_single_arm_without_replica_is_unavailable(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(
        route("half-gone", "split", [arm("gone", "dep-nowhere", weight=50), arm("b", "dep-b", weight=50)], {"dep-b": [a1]}),
        route("all-gone", "single", [arm("only", "dep-nowhere")], {"dep-nowhere": []}),
    )
    stub = mesh.inference()
    assert {infer(stub, "half-gone", mesh.rows[:1], **{"milepost-key": f"h{i}"}).arm for i in range(30)} == {"b"}
    code, message = code_of(lambda: infer(stub, "all-gone", mesh.rows[:1]))
    assert code == grpc.StatusCode.UNAVAILABLE and "'only'" in message
    assert stub.ModelReady(oip.ModelReadyRequest(name="half-gone"), timeout=5).ready
    assert not stub.ModelReady(oip.ModelReadyRequest(name="all-gone"), timeout=5).ready


def test_a_route_the_agent_cannot_apply_fails_its_requests_with_the_reason_only(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(
        route("odd", "roulette", [arm("a", "dep-a")], {"dep-a": [a1]}),
        route("fine", "single", [arm("a", "dep-a")], {"dep-a": [a1]}),
    )
    stub = mesh.inference()
    code, message = code_of(lambda: infer(stub, "odd", mesh.rows[:1]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "roulette" in message
    assert infer(stub, "fine", mesh.rows[:1]).arm == "a"


def test_without_a_route_the_local_endpoint_serves_and_an_older_table_is_ignored(mesh) -> None:
    stub = mesh.inference()
    row = mesh.rows[:2]
    held = mesh.set_routes(route("direct-dep-a", "single", [arm("via-route", "dep-b")], {"dep-b": [mesh.address("a1")]}))
    assert infer(stub, "direct-dep-a", row).arm == "via-route"
    older = routing_pb2.RouteTable(generation=held.generation - 1)
    mesh.control().SetRoutes(older, timeout=5)
    assert infer(stub, "direct-dep-a", row).arm == "via-route"
    mesh.set_routes()  # a newer, empty table: back to the local deployment under that name
    answer = infer(stub, "direct-dep-a", row)
    assert answer.arm == "" and answer.deployment == "dep-a"
    np.testing.assert_array_equal(answer.values, direct(mesh, "dep-a", row))
