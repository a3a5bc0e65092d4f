"""`milepost validate`: measures checked against scikit-learn's own metrics, gates and exit
codes as a CI step sees them, and the result attached to the registered version."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics

import scoring_core
from milepost import validation
from milepost.cli import main
from milepost.cli.review import GATE_FAILED
from scoring_core import measures
from tests.chaos.nodes import client, coordinator


def _write(path, X, y, label="y", names=None):
    names = names or [f"f{i}" for i in range(X.shape[1])]
    columns = {n: pa.array(X[:, i].astype(np.float32)) for i, n in enumerate(names)}
    columns[label] = pa.array(y)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """An XGBoost classifier, its bundle, and held-out labelled rows written as Parquet."""
    import xgboost as xgb
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=6, n_informative=4, flip_y=0.05, random_state=3)
    model = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X[:1500], y[:1500])
    root = tmp_path_factory.mktemp("validate")
    bundle = root / "bundle"
    scoring_core.compile(model).save(bundle)
    data = _write(root / "held_out.parquet", X[1500:], y[1500:])
    return model, bundle, data, X[1500:], y[1500:]


def test_binary_measures_agree_with_scikit_learn(binary) -> None:
    model, bundle, data, X, y = binary
    manifest, labels, outputs = validation.score(bundle, data, "y")
    measured = validation.measure(manifest, labels, outputs, threshold=0.5)
    p1 = model.predict_proba(X)[:, 1]
    tn, fp, fn, tp = metrics.confusion_matrix(y, p1 >= 0.5).ravel()
    assert measured["auc"] == pytest.approx(metrics.roc_auc_score(y, p1), abs=1e-9)
    assert measured["log_loss"] == pytest.approx(metrics.log_loss(y, p1), rel=1e-5)
    assert measured["fpr"] == pytest.approx(fp / (fp + tn)) and measured["fnr"] == pytest.approx(fn / (fn + tp))
    assert measured["accuracy"] == pytest.approx(metrics.accuracy_score(y, p1 >= 0.5))
    assert (measured["rows"], measured["positives"]) == (500, int(y.sum()))


def test_auc_shares_ranks_among_ties_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    positive = rng.random(300) < 0.4
    assert measures.auc(scores, positive) == pytest.approx(metrics.roc_auc_score(positive, scores))
    assert np.isnan(measures.auc(scores, np.zeros(300, bool)))
    # A report has no NaN: an AUC that one class leaves undefined is null there.
    one_class = pa.table({"probabilities": pa.array([[1 - s, s] for s in scores / 5], pa.list_(pa.float64(), 2))})
    measured = validation.measure({"task": "classification", "classes": [0, 1]}, np.zeros(300, int), one_class)
    assert measured["auc"] is None and measured["fnr"] is None and measured["fpr"] is not None


def test_regressor_and_multiclass_measures(tmp_path) -> None:
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    X, y = make_regression(n_samples=300, n_features=5, noise=5.0, random_state=1)
    ridge = Ridge().fit(X, y)
    scoring_core.compile(ridge).save(tmp_path / "ridge")
    measured = validation.measure(*validation.score(tmp_path / "ridge", _write(tmp_path / "r.parquet", X, y), "y"))
    predicted = ridge.predict(X.astype(np.float32))
    assert measured["mae"] == pytest.approx(metrics.mean_absolute_error(y, predicted), rel=1e-5)
    assert measured["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, predicted)), rel=1e-5)

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=2)
    labels = np.array(["low", "mid", "high"])[y]  # string class labels
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, labels)
    scoring_core.compile(forest).save(tmp_path / "forest")
    measured = validation.measure(*validation.score(tmp_path / "forest", _write(tmp_path / "c.parquet", X, labels), "y"))
    proba = forest.predict_proba(X.astype(np.float32))
    assert measured["accuracy"] == pytest.approx(metrics.accuracy_score(labels, forest.classes_[proba.argmax(1)]))
    assert measured["log_loss"] == pytest.approx(metrics.log_loss(labels, proba, labels=forest.classes_), rel=1e-5)
    assert "auc" not in measured


def test_exit_codes_and_report_for_a_ci_step(binary, tmp_path, capsys) -> None:
    _, bundle, data, X, y = binary
    report = tmp_path / "report.json"
    assert main(["validate", str(bundle), "--data", str(data), "--label", "y", "--min-auc", "0.8",
                 "--max-fpr", "0.3", "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert "min_auc" in captured.out and "PASSED" in captured.out
    assert "500/500 rows (100%)" in captured.err  # the scoring's progress, on stderr
    written = json.loads(report.read_text())
    assert written["passed"] and {g["gate"] for g in written["gates"]} == {"min_auc", "max_fpr"}
    assert len(written["data"]["sha256"]) == 64

    flipped = _write(tmp_path / "flipped.parquet", X, 1 - y)  # the labels a broken pipeline would give
    assert main(["validate", str(bundle), "--data", str(flipped), "--label", "y", "--min-auc", "0.8",
                 "--report", str(report)]) == GATE_FAILED
    assert "FAIL" in capsys.readouterr().out and not json.loads(report.read_text())["passed"]


@pytest.mark.parametrize("extra, message", [
    (["--label", "target"], "--label 'target' is not a column"),
    (["--label", "y", "--max-mae", "1"], "--max-mae does not apply"),
    (["--label", "y", "--max-regression", "0.01"], "give --against"),
])
def test_mistakes_get_a_clear_error(binary, tmp_path, capsys, extra, message) -> None:
    _, bundle, data, _, _ = binary
    assert main(["validate", str(bundle), "--data", str(data), *extra, "--report", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and message in err and "Traceback" not in err


def test_labels_outside_the_classes_and_missing_labels_are_refused(binary, tmp_path) -> None:
    from milepost.core.errors import InvalidArgument

    _, bundle, _, X, y = binary
    with pytest.raises(InvalidArgument, match=r"labels \['7'\] are not among"):
        validation.measure(*validation.score(bundle, _write(tmp_path / "a.parquet", X, np.where(y == 1, 7, 0)), "y"))
    with_null = pa.array([None, *y[1:].tolist()], pa.int64())
    _write(tmp_path / "b.parquet", X, with_null)
    with pytest.raises(InvalidArgument, match="1 missing values"):
        validation.score(bundle, tmp_path / "b.parquet", "y")


def test_a_registered_version_is_validated_against_its_baseline(binary, tmp_path, capsys, monkeypatch) -> None:
    import xgboost as xgb

    _, bundle, data, X, y = binary
    weak = tmp_path / "weak"
    scoring_core.compile(xgb.XGBClassifier(n_estimators=2, max_depth=1).fit(X[:50], y[:50])).save(weak)
    node = coordinator(tmp_path / "c")
    try:
        with client(node) as admin:
            admin.push_model(bundle, "churn")
            admin.push_model(weak, "churn")
            monkeypatch.setenv("MILEPOST_COORDINATOR", node.address)
            monkeypatch.setenv("MILEPOST_TOKEN", node.admin_token_file.read_text().strip())
            report = tmp_path / "r.json"
            # The weak retrain loses more than 0.01 AUC to churn:1: refused, and recorded so.
            assert main(["validate", "churn:2", "--data", str(data), "--label", "y", "--against", "churn:1",
                         "--max-regression", "0.01", "--report", str(report)]) == GATE_FAILED
            written = json.loads(report.read_text())
            gate = next(g for g in written["gates"] if g["gate"] == "regression_auc")
            assert not gate["passed"] and gate["value"] > 0.01 and written["against"]["model"] == "churn:1"
            assert main(["validate", "churn:1", "--data", str(data), "--label", "y", "--min-auc", "0.8",
                         "--report", str(report)]) == 0
            assert "churn:1 now validated" in capsys.readouterr().out
            stages = {m.number: m.stage for m in admin.list_models("churn")}
            assert stages == {1: "validated", 2: "registered"}
            (validated,) = admin.model_details("churn", "1").validations
            assert validated.passed and json.loads(validated.report_json)["gates"][0]["gate"] == "min_auc"
            assert [v.passed for v in admin.model_details("churn", "2").validations] == [False]
    finally:
        node.stop()


def test_the_coordinator_judges_a_report_again_and_refuses_a_false_one(binary, tmp_path, capsys, monkeypatch) -> None:
    """A report is not taken on its word: the coordinator judges its gates on its own measures
    (the rule `milepost validate` uses), and keeps who recorded it."""
    from milepost.client import Client
    from milepost.core.errors import InvalidArgument

    _, bundle, data, _, _ = binary
    node = coordinator(tmp_path / "c")
    try:
        with client(node) as admin, Client(node.address, token=admin.create_token("qa", "deployer").token) as qa:
            admin.push_model(bundle, "churn")
            monkeypatch.setenv("MILEPOST_COORDINATOR", node.address)
            monkeypatch.setenv("MILEPOST_TOKEN", admin.create_token("ci", "deployer").token)
            report = tmp_path / "r.json"
            assert main(["validate", "churn:1", "--data", str(data), "--label", "y", "--min-auc", "0.99",
                         "--max-fpr", "0.3", "--report", str(report)]) == GATE_FAILED
            honest = json.loads(report.read_text())
            (auc_gate,) = [g for g in honest["gates"] if g["gate"] == "min_auc"]
            assert not auc_gate["passed"] and auc_gate["value"] < 0.99

            forged = json.loads(report.read_text())
            forged["passed"] = True
            with pytest.raises(InvalidArgument, match=r"claims passed .* but its gates give failed"):
                qa.record_validation("churn", "1", True, forged)  # the gates stand as measured
            for g in forged["gates"]:
                g["passed"] = True
            with pytest.raises(InvalidArgument, match=r"gate 'min_auc' says value .*passed, but its measures give "
                                                      r".*failed"):
                qa.record_validation("churn", "1", True, forged)  # verdicts rewritten: judged again
            forged["gates"] = [g for g in forged["gates"] if g["gate"] != "min_auc"]
            forged["metrics"]["auc"] = 0.999
            forged["gates"].append({"gate": "min_auc", "limit": 0.99, "value": auc_gate["value"], "passed": True})
            with pytest.raises(InvalidArgument, match=r"gate 'min_auc' says value"):
                qa.record_validation("churn", "1", True, forged)  # a value that is not its measure
            with pytest.raises(InvalidArgument, match="judges no gate"):
                qa.record_validation("churn", "1", True, {"note": "trust me", "metrics": {}, "gates": [], "passed": True})
            with pytest.raises(InvalidArgument, match="needs 'metrics'"):
                qa.record_validation("churn", "1", True, {"note": "trust me"})
            with pytest.raises(InvalidArgument, match=r"gate 'max_everything' is not one of"):
                qa.record_validation("churn", "1", True, {"metrics": {"auc": 0.9}, "passed": True, "gates": [
                    {"gate": "max_everything", "limit": 1, "value": 0, "passed": True}]})
            # The honest report, sent as it was measured, is taken (its failure too), with who sent it.
            assert qa.record_validation("churn", "1", False, honest).stage == "registered"
            recorded = admin.model_details("churn", "1").validations
            assert [(v.passed, v.actor) for v in recorded] == [(False, "ci (deployer)"), (False, "qa (deployer)")]
    finally:
        node.stop()


def test_regression_gates_are_judged_against_the_baseline_the_report_carries() -> None:
    from milepost.core import gates
    from milepost.core.errors import InvalidArgument

    measured, baseline = {"auc": 0.80, "log_loss": 0.50}, {"auc": 0.85, "log_loss": 0.40}
    verdicts = gates.judge(measured, gates.Gates(min_auc=0.7, max_regression=0.1), baseline)
    report = {"metrics": measured, "gates": verdicts, "against": {"metrics": baseline}, "passed": gates.passed(verdicts)}
    assert gates.rejudge(json.loads(json.dumps(report))) == verdicts
    assert [(v["gate"], v["passed"]) for v in verdicts] == [
        ("min_auc", True), ("regression_auc", True), ("regression_log_loss", False)]  # 25% worse log loss
    assert report["passed"] is False
    with pytest.raises(InvalidArgument, match="need 'against'"):
        gates.rejudge({**report, "against": None})
    with pytest.raises(InvalidArgument, match=r"metrics.auc must be a number or null, got 'high'"):
        gates.rejudge({**report, "metrics": {"auc": "high"}})


def test_a_run_without_gates_is_measured_and_not_recorded(binary, tmp_path, capsys, monkeypatch) -> None:
    _, bundle, data, _, _ = binary
    node = coordinator(tmp_path / "c")
    try:
        with client(node) as admin:
            admin.push_model(bundle, "churn")
            monkeypatch.setenv("MILEPOST_COORDINATOR", node.address)
            monkeypatch.setenv("MILEPOST_TOKEN", node.admin_token_file.read_text().strip())
            assert main(["validate", "churn:1", "--data", str(data), "--label", "y",
                         "--report", str(tmp_path / "r.json")]) == 0
            assert "not recorded: no gates were given" in capsys.readouterr().out
            assert list(admin.model_details("churn", "1").validations) == []
    finally:
        node.stop()


def test_an_onnx_classifier_is_measured_by_its_graph_named_probabilities(tmp_path) -> None:
    """An ONNX graph compiled by the core serves its prediction under the graph's name
    (skl2onnx's ZipMap output: ``output_probability``); validation measures that column."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=400, n_features=5, n_informative=3, random_state=4)
    X = X.astype(np.float32)
    model = LogisticRegression().fit(X[:300], y[:300])
    compiled = scoring_core.compile(to_onnx(model, X[:1]))
    assert compiled.output_schema.names == ["output_probability"]
    compiled.save(tmp_path / "onnx")
    manifest, labels, outputs = validation.score(tmp_path / "onnx", _write(tmp_path / "v.parquet", X[300:], y[300:]), "y")
    assert outputs.column_names == ["output_probability"]
    measured = validation.measure(manifest, labels, outputs)
    p1 = model.predict_proba(X[300:])[:, 1]
    assert measured["auc"] == pytest.approx(metrics.roc_auc_score(y[300:], p1), abs=1e-6)
