"""Review commands: `models approve`, `models retire`, `models show`, and `validate`.

`validate` exits 0 when every gate passed, 3 when one failed (1 for an error, 2 for a
usage error, as every command), so a CI step can tell a failing model from a broken step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milepost.cli import output
from milepost.cli.arguments import client, model_ref
from milepost.cli.views import when
from milepost.core.errors import InvalidArgument

if TYPE_CHECKING:
    from milepost.client import Client
    from milepost.v1 import coordinator_pb2

GATE_FAILED = 3


def cmd_approve(args: argparse.Namespace) -> int:
    name, version = model_ref(args.model)
    with client(args) as c:
        m = c.approve_model(name, version, note=args.note)
    output.show(args, m, lambda: print(f"{m.name}:{m.number} {m.digest} approved"))
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    name, version = model_ref(args.model)
    with client(args) as c:
        m = c.retire_model(name, version, note=args.note)
    output.show(args, m, lambda: print(f"{m.name}:{m.number} {m.digest} retired"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    name, version = model_ref(args.model)
    with client(args) as c:
        details = c.model_details(name, version)
    output.show(args, details, lambda: print(details_text(details)))
    return 0


def details_text(d: coordinator_pb2.ModelDetails) -> str:
    from milepost.tables import render

    m = d.model
    manifest = json.loads(m.manifest_json or "{}")
    lines = [
        f"{m.name}:{m.number}  {m.digest}",
        f"  stage       {m.stage}" + (f" ({d.retired_note})" if d.retired_note else ""),
        f"  pushed      {when(m.created_at)} by {m.pushed_by or 'unknown'}",
        f"  flavor      {m.flavor}, {m.size_bytes} bytes" + (f", aliases {', '.join(m.aliases)}" if m.aliases else ""),
        f"  lineage     {_lineage(manifest)}",
        "", "VALIDATIONS",
        render(["WHEN", "BY", "RESULT", "DATA", "GATES"], [
            [when(v.at), v.actor, "passed" if v.passed else "FAILED", *_validation_summary(v.report_json)]
            for v in d.validations]) if d.validations else "  none",
        "", "APPROVALS",
        render(["WHEN", "BY", "NOTE"], [[when(a.at), a.actor, a.note] for a in d.approvals]) if d.approvals else "  none",
        "", "RUNS ON",
        render(["ENDPOINT", "DEPLOYMENT", "STATE", "AGENTS"], [
            [p.endpoint, p.deployment_id, p.state, ",".join(p.agent_ids) or "-"] for p in d.placements])
        if d.placements else "  no endpoint",
        "", "AUDIT",
        render(["SEQ", "WHEN", "ACTOR", "ACTION", "DETAIL"], [
            [e.seq, when(e.at), e.actor, e.action, e.detail] for e in d.audit]) if d.audit else "  none",
    ]
    return "\n".join(lines)


def _lineage(manifest: dict) -> str:
    """What the bundle says it was made from: library and version, task, features."""
    meta = manifest.get("metadata") or {}
    source = ", ".join(f"{k} {v}" for k, v in meta.items() if isinstance(v, (str, int, float)))[:200]
    inputs = manifest.get("inputs") or []
    return f"{manifest.get('task', '?')} on {len(inputs)} inputs" + (f"; {source}" if source else "")


def _validation_summary(report_json: str) -> list[str]:
    report = json.loads(report_json or "{}")
    gates = ", ".join(f"{g['gate']}={_number(g['value'])}{'' if g['passed'] else ' (failed)'}"
                      for g in report.get("gates", []))
    return [f"sha256:{str(report.get('data', {}).get('sha256', ''))[:12]}", gates or "-"]


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_validate(args: argparse.Namespace) -> int:
    from milepost import validation
    from milepost.core.gates import Gates, judge

    gates = Gates(
        max_fpr=args.max_fpr, max_fnr=args.max_fnr, min_auc=args.min_auc, min_accuracy=args.min_accuracy,
        max_log_loss=args.max_log_loss, max_mae=args.max_mae, max_rmse=args.max_rmse,
        max_regression=args.max_regression,
    )
    if args.max_regression is not None and not args.against:
        raise InvalidArgument("--max-regression compares with a baseline: give --against NAME:VERSION")
    data = Path(args.data)
    if not data.is_file():
        raise InvalidArgument(f"--data {data}: no such file (a Parquet file of features and the label)")
    local = Path(args.model).is_dir()
    with client(args) as c, tempfile.TemporaryDirectory(prefix="milepost-validate-") as tmp:
        bundle_dir, name, version = _bundle(c, args.model, Path(tmp) / "candidate", local)
        manifest, labels, outputs = _scored(validation, bundle_dir, data, args.label)
        measured = validation.measure(manifest, labels, outputs, args.threshold)
        against = None
        if args.against:
            base_dir, base_name, base_version = _bundle(c, args.against, Path(tmp) / "baseline", Path(args.against).is_dir())
            base_manifest, base_labels, base_outputs = _scored(validation, base_dir, data, args.label)
            against = (f"{base_name}:{base_version}", validation.measure(base_manifest, base_labels, base_outputs,
                                                                          args.threshold))
        verdicts = judge(measured, gates, against[1] if against else None)
        report = validation.report(args.model, data, args.label, measured, verdicts, against)
        unrecorded = ""
        if not local and not args.no_record:
            if verdicts:
                recorded = c.record_validation(name, version, report["passed"], report)
                report["recorded"] = f"{recorded.name}:{recorded.number} now {recorded.stage}"
            else:  # the coordinator takes verdicts, and there are none
                unrecorded = "not recorded: no gates were given"
    Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    output.show(args, report, lambda: print(
        _verdict_table(report) + f"\nreport: {args.report}" + (f"; {report['recorded']}" if "recorded" in report else "")
        + (f"; {unrecorded}" if unrecorded else "")))
    return 0 if report["passed"] else GATE_FAILED


def _scored(validation: Any, bundle_dir: Path, data: Path, label: str) -> tuple[dict, Any, Any]:
    """``validation.score`` with its progress on stderr (rows, rate, time left)."""
    import pyarrow.parquet as pq

    from milepost.cli.progress import ProgressBar

    bar = ProgressBar(pq.ParquetFile(data).metadata.num_rows, sys.stderr, unit="rows")
    scored = validation.score(bundle_dir, data, label, bar.update)
    bar.finish(len(scored[1]))
    return scored


def _bundle(c: Client, ref: str, dest: Path, local: bool) -> tuple[Path, str, str]:
    """(bundle directory, name, version) of a local bundle or a registered version (fetched)."""
    if local:
        return Path(ref), ref, ""
    name, version = model_ref(ref)
    digest = c.fetch_model(name, version, dest)
    return dest, name, version or f"sha256:{digest}"


def _verdict_table(report: dict) -> str:
    from milepost.tables import render

    measures = ", ".join(f"{k} {_number(v)}" for k, v in report["metrics"].items()
                         if k not in ("classes",) and v is not None)
    rows = [[g["gate"], _number(g["limit"]), _number(g["value"]), "pass" if g["passed"] else "FAIL"]
            for g in report["gates"]]
    table = render(["GATE", "LIMIT", "VALUE", "RESULT"], rows) if rows else "no gates given: measured only"
    return f"{report['model']} on {report['data']['path']}: {measures}\n{table}\n" + (
        "PASSED" if report["passed"] else "FAILED")


def add_model_commands(models_sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`models approve|retire|show`, under the `models` command."""
    ref_help = "NAME:NUMBER, NAME@ALIAS or NAME@sha256:HEX"
    p = models_sub.add_parser("approve", parents=[common], help="approve a version for production (role approver)")
    p.add_argument("model", metavar="NAME:VERSION", help=ref_help)
    p.add_argument("--note", required=True, help="why it may serve production (kept in the audit trail)")
    output.add_flag(p)
    p.set_defaults(func=cmd_approve)
    p = models_sub.add_parser("retire", parents=[common], help="no new deployments of a version (role approver)")
    p.add_argument("model", metavar="NAME:VERSION", help=ref_help)
    p.add_argument("--note", required=True, help="why (kept in the audit trail)")
    output.add_flag(p)
    p.set_defaults(func=cmd_retire)
    p = models_sub.add_parser("show", parents=[common],
                              help="a version whole: lineage, validations, approvals, where it runs, audit entries")
    p.add_argument("model", metavar="NAME[:VERSION]", help=ref_help + "; NAME alone: the newest")
    output.add_flag(p)
    p.set_defaults(func=cmd_show)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[common],
                       help="score a model on labelled data and check gates (exit 3 when one fails)")
    p.add_argument("model", metavar="MODEL[:VERSION]|BUNDLE", help="a registered version, or a bundle directory")
    p.add_argument("--data", required=True, help="Parquet file with the model's inputs and the label column")
    p.add_argument("--label", required=True, help="the label column")
    p.add_argument("--threshold", type=float, default=0.5, help="P(positive class) at which a binary classifier says yes")
    for flag, what in (("--max-fpr", "false-positive rate"), ("--max-fnr", "false-negative rate"),
                       ("--min-auc", "area under the ROC curve"), ("--min-accuracy", "accuracy"),
                       ("--max-log-loss", "log loss"), ("--max-mae", "mean absolute error"),
                       ("--max-rmse", "root mean squared error")):
        p.add_argument(flag, type=float, default=None, help=f"gate on the {what}")
    p.add_argument("--against", default="", metavar="NAME:VERSION", help="a baseline to compare with")
    p.add_argument("--max-regression", type=float, default=None,
                   help="how much worse than --against each measure may be (absolute for rates and AUC, "
                   "relative for errors and log loss)")
    p.add_argument("--report", default="validation.json", help="where to write the JSON report (default %(default)s)")
    p.add_argument("--no-record", action="store_true", help="do not attach the result to the registered version")
    output.add_flag(p, help="table (default), or json: the report --report writes")
    p.set_defaults(func=cmd_validate)
