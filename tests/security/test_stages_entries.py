"""Stage entries: exact names only, nothing resolved by walking attributes.

The attack from the security issue: a custom stage whose entry starts with the allowed
``engines.trainers:`` and walks from there to ``os.environ.update``, called with
``{"MILEPOST_ALLOW_CODE_BUNDLES": "1"}``, after which a second pipeline could run anything.
Each such entry is submitted as a real pipeline to a real coordinator and agent (gRPC, in
this process, so the agent's os.environ is this test's): the run fails, the stage says
why, and os.environ is exactly what it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.stage_entries import check_entry
from engines import entry_points, trainers
from milepost.core.errors import InvalidArgument, NotFound, PermissionDenied
from milepost.core.settings import read_settings
from milepost.pipeline_spec import spec_from_dict
from tests.conftest import wait_until

# Entries that reach os.environ.update (or an importer) from the allowed module, each of which
# the prefix check of old let through.
WALKS = [
    "engines.trainers:importlib.metadata.os.environ.update",
    "engines.trainers:np.lib._datasource.os.environ.update",
    "engines.trainers:importlib.import_module",
    "engines.trainers:xgboost.__globals__",
    "engines.trainers:InvalidArgument.__init__",
]
# Names that are one identifier but not an allowed trainer: a module, an imported class,
# a private helper, a builtin.
NOT_LISTED = ["engines.trainers:importlib", "engines.trainers:np", "engines.trainers:InvalidArgument",
              "engines.trainers:_split", "os:system", "builtins:exec", "subprocess:run"]
MALFORMED = ["engines.trainers:", ":xgboost", "engines.trainers", "engines..trainers:xgboost", "engines.trainers:xgboost ",
             "../engines:x", "engines.trainers:xgboost:lightgbm", "x" * 5000]


def environment() -> dict[str, str]:
    """os.environ, less the variable pytest itself rewrites between a test's phases."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("MILEPOST_ALLOW_CODE_BUNDLES", "MILEPOST_STAGE_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    return environment()


@pytest.mark.parametrize("entry", WALKS + MALFORMED)
def test_attribute_paths_and_malformed_entries_are_invalid(entry: str, clean_env: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match="module:function") as caught:
        check_entry(entry)
    assert len(str(caught.value)) < 400  # a 5000-character entry is not echoed back
    with pytest.raises(InvalidArgument):
        check_entry(entry, read_settings(allow_code_bundles=True))  # not even an operator's opt-in walks attributes
    assert environment() == clean_env


@pytest.mark.parametrize("entry", NOT_LISTED)
def test_single_names_outside_the_registry_are_permission_denied(entry: str, clean_env: dict[str, str]) -> None:
    with pytest.raises(PermissionDenied, match="not allowed on this agent"):
        check_entry(entry)
    assert environment() == clean_env


@pytest.mark.parametrize("entry", ["engines.trainers:importlib", "engines.trainers:np", "engines.trainers:InvalidArgument",
                                   "os:system", "builtins:exec"])
def test_with_code_bundles_allowed_only_functions_defined_in_the_module_resolve(entry: str) -> None:
    with pytest.raises(InvalidArgument, match="not a function defined in module"):
        check_entry(entry, read_settings(allow_code_bundles=True))


def test_the_registry_is_exact_and_each_built_in_resolves(clean_env: dict[str, str]) -> None:
    assert trainers.BUILT_IN == ("engines.trainers:xgboost", "engines.trainers:lightgbm", "engines.trainers:sklearn")
    for entry in trainers.BUILT_IN:
        assert check_entry(entry) is getattr(trainers, entry.partition(":")[2])
    with pytest.raises(NotFound):
        entry_points.resolve("engines.trainers:nothing_here", "entry", defined_here=True)


def test_the_sklearn_trainer_takes_only_estimator_classes() -> None:
    import pyarrow as pa

    table = pa.table({"x": [0.0, 1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1, 0]})
    for estimator in ("sklearn.utils._testing.os.system", "sklearn.utils.fixes.parse_version", "os.system",
                      "sklearn.base.clone", "sklearn.externals._packaging.version.Version"):
        with pytest.raises(InvalidArgument, match="estimator"):
            trainers.sklearn(table, label="y", estimator=estimator)


@pytest.mark.parametrize("trainer, param", [("lightgbm", "output_model"), ("lightgbm", "forcedsplits_filename"),
                                            ("xgboost", "model_out"), ("lightgbm", "machine_list_filename")])
def test_trainer_parameters_that_name_files_are_refused(trainer: str, param: str) -> None:
    import pyarrow as pa

    table = pa.table({"x": [0.0, 1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1, 0]})
    with pytest.raises(InvalidArgument, match="names a file"):
        getattr(trainers, trainer)(table, label="y", **{param: "/tmp/anything"})


def test_the_issue_attack_over_grpc_changes_nothing(cluster, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Each walking entry as the issue's pipeline would send it: a custom stage whose inputs
    are the variables to set. The run fails and the agent's environment is untouched."""
    stages = [
        {"name": f"s{i}", "kind": "custom", "engine": "native",
         "params": {"entry": entry, "inputs": {"MILEPOST_ALLOW_CODE_BUNDLES": "1"}}}
        for i, entry in enumerate(WALKS + NOT_LISTED[:2])
    ]
    with cluster.client as client:
        run = client.submit_pipeline(spec_from_dict({"name": "walk", "stages": stages}, base=tmp_path))
        done = wait_until(lambda: (r := client.run(run.run_id)).state in ("FAILED", "SUCCEEDED") and r, timeout=60)
    assert done.state == "FAILED"
    for stage in done.stages:
        assert stage.state == "FAILED", (stage.name, stage.message)
        assert "module:function" in stage.message or "not allowed on this agent" in stage.message, stage.message
    assert environment() == clean_env
    assert "MILEPOST_ALLOW_CODE_BUNDLES" not in os.environ
