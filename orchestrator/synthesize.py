"""Synthesizing a dataset with one Ray task per recording (the library's own pool is the
fallback for use without Ray)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.ray_utils import ray_session, run_tasks
from seld.synth import SynthConfig, SynthesisError, missing_recordings, write_recording
from seld.synth.writer import PlannedName


def _synth_task(name: PlannedName, out: Path, config: SynthConfig) -> str:
    write_recording(out, name, config)
    return name.stem


def synthesize_on_ray(
    out: Path,
    config: SynthConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: Callable[[PlannedName], None] | None = None,
) -> list[PlannedName]:
    """Write every planned recording that is not complete yet; returns the names written.

    Recordings are independent tasks; every file is written atomically, so an interrupted run
    leaves no partial file and a rerun makes only what is missing. Failures are collected and
    raised together as :class:`SynthesisError` after the other recordings finished.
    """
    todo = missing_recordings(out, config)
    failures: list[str] = []

    def done(name: PlannedName, result: str | None, error: str | None) -> None:
        if error is not None:
            failures.append(f"{name}: {error}")
        elif progress is not None:
            progress(name)

    if todo:
        with ray_session(address, num_cpus):
            run_tasks(_synth_task, todo, (Path(out), config), on_done=done)
    if failures:
        raise SynthesisError("synthesis failed for " + "; ".join(failures))
    return todo
