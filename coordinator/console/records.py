"""The console's pages about what was recorded: model versions (number, digest, aliases, stage,
who pushed it, validations and approvals), pipeline runs and their stages, events, the audit trail.
"""

from __future__ import annotations

import json

from coordinator.console import charts
from coordinator.console.html import Markup, join, link, pairs, path, size, state, table, tag, when
from coordinator.console.source import Source

Page = tuple[str, Markup]


def models(source: Source) -> Page:
    rows = [
        (link(path("models", m.name, str(m.number)), m.name), m.number, tag("code", m.digest[:19], title=m.digest),
         ", ".join(m.aliases) or "-", state(m.stage), m.flavor, size(m.size_bytes), m.pushed_by or "-", when(m.created_at))
        for m in sorted(source.models(), key=lambda m: (m.name, -m.number))
    ]
    return "Model versions", table(("model", "number", "digest", "aliases", "stage", "flavor", "size", "pushed by",
                                    "pushed"), rows, empty="no model yet: `milepost push`")


def model(source: Source, name: str, number: str) -> Page:
    details = source.model(name, number)
    m = details.model
    body = join((
        pairs((("number", m.number), ("digest", tag("code", m.digest)), ("aliases", ", ".join(m.aliases) or "-"),
               ("stage", state(m.stage)), ("flavor", m.flavor), ("size", size(m.size_bytes)),
               ("pushed by", m.pushed_by or "-"), ("pushed", when(m.created_at)),
               *((("retired", details.retired_note),) if details.retired_note else ()))),
        tag("h2", "Lineage"), _lineage(m.manifest_json),
        tag("h2", "Validations"),
        table(("at", "by", "result", "report"),
              [(when(v.at), v.actor, state("passed" if v.passed else "failed"), tag("code", v.report_json[:300]))
               for v in details.validations], empty="not validated (`milepost validate`)"),
        tag("h2", "Approvals"),
        table(("at", "by", "note"), [(when(a.at), a.actor, a.note) for a in details.approvals], empty="not approved"),
        tag("h2", "Where it runs"),
        table(("endpoint", "deployment", "state", "agents"),
              [(link(path("endpoints", p.endpoint), p.endpoint), p.deployment_id, state(p.state), ", ".join(p.agent_ids))
               for p in details.placements], empty="deployed nowhere"),
        tag("h2", "Its audit entries"),
        table(("seq", "at", "by", "action", "detail"),
              [(e.seq, when(e.at), e.actor, e.action, e.detail) for e in details.audit]),
    ))
    return f"Model {m.name} #{m.number}", body


def _lineage(manifest_json: str) -> Markup:
    """Where a trained version came from, as its training stage wrote it in the bundle's metadata
    (engines.stages.save_trained): data and its fingerprint, code, parameters, run and stage."""
    try:
        lineage = json.loads(manifest_json).get("metadata", {}).get("lineage", {})
    except (ValueError, AttributeError):
        lineage = {}
    if not isinstance(lineage, dict) or not lineage:
        return tag("p", "no lineage: pushed, not trained by a pipeline", class_="muted")
    items = []
    for key, value in sorted(lineage.items()):
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        items.append((key, link(path("runs", shown), shown) if key == "pipeline_run" else tag("code", shown[:500])))
    return pairs(items)


def runs(source: Source) -> Page:
    rows = []
    for r in source.runs():
        done = sum(s.state == "SUCCEEDED" for s in r.stages)
        rows.append((link(path("runs", r.run_id), r.run_id), r.pipeline, state(r.state), f"{done}/{len(r.stages)} stages",
                     when(r.created_at), when(r.finished_at)))
    return "Pipeline runs", table(("run", "pipeline", "state", "progress", "submitted", "finished"), rows,
                                  empty="no pipeline run yet: `milepost submit`")


def run(source: Source, run_id: str) -> Page:
    r = source.run(run_id)
    body = join((
        pairs((("pipeline", r.pipeline), ("state", state(r.state)), ("submitted", when(r.created_at)),
               ("finished", when(r.finished_at)))),
        charts.stages("stages", [(s.name, s.state) for s in r.stages]),
        table(("stage", "state", "agent", "rows", "started", "finished", "message", "outputs"),
              [(s.name, state(s.state), s.agent_id or "-", s.rows, when(s.started_at), when(s.finished_at), s.message,
                ", ".join(f"{k}={v}" for k, v in sorted(s.outputs.items()))) for s in r.stages]),
    ))
    return f"Run {r.run_id}", body


def events(source: Source, endpoint: str = "") -> Page:
    rows = [(e.id, when(e.at), link(path("endpoints", e.endpoint), e.endpoint) if e.endpoint else "(registry)", e.kind,
             e.message) for e in source.events(endpoint)]
    title = f"Events of {endpoint}" if endpoint else "Events"
    return title, table(("id", "at", "endpoint", "kind", "message"), rows, empty="no event yet")


def audit(source: Source) -> Page:
    rows = [(e.seq, when(e.at), e.actor, e.action, e.subject, e.detail, tag("code", e.sha256[:12], title=e.sha256))
            for e in source.audit()]
    return "Audit trail (newest first)", table(("seq", "at", "by", "action", "subject", "detail", "sha256"), rows)
