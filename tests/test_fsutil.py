"""edge.fsutil on a real folder: atomic replacement (old or new content, never partial, no
temporary file left after a failure), the file and its folder fsynced in the right order,
permissions, and folders created durably."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

from edge.fsutil import fsync_dir, make_dirs, write_atomic
from tests.fsfaults import FsyncRecorder, file_size_limit

OLD = b"old content\n"
NEW = bytes(range(256)) * 4096  # 1 MiB


def test_write_atomic_creates_then_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    write_atomic(path, OLD)
    assert path.read_bytes() == OLD
    write_atomic(path, NEW)
    assert path.read_bytes() == NEW
    assert os.listdir(tmp_path) == ["f.bin"]


def test_mode_is_exact_and_default_follows_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        write_atomic(tmp_path / "a", OLD, mode=0o640)
        write_atomic(tmp_path / "b", OLD)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


@pytest.mark.parametrize("existed", [True, False])
def test_a_write_failing_midway_leaves_the_old_file_and_no_temp(
    tmp_path: Path, existed: bool
) -> None:
    path = tmp_path / "f.bin"
    if existed:
        path.write_bytes(OLD)
    with file_size_limit(64 * 1024), pytest.raises(OSError) as exc:
        write_atomic(path, NEW)  # 64 KiB get written, then EFBIG
    assert exc.value.errno == errno.EFBIG
    if existed:
        assert path.read_bytes() == OLD
        assert os.listdir(tmp_path) == ["f.bin"]
    else:
        assert os.listdir(tmp_path) == []


def test_a_failed_rename_removes_the_temp_and_keeps_the_target(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.mkdir()
    (path / "inside").write_bytes(OLD)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_atomic(path, NEW)
    assert os.listdir(tmp_path) == ["f"] and (path / "inside").read_bytes() == OLD


def test_a_missing_folder_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "f", NEW)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_clear_error_and_the_old_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(OLD)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_atomic(path, NEW)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == OLD and os.listdir(tmp_path) == ["f"]


def test_tmp_must_be_another_name_in_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for tmp in (tmp_path / "sub" / "f.tmp", tmp_path / "f"):
        with pytest.raises(ValueError):
            write_atomic(tmp_path / "f", NEW, tmp=tmp)
    assert os.listdir(tmp_path) == ["sub"]


def test_the_data_is_synced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path.resolve()
    path = root / "f.bin"
    path.write_bytes(OLD)
    rec = FsyncRecorder(monkeypatch, probe=path.read_bytes)
    write_atomic(path, NEW, tmp=root / "f.bin.part")
    assert rec.calls[0].path == root / "f.bin.part" and rec.calls[0].probe == OLD
    assert rec.calls[1].path == root and rec.calls[1].probe == NEW
    assert len(rec.calls) == 2
    rec.clear()
    write_atomic(path, OLD)  # the default temporary name
    assert rec.paths == [root / f".f.bin.tmp-{os.getpid()}", root]


def test_make_dirs_syncs_the_parent_of_each_new_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path.resolve()
    rec = FsyncRecorder(monkeypatch)
    make_dirs(root / "a" / "b" / "c")
    assert (root / "a" / "b" / "c").is_dir()
    assert sorted(rec.paths) == [root, root / "a", root / "a" / "b"]
    rec.clear()
    make_dirs(root / "a" / "b" / "c")  # exists: nothing to sync
    make_dirs(root / "a" / "b" / "d")
    assert rec.paths == [root / "a" / "b"]
    (root / "file").write_bytes(OLD)
    with pytest.raises(FileExistsError):
        make_dirs(root / "file")
    with pytest.raises(NotADirectoryError):
        make_dirs(root / "file" / "x")


def test_fsync_dir_skips_only_a_refusing_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusals are faked (no file system here refuses ``fsync`` on a folder)."""
    fsync_dir(tmp_path)  # a real one: no error
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "nope")

    def refuse(code: int) -> None:
        def fsync(_fd: int) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "fsync", fsync)

    refuse(errno.EINVAL)
    with caplog.at_level(logging.DEBUG, logger="edge.fsutil"):
        fsync_dir(tmp_path)
    assert "not synced" in caplog.text
    refuse(errno.EIO)
    with pytest.raises(OSError) as exc:
        fsync_dir(tmp_path)
    assert exc.value.errno == errno.EIO


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens folders without read permission")
def test_fsync_dir_skips_a_folder_it_cannot_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "wx"
    d.mkdir(mode=0o300)
    try:
        with caplog.at_level(logging.DEBUG, logger="edge.fsutil"):
            fsync_dir(d)
    finally:
        d.chmod(0o755)
    assert "cannot open it read-only" in caplog.text
