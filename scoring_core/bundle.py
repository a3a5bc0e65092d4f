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
from pathlib import Path, PurePosixPath
from typing import Any

from milepost.core.errors import DataLoss, InvalidArgument

MANIFEST = "milepost.json"
CHECKSUMS = "CHECKSUMS"
FORMAT_VERSION = 1

# unpack refuses archives that would write more than this (sum of member sizes).
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_MEMBERS = 100_000


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON for a manifest: sorted keys, fixed separators, no NaN."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def _check_relpath(rel: str) -> PurePosixPath:
    """A relative path that stays inside its root, or InvalidArgument."""
    if not rel or "\x00" in rel or "\n" in rel or "\\" in rel:
        raise InvalidArgument(f"path {rel!r} has forbidden characters")
    path = PurePosixPath(rel)
    if path.is_absolute() or rel.startswith("/"):
        raise InvalidArgument(f"path {rel!r} is absolute")
    if any(part in ("..", ".", "") for part in rel.split("/")):
        raise InvalidArgument(f"path {rel!r} is not a plain relative path (no '..' or '.' parts)")
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
            raise DataLoss(f"CHECKSUMS line {number} is malformed: {line!r}")
        listed[rel] = digest
    return listed


def _scan(root: Path) -> list[str]:
    """Relative posix paths of every file under ``root``; links and special files are refused."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            mode = full.lstat().st_mode
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise DataLoss(f"bundle {root}: {rel!r} is a symbolic link")
            if stat.S_ISREG(mode):
                found.append(rel)
            elif not stat.S_ISDIR(mode):
                raise DataLoss(f"bundle {root}: {rel!r} is not a regular file")
    return found


def read_bundle(path: str | Path) -> tuple[str, dict[str, bytes]]:
    """Verify a bundle directory and return (version, {relative path: bytes}) for every
    file but CHECKSUMS. DataLoss on any hash mismatch, missing, extra or odd file."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no bundle directory at {root}")
    present = _scan(root)
    if CHECKSUMS not in present:
        raise DataLoss(f"bundle {root} has no {CHECKSUMS} file")
    listed_bytes = (root / CHECKSUMS).read_bytes()
    listed = _parse_checksums(listed_bytes)
    on_disk = set(present) - {CHECKSUMS}
    missing = sorted(set(listed) - on_disk)
    if missing:
        raise DataLoss(f"bundle {root}: file(s) listed in {CHECKSUMS} are missing: {missing}")
    extra = sorted(on_disk - set(listed))
    if extra:
        raise DataLoss(f"bundle {root}: file(s) not listed in {CHECKSUMS}: {extra}")
    files: dict[str, bytes] = {}
    for rel in sorted(listed):
        data = (root / rel).read_bytes()
        actual = _sha256(data)
        if actual != listed[rel]:
            raise DataLoss(f"bundle {root}: {rel} has sha256 {actual}, {CHECKSUMS} says {listed[rel]}")
        files[rel] = data
    if checksums_bytes(listed) != listed_bytes:
        raise DataLoss(f"bundle {root}: {CHECKSUMS} is not in canonical form (sorted, one '<sha256>  <path>' a line)")
    return _sha256(listed_bytes), files


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
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgument(f"{MANIFEST} is not valid JSON: {err}") from err
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


def _checked_members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Every member, checked before anything is written: only regular files and
    directories, relative paths inside the destination, no duplicates, bounded size."""
    members = tar.getmembers()
    if len(members) > MAX_MEMBERS:
        raise InvalidArgument(f"archive has {len(members)} members; at most {MAX_MEMBERS} are allowed")
    checked: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    file_paths: set[PurePosixPath] = set()
    total = 0
    for member in members:
        name = member.name.rstrip("/") if member.type == tarfile.DIRTYPE else member.name
        try:
            rel = _check_relpath(name)
        except InvalidArgument as err:
            raise InvalidArgument(f"archive member {member.name!r} is refused: {err}") from err
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            kind = "link" if (member.issym() or member.islnk()) else "special file"
            raise InvalidArgument(
                f"archive member {member.name!r} is a {kind}; only regular files and directories are allowed"
            )
        if rel in seen:
            raise InvalidArgument(f"archive member {member.name!r} appears twice")
        seen.add(rel)
        if member.type != tarfile.DIRTYPE:
            total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise InvalidArgument(f"archive expands beyond {MAX_UNPACKED_BYTES} bytes")
            file_paths.add(rel)
        checked.append((member, rel))
    for rel in seen:
        if any(parent in file_paths for parent in rel.parents):
            raise InvalidArgument(f"archive member {str(rel)!r} lies under a member that is a file")
    return checked


def unpack(data: bytes, dest: str | Path) -> str:
    """Extract a bundle archive (as made by ``pack``) into ``dest`` and return its verified
    version.

    Unsafe archives (absolute or '..' paths, links, devices, over MAX_UNPACKED_BYTES)
    raise InvalidArgument before anything is written; an unreadable archive or one whose
    content fails verification raises DataLoss and leaves nothing behind. ``dest`` must
    not exist or be an empty directory.
    """
    dest = Path(dest)
    if dest.exists() and not _is_empty_dir(dest):
        raise FileExistsError(f"{dest} exists and is not an empty directory")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = _checked_members(tar)
    except tarfile.TarError as err:
        raise DataLoss(f"bundle archive is not a readable tar: {err}") from err
    tmp = _fresh_sibling(dest, "unpack")
    try:
        for member, rel in members:
            target = tmp.joinpath(*rel.parts)
            if member.type == tarfile.DIRTYPE:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise DataLoss(f"archive member {member.name!r} has no data")
            with source, open(target, "xb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                written = out.tell()
            if written != member.size:
                raise DataLoss(f"archive member {member.name!r} is truncated")
        version = bundle_version(tmp)
        os.rename(tmp, dest)
    except tarfile.TarError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataLoss(f"bundle archive is not a readable tar: {err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version
