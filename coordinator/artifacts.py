"""Content-addressed artifact directory: one archive per model version.

An archive is accepted only after its bytes match the sender's sha256 and its
bundle unpacks and verifies (scoring_core.bundle), so a version id always names
exactly the content stored under it. The settings ``max_bundle_bytes`` (counted as
the chunks arrive), ``max_bundle_expanded_bytes`` and ``max_bundle_files`` (counted
while it unpacks) bound what one push may cost.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from milepost.core.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted, shown
from milepost.core.settings import get_settings
from scoring_core import bundle

CHUNK_BYTES = 1 << 20


class ArtifactStore:
    def __init__(self, root: Path, *, limits: bundle.UnpackLimits | None = None) -> None:
        """``limits`` default to those of the settings (read now)."""
        self.root = root
        self.limits = limits or bundle.UnpackLimits.of(get_settings())
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, version: str) -> Path:
        if len(version) != 64 or any(c not in "0123456789abcdef" for c in version):
            raise InvalidArgument(f"version {shown(version)} is not a 64-hex-digit content hash")
        return self.root / f"{version}.tar"

    def put(self, chunks: Iterable[bytes], sha256: str) -> tuple[str, dict, int]:
        """Store an archive; returns (version, manifest, size). Idempotent per version."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.limits.max_bundle_bytes:
                        raise ResourceExhausted(
                            f"model archive exceeds the limit of {self.limits.max_bundle_bytes} bytes (max_bundle_bytes)"
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if sha256 and digest.hexdigest() != sha256:
                raise DataLoss(
                    f"archive sha256 {digest.hexdigest()} does not match the header's {sha256}; "
                    "the upload was corrupted, push again"
                )
            with tempfile.TemporaryDirectory(dir=self.root) as unpacked, tmp.open("rb") as archive:
                version = bundle.unpack(archive, Path(unpacked), limits=self.limits)
                manifest = bundle.read_manifest(Path(unpacked))
            tmp.replace(self.path_for(version))
            return version, manifest, size
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, version: str) -> Iterator[bytes]:
        path = self.path_for(version)
        if not path.exists():
            raise NotFound(f"no artifact stored for version {version}")
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk
