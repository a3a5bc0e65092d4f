"""A bundle shipped to remote workers (Spark executors, Ray actors) and loaded once there.

The driver packs the bundle once (``ShippedBundle.pack``: the deterministic archive
of scoring_core.bundle.pack) and hands the bytes to the cluster's own distribution
mechanism (SparkContext.addFile, the Ray object store). On a worker, ``load_model``
unpacks the archive, checks it against the expected version and loads it with the
flavor's in-process engine, once per process: later batches and tasks in the same
Python worker reuse the loaded model. A few recent versions are kept; older ones are
closed and their files removed.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from engines.base import DeploymentSpec, LoadedModel
from milepost.core.errors import DataLoss, Unimplemented

MAX_LOADED = 4

_lock = threading.Lock()
_loaded: OrderedDict[str, tuple[LoadedModel, Path]] = OrderedDict()
_load_counts: Counter[str] = Counter()


@dataclass(frozen=True)
class ShippedBundle:
    """What a worker needs to load a bundle: its version, flavor and packed bytes."""

    version: str
    flavor: str
    name: str
    archive: bytes

    @classmethod
    def pack(cls, bundle_dir: Path, *, flavors: tuple[str, ...]) -> ShippedBundle:
        """Pack a verified bundle; Unimplemented when its flavor is not one of ``flavors``."""
        from scoring_core import bundle

        manifest = bundle.read_manifest(bundle_dir)
        flavor = str(manifest.get("flavor", ""))
        if flavor not in flavors:
            raise Unimplemented(f"bundle {bundle_dir} has flavor {flavor!r}; this engine scores {list(flavors)}")
        archive = bundle.pack(bundle_dir)
        version = bundle.bundle_version(bundle_dir)
        return cls(version=version, flavor=flavor, name=Path(bundle_dir).name, archive=archive)


def load_model(version: str, flavor: str, archive: bytes | None = None, archive_path: str | None = None) -> LoadedModel:
    """The model of ``version`` in this process, unpacked and loaded on first use.

    ``archive`` (bytes) or ``archive_path`` (a file, as SparkFiles.get gives) is read
    only when the version is not loaded yet.
    """
    with _lock:
        hit = _loaded.get(version)
        if hit is not None:
            _loaded.move_to_end(version)
            return hit[0]
        if archive is None:
            if archive_path is None:
                raise ValueError("load_model needs archive or archive_path")
            archive = Path(archive_path).read_bytes()
        model, root = _unpack_and_load(version, flavor, archive)
        _loaded[version] = (model, root)
        _load_counts[version] += 1
        while len(_loaded) > MAX_LOADED:
            _, (old, old_root) = _loaded.popitem(last=False)
            old.close()
            shutil.rmtree(old_root, ignore_errors=True)
        return model


def _unpack_and_load(version: str, flavor: str, archive: bytes) -> tuple[LoadedModel, Path]:
    from engines import FLAVOR_ENGINES, registry
    from scoring_core import bundle

    root = Path(tempfile.mkdtemp(prefix="milepost-shipped-"))
    try:
        got = bundle.unpack(archive, root / "bundle")
        if got != version:
            raise DataLoss(f"shipped bundle arrived with version {got}, expected {version}")
        engine = registry.get(FLAVOR_ENGINES[flavor])
        spec = DeploymentSpec(deployment_id=f"worker:{version[:12]}", endpoint="", model="", version=version)
        return engine.load(root / "bundle", spec), root
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def load_count(version: str) -> int:
    """How many times this process unpacked and loaded ``version`` (1 when cached as promised)."""
    with _lock:
        return _load_counts[version]


def forget_all() -> None:
    """Close every model loaded here and remove its files (at exit, and for tests)."""
    with _lock:
        while _loaded:
            _, (model, root) = _loaded.popitem()
            model.close()
            shutil.rmtree(root, ignore_errors=True)


atexit.register(forget_all)
