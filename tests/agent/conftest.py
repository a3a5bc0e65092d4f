"""Fixtures for the agent tests: compiled models, and a mesh of two agents (see mesh.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.agent.mesh import FakeCoordinator, Mesh, Model


@pytest.fixture(scope="session")
def estimators(tmp_path_factory: pytest.TempPathFactory):
    """Real scikit-learn models, compiled: three 8-feature classifiers that disagree, a 5-feature one,
    a regressor, and a stacker trained on the first two classifiers' probabilities."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LinearRegression, LogisticRegression

    import scoring_core
    from scoring_core import bundle

    X, y = make_classification(n_samples=700, n_features=8, n_informative=5, flip_y=0.2, random_state=1)
    X = X.astype(np.float32)
    fitted = {
        "lr_a": LogisticRegression(max_iter=500).fit(X[:500], y[:500]),
        "lr_b": LogisticRegression(C=0.005, max_iter=500).fit(X[:200], y[:200]),
        "lr_c": LogisticRegression(C=0.05, fit_intercept=False, max_iter=500).fit(X[250:500, ::-1], y[250:500]),
        "narrow": LogisticRegression(max_iter=500).fit(X[:500, :5], y[:500]),
        "reg": LinearRegression().fit(X[:500], y[:500].astype(np.float64)),
    }
    stack_X = np.hstack([fitted["lr_a"].predict_proba(X[:500]), fitted["lr_b"].predict_proba(X[:500])])
    fitted["stacker"] = LogisticRegression(max_iter=500).fit(stack_X.astype(np.float32), y[:500])
    compiled = {}
    for name, estimator in fitted.items():
        directory = tmp_path_factory.mktemp("bundles") / name
        version = scoring_core.compile(estimator).save(directory)
        compiled[name] = (Model(name, estimator, version), bundle.pack(directory))
    return compiled, X[500:]


def started_mesh(estimators, data: Path, **config: Any) -> Iterator[Mesh]:
    """A stand-in coordinator serving the estimators' bundles and agents a1 (with /metrics) and
    a2 (``config``: more AgentConfig fields for both), registered; stopped after."""
    from agent.server import Agent, AgentConfig

    compiled, rows = estimators
    coordinator = FakeCoordinator()
    for model, archive in compiled.values():
        coordinator.archives[model.version] = archive
    agents = {name: Agent(AgentConfig(coordinator=coordinator.address, data_dir=data / name, port=0, agent_id=name,
                                      **config, **({"metrics_port": 0} if name == "a1" else {})))
              for name in ("a1", "a2")}
    for agent in agents.values():
        agent.start()
    for agent in agents.values():  # control calls are taken once an agent knows its coordinator's token
        assert agent.registration.registered.wait(10)
    mesh = Mesh(coordinator, agents, {m.name: m for m, _ in compiled.values()}, rows)
    try:
        yield mesh
    finally:
        mesh.close()
        for agent in agents.values():
            agent.stop(grace=0)
        coordinator.stop()


@pytest.fixture(scope="module")
def mesh(estimators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    for mesh in started_mesh(estimators, tmp_path_factory.mktemp("agents")):
        for dep, model in (("dep-a", "lr_a"), ("dep-b", "lr_b"), ("dep-c", "lr_c"), ("dep-narrow", "narrow"),
                           ("dep-reg", "reg"), ("dep-stacker", "stacker")):
            mesh.load("a1", dep, model)
        mesh.load("a2", "dep-remote", "lr_b")
        mesh.load("a2", "dep-c", "lr_c")
        yield mesh
