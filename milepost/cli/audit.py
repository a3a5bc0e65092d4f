"""The audit commands (role approver): `milepost audit verify [--expect-head SEQ:SHA256]` and
`milepost audit export [--format jsonl|csv] [--output FILE]`.

`verify` exits 1 when the chain shows an edited, removed or moved entry, naming each, and
prints the head to keep somewhere else: given back with --expect-head, it also catches the
newest entries being cut off. `verify --file EXPORT --key KEYFILE` checks an export instead,
away from the coordinator: the chain's digests are keyed (HMAC-SHA256) with the coordinator's
audit key (DATA_DIR/audit.key), which an auditor is given with the export."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from milepost.cli import output
from milepost.cli.arguments import client
from milepost.core.errors import InvalidArgument

if TYPE_CHECKING:
    from milepost.v1 import coordinator_pb2

FIELDS = ("seq", "at", "actor", "action", "subject", "detail", "prev_sha256", "sha256")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.file or args.key:
        result = _verify_export(args)
    else:
        with client(args) as c:
            result = c.verify_audit(args.expect_head or "")
    output.show(args, result, lambda: _print_verdict(result))
    return 0 if result.ok else 1


def _verify_export(args: argparse.Namespace) -> coordinator_pb2.VerifyAuditResponse:
    """An export (jsonl or csv, as `audit export` writes it) checked with the chain's key."""
    from coordinator import audit

    if not (args.file and args.key):
        raise InvalidArgument("verifying an export takes both --file EXPORT and --key KEYFILE (the coordinator's audit.key)")
    try:
        key = bytes.fromhex(Path(args.key).read_text().strip())
        with open(args.file, newline="") as f:
            rows = list(csv.DictReader(f)) if args.file.endswith(".csv") else [json.loads(line) for line in f if line.strip()]
        chain = [audit.Entry(int(r["seq"]), float(r["at"]), *(str(r[name]) for name in FIELDS[2:])) for r in rows]
    except (OSError, ValueError, KeyError) as err:
        raise InvalidArgument(f"cannot read the export {args.file} or the key {args.key}: {err}") from err
    expect = audit.parse_head(args.expect_head) if args.expect_head else None
    return audit.verify_entries(chain, key, expect).to_proto()


def _print_verdict(result: coordinator_pb2.VerifyAuditResponse) -> None:
    for problem in result.problems:
        print(f"problem: {problem}")
    state = "ok" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
    print(f"audit trail {state}: {result.entries} entries; head {result.head_seq}:{result.head_sha256}")


def cmd_audit_export(args: argparse.Namespace) -> int:
    out: TextIO = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        with client(args) as c:
            if args.format == "csv":
                writer = csv.writer(out)
                writer.writerow(FIELDS)
                for e in c.audit():
                    writer.writerow([getattr(e, name) for name in FIELDS])
            else:
                for e in c.audit():
                    out.write(json.dumps({name: getattr(e, name) for name in FIELDS}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="verify and export the hash-chained audit trail (role approver)")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("verify", parents=[common], help="check every entry's digest and place in the chain")
    p.add_argument("--expect-head", metavar="SEQ:SHA256", help="a head an earlier verify printed")
    p.add_argument("--file", metavar="EXPORT", help="check this export (jsonl, or .csv) instead of the coordinator's "
                   "trail, with --key")
    p.add_argument("--key", metavar="KEYFILE", help="the chain's key for --file: the coordinator's DATA_DIR/audit.key")
    output.add_flag(p)
    p.set_defaults(func=cmd_audit_verify)
    p = actions.add_parser("export", parents=[common], help="every entry, oldest first")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", metavar="FILE", help="default: standard output")
    p.set_defaults(func=cmd_audit_export)
