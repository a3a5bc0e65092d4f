"""What an endpoint's page shows of the policies whose arms do not share the traffic by weight:
a shadow's candidate, which gets copies of requests (compared with the primary's answers, then
discarded), and a bandit's learning: its algorithm and settings, and each arm's rewards and what
it makes of them. All from the endpoint's report (Report), as `milepost report` prints it.
"""

from __future__ import annotations

from coordinator.console.html import Markup, join, number, pairs, table, tag
from milepost.core.routing.bandit import BanditPolicy
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2


def mirrored(policy: routing_pb2.RoutingPolicy) -> set[str]:
    """The arms that only get copies of requests: a shadow's candidate (arms[1])."""
    return {policy.arms[1].name} if policy.kind == "shadow" and len(policy.arms) > 1 else set()


def shadow(report: pb.ReportResponse) -> list[tuple[str, object]]:
    """A shadow's mirror and how far its answers are from the primary's."""
    policy = report.endpoint.routing
    primary, candidate = policy.arms[0].name, policy.arms[1].name
    counted = next((r for r in report.arms if r.arm == candidate), pb.ArmReport())
    divergence = (f"mean |{candidate} - {primary}| {number(counted.shadow_mean_abs_diff)} over "
                  f"{counted.shadow_compared} rows" if counted.shadow_compared else "no rows compared yet")
    return [("mirrored", f"{100 * policy.shadow_fraction:g}% of requests copied to {candidate}, its answers compared "
                         f"with {primary}'s and discarded"),
            ("shadow divergence", divergence)]


def bandit(report: pb.ReportResponse) -> Markup:
    """The bandit's algorithm and settings, and per arm its share of the requests so far, the
    rewards fed back and the posterior (thompson) or the choice they make (epsilon_greedy)."""
    learning = _learning(report)
    total = sum(r.requests for r in report.arms) or 1
    greedy = learning.algorithm == "epsilon_greedy"
    settings: list[tuple[str, object]] = [("algorithm", learning.algorithm)]
    if greedy:
        settings.append(("epsilon", f"{learning.epsilon:g} (a random arm for {100 * learning.epsilon:g}% of requests)"))
    settings.append(("learns from", "outcomes fed back (milepost feedback), credited to the arm that served the key"))
    rows = [(r.arm, f"{100 * r.requests / total:.1f}%", f"{r.feedback_count:g}",
             f"{r.feedback_mean:.3g}" if r.feedback_count else "-",
             _choice(learning, r.arm) if greedy else posterior(learning, r.arm))
            for r in report.arms]
    return join((tag("h2", "Bandit"), pairs(settings),
                 table(("arm", "share", "rewards", "mean reward", "choice" if greedy else "posterior"), rows,
                       class_="bandit")))


def _learning(report: pb.ReportResponse) -> BanditPolicy:
    """The policy as an agent holds it, with the rewards the report counts (its count, mean and
    sample std per arm give back the sums the coordinator pushes)."""
    spec = routing_pb2.RoutingPolicy()
    spec.CopyFrom(report.endpoint.routing)
    del spec.rewards[:]
    for r in report.arms:
        count, mean, std = r.feedback_count, r.feedback_mean, r.feedback_std
        spec.rewards.add(arm=r.arm, count=count, sum=count * mean,
                         sum_squares=std * std * max(count - 1, 0.0) + count * mean * mean)
    return BanditPolicy(report.endpoint.name, spec, 0)


def posterior(learning: BanditPolicy, arm: str) -> str:
    """The distribution Thompson sampling draws ``arm``'s score from (milepost.core.routing.bandit)."""
    if learning.rewards.get(arm, (0.0, 0.0, 0.0))[0] <= 0:
        return "no rewards yet: explored first"
    kind, p, q = learning.posterior(arm)
    return f"Beta({p:.4g}, {q:.4g}), mean {p / (p + q):.3f}" if kind == "beta" else f"Normal({p:.4g}, {q:.3g})"


def _choice(learning: BanditPolicy, arm: str) -> str:
    """What epsilon-greedy does with ``arm`` now (milepost.core.routing.bandit)."""
    rewarded = {a.name: learning.rewards[a.name] for a in learning.arms if learning.rewards.get(a.name, (0.0,))[0] > 0}
    if arm not in rewarded:
        return "explored first: no rewards yet"
    if len(rewarded) < len(learning.arms):
        return "waits: arms without rewards are explored first"
    best = max(rewarded, key=lambda name: rewarded[name][1] / rewarded[name][0])  # the first on ties, as there
    return "greedy: the best mean reward" if arm == best else "explored: when the coin says random"
