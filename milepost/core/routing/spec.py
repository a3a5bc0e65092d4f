"""What makes a routing policy valid: the one set of rules, for the coordinator and the agents.

The coordinator checks a policy when it is set (``check``: InvalidArgument, the
user's mistake) and fills in the defaults, so agents and the canary controller
read complete policies. An agent checks every policy it is pushed with the same
rules (``check_resolved``: FailedPrecondition, since a bad pushed route is not
the caller's fault) before it serves by it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from milepost.core.errors import FailedPrecondition, InvalidArgument, shown
from milepost.v1 import routing_pb2

KINDS = ("single", "split", "canary", "shadow", "ensemble", "bandit")
COMBINERS = ("mean", "weighted", "vote", "stacking")
BANDITS = ("epsilon_greedy", "thompson")
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FAILURE_POLICIES = ("fail", "skip")
DEFAULT_KEY_PARAMETER = "milepost-key"
DEFAULT_MEMBER_TIMEOUT_S = 10.0
DEFAULT_WEIGHT = 1.0  # an arm given no weight counts once

# A canary's defaults, the one set: the CLI's flags, pipeline deploy stages and ``check``
# (which fills them into a policy that leaves them unset) all read them here.
DEFAULT_CANARY_STEPS = (5.0, 25.0, 50.0, 100.0)
DEFAULT_CANARY_WINDOW_S = 60.0
DEFAULT_MAX_ERROR_RATE = 0.01
DEFAULT_MIN_REQUESTS = 20
DEFAULT_MAX_P99_LATENCY_MS = 0.0  # off
DEFAULT_MAX_DIVERGENCE = 0.0  # off


def check(
    policy: routing_pb2.RoutingPolicy, arm_names: Sequence[str], weights: Sequence[float], has_stacker: bool,
) -> None:
    """Raise InvalidArgument naming the first problem; fill defaults into ``policy`` in place.

    Every number must be finite (NaN passes no comparison, so each is checked as such)."""
    kind = policy.kind
    if kind not in KINDS:
        raise InvalidArgument(f"policy kind {shown(kind)} is unknown; use one of {', '.join(KINDS)}")
    for name in arm_names:
        if not ARM_NAME.fullmatch(name):
            raise InvalidArgument(f"arm name {shown(name)} is invalid: 1-64 letters, digits, '_', '.', '-'")
    if len(set(arm_names)) != len(arm_names):
        raise InvalidArgument(f"arm names must be unique, got {shown(list(arm_names))}")
    _check_weights(policy, arm_names, weights)
    _check_finite(policy)
    n = len(arm_names)
    exact = {"single": 1, "canary": 2, "shadow": 2}
    if kind in exact and n != exact[kind]:
        raise InvalidArgument(f"a {kind} policy takes exactly {exact[kind]} arm(s), got {n}")
    if kind in ("split", "ensemble", "bandit") and n < 1:
        raise InvalidArgument(f"a {kind} policy takes at least 1 arm, got none")
    if not policy.key_parameter:
        policy.key_parameter = DEFAULT_KEY_PARAMETER
    if kind == "canary":
        _check_canary(policy)
    if kind == "shadow" and not 0 < policy.shadow_fraction <= 1:
        raise InvalidArgument(f"shadow fraction must be in (0, 1], got {policy.shadow_fraction}")
    if kind == "ensemble":
        if not policy.combiner:
            policy.combiner = "mean"
        if policy.combiner not in COMBINERS:
            raise InvalidArgument(f"combiner {shown(policy.combiner)} is unknown; use one of {', '.join(COMBINERS)}")
        if (policy.combiner == "stacking") != has_stacker:
            raise InvalidArgument("the stacking combiner needs a stacker model, and only it takes one")
        if not policy.on_member_failure:
            policy.on_member_failure = "fail"
        if policy.on_member_failure not in FAILURE_POLICIES:
            raise InvalidArgument(f"on_member_failure must be fail or skip, got {shown(policy.on_member_failure)}")
        if policy.member_timeout_s < 0:
            raise InvalidArgument("member_timeout_s must be >= 0")
    if kind == "bandit":
        if not policy.bandit:
            policy.bandit = "thompson"
        if policy.bandit not in BANDITS:
            raise InvalidArgument(f"bandit {shown(policy.bandit)} is unknown; use one of {', '.join(BANDITS)}")
        if not 0 <= policy.epsilon <= 1:
            raise InvalidArgument(f"epsilon must be in [0, 1], got {policy.epsilon}")
        if policy.bandit == "epsilon_greedy" and policy.epsilon == 0:
            policy.epsilon = 0.1


def _check_weights(policy: routing_pb2.RoutingPolicy, arm_names: Sequence[str], weights: Sequence[float]) -> None:
    """Weights are shares as the user gave them: each finite and >= 0, 0 meaning "none of
    the traffic" (split) or "no say" (weighted ensemble); where they divide something, at
    least one must be > 0. InvalidArgument names the arm."""
    for name, weight in zip(arm_names, weights):
        if not math.isfinite(weight):
            raise InvalidArgument(f"arm weights must be finite: arm {shown(name)} has weight {weight}")
        if weight < 0:
            raise InvalidArgument(f"arm weights must be >= 0: arm {shown(name)} has weight {weight:g}")
    divides = policy.kind == "split" or (policy.kind == "ensemble" and policy.combiner == "weighted")
    if divides and arm_names and not any(w > 0 for w in weights):
        what = "a split shares traffic" if policy.kind == "split" else "the weighted combiner weighs answers"
        raise InvalidArgument(
            f"arm weights are all 0 ({', '.join(shown(n) for n in arm_names)}): {what} by weight, "
            "so at least one arm needs a weight > 0"
        )


def _check_finite(policy: routing_pb2.RoutingPolicy) -> None:
    """InvalidArgument naming the first number of the policy that is NaN or infinite."""
    numbers = {
        "canary steps": list(policy.steps), "window_s": [policy.window_s],
        "gates.max_error_rate": [policy.gates.max_error_rate],
        "gates.max_p99_latency_ms": [policy.gates.max_p99_latency_ms],
        "gates.max_divergence": [policy.gates.max_divergence], "shadow_fraction": [policy.shadow_fraction],
        "member_timeout_s": [policy.member_timeout_s], "epsilon": [policy.epsilon],
    }
    for field, values in numbers.items():
        if not all(math.isfinite(v) for v in values):
            raise InvalidArgument(f"{field} must be finite, got {shown(values)}")


def _check_canary(policy: routing_pb2.RoutingPolicy) -> None:
    steps = list(policy.steps) or list(DEFAULT_CANARY_STEPS)
    if any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
        raise InvalidArgument(f"canary steps must be increasing percentages in (0, 100], got {shown(steps)}")
    if steps[-1] != 100:
        steps.append(100.0)
    del policy.steps[:]
    policy.steps.extend(steps)
    if not 0 <= policy.step < len(steps):
        raise InvalidArgument(f"canary step {policy.step} is outside the {len(steps)} steps")
    if policy.window_s <= 0:
        policy.window_s = DEFAULT_CANARY_WINDOW_S
    gates = policy.gates
    if not gates.HasField("max_error_rate"):
        gates.max_error_rate = DEFAULT_MAX_ERROR_RATE
    if not gates.HasField("min_requests"):
        gates.min_requests = DEFAULT_MIN_REQUESTS
    if gates.max_p99_latency_ms < 0 or gates.max_divergence < 0:
        raise InvalidArgument("canary gates must be >= 0")
    if not 0 <= gates.max_error_rate <= 1:
        raise InvalidArgument(f"gates.max_error_rate is a fraction of requests, in [0, 1]; got {gates.max_error_rate}")
    if gates.min_requests < 1:
        raise InvalidArgument(
            f"gates.min_requests must be >= 1 (a window judged on no requests would promote blindly); "
            f"got {gates.min_requests}"
        )


def single_arm(endpoint: str, policy: routing_pb2.RoutingPolicy, doing: str) -> routing_pb2.Arm:
    """The one arm of a ``single`` endpoint: what a new canary starts from and a redeploy
    replaces. Any other policy is FailedPrecondition saying how to get back to one, since
    ``doing`` there would throw that policy away (a bandit's learning, a split's shares, a
    canary under way) without anyone having asked for it."""
    if policy.kind == "single" and len(policy.arms) == 1:
        return policy.arms[0]
    arms = ", ".join(a.name for a in policy.arms)
    if policy.kind in ("canary", "shadow"):
        how = f"promote or roll back first (`milepost promote {endpoint}`, `milepost rollback {endpoint}`)"
    else:
        how = f"promote one of its arms first (`milepost promote {endpoint} --arm NAME`)"
    raise FailedPrecondition(
        f"endpoint {endpoint!r} is a {policy.kind} over arms {arms}; {doing} starts only from a single model "
        f"and will not replace that policy: {how}"
    )


def check_resolved(endpoint: str, policy: routing_pb2.RoutingPolicy) -> routing_pb2.RoutingPolicy:
    """A pushed policy, checked by ``check`` and completed (a copy; ``policy`` is untouched).

    Its arms are resolved: each names exactly one of a deployment and an
    endpoint. Any problem is FailedPrecondition naming the endpoint.
    """
    complete = routing_pb2.RoutingPolicy()
    complete.CopyFrom(policy)
    complete.kind = complete.kind or "single"
    try:
        for arm in complete.arms:
            if bool(arm.deployment_id) == bool(arm.endpoint):
                raise InvalidArgument(f"arm {shown(arm.name)} must name exactly one of a deployment and an endpoint")
        check(
            complete, [a.name for a in complete.arms], [a.weight for a in complete.arms],
            has_stacker=bool(complete.stacker_deployment_id),
        )
    except InvalidArgument as err:
        raise FailedPrecondition(f"endpoint {endpoint!r}: {err.message}") from err
    return complete
