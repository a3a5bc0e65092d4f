"""Pushing crafted archives to a real coordinator: bombs, unsafe members and limits.

The coordinator of this module runs with small limits (set through the environment,
as an operator would), so each limit can be crossed with a small archive. Every
refusal must name the limit or the member, never a path of the server, and leave
nothing behind in the artifact store. The sparse and gzip bombs are the ones of the
security issue: about 10 KB and 300 KB that would expand to 300 MiB.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from milepost.core import model_upload
from milepost.core.errors import DataLoss, InvalidArgument, MilepostError, ResourceExhausted
from scoring_core import bundle
from tests.security.archives import BOMB_BYTES, MIB, UNSAFE_MEMBERS, checksummed, gzip_bomb, regular, sparse_bomb, tar

LIMITS = {"MAX_BUNDLE_BYTES": MIB, "MAX_BUNDLE_EXPANDED_BYTES": 256 << 10, "MAX_BUNDLE_FILES": 50}


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LIMITS.items():
        monkeypatch.setenv(f"MILEPOST_{name}", str(value))


@pytest.fixture
def cluster(limits, cluster):
    """The shared cluster (tests/conftest.py), started once the limits are set."""
    return cluster


# ---- what a refusal may say and leave ----
def push(client, archive: bytes, name: str = "crafted"):
    return client._call("PushModel", model_upload.push_requests(name, archive))


class LargestFile:
    """The largest file seen under a directory while the block runs (polled every few ms)."""

    def __init__(self, root: Path) -> None:
        self.root, self.largest, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for folder, _, names in os.walk(self.root):
                for name in names:
                    try:
                        self.largest = max(self.largest, os.path.getsize(os.path.join(folder, name)))
                    except OSError:
                        pass  # gone between the listing and the stat
            time.sleep(0.002)

    def __enter__(self) -> LargestFile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def refused(cluster, archive: bytes, error: type[MilepostError], *needles: str) -> str:
    """Push ``archive``; it must be refused with ``error`` naming every needle, quickly, without
    a server path in the message, without a large file ever written and with nothing left."""
    artifacts = cluster.coordinator.artifacts.root
    with cluster.client as client, LargestFile(cluster.coordinator.config.data_dir) as seen:
        started = time.monotonic()
        with pytest.raises(error) as caught:
            push(client, archive)
        elapsed = time.monotonic() - started
        assert client.list_models() == []
    message = caught.value.message
    for needle in needles:
        assert needle in message, message
    assert str(cluster.coordinator.config.data_dir) not in message and "/tmp" not in message, message
    assert len(message) < 300, message
    assert elapsed < 10, f"refusal took {elapsed:.1f}s"
    assert seen.largest < 2 * MIB, f"a {seen.largest}-byte file was written under the data directory"
    assert sorted(p.name for p in artifacts.iterdir()) == [], "the refused push left files behind"
    return message


# ---- bombs ----
def test_the_sparse_bomb_is_real_and_refused_before_it_expands(cluster) -> None:
    archive = sparse_bomb()
    (member,) = tarfile.open(fileobj=io.BytesIO(archive)).getmembers()
    assert len(archive) < 20_000 and member.issparse() and member.size == BOMB_BYTES  # what the issue describes
    refused(cluster, archive, InvalidArgument, "sparse file", "'arrays/w.npy'")


def test_a_gzip_bomb_is_refused_without_being_decompressed(cluster) -> None:
    archive = gzip_bomb()
    assert len(archive) < 400_000
    refused(cluster, archive, InvalidArgument, "gzip-compressed")


def test_the_bombs_are_refused_by_unpack_itself_with_its_default_limits(tmp_path) -> None:
    for archive, needle in ((sparse_bomb(), "sparse file"), (gzip_bomb(), "gzip-compressed")):
        with pytest.raises(InvalidArgument, match=needle):
            bundle.unpack(archive, tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []


# ---- limits ----
def test_an_archive_over_max_bundle_bytes_is_refused_as_it_arrives(cluster) -> None:
    refused(cluster, os.urandom(2 * MIB), ResourceExhausted, "max_bundle_bytes", str(MIB))


def test_an_archive_expanding_beyond_max_bundle_expanded_bytes_is_refused(cluster) -> None:
    archive = checksummed({"milepost.json": b"{}", "arrays/w.npy": os.urandom(600 << 10)})
    assert len(archive) < MIB  # under the size limit: only the expanded size is over
    refused(cluster, archive, ResourceExhausted, "max_bundle_expanded_bytes", str(256 << 10))


def test_more_files_than_max_bundle_files_are_refused(cluster) -> None:
    archive = tar(*(regular(f"arrays/{i}.npy", b"x") for i in range(200)))
    refused(cluster, archive, ResourceExhausted, "max_bundle_files", "50")


def test_folders_a_path_implies_count_as_files(cluster) -> None:
    archive = tar(regular("d/" * 60 + "w.npy"))
    refused(cluster, archive, ResourceExhausted, "max_bundle_files")


# ---- unsafe members ----
@pytest.mark.parametrize("members, needle", UNSAFE_MEMBERS.values(), ids=UNSAFE_MEMBERS.keys())
def test_unsafe_members_are_refused(cluster, members, needle) -> None:
    refused(cluster, tar(*members), InvalidArgument, needle)


def test_a_ten_thousand_character_member_name_gives_a_short_message(cluster) -> None:
    message = refused(cluster, tar(regular("a" * 10_000)), InvalidArgument, "10000 characters", "too long")
    assert message.count("a") < 200


def test_content_that_fails_verification_names_no_server_path(cluster) -> None:
    archive = checksummed({"milepost.json": b"{}", "arrays/w.npy": b"weights"}, lie=True)
    refused(cluster, archive, DataLoss, "bundle archive", "'arrays/w.npy'")


def test_a_real_bundle_still_pushes_under_the_limits(cluster, logistic_model) -> None:
    _, bundle_dir, version, _ = logistic_model
    with cluster.client as client:
        assert client.push_model(bundle_dir, "churn").version == version
        assert [m.version for m in client.list_models("churn")] == [version]


def test_the_limits_are_settings_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from milepost.core.settings import read_settings

    for name in LIMITS:
        monkeypatch.delenv(f"MILEPOST_{name}", raising=False)
    defaults = bundle.UnpackLimits.of(read_settings())
    assert defaults == bundle.UnpackLimits() == bundle.UnpackLimits(2 << 30, 2 << 30, 10_000)
    monkeypatch.setenv("MILEPOST_MAX_BUNDLE_FILES", "7")
    assert bundle.UnpackLimits.of(read_settings()).max_bundle_files == 7
