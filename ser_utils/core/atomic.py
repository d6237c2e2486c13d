"""Write files so that a reader sees the old file or the whole new one, never half of one.

Every file the package writes (``predict`` / ``evaluate`` outputs, result tables, reports, the README's
generated sections, caches, baseline model configs) goes through :func:`atomic_open`: the content goes
to a temporary file in the target's own folder, is flushed and fsynced, and is then renamed over the
target with ``os.replace`` (atomic within one file system). When anything fails on the way - a full
disk, a quota, a folder removed meanwhile, an interrupt - the temporary file is removed, the old file
is left as it was, and :class:`WriteError` (an ``OSError``) says in one line which path and why.

One file is written as it grows, on purpose: a notebook kernel's own log (``<work dir>/executed/<name>.log``,
``pipeline``), which must show what the kernel said up to the moment it stopped. It is a log, never read
back as a result.

Temporary files are named ``.<name>.<random>.tmp``: hidden, and never matching a reader's ``*.csv`` or
``*.npy`` pattern, should a killed process leave one behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO


class WriteError(OSError):
    """A file that could not be written; an earlier file of that name is unchanged. ``str()`` is one line
    naming the path and the cause (``strerror``, e.g. "No space left on device")."""

    def __init__(self, path: str | Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"{self.filename}: not written ({self.strerror}); any earlier file there is left as it was"


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _target(path: str | Path) -> Path:
    # Writing through a symlink replaces the file it points to, not the link.
    return Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)


def _mode(target: Path) -> int:
    # The replaced file keeps its permissions; a new one gets what open() would have given it.
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing (``mode`` ``"w"`` or ``"wb"``) so that it appears only once complete.

    >>> with atomic_open("scores.csv", newline="") as handle:      # doctest: +SKIP
    ...     table.to_csv(handle, index=False)

    On leaving the block the file is flushed, fsynced and renamed into place (:func:`atomic_path`). An error
    inside the block or while writing removes the temporary file and leaves the target untouched;
    ``OSError`` is raised as :class:`WriteError` naming the target.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode {mode!r}: atomic_open writes whole files, 'w' or 'wb'")
    text = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    with atomic_path(path) as temporary, open(temporary, mode, **text) as handle:
        yield handle


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (safetensors' ``save_file``,
    papermill), and the one rename-or-clean-up of the package: when the block succeeds the file is fsynced,
    given the target's permissions and renamed into place; when it fails it is removed (:class:`WriteError`
    for an ``OSError``) and the target is left as it was. ``suffix`` ends the temporary name, for writers
    that check it (papermill warns about an output not ending in ``.ipynb``)."""
    target = _target(path)
    temporary = None
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".",
                                         prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
        yield Path(temporary)
        _fsync_file(temporary)
        os.chmod(temporary, _mode(target))
        os.replace(temporary, target)
        temporary = None
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise WriteError(target, err) from err
    finally:
        if temporary is not None:
            with suppress(OSError):
                os.unlink(temporary)
    _sync_folder(target.parent)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    # The rename itself reaches the disk with the folder's metadata; not every file system allows this.
    with suppress(OSError):
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`); returns ``path``."""
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); returns ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_to_csv(frame, path: str | Path, **to_csv) -> Path:
    """``frame.to_csv(path, **to_csv)`` (a pandas DataFrame), written atomically; returns ``path``."""
    with atomic_open(path, "w", newline="") as handle:  # newline="": the csv module ends its own lines
        frame.to_csv(handle, **to_csv)
    return Path(path)


__all__ = ["WriteError", "atomic_open", "atomic_path", "atomic_to_csv", "atomic_write_bytes", "atomic_write_text"]
