"""The hash-chained audit trail, driven as users do: changes through the client, then the
SQLite file tampered with by hand, and `milepost audit verify` saying what was done."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from milepost.cli import main
from milepost.client import Client
from milepost.core.errors import AlreadyExists, PermissionDenied
from tests.chaos.nodes import Agents, client, coordinator, wait_for


@pytest.fixture
def audited(tmp_path, logistic_model):
    """A coordinator and an agent; a deployer pushed, deployed and split; the admin made and revoked tokens."""
    _, bundle_dir, _, _ = logistic_model
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    agents.start("a1")
    admin = client(coord)
    wait_for(lambda: [a.state for a in admin.status().agents] == ["ALIVE"], 10, "agent alive")
    deployer_token = admin.create_token("ci-job", "deployer").token
    with Client(coord.address, token=deployer_token) as deployer:
        deployer.push_model(bundle_dir, "lr")
        deployer.deploy("churn", "lr")
        deployer.split("churn", {"a": ("lr", "", 1.0)})
    admin.create_token("temp", "viewer")
    admin.revoke_token("temp")
    yield coord, admin, tmp_path / "coordinator" / "milepost.db"
    agents.stop_all()
    admin.close()
    coord.stop()


def test_every_change_is_recorded_with_its_actor_in_one_valid_chain(audited) -> None:
    coord, admin, _ = audited
    entries = list(admin.audit())
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].prev_sha256 == "0" * 64
    assert all(later.prev_sha256 == earlier.sha256 for earlier, later in zip(entries, entries[1:]))
    by_action = {}
    for e in entries:
        by_action.setdefault(e.action, []).append(e)
    assert {"token_create", "push", "deploy", "placement", "policy", "token_revoke"} <= set(by_action), sorted(by_action)
    (push,) = by_action["push"]
    assert push.actor == "ci-job (deployer)" and push.subject.startswith("lr:")
    assert all(e.actor == "ci-job (deployer)" for e in by_action["deploy"] + by_action["policy"])
    assert [e.subject for e in by_action["token_revoke"]] == ["temp"]
    assert by_action["token_revoke"][0].actor.endswith("(admin)")
    # A change that failed leaves no entry.
    with pytest.raises(AlreadyExists):
        admin.create_token("ci-job", "viewer")
    assert len(list(admin.audit())) == len(entries)
    result = admin.verify_audit()
    assert result.ok and result.entries == len(entries) and result.head_seq == entries[-1].seq
    assert result.head_sha256 == entries[-1].sha256


def test_only_approvers_and_admins_read_the_trail(audited) -> None:
    coord, admin, _ = audited
    for role in ("viewer", "deployer"):
        with Client(coord.address, token=admin.create_token(f"who-{role}", role).token) as someone:
            with pytest.raises(PermissionDenied):
                someone.verify_audit()
    with Client(coord.address, token=admin.create_token("auditor", "approver").token) as approver:
        assert approver.verify_audit().ok


def cli_as_admin(coord, monkeypatch) -> None:
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    monkeypatch.setenv("MILEPOST_TOKEN", coord.admin_token_file.read_text().strip())


def _verify(db_path, *extra: str, capsys) -> tuple[int, str]:
    code = main(["audit", "verify", *extra])
    return code, capsys.readouterr().out


def test_an_edited_entry_is_found(audited, capsys, monkeypatch) -> None:
    coord, _, db_path = audited
    cli_as_admin(coord, monkeypatch)
    code, out = _verify(db_path, capsys=capsys)
    assert code == 0 and "audit trail ok" in out
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE audit SET actor='someone else' WHERE action='push'")
        (seq,) = db.execute("SELECT seq FROM audit WHERE action='push'").fetchone()
    code, out = _verify(db_path, capsys=capsys)
    assert code == 1 and f"entry {seq} was edited" in out and "FAILED (1 problem(s))" in out


def test_a_removed_entry_and_a_moved_one_are_found(audited, capsys, monkeypatch) -> None:
    coord, _, db_path = audited
    cli_as_admin(coord, monkeypatch)
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM audit WHERE seq=3")
    code, out = _verify(db_path, capsys=capsys)
    assert code == 1 and "entry 3 removed (entry 4 follows entry 2)" in out
    with sqlite3.connect(db_path) as db:
        # Put entry 6's content in place of 5 and the reverse, digests and all: the links break.
        five, six = (db.execute("SELECT * FROM audit WHERE seq=?", (n,)).fetchone() for n in (5, 6))
        for seq, row in ((5, six), (6, five)):
            db.execute("UPDATE audit SET at=?, actor=?, action=?, subject=?, detail=?, prev_sha256=?, sha256=? WHERE seq=?",
                       (*row[1:], seq))
    code, out = _verify(db_path, capsys=capsys)
    assert code == 1 and "entry 5 does not follow entry 4" in out and "entry 5 was edited" in out


def test_cutting_off_the_newest_entries_is_found_against_a_kept_head(audited, capsys, monkeypatch) -> None:
    coord, admin, db_path = audited
    cli_as_admin(coord, monkeypatch)
    head = admin.verify_audit()
    kept = f"{head.head_seq}:{head.head_sha256}"
    code, out = _verify(db_path, "--expect-head", kept, capsys=capsys)
    assert code == 0 and f"head {kept}" in out
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM audit WHERE seq >= ?", (head.head_seq - 1,))
    code, out = _verify(db_path, "--expect-head", kept, capsys=capsys)
    assert code == 1 and f"entries {head.head_seq - 1} to {head.head_seq} removed" in out
    assert main(["audit", "verify", "--expect-head", "12:nothex"]) == 1  # a clear error, not a traceback
    assert "SEQ:SHA256" in capsys.readouterr().err


def test_export_as_jsonl_and_csv(audited, tmp_path, monkeypatch, capsys) -> None:
    coord, admin, _ = audited
    cli_as_admin(coord, monkeypatch)
    entries = list(admin.audit())
    assert main(["audit", "export", "--output", str(tmp_path / "a.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(r["seq"], r["action"], r["sha256"]) for r in lines] == [(int(e.seq), e.action, e.sha256) for e in entries]
    assert main(["audit", "export", "--format", "csv", "--output", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["actor"] for r in rows] == [e.actor for e in entries]


def test_an_export_is_verified_away_from_the_coordinator_with_its_key(audited, tmp_path, monkeypatch, capsys) -> None:
    """`audit verify --file EXPORT --key KEYFILE` needs no coordinator: an intact jsonl or csv
    export passes with the coordinator's head; an edited line or a wrong key is found."""
    coord, admin, _ = audited
    cli_as_admin(coord, monkeypatch)
    head = admin.verify_audit()
    key = tmp_path / "coordinator" / "audit.key"
    assert main(["audit", "export", "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main(["audit", "export", "--format", "csv", "--output", str(tmp_path / "a.csv")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("MILEPOST_COORDINATOR", "127.0.0.1:1")  # nothing listens there: the check is offline
    for export in ("a.jsonl", "a.csv"):
        assert main(["audit", "verify", "--file", str(tmp_path / export), "--key", str(key),
                     "--expect-head", f"{head.head_seq}:{head.head_sha256}"]) == 0
        assert f"audit trail ok: {head.entries} entries; head {head.head_seq}:{head.head_sha256}" in capsys.readouterr().out
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    edited = json.loads(lines[2])
    edited["detail"] += " (quietly changed)"
    (tmp_path / "b.jsonl").write_text("\n".join([*lines[:2], json.dumps(edited), *lines[3:]]) + "\n")
    assert main(["audit", "verify", "--file", str(tmp_path / "b.jsonl"), "--key", str(key)]) == 1
    assert f"entry {edited['seq']} was edited" in capsys.readouterr().out
    (tmp_path / "other.key").write_text("00" * 32 + "\n")
    assert main(["audit", "verify", "--file", str(tmp_path / "a.jsonl"), "--key", str(tmp_path / "other.key")]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["audit", "verify", "--file", str(tmp_path / "a.jsonl")]) == 1  # a key is needed: a clear error
    assert "--key KEYFILE" in capsys.readouterr().err
