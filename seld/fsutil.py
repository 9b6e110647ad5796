"""Atomic file writes: write under a temporary name in the target folder, then rename."""

from __future__ import annotations

import os
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
