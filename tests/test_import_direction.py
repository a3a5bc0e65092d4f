"""The floors of the code base and the one rule between them, read from the code's own imports.

    roof (milepost.Client, the CLI)       imports anything
    agent/        coordinator/            import engines, scoring_core, the floor, the stubs
    engines/                              imports scoring_core, the floor
    scoring_core/                         imports the floor
    floor (milepost/core) and the stubs   import only each other

engines/ and scoring_core/ never see protobuf (DESIGN.md), so the generated
stubs are theirs to avoid. Every import counts, including the ones inside
functions: an arrow that runs sideways or up fails here, naming file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("milepost", "agent", "coordinator", "engines", "scoring_core")
FLOOR, STUBS, SCORING, ENGINES, AGENT, COORDINATOR, ROOF = (
    "floor", "stubs", "scoring_core", "engines", "agent", "coordinator", "roof",
)
MAY_IMPORT: dict[str, set[str]] = {
    FLOOR: {FLOOR, STUBS},
    STUBS: {STUBS},
    SCORING: {FLOOR, SCORING},
    ENGINES: {FLOOR, SCORING, ENGINES},
    AGENT: {FLOOR, STUBS, SCORING, ENGINES, AGENT},
    COORDINATOR: {FLOOR, STUBS, SCORING, ENGINES, COORDINATOR},
    ROOF: {FLOOR, STUBS, SCORING, ENGINES, AGENT, COORDINATOR, ROOF},
}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None for modules outside the project."""
    parts = module.split(".")
    top = parts[0]
    if top not in PACKAGES:
        return None
    if top == "milepost":
        if len(parts) > 1 and parts[1] == "core":
            return FLOOR
        if len(parts) > 1 and parts[1] in ("v1", "inference"):
            return STUBS
        return ROOF
    return {"agent": AGENT, "coordinator": COORDINATOR, "engines": ENGINES, "scoring_core": SCORING}[top]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name in PACKAGES:
                # `from agent import X`: X is a submodule or a name of the package's __init__.
                found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, name))
    return found


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name)


def violations() -> list[str]:
    found = []
    for path in source_files():
        own = layer_of(module_name(path))
        assert own is not None
        for line, imported in imports_of(path):
            target = layer_of(imported)
            if target is None or target in MAY_IMPORT[own]:
                continue
            found.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {imported} ({target})")
    return found


def test_every_import_runs_down_the_floors() -> None:
    found = violations()
    assert not found, "imports against the direction of the floors:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "layer"),
    [("milepost.core.errors", FLOOR), ("milepost.v1.agent_pb2", STUBS), ("milepost.client", ROOF),
     ("milepost", ROOF), ("agent.routing.router", AGENT), ("numpy", None)],
)
def test_layers_are_read_from_module_names(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer


def test_a_sideways_import_is_reported_with_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself catches what it is for: an engine importing the agent, the floor the roof."""
    fake_root = tmp_path
    for package in PACKAGES:
        (fake_root / package).mkdir()
        (fake_root / package / "__init__.py").write_text("")
    (fake_root / "milepost" / "core").mkdir()
    (fake_root / "milepost" / "core" / "__init__.py").write_text("")
    (fake_root / "engines" / "bad.py").write_text("import os\n\ndef f():\n    from agent.server import Agent\n")
    (fake_root / "milepost" / "core" / "worse.py").write_text("from milepost.client import Client\n")
    (fake_root / "scoring_core" / "proto_user.py").write_text("from milepost.v1 import types_pb2\n")
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    found = violations()
    assert "engines/bad.py:4: engines imports agent.server (agent)" in found
    assert "milepost/core/worse.py:1: floor imports milepost.client (roof)" in found
    assert "scoring_core/proto_user.py:1: scoring_core imports milepost.v1 (stubs)" in found
    assert len(found) == 3
