"""Content-addressed artifact directory: one archive per model version.

An archive is accepted only after its bytes match the sender's sha256 and its
bundle unpacks and verifies (scoring_core.bundle), so a version id always names
exactly the content stored under it. The settings ``max_bundle_bytes`` (counted as
the chunks arrive), ``max_bundle_expanded_bytes`` and ``max_bundle_files`` (counted
while it unpacks) bound what one push may cost.

A push writes under temporary names in the store's directory and renames the
archive into place only once it is verified; a crash mid-push leaves those
temporary files, and opening the store (at every coordinator start) removes
them. A full or read-only disk is reported as such, naming the directory
(coordinator.storage_errors), never as an internal error. An archive is removed
when the registry deletes the last version record that names it (coordinator.versions).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from coordinator.storage_errors import storage_error
from milepost.core.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted, shown
from milepost.core.settings import get_settings
from scoring_core import bundle

CHUNK_BYTES = 1 << 20
log = logging.getLogger("milepost.coordinator")
# What a push in progress writes: its archive (.push-*.part), the directory it unpacks into to
# verify (.push-*) and the bundle module's sibling of that (..push-*.unpack-*); older versions
# used tempfile's default tmp* names. Archives are named by a hex digest, which none of these is.
TEMPORARY = re.compile(r"^\.*(push-|tmp)")


@dataclass(frozen=True)
class Received:
    """A verified archive under its temporary name (ArtifactStore.receive)."""

    store: ArtifactStore
    path: Path
    version: str
    manifest: dict
    size: int

    def keep(self) -> None:
        """Put the archive in place under its version."""
        try:
            self.path.replace(self.store.path_for(self.version))
        except OSError as err:
            self.store._raise_disk_error(err, "storing a model")


class ArtifactStore:
    def __init__(self, root: Path, *, limits: bundle.UnpackLimits | None = None) -> None:
        """``limits`` default to those of the settings (read now)."""
        self.root = root
        self.limits = limits or bundle.UnpackLimits.of(get_settings())
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
        except OSError as err:
            self._raise_disk_error(err, "opening the artifact store")

    def _remove_leftovers(self) -> None:
        """Temporary files of pushes a crash interrupted (nothing else writes here)."""
        for path in self.root.iterdir():
            if TEMPORARY.match(path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                log.warning("artifact store: removed %s, left by an interrupted push", path.name)

    def _raise_disk_error(self, err: OSError, doing: str) -> NoReturn:
        """A full or read-only disk as the operator's error; any other OSError as it is."""
        mapped = storage_error(self.root, err, doing)
        if mapped is None:
            raise err
        raise mapped from err

    def path_for(self, version: str) -> Path:
        if len(version) != 64 or any(c not in "0123456789abcdef" for c in version):
            raise InvalidArgument(f"version {shown(version)} is not a 64-hex-digit content hash")
        return self.root / f"{version}.tar"

    def put(self, chunks: Iterable[bytes], sha256: str) -> tuple[str, dict, int]:
        """Store an archive; returns (version, manifest, size). Idempotent per version."""
        with self.receive(chunks, sha256) as received:
            received.keep()
            return received.version, received.manifest, received.size

    @contextmanager
    def receive(self, chunks: Iterable[bytes], sha256: str) -> Iterator[Received]:
        """Receive and verify an archive under a temporary name; ``keep()`` puts it in place
        (idempotent per version), which the registry does under its lock, with the record.
        An archive left unkept is removed when the block ends."""
        digest = hashlib.sha256()
        size = 0
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".push-", suffix=".part")
        except OSError as err:
            self._raise_disk_error(err, "storing a model")
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
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".push-") as unpacked, tmp.open("rb") as archive:
                version = bundle.unpack(archive, Path(unpacked), limits=self.limits)
                manifest = bundle.read_manifest(Path(unpacked))
        except OSError as err:
            tmp.unlink(missing_ok=True)
            self._raise_disk_error(err, "storing a model")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            yield Received(self, tmp, version, manifest, size)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, version: str) -> None:
        """Remove a version's archive (the registry does, once no model record names it)."""
        try:
            self.path_for(version).unlink(missing_ok=True)
        except OSError as err:
            self._raise_disk_error(err, "removing a model")

    def read(self, version: str) -> Iterator[bytes]:
        path = self.path_for(version)
        if not path.exists():
            raise NotFound(f"no artifact stored for version {version}")
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk
