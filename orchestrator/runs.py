"""Run folders: safe names, one writer at a time, and no silent reuse with other settings.

- A run name is one path component of letters, digits, ``.``, ``_`` and ``-`` (no separator, no
  ``..``, nothing absolute), so ``<workspace>/runs/<name>`` stays inside the workspace.
- :class:`RunLock` holds an exclusive lock on ``<run>/.lock`` while a process writes the run
  (``fcntl.flock`` through the ``filelock`` package). The holder's PID, host and start time go
  to ``<run>/lock.json``, so a refused second writer can say who holds it. The operating system
  releases the lock when its holder dies, however it dies, so a stale lock is simply taken over.
- :func:`check_same_settings` refuses to continue a run whose recorded settings differ from the
  new ones, naming the differing keys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from filelock import FileLock, Timeout

from seld.errors import SeldError
from seld.fsutil import atomic_path

#: how a cv run's folds train: ``task`` (one Ray task per fold, one worker), ``ray-train`` (a
#: Ray Train ``TorchTrainer`` per stage), ``auto`` (Ray Train only when data parallel)
Trainer = Literal["auto", "task", "ray-train"]
TRAINERS: tuple[str, ...] = get_args(Trainer)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def interrupt(signum: int, frame: object) -> None:
    """A signal handler that ends the program as Ctrl-C does (``KeyboardInterrupt``), so that
    every ``with`` block unwinds: Ray shut down, MLflow runs closed, temporaries deleted."""
    raise KeyboardInterrupt(f"signal {signum}")


class RunError(SeldError, ValueError):
    """A run cannot be started as asked (bad name, in use, other settings); the message says
    why and what to do."""


def validate_run_name(name: str, nested: bool = False) -> str:
    """``name`` when it is a safe run name, else :class:`RunError`. ``nested`` also accepts
    safe names joined by ``/`` (a search's trial runs live under its folder: ``search/trial``),
    which the command line never does."""
    parts = name.split("/") if nested else [name]
    if not all(_NAME.match(part) and ".." not in part for part in parts):
        raise RunError(
            f"bad run name {name!r}: use letters, digits, '.', '_' and '-' only (no path "
            "separators, no '..', not absolute; at most 128 characters)"
        )
    return name


class RunLock:
    """Exclusive writer lock of a run folder (a context manager)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / ".lock"), timeout=0)

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunError(
                f"run folder {self.run_dir} is in use by {self.holder()}; wait for it to end, "
                "or choose another --run"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with atomic_path(self.run_dir / "lock.json") as tmp:
            tmp.write_text(json.dumps(holder) + "\n")
        return self

    def __exit__(self, *exc: object) -> None:
        (self.run_dir / "lock.json").unlink(missing_ok=True)
        self._lock.release()

    def holder(self) -> str:
        try:
            info = json.loads((self.run_dir / "lock.json").read_text())
            return f"PID {info['pid']} on {info['host']} (since {info['started']})"
        except (OSError, ValueError, KeyError):
            return "another process"


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differing_keys(a, b, f"{prefix}{key}.")
        elif _plain(a) != _plain(b):
            out.append(f"{prefix}{key}")
    return out


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_same_settings(
    old: Mapping[str, Any], config: Mapping[str, Any], run: str, run_dir: Path
) -> None:
    """Refuse to continue run ``run`` (folder ``run_dir``), made with settings ``old``, under
    other settings ``config``: :class:`RunError` naming the differing keys."""
    keys = differing_keys(old, config)
    if keys:
        shown = ", ".join(f"{k} ({_get(old, k)!r} -> {_get(config, k)!r})" for k in keys[:8]) + (
            f", and {len(keys) - 8} more" if len(keys) > 8 else ""
        )
        raise RunError(
            f"run {run!r} ({run_dir}) was made with other settings: {shown}. "
            "Choose another --run, or pass --overwrite to start that run again from scratch"
        )


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
