"""Writing synthesized recordings in the DCASE 2019 or STARSS23 development layout
(:mod:`seld.synth.starss`), in parallel, resumably.

``out_dir/metadata_dev/<stem>.csv``, ``out_dir/mic_dev/<stem>.wav``, ``out_dir/foa_dev/<stem>.wav``.
Every file is written under a temporary name in its folder and renamed into place, so a file that
exists is complete; a rerun after a crash makes only the recordings that miss a file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import soundfile as sf

from seld.data.dcase import NUM_CHANNELS, RecordingName
from seld.data.formats import StarssName
from seld.data.metadata import write_metadata
from seld.errors import SeldError
from seld.fsutil import atomic_path
from seld.synth.config import SynthConfig
from seld.synth.scene import plan_recordings, synthesize_recording
from seld.synth.starss import (
    LAYOUTS,
    format_starss_metadata,
    group,
    plan_starss,
    synthesize_starss,
)

#: a recording the synthesizer plans: DCASE 2019 layout or STARSS layout
PlannedName = RecordingName | StarssName

logger = logging.getLogger(__name__)


class SynthesisError(SeldError, RuntimeError):
    """A recording could not be made; the message names it, the cause says why."""


def _relative(name: PlannedName, layout: str | None) -> str:
    """Where a recording sits under its format's folder: ``<stem>``, or ``<group>/<stem>``."""
    if not isinstance(name, StarssName):
        return name.stem
    folder = group(name, layout if layout in LAYOUTS else "starss23")
    return f"{folder}/{name.stem}" if folder else name.stem


def metadata_path(out_dir: Path, name: PlannedName, layout: str | None = None) -> Path:
    """``out_dir/metadata_dev/<stem>.csv`` (a layout with sub-folders: ``.../<group>/<stem>.csv``;
    a track-wise name without ``layout`` is STARSS23's)."""
    return Path(out_dir) / "metadata_dev" / f"{_relative(name, layout)}.csv"


def audio_path(out_dir: Path, name: PlannedName, fmt: str, layout: str | None = None) -> Path:
    """``out_dir/<fmt>_dev/<stem>.wav`` (with sub-folders: ``.../<group>/<stem>.wav``)."""
    return Path(out_dir) / f"{fmt}_dev" / f"{_relative(name, layout)}.wav"


def _write_wav(path: Path, audio: np.ndarray, config: SynthConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, config.sample_rate, subtype=config.subtype, format="WAV")


def write_recording(out_dir: Path, name: PlannedName, config: SynthConfig) -> Path:
    """Synthesize one recording and write its WAVs and metadata CSV; returns the CSV's path.

    Always writes (existing files are replaced); the CSV is written last.
    """
    path = metadata_path(out_dir, name, config.layout)
    if isinstance(name, StarssName):
        rows, audio = synthesize_starss(name, config)
        for fmt, samples in audio.items():
            _write_wav(audio_path(out_dir, name, fmt, config.layout), samples, config)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(format_starss_metadata(rows))
        return path
    events, audio = synthesize_recording(name, config)
    for fmt, samples in audio.items():
        _write_wav(audio_path(out_dir, name, fmt), samples, config)
    write_metadata(path, events)
    return path


def is_complete(out_dir: Path, name: PlannedName, config: SynthConfig) -> bool:
    """Whether the CSV and every requested WAV exist, the WAVs with the configured shape."""
    if not metadata_path(out_dir, name, config.layout).is_file():
        return False
    for fmt in config.formats:
        try:
            info = sf.info(str(audio_path(out_dir, name, fmt, config.layout)))
        except (sf.LibsndfileError, RuntimeError, OSError):
            return False
        if (info.channels, info.samplerate, info.frames) != (
            NUM_CHANNELS,
            config.sample_rate,
            config.num_samples,
        ):
            return False
    return True


def planned(config: SynthConfig) -> list[PlannedName]:
    """The recordings of the config's layout, in plan order."""
    if config.layout in LAYOUTS:
        return list(plan_starss(config))
    return list(plan_recordings(config))


def missing_recordings(out_dir: Path, config: SynthConfig) -> list[PlannedName]:
    """The planned recordings that :func:`synthesize_dataset` would make now (in plan order)."""
    return [name for name in planned(config) if not is_complete(out_dir, name, config)]


def synthesize_dataset(
    out_dir: Path,
    config: SynthConfig,
    workers: int | None = None,
    progress: Callable[[PlannedName], None] | None = None,
) -> list[PlannedName]:
    """Make every planned recording that is not already complete under ``out_dir``.

    Recordings are made in a pool of ``workers`` processes (default ``os.cpu_count()``; 1 makes
    them in this process). Workers are spawned, so a script calling this with more than one
    worker needs the usual ``if __name__ == "__main__":`` guard.

    ``progress`` is called with each recording's name once it is written (skipped ones are not
    reported: :func:`missing_recordings` gives the count in advance). Returns the names written,
    in plan order. The first failure cancels what has not started and is raised as
    :class:`SynthesisError` naming the recording, chained to the worker's exception.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    todo = missing_recordings(out_dir, config)
    skipped = len(planned(config)) - len(todo)
    if skipped:
        logger.info("%d recordings already complete in %s; making %d", skipped, out_dir, len(todo))
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    if workers == 1:
        for name in todo:
            try:
                write_recording(out_dir, name, config)
            except Exception as exc:
                raise SynthesisError(f"synthesizing {name} failed") from exc
            if progress is not None:
                progress(name)
        return todo
    # spawn, not fork: the caller may hold threads (Ray, torch) that fork would copy half-way
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future[Path], PlannedName] = {
            pool.submit(write_recording, out_dir, name, config): name for name in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise SynthesisError(f"synthesizing {name} failed") from future.exception()
                if progress is not None:
                    progress(name)
    return todo
