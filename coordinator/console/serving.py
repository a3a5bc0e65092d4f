"""The console's pages about what serves: agents, endpoints (policy, per-arm traffic, latency,
errors; a shadow's mirror and a bandit's learning, console.policies), canaries (steps and gates)
and ML health (drift per feature against the baseline).

Each page is a function of the Source (and the path's parts) returning its title and body.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.console import charts, policies
from coordinator.console.html import Markup, esc, join, link, number, pairs, path, size, state, table, tag, when
from coordinator.console.source import Source
from milepost.core.errors import MilepostError
from milepost.v1 import routing_pb2, types_pb2
from milepost.v1.coordinator_pb2 import HealthStatistic

Page = tuple[str, Markup]


def agents(source: Source) -> Page:
    status = source.status()
    serves = {d.deployment_id: f"{e.name}: {d.model} #{d.number}" for e in status.endpoints for d in e.deployments}
    rows = []
    for a in status.agents:
        info, res = a.info, a.info.resources
        engines = join((tag("span", e.name, title=e.version) if e.available
                        else tag("s", e.name, title=e.reason) for e in info.engines), " ")
        reserved = {r.index: r.reserved_bytes for r in a.load.gpus}  # as the agent's last heartbeat reported
        gpus = join((f"{g.name} ({size(reserved[g.index])} of {size(g.memory_bytes)} reserved)" if g.index in reserved
                     else f"{g.name} ({size(g.memory_bytes)})" for g in res.gpus), ", ") or "-"
        serving = set(a.serving_deployment_ids)
        hosted = join((tag("span", f"{serves.get(d, '?')} ({d})", class_=None if d in serving else "muted",
                           title=None if d in serving else "placed, not serving yet") for d in a.deployment_ids),
                      Markup("<br>"))
        rows.append((
            info.agent_id, info.address, state(a.state), f"{res.cpu_cores} cores, {size(res.memory_bytes)}", gpus,
            engines, hosted or "-", f"{a.load.requests_per_s:.1f} req/s, {a.load.inflight_requests} in flight",
            when(a.last_heartbeat), info.milepost_version,
        ))
    body = table(("agent", "address", "state", "resources", "GPUs", "engines", "deployments", "load",
                  "last heartbeat", "version"), rows, empty="no agent has registered")
    if status.agents:
        body = Markup(body + join((
            charts.bars("requests per second", [(a.info.agent_id, a.load.requests_per_s) for a in status.agents], " /s"),
            charts.bars("CPU utilisation", [(a.info.agent_id, 100 * a.load.cpu_utilization) for a in status.agents], " %"),
        )))
    return "Agents", body


def _arms(policy: routing_pb2.RoutingPolicy) -> str:
    mirrored = policies.mirrored(policy)
    return ", ".join(f"{a.name} ({a.weight:g})" if policy.kind in ("split", "ensemble")
                     else f"{a.name} (mirrored {100 * policy.shadow_fraction:g}%)" if a.name in mirrored
                     else a.name for a in policy.arms)


def endpoints(source: Source) -> Page:
    rows = [
        (link(path("endpoints", e.name), e.name), e.routing.kind or e.policy, _arms(e.routing),
         join((Markup(f"{esc(d.model)} #{d.number} ") + state(d.state) for d in e.deployments), Markup("<br>")),
         "yes" if e.require_approval else "no", when(e.created_at))
        for e in source.endpoints()
    ]
    return "Endpoints", table(("endpoint", "policy", "arms", "deployments", "approval required", "created"), rows,
                              empty="no endpoint yet: `milepost deploy`")


def endpoint(source: Source, name: str) -> Page:
    report = source.report(name)
    e = report.endpoint
    policy = e.routing
    numbers = {d.deployment_id: d.number for d in e.deployments}
    by_name = {a.name: a for a in policy.arms}
    weighted = policy.kind in ("split", "ensemble")  # elsewhere the policy, not a weight, shares the traffic
    mirrored = policies.mirrored(policy)  # copies of requests, not a share of them
    total = sum(a.requests for a in report.arms if a.arm not in mirrored) or 1
    arms = table(
        ("arm", "model", "version", "weight", "requests", "share", "errors", "error rate", "p50 ms", "p99 ms",
         "mean prediction", "feedback", "shadow |diff|"),
        [(r.arm, r.model, f"#{numbers.get(by_name[r.arm].deployment_id, 0)}" if r.arm in by_name else r.version[:12],
          f"{by_name[r.arm].weight:g}" if weighted and r.arm in by_name else "-", r.requests,
          "mirrored" if r.arm in mirrored else f"{100 * r.requests / total:.1f}%",
          r.errors, f"{100 * r.error_rate:.2f}%", number(r.p50_latency_ms), number(r.p99_latency_ms),
          number(r.prediction_mean), f"{r.feedback_count:g} (mean {r.feedback_mean:.3g})" if r.feedback_count else "-",
          number(r.shadow_mean_abs_diff) if r.shadow_compared else "-")
         for r in report.arms], class_="arms",
    )
    chart_rows = [(r.arm, float(r.requests)) for r in report.arms]
    figures = join((
        charts.bars("requests per arm", chart_rows),
        charts.bars("p99 latency per arm", [(r.arm, r.p99_latency_ms) for r in report.arms], " ms"),
        charts.bars("error rate per arm", [(r.arm, 100 * r.error_rate) for r in report.arms], " %"),
    ))
    comparisons = table(("arm", "against", "metric", "difference", "test", "statistic", "p value"),
                        [(c.arm, c.baseline, c.metric, number(c.difference), c.test, number(c.statistic),
                          number(c.p_value)) for c in report.comparisons], empty="one arm: nothing to compare")
    deployments = table(("deployment", "model", "number", "replicas", "agents", "state", "message"),
                        [(d.deployment_id, d.model, d.number, d.replicas, ", ".join(d.agent_ids), state(d.state), d.message)
                         for d in e.deployments])
    body = join((
        pairs((("policy", policy.kind), ("arms", _arms(policy)), ("key parameter", policy.key_parameter or "milepost-key"),
               ("approval required", "yes" if e.require_approval else "no"),
               *(policies.shadow(report) if mirrored else ()))),
        _canary(source, e) if policy.kind == "canary" else "",
        policies.bandit(report) if policy.kind == "bandit" else "",
        tag("h2", "Traffic per arm"), arms, figures, tag("h2", "How the arms differ"), comparisons,
        tag("h2", "Deployments"), deployments,
        Markup(f"<p>{link(path('health', name), 'ML health of this endpoint')} · "
               f"{link('/events?endpoint=' + path(name)[1:], 'its events')}</p>"),
    ))
    return f"Endpoint {name}", body


def _canary(source: Source, e: types_pb2.Endpoint) -> Markup:
    """Where the canary is: its steps, the gates, and what the open window has counted."""
    policy, gates = e.routing, e.routing.gates
    window = source.canary_window(e.name)
    baseline, candidate = policy.arms[0].name, policy.arms[1].name
    if window is None:
        counted = tag("p", "no window open yet (the controller opens one on its next pass)", class_="muted")
    else:
        opened, seen = window
        rows = [(arm, int(c.requests), int(c.errors), f"{100 * c.error_rate:.2f}%", number(c.latency_quantile_ms(0.99)))
                for arm, c in seen.items()]
        counted = join((tag("p", f"window opened {when(opened)}, judged after {policy.window_s:g} s and "
                                 f"{gates.min_requests} candidate requests"),
                        table(("arm", "requests", "errors", "error rate", "p99 ms"), rows)))
    gate_rows = [("max error rate", f"{100 * gates.max_error_rate:g}%"), ("min requests", gates.min_requests),
                 ("max p99 latency", f"{gates.max_p99_latency_ms:g} ms" if gates.max_p99_latency_ms else "off"),
                 ("max divergence", f"{gates.max_divergence:g} std" if gates.max_divergence else "off"),
                 ("max drift", ", ".join(f"{k} {v:g}" for k, v in sorted(gates.max_drift.items())) or "off")]
    step = policy.steps[policy.step] if policy.step < len(policy.steps) else 0.0
    return join((
        tag("h2", "Canary"),
        tag("p", f"{candidate} gets {step:g}% (step {policy.step + 1} of {len(policy.steps)}); {baseline} the rest",
            class_="canary-step"),
        charts.steps("canary steps", list(policy.steps), policy.step),
        pairs(gate_rows), counted,
    ))


def canaries(source: Source) -> Page:
    found = [e for e in source.endpoints() if e.routing.kind == "canary"]
    parts = [Markup(tag("h2", link(path("endpoints", e.name), e.name)) + _canary(source, e)) for e in found]
    return "Canary", join(parts) if parts else tag("p", "no canary running: `milepost canary`", class_="muted")


def health(source: Source) -> Page:
    rows = [(link(path("health", e.name), e.name), e.routing.kind) for e in source.endpoints()]
    return "ML health", table(("endpoint", "policy"), rows, empty="no endpoint yet")


def endpoint_health(source: Source, name: str) -> Page:
    h = source.health(name)
    parts: list[Markup] = [pairs((("task", h.task or "-"),
                                  ("thresholds", ", ".join(f"{k} {v:g}" for k, v in sorted(h.config.thresholds.items()))
                                   or "the defaults"),
                                  ("fairness groups", ", ".join(h.config.group_attributes) or "-")))]
    for d in h.deployments:
        parts.append(tag("h2", f"{d.arm}: {d.model} #{d.number}"))
        if not d.windows:
            parts.append(tag("p", d.message or "no drift window closed yet", class_="muted"))
        for w in d.windows[:1]:
            parts.append(tag("p", f"window {w.seq} on {w.agent_id}: {w.rows} rows, closed {when(w.closed_at)}"))
            features = [*w.features, w.prediction] if w.HasField("prediction") else list(w.features)
            parts.append(table(
                ("feature", "statistics", "state"),
                [(f.name, _statistics(f.statistics), state("alert" if f.alert else "ok")) for f in features]))
            parts.extend(charts.paired(f"{f.name}: share per bin", list(f.bins), list(f.baseline), list(f.live))
                         for f in features)
    if h.performance:
        parts.append(tag("h2", "Realised performance"))
        parts.append(table(("arm", "window", "outcomes", "metrics"),
                           [(p.arm, p.index, p.outcomes, ", ".join(f"{k} {v:.3g}" for k, v in sorted(p.metrics.items())))
                            for p in h.performance]))
    parts.extend(_fairness(source, name))
    return f"ML health of {name}", join(parts)


def _fairness(source: Source, name: str) -> list[Markup]:
    """Selection rate and impact ratio per group (the 4/5 rule), as `milepost fairness` shows them."""
    try:
        f = source.fairness(name)
    except MilepostError as err:  # a regressor: no favourable class to select
        return [tag("h2", "Fairness"), tag("p", err.message, class_="muted")]
    if not f.groups:
        return [tag("h2", "Fairness"), tag("p", f.message, class_="muted")]
    rows = [(g.group, g.predictions, f"{g.selection_rate:.3f}", f"{g.impact_ratio:.3f}", g.outcomes,
             f"{g.true_positive_rate:.3f}", f"{g.false_positive_rate:.3f}", state("alert" if g.alert else "ok"))
            for g in f.groups]
    return [tag("h2", f"Fairness by {' & '.join(f.attributes)} (favourable: {f.favourable or 'default'})"),
            table(("group", "predictions", "selection rate", "impact ratio", "outcomes", "TPR", "FPR", "state"), rows,
                  class_="fairness"),
            charts.bars("impact ratio per group", [(g.group, g.impact_ratio) for g in f.groups])]


def _statistics(statistics: Sequence[HealthStatistic]) -> Markup:
    """Each statistic and its value; those past their threshold in bold, the threshold said."""
    return join((tag("b", f"{s.name} {s.value:.3g} (threshold {s.threshold:g})") if s.alert
                 else f"{s.name} {s.value:.3g}" for s in statistics), ", ")
