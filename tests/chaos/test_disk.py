"""A data directory the coordinator cannot write: a clear error naming it, never a traceback.

Before, a read-only data directory stopped `milepost coordinator` with a raw
``sqlite3.OperationalError`` traceback, and a push on a full disk answered
"INTERNAL ... see the server log". Both are the machine's condition, not a bug.

Root ignores file modes, so as root the read-only directory is a read-only bind
mount; otherwise it is a chmod. A full disk is a 4 MiB tmpfs filled up, which
needs root to mount: without it that one case is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from milepost.client import Client
from milepost.core.errors import ResourceExhausted
from tests.conftest import milepost_cmd
from tests.test_coordinator import start, stop


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory`` as this process sees it when it cannot write there."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    view = directory.parent / f"{directory.name}-ro"
    view.mkdir()
    if not (_mount("--bind", str(directory), str(view)) and _mount("-o", "remount,bind,ro", str(view))):
        subprocess.run(["umount", str(view)], capture_output=True)
        pytest.skip("running as root, and a read-only bind mount is not allowed here (chmod means nothing to root)")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def _coordinator_fails(data_dir: Path) -> str:
    done = subprocess.run(milepost_cmd("coordinator", "--data-dir", str(data_dir), "--port", "0"),
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    return done.stderr


def test_read_only_data_directory_is_a_clear_error_at_start(tmp_path) -> None:
    used = tmp_path / "used"  # a data directory a coordinator has run in
    process, _ = start("coordinator", used)
    stop(process)
    (tmp_path / "empty").mkdir()
    for name in ("used", "empty"):
        with read_only(tmp_path / name) as data_dir:
            error = _coordinator_fails(data_dir)
            assert "FAILED_PRECONDITION" in error and str(data_dir) in error and "--data-dir" in error, error
    print("read-only data directory:", error.strip())


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)):
        pytest.skip("mounting a 4 MiB tmpfs needs root (or CAP_SYS_ADMIN); the full-disk case cannot run here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_push_on_a_full_disk_is_resource_exhausted_naming_the_directory(small_disk, logistic_model) -> None:
    _, bundle_dir, version, _ = logistic_model
    data_dir = small_disk / "coordinator"
    process, state = start("coordinator", data_dir)
    filler = small_disk / "filler"
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        with Client(state["coordinator"]) as client:
            with pytest.raises(ResourceExhausted) as caught:
                client.push_model(bundle_dir, "lr")
            assert str(data_dir) in caught.value.message and "full" in caught.value.message, caught.value.message
            done = subprocess.run(milepost_cmd("models", "push", str(bundle_dir), "--name", "lr",
                                               "--coordinator", state["coordinator"]),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 1 and "RESOURCE_EXHAUSTED" in done.stderr and "Traceback" not in done.stderr
            assert not [p.name for p in (data_dir / "artifacts").iterdir()]  # nothing half written is left
            filler.unlink()  # room again: the same push goes through
            assert client.push_model(bundle_dir, "lr").version == version
        print("full disk:", done.stderr.strip())
    finally:
        if process.poll() is None:
            stop(process)
