"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

A real coordinator (console on a free port) and agent on loopback serve real models: one
endpoint single, one split A/B, one canary, one shadow, two bandits (thompson, epsilon-greedy)
with outcomes fed back, traffic through them, a validated and approved version, a pipeline run.
The browser logs in with a token, clicks through every page and reads what a person would read;
each value is checked against what the CLI prints with ``--output json`` (endpoints, models,
each endpoint's report) or what milepost.Client (the CLI's client) answers. A screenshot of
each page goes to $MILEPOST_ARTIFACTS (default: tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from milepost.client import Client
from milepost.core.settings import reset_settings
from milepost.pipeline_spec import spec_from_dict
from milepost.v1 import coordinator_pb2
from tests.conftest import milepost_cmd, start_up, wait_until

CHROMIUM = Path(os.environ.get("MILEPOST_CHROMIUM", "/usr/bin/chromium"))

PAGES = ("agents", "endpoints", "canary", "health", "models", "runs", "events", "audit")


@dataclass
class Served:
    console: str
    coordinator: str
    client: Client
    tokens: dict[str, str]  # role -> token
    sent: dict[str, int]  # endpoint -> inference requests sent
    run_id: str  # a run whose training failed, so its deploy stage was skipped
    trained_run_id: str  # a run that trained and pushed model "trained"
    artifacts: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, logistic_model) -> Iterator[Served]:
    # Drift windows of 40 rows, every batch counted: one closes within this test's traffic.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MILEPOST_DRIFT_WINDOW_ROWS", "40")
        env.setenv("MILEPOST_DRIFT_BUDGET", "1")
        env.setenv("MILEPOST_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))  # the training stage's data
        reset_settings()
        try:
            yield from _served(tmp_path_factory, logistic_model)
        finally:
            reset_settings()


def _served(tmp_path_factory: pytest.TempPathFactory, logistic_model) -> Iterator[Served]:
    from sklearn.linear_model import LogisticRegression

    import scoring_core
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig

    estimator, bundle_dir, _, rows = logistic_model
    root = tmp_path_factory.mktemp("console")
    coordinator = Coordinator(CoordinatorConfig(data_dir=root / "coordinator", port=0, http_port=0,
                                                heartbeat_interval_s=0.25))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=root / "agent", port=0, agent_id="a1",
                              token=coordinator.local_agent_token()))
    agent.start()
    assert agent.registration.registered.wait(15)
    client = Client(coordinator.address, token=coordinator.admin_token_file.read_text().strip())
    candidate = LogisticRegression(C=0.05, max_iter=500).fit(rows, (rows[:, 0] > 0).astype(int))
    scoring_core.compile(candidate, baseline=rows).save(root / "candidate")  # with a training baseline: drift
    client.push_model(bundle_dir, "churn")
    client.push_model(root / "candidate", "churn")
    client.set_alias("churn", "champion", "1")
    client.record_validation("churn", "2", True, {  # as `milepost validate` writes it
        "metrics": {"auc": 0.91}, "gates": [{"gate": "min_auc", "limit": 0.8, "value": 0.91, "passed": True}],
        "passed": True})
    tokens = {role: client.create_token(f"console-{role}", role).token
              for role in ("viewer", "deployer", "approver", "agent")}
    tokens["admin"] = coordinator.admin_token_file.read_text().strip()
    with Client(coordinator.address, token=tokens["approver"]) as approver:  # not who pushed it
        approver.approve_model("churn", "2", note="looks good <b>really</b>")
    client.deploy("scoring", "churn", "1")
    client.deploy("rollout", "churn", "1")
    client.deploy("drifty", "churn", "2")
    client.deploy("mirror", "churn", "1")
    client.split("ab", {"a": ("churn", "1", 70.0), "b": ("churn", "2", 30.0)})
    client.bandit("bandit", {"x": ("churn", "1"), "y": ("churn", "2")}, algorithm="thompson")
    client.bandit("explore", {"x": ("churn", "1"), "y": ("churn", "2")}, algorithm="epsilon_greedy", epsilon=0.25)
    wait_until(lambda: all(d.state == "READY" for e in client.endpoints() for d in e.deployments), timeout=30)
    client.canary("rollout", "churn", "2", steps=(10, 50, 100), window_s=3600)
    client.shadow("mirror", "churn", "2", fraction=1.0)
    wait_until(lambda: all(d.state == "READY" for e in client.endpoints() for d in e.deployments), timeout=30)
    client.set_health_config("drifty", group_attributes=["region"], favourable="1")
    sent = {"scoring": 5, "ab": 30, "rollout": 30, "drifty": 6, "mirror": 8, "bandit": 12, "explore": 12}
    for endpoint, count in sent.items():
        for i in range(count):
            client.infer(endpoint, rows[i % 50: i % 50 + 4], key=f"user-{i}",
                         parameters={"region": ("north", "south")[i % 2]})
    for endpoint in ("bandit", "explore"):  # conversions: every third key converted
        for i in range(sent[endpoint]):
            client.feedback(endpoint, f"user-{i}", float(i % 3 == 0))
    shifted = rows[:60].copy()
    shifted[:, 0] += 3.0
    client.infer("drifty", shifted[:30])
    client.infer("drifty", shifted[30:])
    sent["drifty"] += 2
    assert agent.registration.beat_now(10)
    wait_until(lambda: client.health("drifty").deployments[0].windows, timeout=15)
    # The counters reach the coordinator with the agent's heartbeats (the shadow's copies too).
    wait_until(lambda: all(_answered(client.report(e)) == n for e, n in sent.items()), timeout=15)
    wait_until(lambda: client.report("mirror").arms[1].shadow_compared > 0, timeout=15)
    table = pa.table({**{f"f{i}": rows[:, i] for i in range(rows.shape[1])}, "y": (rows[:, 0] > 0).astype(np.int64)})
    pq.write_table(table, root / "train.parquet")
    trained = client.submit_pipeline(spec_from_dict({"name": "retrain", "stages": [
        {"name": "train", "kind": "training", "engine": "native",
         "params": {"entry": "engines.trainers:xgboost", "data": str(root / "train.parquet"), "model_name": "trained",
                    "params": {"label": "y", "num_boost_round": 5}}},
    ]}, base=root))
    failed = client.submit_pipeline(spec_from_dict({"name": "broken", "stages": [
        {"name": "train", "kind": "training", "engine": "native",
         "params": {"entry": "engines.trainers:xgboost", "data": "missing.parquet", "model_name": "m",
                    "params": {"label": "y"}}},
        {"name": "deploy", "kind": "deploy", "depends_on": ["train"], "params": {"endpoint": "e", "model": "${train.model}"}},
    ]}, base=root))
    wait_until(lambda: client.run(failed.run_id).state == "FAILED" and client.run(trained.run_id).state == "SUCCEEDED",
               timeout=45)
    artifacts = Path(os.environ.get("MILEPOST_ARTIFACTS") or root) / "console"
    artifacts.mkdir(parents=True, exist_ok=True)
    yield Served(coordinator.console_url, coordinator.address, client, tokens, sent, failed.run_id, trained.run_id,
                 artifacts)
    client.close()
    agent.stop()
    coordinator.stop()


def _answered(report: coordinator_pb2.ReportResponse) -> int:
    """Requests the endpoint answered: a shadow's mirrored copies are not more of them."""
    mirrored = report.endpoint.routing.arms[1].name if report.endpoint.routing.kind == "shadow" else None
    return sum(a.requests for a in report.arms if a.arm != mirrored)


def _cli_json(served: Served, *args: str) -> Any:
    """What ``milepost ARGS --output json`` prints, as a viewer."""
    done = subprocess.run(milepost_cmd(*args, "--output", "json", "--coordinator", served.coordinator),
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MILEPOST_TOKEN": served.tokens["viewer"]})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium (.ci/run installs it), never a browser Playwright downloads."""
    from playwright.sync_api import sync_playwright  # the dev extra

    if not CHROMIUM.exists():  # a failure that says what to do, not a skip
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MILEPOST_CHROMIUM)", pytrace=False)
    # Chromium will not start as root with its sandbox (a CI container); elsewhere it keeps it.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


def _login(browser, served: Served, role: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(served.console + "/login")
    page.fill("textarea[name=token]", served.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/agents$"))
    return page


def _shot(page, served: Served, name: str) -> None:
    """The page as a CI artifact, once it is checked to show no token."""
    _no_secrets(page, served)
    page.screenshot(path=str(served.artifacts / f"{name}.png"), full_page=True)


def _rows(page, selector: str = "main table") -> list[list[str]]:
    """The body rows of the first table matching ``selector``, as the cells' text."""
    return page.eval_on_selector(
        selector, "t => [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.innerText.trim()))")


def _no_secrets(page, served: Served) -> None:
    content = page.content()
    for token in served.tokens.values():
        assert token not in content and token.split("_", 2)[-1] not in content  # nor its secret alone


def test_without_a_valid_token_every_page_is_refused_and_shows_no_data(browser, served: Served) -> None:
    page = browser.new_page()
    for name in (*PAGES, "endpoints/ab", "models/churn/1", f"runs/{served.run_id}"):
        response = page.goto(f"{served.console}/{name}")
        assert response is not None and response.status == 401, name
        text = page.inner_text("body")
        assert "Log in" in text and not any(word in text for word in ("churn", "scoring", "rollout", "a1")), name
    _shot(page, served, "refused")
    for bad in ("mpt_00000000_not-a-real-secret", "garbage"):
        response = page.request.get(f"{served.console}/endpoints", headers={"authorization": f"Bearer {bad}"})
        assert response.status == 401 and "scoring" not in response.text()
    page.goto(served.console + "/login")
    page.fill("textarea[name=token]", "mpt_00000000_not-a-real-secret")
    page.click("button[type=submit]")
    assert "unknown, expired or revoked" in page.inner_text("main .error")
    # An agent's token is not a person's: it may not log in.
    page.fill("textarea[name=token]", served.tokens["agent"])
    page.click("button[type=submit]")
    assert "role agent may not use the console" in page.inner_text("main .error")
    assert page.context.cookies() == []
    # A login form posted from another site's page is refused.
    response = page.request.post(served.console + "/login", form={"token": served.tokens["viewer"]},
                                 headers={"origin": "http://evil.example"})
    assert response.status == 403
    page.close()


def test_a_viewer_clicks_through_every_page_and_sees_what_the_client_sees(browser, served: Served) -> None:
    client = served.client
    page = _login(browser, served, "viewer")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "console-viewer (viewer)" in page.inner_text("nav")

    # agents: who, state, resources, engines, what they serve
    status = client.status()
    _shot(page, served, "agents")
    rows = {r[0]: r for r in _rows(page)}
    assert set(rows) == {a.info.agent_id for a in status.agents}
    for a in status.agents:
        row = rows[a.info.agent_id]
        assert row[1] == a.info.address and row[2] == a.state and f"{a.info.resources.cpu_cores} cores" in row[3]
        serves = {d.deployment_id: f"{e.name}: {d.model} #{d.number}" for e in status.endpoints for d in e.deployments}
        assert row[6].splitlines() == [f"{serves[d]} ({d})" for d in a.deployment_ids]
        assert {e.name for e in a.info.engines if e.available} <= set(row[5].split())
    _no_secrets(page, served)

    # endpoints: names, policies, arms, as `milepost endpoints --output json` prints them
    page.click("nav >> text=Endpoints")
    _shot(page, served, "endpoints")
    endpoints = {e["name"]: e for e in _cli_json(served, "endpoints")}
    rows = {r[0]: r for r in _rows(page)}
    assert set(rows) == set(endpoints) == {"scoring", "ab", "rollout", "drifty", "mirror", "bandit", "explore"}
    for name, e in endpoints.items():
        assert rows[name][1] == e["routing"]["kind"]
        assert [a.split(" ")[0] for a in rows[name][2].split(", ")] == [a["name"] for a in e["routing"]["arms"]]
    primary, candidate = (a["name"] for a in endpoints["mirror"]["routing"]["arms"])
    assert rows["mirror"][2] == f"{primary}, {candidate} (mirrored 100%)"  # copies of requests, not a share

    # each endpoint: per-arm traffic as `milepost report ENDPOINT --output json` counts it
    for name in endpoints:
        page.click("nav >> text=Endpoints")
        page.click(f"main table >> a:text-is('{name}')")
        page.wait_for_url(re.compile(f"/endpoints/{name}$"))
        _shot(page, served, f"endpoint-{name}")
        report = _cli_json(served, "report", name)
        arms = {r[0]: r for r in _rows(page, "table.arms")}
        assert set(arms) == {a["arm"] for a in report["arms"]}
        routing = report["endpoint"]["routing"]
        mirrored = {routing["arms"][1]["name"]} if routing["kind"] == "shadow" else set()
        requests = {a["arm"]: int(a.get("requests", 0)) for a in report["arms"]}  # int64: a string in JSON
        answered = sum(n for arm, n in requests.items() if arm not in mirrored)
        assert answered == served.sent[name]
        weights = {a["name"]: f"{a.get('weight', 0.0):g}" if routing["kind"] == "split" else "-" for a in routing["arms"]}
        for a in report["arms"]:
            row = arms[a["arm"]]
            assert int(row[4]) == requests[a["arm"]] and int(row[6]) == int(a.get("errors", 0))
            assert row[3] == weights[a["arm"]]
            assert row[5] == ("mirrored" if a["arm"] in mirrored else f"{100 * requests[a['arm']] / answered:.1f}%")
        if mirrored:
            _check_shadow(page, report)
        if routing["kind"] == "bandit":
            _check_bandit(page, report, served.sent[name])
        else:
            assert page.locator("table.bandit").count() == 0
        assert page.locator("main svg").count() >= 3
        _no_secrets(page, served)

    # canary: the step and the gates, as the policy holds them
    page.click("nav >> text=Canary")
    _shot(page, served, "canary")
    policy = endpoints["rollout"]["routing"]  # as `milepost endpoints --output json` printed it (zeros left out)
    step, steps, gates = policy.get("step", 0), policy["steps"], policy["gates"]
    assert page.inner_text(".canary-step") == (
        f"{policy['arms'][1]['name']} gets {steps[step]:g}% (step {step + 1} of {len(steps)}); "
        f"{policy['arms'][0]['name']} the rest")
    text = page.inner_text("main")
    assert f"{100 * gates.get('max_error_rate', 0.0):g}%" in text and str(gates.get("min_requests", 0)) in text

    # ML health: drift per feature of the newest window, baseline against live
    page.click("nav >> text=ML health")
    page.click("main table >> text=drifty")
    _shot(page, served, "health-drifty")
    (d,) = client.health("drifty").deployments
    assert page.inner_text("main h2") == f"{d.arm}: {d.model} #{d.number}"
    window = d.windows[0]
    features = [*window.features, window.prediction]
    assert [(r[0], r[2]) for r in _rows(page)] == [(f.name, "alert" if f.alert else "ok") for f in features]
    assert _rows(page)[0][2] == "alert"  # the shifted feature, f0 (named as the bundle names it)
    assert page.locator("main svg").count() == len(features) + 1  # and the impact ratios
    fairness = client.fairness("drifty")
    assert [r[:4] for r in _rows(page, "table.fairness")] == [
        [g.group, str(g.predictions), f"{g.selection_rate:.3f}", f"{g.impact_ratio:.3f}"] for g in fairness.groups]
    assert {g.group for g in fairness.groups} == {"region=north", "region=south"}
    page.click("nav >> text=ML health")
    page.click("main table >> text=scoring")
    (d,) = client.health("scoring").deployments
    assert not d.windows and d.message in page.inner_text("main")  # its bundle has no baseline: said why

    # model versions: numbers, digests, aliases, stages, who pushed them, as `milepost models list --output json`
    page.click("nav >> text=Models")
    _shot(page, served, "models")
    shown = {(r[0], int(r[1])): r for r in _rows(page)}
    models = _cli_json(served, "models", "list")
    assert set(shown) == {(m["name"], int(m["number"])) for m in models}  # int64: a string in JSON
    for m in models:
        row = shown[(m["name"], int(m["number"]))]
        assert m["digest"].startswith(row[2]) and row[3] == (", ".join(m.get("aliases", [])) or "-")
        assert row[4] == m["stage"] and row[7] == m["pushed_by"]
    page.click("main table tr:has-text('champion') >> a")
    page.wait_for_url(re.compile("/models/churn/1$"))
    assert "champion" in page.inner_text("main dl")
    page.go_back()
    page.click("main table tr:has-text('approved') >> a")
    page.wait_for_url(re.compile("/models/churn/2$"))
    details = client.model_details("churn", "2")
    _shot(page, served, "model-churn-2")
    text = page.inner_text("main")
    assert details.model.digest in text and "looks good <b>really</b>" in text  # escaped, shown as typed
    assert len(details.validations) == 1 and "passed" in text and details.approvals[0].actor in text

    # pipeline runs and their stages
    page.click("nav >> text=Pipeline runs")
    _shot(page, served, "runs")
    assert [r[:3] for r in _rows(page)] == [[r.run_id, r.pipeline, r.state] for r in client.runs()]
    run = client.run(served.run_id)
    page.click(f"text={run.run_id}")
    _shot(page, served, f"run-{run.run_id}")
    assert [r[:2] for r in _rows(page)] == [[s.name, s.state] for s in run.stages] == [
        ["train", "FAILED"], ["deploy", "SKIPPED"]]
    # a trained version's lineage leads back to the run that trained it
    page.click("nav >> text=Models")
    page.click("main table >> text=trained")
    _shot(page, served, "model-trained-1")
    (trained,) = client.list_models("trained")
    lineage = json.loads(trained.manifest_json)["metadata"]["lineage"]
    assert lineage["pipeline_run"] == served.trained_run_id and lineage["data_fingerprint"] in page.inner_text("main")
    page.click(f"main dl >> text={served.trained_run_id}")
    page.wait_for_url(re.compile(f"/runs/{served.trained_run_id}$"))
    _shot(page, served, "run-trained")
    assert [r[:2] for r in _rows(page)] == [["train", "SUCCEEDED"]]

    # events, newest first, as ListEvents answers
    page.click("nav >> text=Events")
    _shot(page, served, "events")
    assert [int(r[0]) for r in _rows(page)] == [e.id for e in client.events(limit=200)]

    # the audit trail needs role approver (auth.RULES: ListAudit), as over gRPC
    response = page.goto(served.console + "/audit")
    assert response is not None and response.status == 403
    assert "needs role approver" in page.inner_text("main")
    _shot(page, served, "audit-viewer")

    # and out again
    page.click("nav >> text=Log out")
    assert page.context.cookies() == []
    response = page.goto(served.console + "/endpoints")
    assert response is not None and response.status == 401
    page.close()


def _check_shadow(page, report: dict[str, Any]) -> None:
    """A shadow's candidate: copies of requests, how far its answers are from the primary's."""
    primary, candidate = (a["name"] for a in report["endpoint"]["routing"]["arms"])
    (copied,) = [a for a in report["arms"] if a["arm"] == candidate]
    compared, divergence = int(copied["shadow_compared"]), copied["shadow_mean_abs_diff"]
    assert compared > 0 and divergence > 0  # two versions of the model: their answers differ
    text = page.inner_text("main dl")
    assert f"100% of requests copied to {candidate}, its answers compared with {primary}'s and discarded" in text
    assert f"mean |{candidate} - {primary}| {divergence:.3g} over {compared} rows" in text
    assert {r[0]: r[12] for r in _rows(page, "table.arms")}[candidate] == f"{divergence:.3g}"


def _check_bandit(page, report: dict[str, Any], sent: int) -> None:
    """A bandit's algorithm and settings, and per arm its share, rewards and posterior or choice."""
    routing = report["endpoint"]["routing"]
    algorithm = routing["bandit"]
    settings = page.inner_text("main h2:text-is('Bandit') + dl")
    assert f"algorithm\n{algorithm}" in settings
    if algorithm == "epsilon_greedy":
        assert f"epsilon\n{routing['epsilon']:g} (a random arm for {100 * routing['epsilon']:g}% of requests)" in settings
    else:
        assert "epsilon" not in settings
    shown = {r[0]: r for r in _rows(page, "table.bandit")}
    assert page.inner_text("table.bandit thead").split("\t")[-1].strip() == (
        "choice" if algorithm == "epsilon_greedy" else "posterior")
    arms = report["arms"]
    total = sum(int(a.get("requests", 0)) for a in arms)
    counts = {a["arm"]: a.get("feedback_count", 0.0) for a in arms}
    means = {a["arm"]: a.get("feedback_mean", 0.0) for a in arms}
    assert set(shown) == set(counts) and sum(counts.values()) == sent  # every key's outcome credited
    for a in arms:
        arm, count, mean = a["arm"], counts[a["arm"]], means[a["arm"]]
        assert shown[arm][1:4] == [f"{100 * int(a.get('requests', 0)) / total:.1f}%", f"{count:g}",
                                   f"{mean:.3g}" if count else "-"]
        if algorithm == "thompson":  # conversions (0 or 1): Beta(1 + converted, 1 + not converted)
            alpha, beta = 1 + count * mean, 1 + count - count * mean
            assert shown[arm][4] == (f"Beta({alpha:.4g}, {beta:.4g}), mean {alpha / (alpha + beta):.3f}" if count
                                     else "no rewards yet: explored first")
        elif not count:
            assert shown[arm][4] == "explored first: no rewards yet"
        elif not all(counts.values()):
            assert shown[arm][4] == "waits: arms without rewards are explored first"
        else:
            best = max(means, key=lambda name: means[name])  # the first arm on ties
            assert shown[arm][4] == ("greedy: the best mean reward" if arm == best
                                     else "explored: when the coin says random")


def test_deployer_and_admin_tokens_work_and_the_admin_reads_the_audit_trail(browser, served: Served) -> None:
    # A script: the token in an Authorization header, no login.
    context = browser.new_context(extra_http_headers={"authorization": f"Bearer {served.tokens['deployer']}"})
    page = context.new_page()
    response = page.goto(served.console + "/models")
    assert response is not None and response.status == 200 and "console-deployer (deployer)" in page.inner_text("nav")
    context.close()

    page = _login(browser, served, "admin")
    page.click("nav >> text=Audit")
    _shot(page, served, "audit")
    shown = [int(r[0]) for r in _rows(page)]
    entries = list(served.client.audit())
    assert shown == [e.seq for e in reversed(entries)][:200] and len(shown) == min(len(entries), 200)
    # the CLI's export says the same
    done = subprocess.run(milepost_cmd("audit", "export", "--coordinator", served.coordinator), capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MILEPOST_TOKEN": served.tokens["admin"]})
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [e["seq"] for e in exported][-len(shown):] == shown[::-1]
    assert {"token_create"} <= {e["action"] for e in exported}
    _no_secrets(page, served)
    page.close()


def test_the_console_only_reads_and_forbids_scripts(browser, served: Served) -> None:
    context = browser.new_context(extra_http_headers={"authorization": f"Bearer {served.tokens['admin']}"})
    request = context.request
    response = request.post(served.console + "/endpoints", form={"x": "1"})
    assert response.status == 405 and "only reads" in response.text()
    response = request.post(served.console + "/login", form={"token": "x" * 10_000})
    assert response.status == 413
    response = request.get(served.console + "/endpoints/no-such-endpoint")
    assert response.status == 404 and "no-such-endpoint" in response.text()
    response = request.get(served.console + "/models/churn/9")
    assert response.status == 404 and "has no version 9" in response.text()
    response = request.get(served.console + "/", max_redirects=0)
    assert response.status == 303 and response.headers["location"] == "/agents"
    response = request.get(served.console + "/agents")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["cache-control"] == "no-store"
    assert "<script" not in response.text()
    context.close()


def test_milepost_up_prints_its_console_and_serves_it_behind_the_admin_token(browser, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MILEPOST_CONSOLE_PORT", "0")  # `up --console-port`'s setting: a free port
    up = start_up(tmp_path / "milepost")
    try:
        console = json.loads((up.data_dir / "up.json").read_text())["console"]
        page = browser.new_page()
        response = page.goto(console + "/agents")
        assert response is not None and response.status == 401
        page.goto(console + "/login")
        page.fill("textarea[name=token]", (up.data_dir / "admin.token").read_text().strip())
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/agents$"))
        with Client(up.coordinator) as client:
            agents = [a.info.agent_id for a in client.status().agents]
        assert [r[0] for r in _rows(page)] == agents == ["local"]
        # What the page shows is what `milepost status --output json` prints.
        shown = subprocess.run(milepost_cmd("status", "--output", "json", "--coordinator", up.coordinator),
                               capture_output=True, text=True, timeout=60, check=True)
        assert [a["info"]["agent_id"] for a in json.loads(shown.stdout)["agents"]] == agents
        page.close()
    finally:
        up.stop()
    assert f"console listening on {console}" in (up.process.stdout.read() if up.process.stdout else "")
