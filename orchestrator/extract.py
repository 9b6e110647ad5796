"""Feature extraction over a dataset: one Ray task per recording, resumable, failure-tolerant."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.ray_utils import ray_session, run_tasks
from seld.data.dataset import Recording
from seld.data.fingerprint import input_fingerprints
from seld.data.formats import dataset_format_of
from seld.data.metadata import DatasetError
from seld.features.extraction import extract_recording
from seld.features.spectral import FeatureConfig
from seld.features.store import feature_path, feature_root, stale_reason
from seld.fsutil import environment_problem, remove_stale_temporaries

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    """What one extraction run did: paths written, recordings skipped, failures with reasons."""

    root: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: recordings whose earlier feature file was out of date, and why ("metadata changed")
    redone: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _extract_task(recording: Recording, config: FeatureConfig, root: Path) -> tuple[bool, str]:
    """Runs on a Ray worker. Bad input is an expected outcome, returned rather than raised;
    so is the environment failing the write (a full disk, no permission), told in one line
    (:func:`seld.fsutil.environment_problem`). Any other error is a bug and keeps its
    traceback."""
    try:
        return True, str(extract_recording(recording, config, root))
    except DatasetError as exc:
        return False, str(exc)
    except OSError as exc:
        problem = environment_problem(exc)
        if problem is None:
            raise
        where = "" if problem.startswith("/") else f"{root}: "
        return False, f"{recording.audio_path}: features not written: {where}{problem}"


def current_inputs(rec: Recording) -> dict[str, str] | None:
    """The recording's input fingerprints; ``None`` when its files cannot be read (extraction
    then reports the problem)."""
    try:
        return input_fingerprints(rec.audio_path, rec.metadata_path)
    except OSError:
        return None


def plan_extraction(
    dataset: Path,
    workspace: Path,
    config: FeatureConfig,
    fmt: str,
    subsets: Iterable[str] = ("dev", "eval"),
    redone: dict[str, str] | None = None,
) -> tuple[Path, list[Recording], list[Path]]:
    """(feature root, recordings still to extract, complete files to skip).

    A feature file counts as complete only when it was made with ``config`` from the
    recording's current audio and metadata (their fingerprints); ``redone`` receives each
    recording whose existing file is out of date, and why."""
    layout = dataset_format_of(dataset)  # a bad root is named by the reader below
    root = feature_root(workspace, config)
    todo, done = [], []
    for subset in subsets:
        recordings = layout.training_recordings(Path(dataset), fmt, subset)
        if not recordings:
            continue
        removed = remove_stale_temporaries(root / f"{fmt}_{subset}")
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run", removed)
        for rec in recordings:
            path = feature_path(root, fmt, subset, rec.stem)
            inputs = current_inputs(rec)
            reason = "unreadable input" if inputs is None else stale_reason(path, config, inputs)
            if reason is None:
                done.append(path)
                continue
            todo.append(rec)
            if reason != "missing" and redone is not None:
                redone[rec.stem] = reason
    if not todo and not done:
        raise DatasetError(dataset, f"no {fmt} recordings to extract")
    return root, todo, done


def extract_dataset(
    dataset: Path,
    workspace: Path,
    config: FeatureConfig,
    fmt: str,
    *,
    subsets: Iterable[str] = ("dev", "eval"),
    address: str | None = None,
    num_cpus: int | None = None,
    progress: Callable[[Recording, bool], None] | None = None,
) -> ExtractSummary:
    """Extract every recording of one format that has no complete feature file yet.

    One Ray task per recording; a bad recording is reported (file and reason) and the rest
    finish; a crashed worker's task is retried by Ray. Files are written atomically, so an
    interrupted run leaves no partial file and the next run does only what is missing.
    """
    started = time.perf_counter()
    redone: dict[str, str] = {}
    root, todo, done = plan_extraction(dataset, workspace, config, fmt, subsets, redone)
    summary = ExtractSummary(root, skipped=done, redone=redone)
    for stem, reason in redone.items():
        log.warning("%s: features redone (%s)", stem, reason)

    def record(rec: Recording, result: tuple[bool, str] | None, error: str | None) -> None:
        ok, detail = result if result is not None else (False, f"{rec.audio_path}: {error}")
        if ok:
            summary.written.append(Path(detail))
        else:
            summary.failed[str(rec.audio_path)] = detail
        if progress is not None:
            progress(rec, ok)

    if todo:
        with ray_session(address, num_cpus):
            run_tasks(_extract_task, todo, (config, root), on_done=record)
    summary.written.sort()
    summary.elapsed_s = time.perf_counter() - started
    return summary
