"""Crafted tar archives for the tests that push or unpack them: unsafe members and bombs."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

from scoring_core import bundle

MIB = 1 << 20
BOMB_BYTES = 300 * MIB  # what the security issue saw a 20 KB archive expand to


def tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A PAX tar of (header, payload) members, payload None for links and special files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, payload in members:
            archive.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def regular(name: str, payload: bytes = b"hello") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    """A member of type ``kind``: a link to ``linkname``, a device, a fifo."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


def sparse_bomb(size: int = BOMB_BYTES) -> bytes:
    """About 10 KB: a PAX (GNU sparse 0.1) member of ``size`` bytes, all a hole but its last 512."""
    info, payload = regular("arrays/w.npy", b"x" * 512)
    info.pax_headers = {"GNU.sparse.map": f"{size - 512},512", "GNU.sparse.size": str(size)}
    return tar((info, payload))


def gzip_bomb(size: int = BOMB_BYTES) -> bytes:
    """About 300 KB: a gzip of a tar holding one file of ``size`` zero bytes, built from
    gzip members of 1 MiB of zeros each (so building it costs nothing)."""
    info = tarfile.TarInfo("arrays/w.npy")
    info.size = size
    zeros = gzip.compress(bytes(MIB), compresslevel=9)
    return gzip.compress(info.tobuf(tarfile.PAX_FORMAT)) + zeros * (size // MIB) + gzip.compress(bytes(10240))


def checksummed(files: dict[str, bytes], *, lie: bool = False) -> bytes:
    """A tar of ``files`` plus their CHECKSUMS (the first hash wrong when ``lie``)."""
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    if lie:
        hashes[sorted(hashes)[0]] = "0" * 64
    listing = bundle.checksums_bytes(hashes)
    return tar(*(regular(rel, data) for rel, data in {**files, bundle.CHECKSUMS: listing}.items()))


# Archives whose members unpack must refuse before writing anything: id -> (members, what the message says).
UNSAFE_MEMBERS: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "dotdot": ([regular("../x")], "'../x'"),
    "nested-dotdot": ([regular("arrays/../../x")], "'arrays/../../x'"),
    "absolute": ([regular("/etc/evil")], "'/etc/evil'"),
    "symlink": ([special("milepost.json", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
    "hardlink": ([regular("a"), special("b", tarfile.LNKTYPE, "a")], "is a link"),
    "char-device": ([special("null", tarfile.CHRTYPE)], "special file"),
    "block-device": ([special("disk", tarfile.BLKTYPE)], "special file"),
    "fifo": ([special("pipe", tarfile.FIFOTYPE)], "special file"),
    "duplicate": ([regular("a"), regular("a")], "twice"),
    "file-as-folder": ([regular("a"), regular("a/b")], "under a member that is a file"),
}
