"""Dataset formats: how a SELD dataset is laid out and labelled, as plug-ins, and a registry.

A format knows its classes, its label frame rate, how its recordings and metadata sit under a
root, how a metadata file reads into track-wise rows ``(frame, class, track, azimuth,
elevation)`` (degrees; a problem is one line naming the file and the line), how a prediction
CSV of its submission format reads, the folds of its official split, and its default metric
suite. :func:`detect_format` tells the registered formats apart by their layout; the CLI's
``--dataset-format`` overrides it. Registered:

* ``dcase2019``: TAU Spatial Sound Events 2019 (what the rest of the tool trains on):
  ``{mic,foa}_{dev,eval}/split{S}_ir{I}_ov{O}_{K}.wav``, ``metadata_dev/`` with static events
  (onset, offset, elevation, azimuth, distance), 50 label frames per second, 11 classes, the
  ``dcase2019`` suite (:mod:`seld.data.dataset`, :mod:`seld.data.metadata`).
* ``starss23``: STARSS22 and STARSS23 (DCASE 2022-2024): ``{mic,foa}_dev/dev-{train,test}-{site}/
  fold{F}_room{R}_mix{M}.wav`` and ``metadata_dev/dev-*/...csv`` with one row per active
  (frame, class, source): ``frame, class, source, azimuth, elevation`` and, in the DCASE 2024
  release, ``distance`` (cm); 100 ms label frames, 13 classes, moving sources and same-class
  overlaps; the official split trains on ``dev-train-*`` and tests on ``dev-test-*``; the
  ``dcase2022`` suite. Prediction CSVs are read as the DCASE 2022/2023 scorer reads them: five
  columns polar (degrees), six Cartesian ``x, y, z``.
* ``tau2021``: TAU-NIGENS Spatial Sound Events 2021: ``{mic,foa}_dev/dev-{train,val,test}/
  fold{F}_room{R}_mix{M}.wav``, rows ``frame, class, track, azimuth, elevation`` at 100 ms,
  12 classes, moving sources, same-class overlaps; trains on folds 1-4, validates on fold 5,
  tests on fold 6; the ``dcase2021`` suite.
* ``tau2020``: TAU-NIGENS Spatial Sound Events 2020: flat ``{mic,foa}_dev/`` and
  ``metadata_dev/`` of ``fold{F}_room{R}_mix{M}_ov{O}`` files, the same rows, 14 classes;
  trains on folds 3-6, validates on fold 2, tests on fold 1; the ``dcase2020`` suite.

The three track-wise formats are one class, :class:`TrackwiseFormat`, with their folders,
classes, protocol and suite as its fields. Every registered format is read, validated, scored,
synthesized (``seld-orch synth --layout``: :mod:`seld.synth.starss`), extracted and trained on
(:func:`dataset_recordings`; the protocols in :mod:`seld.data.folds`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from seld.data.audio import scan_audio
from seld.data.dataset import DatasetLayout, Recording, validate_dataset
from seld.data.dcase import CLASSES, LABEL_FRAMES_PER_SECOND, SUBSETS, num_label_frames
from seld.data.dcase import FORMATS as FORMAT_NAMES
from seld.data.metadata import DatasetError, read_metadata
from seld.data.submission import events_to_rows, read_submission
from seld.errors import ConfigError

__all__ = [
    "FORMATS",
    "DatasetFormat",
    "FormatRecording",
    "StarssName",
    "TrackwiseFormat",
    "dataset_format_of",
    "dataset_recordings",
    "detect_format",
    "get_format",
    "scoring_pairs",
]

#: STARSS22/23 sound classes by index.
STARSS_CLASSES: tuple[str, ...] = (
    "femaleSpeech",
    "maleSpeech",
    "clapping",
    "telephone",
    "laughter",
    "domesticSounds",
    "footsteps",
    "doorCupboard",
    "music",
    "musicInstrument",
    "waterTap",
    "bell",
    "knock",
)


_STARSS_NAME = re.compile(
    r"^fold(?P<fold>\d+)_room(?P<room>\d+)_mix(?P<mix>\d+)(?:_ov(?P<ov>\d+))?$"
)


@dataclass(frozen=True, order=True)
class StarssName:
    """A STARSS22/23 or TAU-NIGENS 2020/21 recording name such as ``fold3_room21_mix001`` (or
    ``fold1_room1_mix001_ov2``): its fold is its split (STARSS: 3 development training set, 4
    development test set)."""

    fold: int
    room: int
    mix: int
    #: digits of the mix number (STARSS writes three)
    width: int = field(default=3, compare=False)
    #: the overlap number TAU-NIGENS 2020 ends its names with (``..._ov2``); None elsewhere
    ov: int | None = None

    @property
    def stem(self) -> str:
        ov = "" if self.ov is None else f"_ov{self.ov}"
        return f"fold{self.fold}_room{self.room}_mix{self.mix:0{self.width}d}{ov}"

    @property
    def split(self) -> int:
        return self.fold

    def __str__(self) -> str:
        return self.stem

    @classmethod
    def parse(cls, stem: str) -> StarssName:
        """``fold<F>_room<R>_mix<M>``; ``ValueError`` naming the string otherwise."""
        match = _STARSS_NAME.match(stem)
        if match is None:
            raise ValueError(
                f"{stem!r} is not a STARSS recording name (expected fold<F>_room<R>_mix<M>)"
            )
        ov = None if match["ov"] is None else int(match["ov"])
        fold, room, mix = int(match["fold"]), int(match["room"]), int(match["mix"])
        return cls(fold, room, mix, len(match["mix"]), ov)


@dataclass(frozen=True)
class FormatRecording:
    """One recording of a dataset: its stem, the sub-folder it sits in (``""`` for a flat
    layout), its audio file per audio format, and its metadata file (development set)."""

    stem: str
    group: str
    audio: dict[str, Path]
    metadata: Path | None


@dataclass
class FormatReport:
    """What :meth:`DatasetFormat.validate` found: files checked and accepted, problems."""

    root: Path
    checked: int = 0
    accepted: list[Path] = field(default_factory=list)
    problems: list[DatasetError] = field(default_factory=list)
    #: accepted, but worth knowing
    warnings: list[DatasetError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class DatasetFormat(Protocol):
    """What a format module provides (see the module docstring)."""

    name: str
    description: str
    classes: tuple[str, ...]
    label_frames_per_second: float
    default_suite: str

    #: the cross-validation protocol of its official split (:mod:`seld.data.folds`), its folds
    protocol: str
    folds: tuple[int, ...]

    def detect(self, root: Path) -> bool: ...

    def recordings(self, root: Path) -> list[FormatRecording]: ...

    def training_recordings(self, root: Path, fmt: str, subset: str = "dev") -> list[Recording]:
        """The recordings of one audio format that features are extracted from, named so
        that :func:`seld.data.folds.make_folds` can split them."""
        ...

    def read_reference(self, path: Path) -> np.ndarray: ...

    def read_prediction(self, path: Path, distances: bool = False) -> np.ndarray: ...

    def without_distances(self, root: Path) -> list[Path]:
        """The metadata files under ``root`` whose rows carry no source distance (what a
        method that trains on distances cannot use)."""
        ...

    def validate(
        self, root: Path, progress: Callable[[Path], None] | None = None
    ) -> FormatReport: ...


def _rows_of(path: Path, widths: Iterable[int], what: str) -> list[tuple[int, list[str]]]:
    """The non-empty lines of a CSV as (line number, fields); a line of another width is a
    :class:`DatasetError` naming the file and the line."""
    widths = tuple(widths)
    try:
        with open(path, newline="") as fh:
            lines = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(path, f"unreadable {what} ({exc})") from None
    out = []
    for number, fields in enumerate(lines, 1):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) not in widths:
            expected = " or ".join(map(str, widths))
            raise DatasetError(path, f"line {number}: {len(fields)} columns, expected {expected}")
        out.append((number, [f.strip() for f in fields]))
    return out


def _number(path: Path, line: int, name: str, text: str, whole: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"line {line}: {name} {text!r} is not a number") from None
    if not math.isfinite(value) or (whole and value != int(value)):
        kind = "a whole number" if whole else "finite"
        raise DatasetError(path, f"line {line}: {name} {text!r} is not {kind}")
    return value


@dataclass(frozen=True)
class TrackwiseFormat:
    """A dataset of track-wise labels at 100 ms (``frame, class, track or source, azimuth,
    elevation[, distance]``), 24 kHz, ``{mic,foa}_dev`` audio beside ``metadata_dev``, flat or
    in sub-folders whose names match ``groups``: STARSS22/23 and TAU-NIGENS 2020/2021 (see the
    module docstring)."""

    name: str
    description: str
    classes: tuple[str, ...]
    #: its official split: the (training, validation, test) fold numbers of the recordings'
    #: names (``fold<F>_...``), the cross-validation protocol of its name (one fold)
    splits: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    #: a regular expression every sub-folder of ``metadata_dev`` matches; None: flat folders
    groups: str | None = None
    #: where the official split has no validation folds (they equal the training ones): every
    #: ``validation_every``-th training recording by name validates instead of training
    validation_every: int | None = None
    folds: tuple[int, ...] = (1,)
    label_frames_per_second: float = 10.0
    default_suite: str = "dcase2022"
    sample_rate: int = 24_000
    audio_formats: tuple[str, ...] = ("foa", "mic")

    @property
    def protocol(self) -> str:
        """The cross-validation protocol of its official split (:mod:`seld.data.folds`)."""
        return self.name

    def detect(self, root: Path) -> bool:
        metadata = Path(root) / "metadata_dev"
        if not metadata.is_dir():
            return False
        if self.groups is None:  # flat: metadata named fold<F>_room<R>_mix<M>[_ov<O>]
            return any(_STARSS_NAME.match(p.stem) for p in metadata.glob("*.csv"))
        folders = [p.name for p in metadata.iterdir() if p.is_dir()]
        return bool(folders) and all(re.match(self.groups, name) for name in folders)

    def _groups(self, folder: Path) -> list[tuple[str, Path]]:
        if self.groups is None:
            return [("", folder)]
        return [(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir()]

    def recordings(self, root: Path) -> list[FormatRecording]:
        """Every recording with audio in any format (metadata where ``metadata_dev`` has it)."""
        root = Path(root)
        found: dict[tuple[str, str], FormatRecording] = {}
        for fmt in self.audio_formats:
            folder = root / f"{fmt}_dev"
            if not folder.is_dir():
                continue
            for group, where in self._groups(folder):
                for wav in sorted(where.glob("*.wav")):
                    key = (group, wav.stem)
                    if key not in found:
                        meta = root / "metadata_dev" / group / f"{wav.stem}.csv"
                        found[key] = FormatRecording(
                            wav.stem, group, {}, meta if meta.is_file() else None
                        )
                    found[key].audio[fmt] = wav
        return [found[k] for k in sorted(found)]

    def training_recordings(self, root: Path, fmt: str, subset: str = "dev") -> list[Recording]:
        """Development recordings with ``fmt`` audio and a STARSS name (others are skipped:
        ``validate`` names them)."""
        if subset != "dev":
            return []
        out = []
        for rec in self.recordings(root):
            if fmt not in rec.audio:
                continue
            try:
                name = StarssName.parse(rec.stem)
            except ValueError:
                continue
            out.append(Recording(name, fmt, subset, rec.audio[fmt], rec.metadata, self.name))
        return sorted(out, key=lambda r: r.name)

    def read_reference(self, path: Path, num_frames: int | None = None) -> np.ndarray:
        """A metadata CSV as track-wise rows ``(frame, class, source, azimuth, elevation,
        distance)``: the DCASE 2024 distance column in metres (the file holds centimetres, which
        the official scorer converts too), NaN where the file has none. With ``num_frames``, a
        frame at or past it is a problem."""
        path = Path(path)
        rows = []
        for line, fields in _rows_of(path, (5, 6), "metadata"):
            frame, cls, source, azimuth, elevation = (
                _number(path, line, name, text, whole=True)
                for name, text in zip(
                    ("frame", "class index", "source index", "azimuth", "elevation"),
                    fields[:5],
                    strict=True,
                )
            )
            if frame < 0 or (num_frames is not None and frame >= num_frames):
                limit = f"0..{num_frames - 1}" if num_frames is not None else ">= 0"
                raise DatasetError(path, f"line {line}: frame {int(frame)} outside {limit}")
            if not 0 <= cls < len(self.classes):
                raise DatasetError(
                    path,
                    f"line {line}: unknown class index {int(cls)} (0..{len(self.classes) - 1})",
                )
            if source < 0:
                raise DatasetError(path, f"line {line}: negative source index {int(source)}")
            if not -180 <= azimuth <= 180:
                raise DatasetError(path, f"line {line}: azimuth {azimuth:g} outside -180..180")
            if not -90 <= elevation <= 90:
                raise DatasetError(path, f"line {line}: elevation {elevation:g} outside -90..90")
            distance = math.nan
            if len(fields) == 6:
                distance = _number(path, line, "distance", fields[5], False)
                if distance <= 0:
                    raise DatasetError(path, f"line {line}: distance {fields[5]} is not positive")
                distance /= 100.0
            rows.append((frame, cls, source, azimuth, elevation, distance))
        return np.array(rows, dtype=np.float64).reshape(-1, 6)

    def without_distances(self, root: Path) -> list[Path]:
        """The metadata files whose rows have no distance column (all of a STARSS22 or
        TAU-NIGENS dataset's, none of a STARSS23 one as released for DCASE 2024); only the
        column count of each row is read."""
        return [
            rec.metadata
            for rec in self.recordings(root)
            if rec.metadata is not None
            and any(len(fields) < 6 for _, fields in _rows_of(rec.metadata, (5, 6), "metadata"))
        ]

    def read_prediction(self, path: Path, distances: bool = False) -> np.ndarray:
        """A prediction CSV as track-wise rows with a distance column (NaN where none).

        As the DCASE 2022/2023 scorer reads it (``distances=False``): ``frame, class, track,
        azimuth, elevation`` (degrees), or ``frame, class, track, x, y, z``. As the DCASE 2024
        scorer reads it (``distances=True``, for suites that score distances): ``frame, class,
        azimuth, elevation`` (track 0), ``frame, class, track, azimuth, elevation``, with a
        distance in metres after them, or ``frame, class, track, x, y, z, distance``."""
        path = Path(path)
        rows = []
        widths = (4, 5, 6, 7) if distances else (5, 6)
        for line, fields in _rows_of(path, widths, "prediction"):
            if distances and len(fields) == 4:
                fields = [fields[0], fields[1], "0", fields[2], fields[3]]
            values = [
                _number(path, line, name, text, whole=i < 3)
                for i, (name, text) in enumerate(
                    zip(("frame", "class index", "track", "a", "b", "c", "d"), fields, strict=False)
                )
            ]
            distance = math.nan
            if distances and len(values) in (6, 7):
                distance = values.pop()
            frame, cls, track = values[:3]
            if frame < 0:
                raise DatasetError(path, f"line {line}: negative frame {int(frame)}")
            if not 0 <= cls < len(self.classes):
                raise DatasetError(
                    path,
                    f"line {line}: unknown class index {int(cls)} (0..{len(self.classes) - 1})",
                )
            if len(values) == 6:  # Cartesian: to degrees, as the official scorer converts
                x, y, z = values[3:]
                azimuth = math.atan2(y, x) * 180 / math.pi
                elevation = math.atan2(z, math.sqrt(x**2 + y**2)) * 180 / math.pi
            else:
                azimuth, elevation = values[3:]
            rows.append((frame, cls, track, azimuth, elevation, distance))
        return np.array(rows, dtype=np.float64).reshape(-1, 6)

    def validate(self, root: Path, progress: Callable[[Path], None] | None = None) -> FormatReport:
        """Check every audio and metadata file; every problem named, none stops the rest."""
        root = Path(root)
        report = FormatReport(root)
        if not root.is_dir():
            report.problems.append(DatasetError(root, "dataset root is not a folder"))
            return report
        audio_groups = {
            p.name
            for fmt in self.audio_formats
            if self.groups is not None and (root / f"{fmt}_dev").is_dir()
            for p in (root / f"{fmt}_dev").iterdir()
            if p.is_dir()
        }
        meta_root = root / "metadata_dev"
        for group in sorted(audio_groups):
            if not (meta_root / group).is_dir():
                report.problems.append(
                    DatasetError(meta_root / group, "missing metadata sub-folder for its audio")
                )
        for recording in self.recordings(root):
            frames = None
            bad = False
            for _fmt, wav in sorted(recording.audio.items()):
                report.checked += 1
                if progress is not None:
                    progress(wav)
                try:
                    info = scan_audio(wav, channels=4)
                except DatasetError as exc:
                    report.problems.append(exc)
                    bad = True
                    continue
                if info.sample_rate != self.sample_rate:
                    report.problems.append(
                        DatasetError(
                            wav, f"sample rate {info.sample_rate} Hz, expected {self.sample_rate}"
                        )
                    )
                    bad = True
                    continue
                frames = math.ceil(round(info.duration_s * self.label_frames_per_second, 6))
            if recording.metadata is None:
                if (meta_root / recording.group).is_dir():
                    report.problems.append(
                        DatasetError(
                            meta_root / recording.group / f"{recording.stem}.csv",
                            "missing metadata for its audio",
                        )
                    )
                continue
            try:
                self.read_reference(recording.metadata, frames)
            except DatasetError as exc:
                report.problems.append(exc)
                bad = True
            if not bad:
                report.accepted.extend(recording.audio.values())
        return report


@dataclass(frozen=True)
class Dcase2019:
    """DCASE 2019 through the existing modules (:mod:`seld.data.dataset`)."""

    name: str = "dcase2019"
    description: str = (
        "TAU Spatial Sound Events 2019: split/ir/ov names in flat folders, static events, "
        "50 frames per second, 11 classes"
    )
    classes: tuple[str, ...] = CLASSES
    label_frames_per_second: float = float(LABEL_FRAMES_PER_SECOND)
    default_suite: str = "dcase2019"
    protocol: str = "dcase2019"
    folds: tuple[int, ...] = (1, 2, 3, 4)

    def detect(self, root: Path) -> bool:
        root = Path(root)
        flat = any((root / f"{fmt}_{sub}").is_dir() for fmt in FORMAT_NAMES for sub in SUBSETS)
        return flat and not any(f.detect(root) for f in TRACKWISE.values())

    def recordings(self, root: Path) -> list[FormatRecording]:
        layout = DatasetLayout.discover(root)
        found: dict[str, FormatRecording] = {}
        for fmt in layout.formats():
            for r in layout.recordings(fmt):
                entry = found.setdefault(r.stem, FormatRecording(r.stem, "", {}, r.metadata_path))
                entry.audio[fmt] = r.audio_path
        return [found[k] for k in sorted(found)]

    def training_recordings(self, root: Path, fmt: str, subset: str = "dev") -> list[Recording]:
        layout = DatasetLayout.discover(root)
        return layout.recordings(fmt, subset) if (fmt, subset) in layout.audio_dirs else []

    def read_reference(self, path: Path, num_frames: int | None = None) -> np.ndarray:
        events = read_metadata(path)
        frames = num_frames or max((num_label_frames(e.end) for e in events), default=0)
        rows = np.insert(events_to_rows(events, frames).astype(np.float64), 2, 0.0, axis=1)
        return np.insert(rows, 5, np.nan, axis=1)

    def without_distances(self, root: Path) -> list[Path]:
        """None: every DCASE 2019 event has a distance (its reader requires one)."""
        return []

    def read_prediction(self, path: Path, distances: bool = False) -> np.ndarray:
        rows = np.insert(read_submission(path).astype(np.float64), 2, 0.0, axis=1)
        return np.insert(rows, 5, np.nan, axis=1)

    def validate(self, root: Path, progress: Callable[[Path], None] | None = None) -> FormatReport:
        found = validate_dataset(root, progress=progress)
        return FormatReport(
            found.root, found.checked, list(found.accepted), list(found.problems),
            list(found.warnings),
        )  # fmt: skip


def scoring_pairs(
    fmt: DatasetFormat,
    ref_dir: str | os.PathLike[str],
    pred_dir: str | os.PathLike[str],
    distances: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Each reference metadata CSV under ``ref_dir`` (sub-folders included) with the
    prediction CSV of the same stem under ``pred_dir`` (flat or in sub-folders), read by the
    format: stem -> (reference rows, predicted rows, frames scored). The frames scored are the
    reference's largest frame index, as the official DCASE 2022-2024 scorers count them.
    Raises :class:`DatasetError` naming every stem without a partner, and the first malformed
    file."""
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for folder, what in ((ref_dir, "reference metadata"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DatasetError(folder, f"{what} folder does not exist")

    def by_stem(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for path in sorted(folder.rglob("*.csv")):
            if path.stem in out:
                raise DatasetError(path, f"a second file named {path.stem} (also {out[path.stem]})")
            out[path.stem] = path
        return out

    refs, preds = by_stem(ref_dir), by_stem(pred_dir)
    if not refs:
        raise DatasetError(ref_dir, "no reference metadata CSVs")
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise DatasetError(
            pred_dir, f"{len(extra)} prediction(s) without a reference: {', '.join(extra)}"
        )
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DatasetError(
            pred_dir, f"missing predictions for {len(missing)} recording(s): {', '.join(missing)}"
        )
    pairs = {}
    for stem, path in refs.items():
        ref = fmt.read_reference(path)
        frames = int(ref[:, 0].max()) if len(ref) else 0
        pairs[stem] = (ref, fmt.read_prediction(preds[stem], distances), frames)
    return pairs


#: every registered format by name: one line a format
#: TAU-NIGENS Spatial Sound Events 2020 classes by index (the DCASE 2020 task's list).
TAU2020_CLASSES: tuple[str, ...] = (
    "alarm",
    "crying baby",
    "crash",
    "barking dog",
    "running engine",
    "female scream",
    "female speech",
    "burning fire",
    "footsteps",
    "knocking on door",
    "male scream",
    "male speech",
    "ringing phone",
    "piano",
)
#: TAU-NIGENS Spatial Sound Events 2021 classes by index: 2020's without engine and fire.
TAU2021_CLASSES: tuple[str, ...] = tuple(
    c for c in TAU2020_CLASSES if c not in ("running engine", "burning fire")
)

#: the registered track-wise formats
TRACKWISE: dict[str, TrackwiseFormat] = {
    f.name: f
    for f in (
        TrackwiseFormat(
            "starss23",
            "STARSS22/23 (DCASE 2022-2024): dev-train-*/dev-test-* sub-folders, 100 ms frames, "
            "13 classes, source indices, moving sources, distances from 2024",
            STARSS_CLASSES,
            ((3,), (3,), (4,)),  # dev-train, dev-test; a quarter of dev-train validates
            groups=r"^dev-(train|test)-.+$",
            validation_every=4,
        ),
        TrackwiseFormat(
            "tau2021",
            "TAU-NIGENS Spatial Sound Events 2021 (DCASE 2021): dev-train/dev-val/dev-test "
            "sub-folders, 100 ms frames, 12 classes, moving sources, same-class overlaps",
            TAU2021_CLASSES,
            ((1, 2, 3, 4), (5,), (6,)),
            groups=r"^dev-(train|val|test)$",
            default_suite="dcase2021",
        ),
        TrackwiseFormat(
            "tau2020",
            "TAU-NIGENS Spatial Sound Events 2020 (DCASE 2020): flat folders, names ending "
            "_ov<O>, 100 ms frames, 14 classes, moving sources",
            TAU2020_CLASSES,
            ((3, 4, 5, 6), (2,), (1,)),
            default_suite="dcase2020",
        ),
    )
}
#: every registered format by name: one line a format
FORMATS: dict[str, DatasetFormat] = {"dcase2019": Dcase2019(), **TRACKWISE}


def get_format(name: str) -> DatasetFormat:
    """A registered format; :class:`ConfigError` naming the registered ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None


def dataset_format_of(root: str | os.PathLike[str]) -> DatasetFormat:
    """The format a training command reads ``root`` as: a track-wise format where its layout
    is found, else DCASE 2019 (whose reader then names what is missing)."""
    for fmt in TRACKWISE.values():
        if fmt.detect(Path(root)):
            return fmt
    return FORMATS["dcase2019"]


def dataset_recordings(
    root: str | os.PathLike[str], fmt: str, subset: str = "dev", *, required: bool = False
) -> list[Recording]:
    """The recordings of one audio format in a dataset of any registered layout, as features
    are extracted from them: none where the dataset has no such folder, or with ``required``
    a :class:`DatasetError` naming the missing DCASE 2019 folder."""
    layout = dataset_format_of(root)
    if required and layout.name == "dcase2019":
        return DatasetLayout.discover(root).recordings(fmt, subset)
    return layout.training_recordings(Path(root), fmt, subset)


def detect_format(root: str | os.PathLike[str]) -> DatasetFormat:
    """The registered format whose layout ``root`` has; :class:`DatasetError` when none (or
    more than one) matches."""
    root = Path(root)
    matches = [f for f in FORMATS.values() if f.detect(root)]
    if len(matches) != 1:
        what = "no registered layout" if not matches else "several layouts"
        raise DatasetError(
            root,
            f"{what} found ({', '.join(FORMATS)}); name one with --dataset-format",
        )
    return matches[0]
