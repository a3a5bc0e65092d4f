"""Importing user code from a verified code bundle, and forgetting it again.

A code bundle's modules live under ``code/`` in the bundle. They are imported as
submodules of a package whose name is unique to the load
(``_milepost_code_<version>_<n>``), so two bundles, or two versions of one, never
share module objects and nothing a user names (``model``, ``utils``) shadows an
installed module. The source executed is the bytes that were verified against the
bundle's hash, served from memory: no bytecode is written into the bundle, and a file
changed on disk after verification is never run.

Inside a bundle, modules import their siblings relatively (``from . import helpers``).
engines.entry_points.resolve(ref, what, package=code.package) finds what a bundle names;
``unload`` removes the package and its modules from ``sys.modules``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import itertools
import sys
import threading
from importlib.machinery import ModuleSpec
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from milepost.core.errors import InvalidArgument

CODE_DIR = "code"
_counter = itertools.count()
_lock = threading.Lock()


class _BundleSources(importlib.abc.SourceLoader):
    """Loads modules of the registered bundle packages from their verified bytes."""

    def __init__(self) -> None:
        self.packages: dict[str, tuple[Path, dict[str, bytes]]] = {}  # package -> (root, {rel: source})

    def _lookup(self, fullname: str) -> tuple[str, str, bool] | None:
        package, _, rest = fullname.partition(".")
        entry = self.packages.get(package)
        if entry is None or not rest:
            return None
        _, sources = entry
        rel = "/".join(rest.split("."))
        if f"{rel}.py" in sources:
            return package, f"{rel}.py", False
        if f"{rel}/__init__.py" in sources:
            return package, f"{rel}/__init__.py", True
        return None

    def spec_for(self, fullname: str) -> ModuleSpec | None:
        found = self._lookup(fullname)
        if found is None:
            return None
        package, rel, is_package = found
        root, _ = self.packages[package]
        origin = str(root / rel)
        spec = importlib.util.spec_from_loader(fullname, self, origin=origin, is_package=is_package)
        if spec is not None:
            spec.has_location = True
        return spec

    def get_filename(self, fullname: str) -> str:
        found = self._lookup(fullname)
        if found is None:
            raise ImportError(f"{fullname} is not in a loaded code bundle", name=fullname)
        root, _ = self.packages[found[0]]
        return str(root / found[1])

    def get_data(self, path: str) -> bytes:
        for root, sources in self.packages.values():
            try:
                rel = Path(path).relative_to(root).as_posix()
            except ValueError:
                continue
            if rel in sources:
                return sources[rel]
        raise OSError(f"{path} is not a verified source of a loaded code bundle")


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds the bundles' modules for the import system. (A class apart from the loader:
    one class deriving from both is one typeshed describes inconsistently.)"""

    def __init__(self, sources: _BundleSources) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        return self.sources.spec_for(fullname)


_SOURCES = _BundleSources()
_FINDER = _BundleFinder(_SOURCES)


def _install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


class UserCode:
    """The modules of one code bundle, imported under a package name of their own."""

    def __init__(self, bundle_dir: Path, files: dict[str, bytes], version: str) -> None:
        sources = {
            PurePosixPath(rel).relative_to(CODE_DIR).as_posix(): data
            for rel, data in files.items()
            if rel.startswith(f"{CODE_DIR}/") and rel.endswith(".py")
        }
        if not sources:
            raise InvalidArgument(f"the code bundle has no Python sources under {CODE_DIR}/")
        self.package = f"_milepost_code_{version[:16]}_{next(_counter)}"
        module = ModuleType(self.package, f"code bundle {version[:12]}")
        module.__path__ = []  # a package; its submodules are found by _BundleSources
        module.__package__ = self.package
        with _lock:
            _SOURCES.packages[self.package] = (Path(bundle_dir) / CODE_DIR, sources)
            _install()
            sys.modules[self.package] = module

    def unload(self) -> None:
        """Forget the bundle's modules: they leave sys.modules and cannot be imported again."""
        with _lock:
            _SOURCES.packages.pop(self.package, None)
            for name in [n for n in sys.modules if n == self.package or n.startswith(f"{self.package}.")]:
                del sys.modules[name]
            if not _SOURCES.packages and _FINDER in sys.meta_path:
                sys.meta_path.remove(_FINDER)

    def loaded_modules(self) -> list[str]:
        return sorted(n for n in sys.modules if n == self.package or n.startswith(f"{self.package}."))
