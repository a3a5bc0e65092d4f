"""The model bundle on disk: a directory whose version is the hash of its content.

Layout::

    milepost.json   the manifest (sorted keys, so equal models give equal bytes)
    arrays/*.npy    the weights, never pickled
    CHECKSUMS       "<sha256>  <relative path>" for every other file, sorted by path

The version is the sha256 of CHECKSUMS. Because CHECKSUMS must be exactly the canonical
listing of every file's hash, the version names the whole content: change, add or
remove any byte or file and either verification fails (DataLoss) or the version changes.
Readers hash the bytes they then parse, so what was verified is what is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from milepost.core import bounded_json
from milepost.core.errors import DataLoss, InvalidArgument, ResourceExhausted, shown

MANIFEST = "milepost.json"
CHECKSUMS = "CHECKSUMS"
FORMAT_VERSION = 1
MAX_MANIFEST_DEPTH = 64  # schemas, transforms and statistics nest a handful of levels
MAX_PATH_CHARS = 1024  # a relative path inside a bundle, and each of its parts below
MAX_PART_CHARS = 255
COPY_CHUNK = 1 << 20
# First bytes of the compressed forms a tar often travels in; a bundle archive is a plain tar.
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class UnpackLimits:
    """What unpacking one archive may cost. The fields are named after the settings that
    set them on a server (``UnpackLimits.of(get_settings())``), so a refusal names the
    setting to raise."""

    max_bundle_bytes: int = 2 << 30  # the archive as sent
    max_bundle_expanded_bytes: int = 2 << 30  # the bytes of every file it unpacks to
    max_bundle_files: int = 10_000  # files and folders, those the paths imply included

    @classmethod
    def of(cls, settings: Any) -> UnpackLimits:
        """The limits of a settings object: anything with the three fields as attributes."""
        return cls(settings.max_bundle_bytes, settings.max_bundle_expanded_bytes, settings.max_bundle_files)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON for a manifest: sorted keys, fixed separators, no NaN."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def _check_relpath(rel: str) -> PurePosixPath:
    """A relative path that stays inside its root, or InvalidArgument."""
    if not rel or "\x00" in rel or "\n" in rel or "\\" in rel:
        raise InvalidArgument(f"path {shown(rel)} has forbidden characters")
    path = PurePosixPath(rel)
    if path.is_absolute() or rel.startswith("/"):
        raise InvalidArgument(f"path {shown(rel)} is absolute")
    if any(part in ("..", ".", "") for part in rel.split("/")):
        raise InvalidArgument(f"path {shown(rel)} is not a plain relative path (no '..' or '.' parts)")
    if len(rel) > MAX_PATH_CHARS or any(len(part) > MAX_PART_CHARS for part in path.parts):
        raise InvalidArgument(
            f"path {shown(rel)} is too long: at most {MAX_PATH_CHARS} characters, {MAX_PART_CHARS} a part"
        )
    return path


def checksums_bytes(hashes: dict[str, str]) -> bytes:
    """The canonical CHECKSUMS text for {relative path: sha256}."""
    return "".join(f"{hashes[rel]}  {rel}\n" for rel in sorted(hashes)).encode()


def version_of(files: dict[str, bytes]) -> str:
    """The version a bundle made of ``files`` (relative path -> bytes, no CHECKSUMS) has."""
    return _sha256(checksums_bytes({rel: _sha256(data) for rel, data in files.items()}))


def _parse_checksums(data: bytes) -> dict[str, str]:
    listed: dict[str, str] = {}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        raise DataLoss("CHECKSUMS is not ASCII text") from err
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest) or rel in listed:
            raise DataLoss(f"CHECKSUMS line {number} is malformed: {shown(line)}")
        listed[rel] = digest
    return listed


def _scan(root: Path, label: str) -> list[str]:
    """Relative posix paths of every file under ``root``; links and special files are refused."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            mode = full.lstat().st_mode
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise DataLoss(f"{label}: {shown(rel)} is a symbolic link")
            if stat.S_ISREG(mode):
                found.append(rel)
            elif not stat.S_ISDIR(mode):
                raise DataLoss(f"{label}: {shown(rel)} is not a regular file")
    return found


def read_bundle(path: str | Path) -> tuple[str, dict[str, bytes]]:
    """Verify a bundle directory and return (version, {relative path: bytes}) for every
    file but CHECKSUMS. DataLoss on any hash mismatch, missing, extra or odd file."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no bundle directory at {root}")
    return _read_verified(root, f"bundle {root}")


def _read_verified(root: Path, label: str) -> tuple[str, dict[str, bytes]]:
    """read_bundle, with problems reported as ``label: ...``."""
    present = _scan(root, label)
    if CHECKSUMS not in present:
        raise DataLoss(f"{label} has no {CHECKSUMS} file")
    listed_bytes = (root / CHECKSUMS).read_bytes()
    listed = _parse_checksums(listed_bytes)
    _check_present(label, listed, set(present) - {CHECKSUMS})
    files = {rel: (root / rel).read_bytes() for rel in sorted(listed)}
    return _check_listing(label, listed_bytes, {rel: _sha256(data) for rel, data in files.items()}), files


def _check_present(label: str, listed: dict[str, str], on_disk: set[str]) -> None:
    missing = sorted(set(listed) - on_disk)
    if missing:
        raise DataLoss(f"{label}: file(s) listed in {CHECKSUMS} are missing: {shown(missing)}")
    extra = sorted(on_disk - set(listed))
    if extra:
        raise DataLoss(f"{label}: file(s) not listed in {CHECKSUMS}: {shown(extra)}")


def _check_listing(label: str, listed_bytes: bytes, hashes: dict[str, str]) -> str:
    """The version named by CHECKSUMS (``listed_bytes``) once it lists exactly the files of
    ``hashes`` ({relative path: sha256 of its bytes}), canonically; DataLoss otherwise."""
    listed = _parse_checksums(listed_bytes)
    _check_present(label, listed, set(hashes))
    for rel in sorted(listed):
        if hashes[rel] != listed[rel]:
            raise DataLoss(f"{label}: {shown(rel)} has sha256 {hashes[rel]}, {CHECKSUMS} says {listed[rel]}")
    if checksums_bytes(listed) != listed_bytes:
        raise DataLoss(f"{label}: {CHECKSUMS} is not in canonical form (sorted, one '<sha256>  <path>' a line)")
    return _sha256(listed_bytes)


def bundle_version(path: str | Path) -> str:
    """The verified version (hex sha256) of the bundle directory at ``path``."""
    return read_bundle(path)[0]


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed milepost.json of a bundle, checked against its CHECKSUMS entry.

    Only the manifest is hashed, so this stays cheap for large bundles; use
    bundle_version or load to verify the weights too.
    """
    root = Path(path)
    checksums = root / CHECKSUMS
    if not checksums.is_file():
        raise DataLoss(f"bundle {root} has no {CHECKSUMS} file")
    listed = _parse_checksums(checksums.read_bytes())
    if MANIFEST not in listed:
        raise DataLoss(f"bundle {root}: {CHECKSUMS} does not list {MANIFEST}")
    data = (root / MANIFEST).read_bytes()
    if _sha256(data) != listed[MANIFEST]:
        raise DataLoss(f"bundle {root}: {MANIFEST} does not match its sha256 in {CHECKSUMS}")
    return parse_manifest(data)


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest object in ``data``; InvalidArgument if it is not JSON (as manifest_bytes
    writes it: finite numbers, at most MAX_MANIFEST_DEPTH levels deep) or not an object."""
    manifest = bounded_json.loads(data, max_depth=MAX_MANIFEST_DEPTH, what=MANIFEST)
    if not isinstance(manifest, dict):
        raise InvalidArgument(f"{MANIFEST} must hold a JSON object")
    return manifest


def _fresh_sibling(dest: Path, what: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{what}-{uuid.uuid4().hex}"
    tmp.mkdir()
    return tmp


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def write_bundle(path: str | Path, files: dict[str, bytes]) -> str:
    """Write ``files`` (relative path -> bytes) and their CHECKSUMS as a bundle at ``path``.

    The directory appears whole or not at all (written beside it, then renamed). Writing
    the same content where it already is returns its version; anything else already
    at ``path`` raises FileExistsError rather than being overwritten.
    """
    dest = Path(path)
    for rel in files:
        _check_relpath(rel)
    if CHECKSUMS in files:
        raise ValueError(f"{CHECKSUMS} is written by write_bundle itself")
    listing = checksums_bytes({rel: _sha256(data) for rel, data in files.items()})
    version = _sha256(listing)
    if dest.exists() and not _is_empty_dir(dest):
        try:
            if bundle_version(dest) == version:
                return version
        except (DataLoss, OSError):
            pass
        raise FileExistsError(f"{dest} exists and is not this bundle; refusing to overwrite it")
    tmp = _fresh_sibling(dest, "write")
    try:
        for rel, data in {**files, CHECKSUMS: listing}.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def pack(path: str | Path) -> bytes:
    """A tar archive of the (verified) bundle at ``path``, byte-for-byte deterministic:
    members sorted, no timestamps or owners, so equal bundles give equal archives."""
    _, files = read_bundle(path)
    files[CHECKSUMS] = (Path(path) / CHECKSUMS).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            tar.addfile(_tarinfo(rel, len(files[rel])), io.BytesIO(files[rel]))
    return buf.getvalue()


def _checked_members(
    tar: tarfile.TarFile, limits: UnpackLimits,
) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Every member, checked as its header is read and before anything is written: only
    regular files and directories, relative paths inside the destination, no duplicates,
    within the limits on files and expanded bytes. Headers are read one at a time, so an
    archive of a million members stops at the first one past the limit."""
    checked: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    entries: set[PurePosixPath] = set()  # files and folders, those only implied by a path included
    file_paths: set[PurePosixPath] = set()
    total = 0
    while (member := tar.next()) is not None:
        name = member.name.rstrip("/") if member.type == tarfile.DIRTYPE else member.name
        try:
            rel = _check_relpath(name)
        except InvalidArgument as err:
            raise InvalidArgument(f"archive member refused: {err.message}") from err
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) or member.issparse():
            kind = ("link" if (member.issym() or member.islnk())
                    else "sparse file" if member.issparse() else "special file")
            raise InvalidArgument(
                f"archive member {shown(member.name)} is a {kind}; only regular files and directories are allowed"
            )
        if rel in seen:
            raise InvalidArgument(f"archive member {shown(member.name)} appears twice")
        seen.add(rel)
        entries.add(rel)
        entries.update(rel.parents)
        if len(entries) - 1 > limits.max_bundle_files:  # less the root, "."
            raise ResourceExhausted(
                f"bundle archive holds more than {limits.max_bundle_files} files and folders "
                "(the limit max_bundle_files)"
            )
        if member.type != tarfile.DIRTYPE:
            total += member.size
            if total > limits.max_bundle_expanded_bytes:
                raise ResourceExhausted(
                    f"bundle archive expands beyond {limits.max_bundle_expanded_bytes} bytes "
                    "(the limit max_bundle_expanded_bytes)"
                )
            file_paths.add(rel)
        checked.append((member, rel))
    for rel in seen:
        if any(parent in file_paths for parent in rel.parents):
            raise InvalidArgument(f"archive member {shown(str(rel))} lies under a member that is a file")
    return checked


def _archive_size(archive: IO[bytes], limits: UnpackLimits) -> None:
    """Refuse an archive over the size limit, or a compressed one, before reading it as a tar."""
    size = archive.seek(0, io.SEEK_END)
    archive.seek(0)
    if size > limits.max_bundle_bytes:
        raise ResourceExhausted(
            f"bundle archive is {size} bytes, over the limit of {limits.max_bundle_bytes} (max_bundle_bytes)"
        )
    head = archive.read(8)
    archive.seek(0)
    for magic, kind in COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise InvalidArgument(f"bundle archive is {kind}-compressed; send the plain tar that bundle.pack makes")


def _copy_counted(source: IO[bytes], out: IO[bytes], budget: int) -> tuple[int, str]:
    """Copy ``source`` to ``out``, refusing once more than ``budget`` bytes came: (bytes, sha256)."""
    digest = hashlib.sha256()
    written = 0
    while chunk := source.read(COPY_CHUNK):
        written += len(chunk)
        if written > budget:
            raise ResourceExhausted("bundle archive expands beyond its limit while unpacking (max_bundle_expanded_bytes)")
        digest.update(chunk)
        out.write(chunk)
    return written, digest.hexdigest()


def unpack(archive: bytes | IO[bytes], dest: str | Path, *, limits: UnpackLimits | None = None) -> str:
    """Extract a bundle archive (as made by ``pack``: bytes, or a seekable binary file)
    into ``dest`` and return its verified version.

    Unsafe archives (absolute or '..' paths, links, devices, sparse files) raise
    InvalidArgument and archives over ``limits`` (size as sent, bytes expanded, files)
    ResourceExhausted, both before anything is written; the bytes written are counted
    again as they are written. An unreadable archive or one whose content fails
    verification raises DataLoss and leaves nothing behind. Messages name the member
    and the limit, never a path of this machine. ``dest`` must not exist or be an
    empty directory.
    """
    limits = limits or UnpackLimits()
    dest = Path(dest)
    if dest.exists() and not _is_empty_dir(dest):
        raise FileExistsError(f"{dest} exists and is not an empty directory")
    source = io.BytesIO(archive) if isinstance(archive, (bytes, bytearray, memoryview)) else archive
    _archive_size(source, limits)
    try:
        tar = tarfile.open(fileobj=source, mode="r:")
        members = _checked_members(tar, limits)
    except tarfile.TarError as err:
        raise DataLoss(f"bundle archive is not a readable tar: {err}") from err
    tmp = _fresh_sibling(dest, "unpack")
    try:
        budget = limits.max_bundle_expanded_bytes
        hashes: dict[str, str] = {}
        for member, rel in members:
            target = tmp.joinpath(*rel.parts)
            if member.type == tarfile.DIRTYPE:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member)
            if data is None:
                raise DataLoss(f"archive member {shown(member.name)} has no data")
            with data, open(target, "xb") as out:
                written, hashes[rel.as_posix()] = _copy_counted(data, out, budget)
            budget -= written
            if written != member.size:
                raise DataLoss(f"archive member {shown(member.name)} is truncated")
        if CHECKSUMS not in hashes:
            raise DataLoss(f"bundle archive has no {CHECKSUMS} file")
        del hashes[CHECKSUMS]
        if (tmp / CHECKSUMS).stat().st_size > (len(hashes) + 1) * (64 + 2 + MAX_PATH_CHARS + 1):
            raise DataLoss(f"bundle archive: {CHECKSUMS} is longer than a listing of its files can be")
        version = _check_listing("bundle archive", (tmp / CHECKSUMS).read_bytes(), hashes)
        os.rename(tmp, dest)
    except tarfile.TarError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataLoss(f"bundle archive is not a readable tar: {err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version
