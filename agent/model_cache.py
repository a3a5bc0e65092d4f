"""Bundles on the agent's disk, one directory per version, fetched from the coordinator.

A version is fetched once, unpacked into a temporary directory, verified
against its content hash and only then renamed into place, so a half-written
or tampered bundle is never loaded.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from milepost.core.errors import DataLoss
from milepost.core.settings import get_settings
from scoring_core import bundle

FetchFn = Callable[[str, str], Iterable[bytes]]


class ModelCache:
    def __init__(self, root: Path, fetch: FetchFn) -> None:
        self.root = root
        self._fetch = fetch
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def get(self, model: str, version: str) -> Path:
        target = self.root / version
        if len(version) != 64 or not version.isalnum():
            raise DataLoss(f"refusing version id {version!r}: not a content hash")
        with self._lock:
            if target.is_dir():
                return target
            data = b"".join(self._fetch(model, version))
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".fetch-"))
            try:
                got = bundle.unpack(data, staging, limits=bundle.UnpackLimits.of(get_settings()))
                if got != version:
                    raise DataLoss(f"bundle for {model}:{version} arrived with content hash {got}")
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return target
