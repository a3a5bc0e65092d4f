"""The per-arm report: traffic, latency, predictions and outcomes, and how arms differ."""

from __future__ import annotations

import math

from coordinator.significance import two_proportion_z, welch_t
from coordinator.store import EndpointRecord
from milepost.core.arm_counters import ArmCounters
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2


def build(
    endpoint: EndpointRecord, policy: routing_pb2.RoutingPolicy, totals: dict[str, ArmCounters],
    rewards: dict[str, tuple[float, float, float]],
) -> tuple[list[pb.ArmReport], list[pb.ArmComparison]]:
    deployments = {d.deployment_id: d for d in endpoint.deployments}
    arms = []
    for arm in policy.arms:
        t = totals.get(arm.name, ArmCounters())
        count, total, squares = rewards.get(arm.name, (0.0, 0.0, 0.0))
        d = deployments.get(arm.deployment_id)
        arms.append(pb.ArmReport(
            arm=arm.name, model=d.model if d else arm.endpoint, version=d.version if d else "",
            requests=int(t.requests), errors=int(t.errors), error_rate=t.error_rate,
            p50_latency_ms=t.latency_quantile_ms(0.5), p99_latency_ms=t.latency_quantile_ms(0.99),
            mean_latency_ms=t.latency_sum_ms / t.requests if t.requests else 0.0,
            predictions=int(t.predictions), prediction_mean=t.prediction_mean,
            prediction_std=math.sqrt(t.prediction_var),
            feedback_count=count, feedback_mean=total / count if count else 0.0,
            feedback_std=math.sqrt(_variance(count, total, squares)),
            shadow_compared=int(t.shadow_compared),
            shadow_mean_abs_diff=t.shadow_abs_diff_sum / t.shadow_compared if t.shadow_compared else 0.0,
        ))
    return arms, _compare(arms, rewards)


def _variance(count: float, total: float, squares: float) -> float:
    if count < 2:
        return 0.0
    mean = total / count
    return max(squares / count - mean * mean, 0.0) * count / (count - 1)


def _compare(arms: list[pb.ArmReport], rewards: dict[str, tuple[float, float, float]]) -> list[pb.ArmComparison]:
    if len(arms) < 2:
        return []
    base = arms[0]
    out = []
    for arm in arms[1:]:
        z, p = two_proportion_z(base.errors, base.requests, arm.errors, arm.requests)
        out.append(pb.ArmComparison(
            arm=arm.arm, baseline=base.arm, metric="error_rate", difference=arm.error_rate - base.error_rate,
            test="two_proportion_z", statistic=z, p_value=p,
        ))
        t, p = welch_t(base.prediction_mean, base.prediction_std**2, base.predictions,
                       arm.prediction_mean, arm.prediction_std**2, arm.predictions)
        out.append(pb.ArmComparison(
            arm=arm.arm, baseline=base.arm, metric="prediction_mean",
            difference=arm.prediction_mean - base.prediction_mean, test="welch_t", statistic=t, p_value=p,
        ))
        if base.feedback_count and arm.feedback_count:
            if _binary(rewards.get(base.arm)) and _binary(rewards.get(arm.arm)):
                stat, p = two_proportion_z(
                    base.feedback_mean * base.feedback_count, base.feedback_count,
                    arm.feedback_mean * arm.feedback_count, arm.feedback_count,
                )
                test = "two_proportion_z"
            else:
                stat, p = welch_t(base.feedback_mean, base.feedback_std**2, base.feedback_count,
                                  arm.feedback_mean, arm.feedback_std**2, arm.feedback_count)
                test = "welch_t"
            out.append(pb.ArmComparison(
                arm=arm.arm, baseline=base.arm, metric="feedback_mean",
                difference=arm.feedback_mean - base.feedback_mean, test=test, statistic=stat, p_value=p,
            ))
    return out


def _binary(reward: tuple[float, float, float] | None) -> bool:
    """Outcomes that are all 0 or 1 (conversions): then sum of squares equals the sum."""
    return reward is not None and abs(reward[1] - reward[2]) < 1e-9
