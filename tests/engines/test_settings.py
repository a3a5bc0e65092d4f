"""Engines and stages read their settings when they run, not when they are imported:
a variable set after the import (here, by one test alone) is the one they follow."""

from __future__ import annotations

import pytest

from agent.stage_entries import check_entry
from engines import registry
from engines.python import PythonEngine
from engines.ray import RayEngine
from engines.spark import SparkEngine
from milepost.core.errors import InvalidArgument, PermissionDenied
from milepost.core.settings import load_settings, read_settings, reset_settings


def test_engines_follow_the_environment_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEPOST_SPARK_MASTER", "local[3]")
    monkeypatch.setenv("MILEPOST_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")
    spark, ray = registry.get("spark"), registry.get("ray")  # the registry's engines, built at import
    assert isinstance(spark, SparkEngine) and spark.master == "local[3]"
    assert isinstance(ray, RayEngine) and ray.address == "ray://head:10001"
    assert PythonEngine().allowed()
    assert SparkEngine("local[1]").master == "local[1]" and RayEngine("").address == ""  # an engine's own wins
    monkeypatch.delenv("MILEPOST_ALLOW_CODE_BUNDLES")
    assert not PythonEngine().allowed() and PythonEngine(allow_code=True).allowed()


def test_stage_entries_are_allowed_by_exact_name_or_all_with_code_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    from engines import trainers

    assert check_entry("engines.trainers:xgboost") is trainers.xgboost
    with pytest.raises(PermissionDenied, match="MILEPOST_STAGE_ENTRIES"):
        check_entry("tests.engines.test_settings:fit")
    monkeypatch.setenv("MILEPOST_STAGE_ENTRIES", "other:thing, tests.engines.test_settings:fit")
    assert check_entry("tests.engines.test_settings:fit") is fit  # the variable is read when the stage runs
    with pytest.raises(PermissionDenied):
        check_entry("tests.engines.test_settings:other_fit")  # a name beside a listed one is not listed
    monkeypatch.setenv("MILEPOST_STAGE_ENTRIES", "tests.engines.")
    with pytest.raises(PermissionDenied, match="prefixes are not accepted"):
        check_entry("tests.engines.test_settings:fit")
    assert check_entry("tests.engines.test_settings:other_fit", read_settings(allow_code_bundles=True)) is other_fit
    with pytest.raises(InvalidArgument, match="not a function defined in module 'os'"):
        check_entry("os:system", read_settings(allow_code_bundles=True))  # a builtin os merely holds


def fit(inputs: dict, **params: object) -> dict:
    return {}


def other_fit(inputs: dict, **params: object) -> dict:
    return {}


def test_loaded_settings_hold_for_the_process_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEPOST_SPARK_MASTER", "local[4]")
    try:
        load_settings()
        monkeypatch.setenv("MILEPOST_SPARK_MASTER", "local[5]")
        assert SparkEngine().master == "local[4]"  # read once, when the process started
    finally:
        reset_settings()
    assert SparkEngine().master == "local[5]"
