"""Atomic file writes (write under a temporary name in the target folder, then rename), and
the environment's errors (a full disk, no permission) told apart from the program's."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOST = socket.gethostname().replace(".", "-")
#: A temporary file of a writer on another host (shared storage) counts as abandoned this late.
FOREIGN_TEMPORARY_AGE_S = 24 * 3600


def writer_alive(temporary: Path) -> bool:
    """Whether the process that is writing ``temporary`` (a name made by :func:`atomic_path`)
    may still be running: it is on this host and its PID exists, or it is on another host and
    the file changed within the last day. Names of any other form have no known writer."""
    parts = temporary.name[: -len(".tmp")].rsplit(".", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    _, host, pid, _ = parts
    if host != _HOST:
        try:
            return time.time() - temporary.stat().st_mtime < FOREIGN_TEMPORARY_AGE_S
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path, pattern: str = ".*.tmp", recursive: bool = False) -> int:
    """Delete the temporary files (names made by :func:`atomic_path`) matching ``pattern`` in
    ``folder`` (and its sub-folders when ``recursive``) that an interrupted writer left, never
    one whose writer may still be running (:func:`writer_alive`); returns how many."""
    if not folder.is_dir():
        return 0
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    stale = [path for path in found if not writer_alive(path)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (with the usual
    permissions, not mkstemp's 0600), on any error or interrupt it is deleted. Readers never see
    a partial file; leftovers of a killed process match ``.<name>.<host>.<pid>.*.tmp``, which
    names their writer (see :func:`writer_alive`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{_HOST}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: what the environment, not the program, got wrong: errno -> the cause in words
ENVIRONMENT_ERRORS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.EMFILE: "too many open files (raise `ulimit -n`)",
    errno.ENFILE: "too many open files in the system",
}
_ERRNO_IN_MESSAGE = re.compile(r"errno = (\d+)")


def environment_problem(exc: BaseException) -> str | None:
    """The cause in words when ``exc`` is an :class:`OSError` of the environment (a full disk,
    no permission, a read-only file system, too many open files: :data:`ENVIRONMENT_ERRORS`),
    with the file it names; ``None`` for any other exception, which is a bug or bad input and
    keeps its own message. HDF5's errors carry the errno in their message only."""
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code is None:
        found = _ERRNO_IN_MESSAGE.search(str(exc))
        code = int(found.group(1)) if found else None
    cause = ENVIRONMENT_ERRORS.get(code) if code is not None else None
    if cause is None:
        return None
    where = exc.filename or _name_in_message(str(exc))
    return f"{where}: {cause}" if where else cause


def _name_in_message(message: str) -> str | None:
    found = re.search(r"name = '([^']+)'", message)
    return found.group(1) if found else None
