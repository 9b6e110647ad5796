"""A DCASE 2019 Task 3 dataset folder: discovery, recordings, and whole-dataset validation.

Layout (``subset`` is ``dev`` or ``eval``; only ``dev`` has metadata)::

    root/{foa,mic}_{dev,eval}/split{S}_ir{I}_ov{O}_{K}.wav
    root/metadata_dev/split{S}_ir{I}_ov{O}_{K}.csv
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from seld.data.audio import AudioInfo, audio_info, scan_audio
from seld.data.dcase import (
    FORMATS,
    GRID_STEP_DEG,
    NUM_CHANNELS,
    SPLITS,
    SUBSETS,
    parse_recording_name,
)
from seld.data.metadata import DatasetError, Event, read_metadata

log = logging.getLogger(__name__)

METADATA_DIR = "metadata_dev"


class RecordingId(Protocol):
    """A recording's name in any dataset format: its file stem and the split (fold) it is in."""

    @property
    def stem(self) -> str: ...

    @property
    def split(self) -> int: ...


@dataclass(frozen=True)
class Recording:
    """One recording of one audio format (``mic``, ``foa``): its name, audio file and
    (development set) metadata file, and the dataset format whose reader reads that metadata
    (:mod:`seld.data.formats`; a DCASE 2019 name here, a :class:`~seld.data.formats.StarssName`
    for STARSS23)."""

    name: RecordingId
    fmt: str
    subset: str
    audio_path: Path
    metadata_path: Path | None
    dataset_format: str = "dcase2019"

    @property
    def stem(self) -> str:
        return self.name.stem


@dataclass(frozen=True)
class DatasetLayout:
    """The folders found under a dataset root."""

    root: Path
    audio_dirs: dict[tuple[str, str], Path]
    metadata_dir: Path | None

    @classmethod
    def discover(cls, root: str | os.PathLike[str]) -> DatasetLayout:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(root, "dataset root is not a folder")
        audio_dirs = {
            (fmt, subset): root / f"{fmt}_{subset}"
            for fmt in FORMATS
            for subset in SUBSETS
            if (root / f"{fmt}_{subset}").is_dir()
        }
        if not audio_dirs:
            expected = ", ".join(f"{f}_{s}" for f in FORMATS for s in SUBSETS)
            raise DatasetError(root, f"not a DCASE 2019 layout: none of {expected} found")
        metadata_dir = root / METADATA_DIR
        return cls(root, audio_dirs, metadata_dir if metadata_dir.is_dir() else None)

    def formats(self, subset: str = "dev") -> tuple[str, ...]:
        return tuple(fmt for fmt in FORMATS if (fmt, subset) in self.audio_dirs)

    def recordings(self, fmt: str, subset: str = "dev") -> list[Recording]:
        """The recordings of one format, sorted by name; files with other names are skipped
        (``validate_dataset`` reports them)."""
        folder = self.audio_dirs.get((fmt, subset))
        if folder is None:
            raise DatasetError(self.root / f"{fmt}_{subset}", "folder missing from the dataset")
        recordings = []
        for path in sorted(folder.glob("*.wav")):
            try:
                name = parse_recording_name(path.name)
            except ValueError:
                continue
            meta = None
            if subset == "dev" and self.metadata_dir is not None:
                meta = self.metadata_dir / f"{name.stem}.csv"
            recordings.append(Recording(name, fmt, subset, path, meta))
        return sorted(recordings, key=lambda r: r.name)


@dataclass
class ValidationReport:
    """Every problem found in a dataset, and what was accepted."""

    root: Path
    problems: list[DatasetError] = field(default_factory=list)
    accepted: list[Path] = field(default_factory=list)
    checked: int = 0
    #: accepted, but worth knowing (off-grid directions, same-class overlaps), with how they
    #: are handled
    warnings: list[DatasetError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_dataset(
    root: str | os.PathLike[str],
    *,
    formats: Iterable[str] | None = None,
    subsets: Iterable[str] = SUBSETS,
    workers: int = 4,
    progress: Callable[[Path], None] | None = None,
) -> ValidationReport:
    """Check every file of a dataset and report all problems at once.

    Audio: readable, not truncated, 4 channels, finite samples, one sample rate for the dataset.
    Metadata (development set): present for each recording, well-formed, known classes, events
    inside the audio; no metadata without audio; the formats hold the same recordings with the
    same lengths.
    """
    layout = DatasetLayout.discover(root)
    report = ValidationReport(layout.root)
    wanted = set(formats) if formats is not None else set(FORMATS)
    if formats is not None:
        for fmt in sorted(wanted):
            if not any((fmt, subset) in layout.audio_dirs for subset in subsets):
                folders = " or ".join(f"{fmt}_{subset}" for subset in subsets)
                raise DatasetError(layout.root, f"no {folders} folder to validate")
    audio_files = []
    for (fmt, subset), folder in sorted(layout.audio_dirs.items()):
        if fmt not in wanted or subset not in subsets:
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            try:
                name = parse_recording_name(path.name)
                if path.suffix.lower() != ".wav":
                    raise ValueError("not a .wav file")
                if subset == "dev" and name.split not in SPLITS:
                    raise ValueError(
                        f"split {name.split} is not one of the development splits "
                        f"{', '.join(map(str, SPLITS))}, so no fold would use it"
                    )
            except ValueError as exc:
                report.problems.append(DatasetError(path, f"unexpected file name ({exc})"))
                continue
            audio_files.append((fmt, subset, path))

    def check(item: tuple[str, str, Path]) -> AudioInfo | DatasetError:
        try:
            return scan_audio(item[2], channels=NUM_CHANNELS)
        except DatasetError as exc:
            return exc
        finally:
            if progress is not None:
                progress(item[2])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check, audio_files))
    report.checked = len(audio_files)

    infos: dict[tuple[str, str], dict[str, AudioInfo]] = {}
    for (fmt, subset, path), result in zip(audio_files, results, strict=True):
        if isinstance(result, DatasetError):
            report.problems.append(result)
        else:
            infos.setdefault((fmt, subset), {})[parse_recording_name(path.name).stem] = result

    _check_sample_rates(infos, report)
    _check_formats_agree(layout, infos, report)
    bad_metadata = _check_metadata(layout, infos, report) if "dev" in subsets else set()
    bad_paths = {p.path for p in report.problems}
    for per_stem in infos.values():
        for stem, info in per_stem.items():
            if info.path not in bad_paths and stem not in bad_metadata:
                report.accepted.append(info.path)
    report.accepted.sort()
    return report


def _check_sample_rates(
    infos: dict[tuple[str, str], dict[str, AudioInfo]], report: ValidationReport
) -> None:
    rates = Counter(info.sample_rate for per in infos.values() for info in per.values())
    if len(rates) > 1:
        majority = rates.most_common(1)[0][0]
        for per in infos.values():
            for info in per.values():
                if info.sample_rate != majority:
                    report.problems.append(
                        DatasetError(
                            info.path,
                            f"sample rate {info.sample_rate} Hz differs from the dataset's "
                            f"{majority} Hz",
                        )
                    )


def _check_formats_agree(
    layout: DatasetLayout,
    infos: dict[tuple[str, str], dict[str, AudioInfo]],
    report: ValidationReport,
) -> None:
    """The formats of a subset hold the same recordings, with the same lengths."""
    for subset in SUBSETS:
        present = [fmt for fmt in layout.formats(subset) if (fmt, subset) in infos]
        if len(present) < 2:
            continue
        stems = {fmt: {r.stem for r in layout.recordings(fmt, subset)} for fmt in present}
        for fmt, other in (present, present[::-1]):
            for stem in sorted(stems[other] - stems[fmt]):
                report.problems.append(
                    DatasetError(
                        layout.audio_dirs[(fmt, subset)] / f"{stem}.wav",
                        f"missing audio file (present in {other}_{subset})",
                    )
                )
        first, second = (infos[(fmt, subset)] for fmt in present)
        for stem in sorted(first.keys() & second.keys()):
            a, b = first[stem], second[stem]
            if a.frames != b.frames or a.sample_rate != b.sample_rate:
                report.problems.append(
                    DatasetError(
                        b.path,
                        f"length {b.duration_s:.3f} s differs from {a.path} ({a.duration_s:.3f} s)",
                    )
                )


def _check_metadata(
    layout: DatasetLayout,
    infos: dict[tuple[str, str], dict[str, AudioInfo]],
    report: ValidationReport,
) -> set[str]:
    """Check the development metadata; return the stems whose metadata is broken."""
    durations: dict[str, float] = {}
    for fmt in layout.formats("dev"):
        for stem, info in infos.get((fmt, "dev"), {}).items():
            durations.setdefault(stem, info.duration_s)
    dev_stems = {
        parse_recording_name(p.name).stem
        for fmt in layout.formats("dev")
        for p in layout.audio_dirs[(fmt, "dev")].glob("*.wav")
        if _parses(p.name)
    }
    bad: set[str] = set()
    if layout.metadata_dir is None:
        if dev_stems:
            report.problems.append(
                DatasetError(layout.root / METADATA_DIR, "missing metadata folder")
            )
        return dev_stems
    for stem in sorted(dev_stems):
        path = layout.metadata_dir / f"{stem}.csv"
        try:
            events = read_metadata(path, durations.get(stem))
        except DatasetError as exc:
            report.problems.append(exc)
            bad.add(stem)
            continue
        report.warnings.extend(DatasetError(path, w) for w in metadata_warnings(events))
    for path in sorted(layout.metadata_dir.glob("*.csv")):
        if not _parses(path.name):
            report.problems.append(DatasetError(path, "unexpected file name in metadata folder"))
        elif parse_recording_name(path.name).stem not in dev_stems:
            report.problems.append(DatasetError(path, "metadata without a matching recording"))
    return bad


def metadata_warnings(events: list[Event]) -> list[str]:
    """What a recording's events do that the DCASE 2019 data never does, and how it is
    handled: directions off the 10-degree grid or its elevation range, and overlapping events
    of the same class (the frame targets hold one direction per class)."""
    out = []
    for e in events:
        if e.azimuth % GRID_STEP_DEG or e.elevation % GRID_STEP_DEG or abs(e.elevation) > 40:
            out.append(
                f"{e.label} at {e.start:g}-{e.end:g} s: direction (azimuth {e.azimuth:g}, "
                f"elevation {e.elevation:g}) is off the DCASE 2019 grid; used as given for "
                "training, floored onto the grid when scored"
            )
    by_class: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.start):
        by_class.setdefault(e.label, []).append(e)
    for label, same in by_class.items():
        for a, b in itertools.pairwise(same):
            if b.start < a.end:
                out.append(
                    f"two {label} events overlap at {b.start:g}-{min(a.end, b.end):g} s; the "
                    f"frame targets hold one direction per class, so the one listed later "
                    "sets it there"
                )
    return out


def _parses(name: str) -> bool:
    try:
        parse_recording_name(name)
    except ValueError:
        return False
    return True


def load_events(recording: Recording, duration_s: float | None = None) -> list[Event]:
    """The events of a development-set recording (``DatasetError`` when it has no metadata)."""
    if recording.metadata_path is None:
        raise DatasetError(recording.audio_path, "no metadata (evaluation recording?)")
    return read_metadata(recording.metadata_path, duration_s)


def recording_durations(root: str | os.PathLike[str]) -> dict[str, float]:
    """Duration in seconds of every development recording, from the audio headers."""
    layout = DatasetLayout.discover(root)
    durations: dict[str, float] = {}
    for fmt in layout.formats("dev"):
        for rec in layout.recordings(fmt, "dev"):
            if rec.stem not in durations:
                durations[rec.stem] = audio_info(rec.audio_path).duration_s
    return durations
