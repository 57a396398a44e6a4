"""Power-cut-safe file writes: a file replaced atomically and durably, and the folders
it lives in made durable too.

A gateway loses power without warning. Writing a file and renaming it into place is
atomic for readers but not durable: until the kernel writes back (tens of seconds), a
power cut can leave the new name pointing at an empty or partial file, or bring the old
file back. :func:`write_atomic` closes both gaps: the data is ``fsync``-ed under a
temporary name *before* the rename, and the folder is ``fsync``-ed *after* it, so when
it returns the new content is on disk under the final name. :func:`make_dirs` does the
same for folders it creates (the new entry in its parent is ``fsync``-ed).

POSIX only (Linux, macOS). "Durable" means what ``fsync`` promises: storage whose write
cache ignores flushes (some SD cards, USB sticks) can still lose data. Where the OS or
file system refuses to open a folder read-only or to ``fsync`` it (``EACCES`` on a folder
without read permission, ``EINVAL`` on some network or FUSE file systems), the folder's
``fsync`` is skipped with a DEBUG log: the file's own data is still synced.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

__all__ = ["SQLITE_SIDECARS", "fsync_dir", "make_dirs", "move_with_sidecars", "write_atomic"]

log = logging.getLogger("edge.fsutil")

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database ``NAME`` (``NAME-wal``, ...): a damaged database is
moved aside with them, or SQLite would pair the old log with the new file."""
# fsync of a folder not supported by the file system: skipped (see the module docstring).
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` the folder ``path``, making the names created, renamed or deleted in it
    durable.

    Skipped with a DEBUG log where the folder cannot be opened read-only (no read
    permission) or the file system does not support ``fsync`` on a folder.

    Raises:
        OSError: the folder is missing, or ``fsync`` failed (``EIO``: the storage
            reported a write error).
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except (PermissionError, IsADirectoryError) as exc:
        log.debug("folder %s not synced: cannot open it read-only (%s)", path, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
        log.debug("folder %s not synced: the file system refuses (%s)", path, exc)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    tmp: str | os.PathLike[str] | None = None,
) -> None:
    """Replace (or create) the file ``path`` with ``data``, atomically and durably.

    Steps: write ``data`` to a temporary file in the same folder, ``fsync`` it, rename it
    onto ``path`` (:func:`os.replace`), ``fsync`` the folder (:func:`fsync_dir`).

    After it returns, ``path`` holds exactly ``data`` on disk: a power cut from then on
    keeps it. If it raises or the power is cut before it returns, ``path`` holds either
    its old content (or does not exist, if it did not) or exactly ``data`` -- never a
    partial file; a power cut may leave the temporary file behind (callers that care
    sweep it by name). On an error the temporary file is removed and ``path`` is left
    alone, except when the folder's ``fsync`` fails after the rename (``EIO``): then
    ``path`` already holds ``data`` but it may not be durable.

    Args:
        path: the file to write; its folder must exist.
        data: the file's new bytes.
        mode: permission bits of the new file (e.g. the old file's
            ``st_mode & 0o7777``), set before any data is written; ``None``: ``0o666``
            less the umask, as :func:`open` would.
        tmp: the temporary file's path, in the same folder as ``path``; default
            ``.<name>.tmp-<pid>``. An existing file there is overwritten.

    Raises:
        OSError: cannot write (disk full, folder missing or not writable, ...).
        ValueError: ``tmp`` is not in ``path``'s folder.

    Not safe for two writers of the same ``tmp`` at once (the default name is per process).
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}") if tmp is None else Path(tmp)
    if temp.parent != target.parent or temp.name == target.name:
        raise ValueError(f"tmp {str(temp)!r} must be another name in {str(target.parent)!r}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o666)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            log.debug("could not remove %s", temp)
        raise
    fsync_dir(target.parent)


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create the folder ``path`` and any missing parents (like ``mkdir -p``), making each
    new folder durable by ``fsync``-ing its parent. An existing folder costs one ``mkdir``
    call and no ``fsync``.

    Raises:
        OSError: cannot create it (``FileExistsError``: ``path`` exists and is not a
            folder; ``NotADirectoryError``: a parent is a file; ``FileNotFoundError``: a
            parent was removed meanwhile -- callers that race a cleaner retry).
    """
    target = Path(path)
    try:
        created = _mkdir(target)
    except FileNotFoundError:
        if target.parent == target:
            raise
        make_dirs(target.parent)
        created = _mkdir(target)
    if created:
        fsync_dir(target.parent)


def _mkdir(target: Path) -> bool:
    """``os.mkdir``; ``False`` when ``target`` is a folder already (another error raises)."""
    try:
        os.mkdir(target)
    except FileExistsError:
        if target.is_dir():
            return False
        raise
    return True


def move_with_sidecars(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename the SQLite database ``src`` to ``dst``, and each of its
    :data:`SQLITE_SIDECARS` files that exists to ``dst`` plus the same suffix (no fsync:
    callers sync the folder once they are done).

    Raises:
        OSError: a rename failed (the ones before it stay done).
    """
    os.rename(src, dst)
    for suffix in SQLITE_SIDECARS:
        extra = f"{os.fspath(src)}{suffix}"
        if os.path.exists(extra):
            os.rename(extra, f"{os.fspath(dst)}{suffix}")
