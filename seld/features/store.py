"""HDF5 feature store: one file per recording, per-fold scalers, lazily read training windows.

Layout under a workspace::

    features/<config hash>/config.json
    features/<config hash>/<format>_<subset>/<recording>.h5
    features/<config hash>/scalers/<format>_<protocol>_fold<k>.npz

Each ``.h5`` holds ``features`` (channels, frames, bins), frame-level targets at the feature frame
rate (``activity``, ``azimuth``, ``elevation``: (frames, classes), degrees; ``tracks``: every
instance's unit vector, and ``distances``, its distance in metres where the labels have them:
:class:`seld.data.metadata.FrameTargets`), the metadata events,
and the recording's name, split, ir, ov and audio facts as attributes. Files are written under a
temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from seld.data.dcase import CLASSES, LABEL_FRAMES_PER_SECOND, num_label_frames
from seld.data.fingerprint import changed_inputs, combined
from seld.data.folds import Fold
from seld.data.metadata import DatasetError, Event, FrameTargets, atomic_write_text
from seld.data.submission import events_to_rows
from seld.features.spectral import FeatureConfig
from seld.fsutil import atomic_path

#: Bumped when what a feature file holds changes, so that older files are redone, not misread.
#: 2: the targets' ``tracks`` (every instance of a class per frame, for multi-ACCDOA).
#: 3: the targets' ``distances`` (each instance's distance, for multi-ACCDDOA).
STORE_VERSION = 3
_EVENT_DTYPE = np.dtype(
    [
        ("label", "S16"),
        ("start", "f8"),
        ("end", "f8"),
        ("elevation", "f4"),
        ("azimuth", "f4"),
        ("distance", "f4"),
    ]
)


def feature_root(workspace: Path, config: FeatureConfig) -> Path:
    """The folder of one feature configuration; writes its ``config.json`` once."""
    root = Path(workspace) / "features" / config.hash()
    if not (root / "config.json").exists():
        atomic_write_text(root / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    return root


def feature_path(root: Path, fmt: str, subset: str, stem: str) -> Path:
    return root / f"{fmt}_{subset}" / f"{stem}.h5"


@dataclass(frozen=True)
class LabelFacts:
    """What a feature file's labels are: its dataset format (:mod:`seld.data.formats`), label
    frames per second and classes. DCASE 2019's unless the file says otherwise."""

    dataset_format: str = "dcase2019"
    label_frames_per_second: float = float(LABEL_FRAMES_PER_SECOND)
    classes: tuple[str, ...] = CLASSES

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def num_frames(self, duration_s: float) -> int:
        """Label frames covering ``duration_s`` seconds."""
        if self.dataset_format == "dcase2019":
            return num_label_frames(duration_s)
        return int(-(-round(duration_s * self.label_frames_per_second, 6) // 1))

    @classmethod
    def of(cls, h5: h5py.File) -> LabelFacts:
        attrs = h5.attrs
        if "dataset_format" not in attrs:
            return cls()
        return cls(
            str(attrs["dataset_format"]),
            float(attrs["label_frames_per_second"]),
            tuple(str(attrs["classes"]).split(",")),
        )


def label_facts(path: Path) -> LabelFacts:
    with h5py.File(path, "r") as h5:
        return LabelFacts.of(h5)


def write_feature_file(
    path: Path,
    features: np.ndarray,
    targets: FrameTargets | None,
    events: Sequence[Event] | None,
    *,
    name: Any,
    fmt: str,
    subset: str,
    config: FeatureConfig,
    duration_s: float,
    inputs: Mapping[str, str] | None = None,
    reference: np.ndarray | None = None,
    labels: LabelFacts | None = None,
) -> None:
    """Write one recording's features atomically (temporary name in the folder, then rename).

    ``features``: (channels, frames, bins); ``targets`` at the feature frame rate, ``None`` for
    recordings without metadata; ``inputs`` the fingerprints of its audio and metadata files
    (:func:`seld.data.fingerprint.input_fingerprints`). ``name``: a DCASE 2019 name, or any
    dataset format's (its fields become attributes). A DCASE 2019 recording's reference is its
    ``events``; another format's is its track-wise label rows ``reference`` (``frame, class,
    source, azimuth, elevation, distance``) under ``labels``.
    """
    labels = labels or LabelFacts()
    fields = {k: v for k, v in asdict(name).items() if k != "width" and v is not None}
    with _new_h5(path) as h5:
        _create_features(h5, features, config)
        if targets is not None:
            h5.create_dataset("activity", data=targets.activity.astype(np.uint8))
            h5.create_dataset("azimuth", data=targets.azimuth.astype(np.float32))
            h5.create_dataset("elevation", data=targets.elevation.astype(np.float32))
            if targets.tracks is not None:
                h5.create_dataset("tracks", data=targets.tracks.astype(np.float32))
            if targets.distances is not None:
                h5.create_dataset("distances", data=targets.distances.astype(np.float32))
        if events is not None:
            rows = [
                (e.label.encode(), e.start, e.end, e.elevation, e.azimuth, e.distance)
                for e in events
            ]
            h5.create_dataset("events", data=np.array(rows, dtype=_EVENT_DTYPE))
        if reference is not None:
            h5.create_dataset("reference", data=np.asarray(reference, dtype=np.float64))
        h5.attrs.update(
            {
                "name": name.stem,
                **fields,
                "split": name.split,
                "format": fmt,
                "subset": subset,
                "duration_s": duration_s,
                "frames_per_second": config.frames_per_second,
                "config_hash": config.hash(),
                "store_version": STORE_VERSION,
                "classes": ",".join(labels.classes),
                **{f"input_{k}": v for k, v in (inputs or {}).items()},
            }
        )
        if labels != LabelFacts():
            h5.attrs["dataset_format"] = labels.dataset_format
            h5.attrs["label_frames_per_second"] = labels.label_frames_per_second


@contextlib.contextmanager
def _new_h5(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file built in memory, then written to ``path`` atomically with plain file
    writes. HDF5 writing straight to a full disk can crash the process (a segmentation fault
    in its clean-up, measured on a 6 MB tmpfs), which would leave the temporary file behind
    and lose the error; a plain write fails with ``ENOSPC`` and the temporary file is removed
    (:func:`seld.fsutil.atomic_path`)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        yield h5
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as exc:  # a failed write names no file: name the one being written
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def content_feature_path(root: Path, content: str) -> Path:
    """Where the features of a recording outside any dataset live: keyed by the hash of its
    file's content (:func:`seld.data.fingerprint.content_fingerprint`), so a cached file can only
    ever be used for the very bytes it was made from, whatever the recording's name or path."""
    return root / "content" / f"{content}.h5"


def _create_features(h5: h5py.File, features: np.ndarray, config: FeatureConfig) -> None:
    """The ``features`` dataset (channels, frames, bins), chunked by about one second of frames
    so that a training window reads few chunks."""
    chunk_frames = max(1, min(features.shape[1], round(config.frames_per_second)))
    h5.create_dataset(
        "features", data=features, chunks=(features.shape[0], chunk_frames, features.shape[2])
    )


def write_content_features(
    path: Path, features: np.ndarray, *, config: FeatureConfig, duration_s: float, content: str
) -> None:
    """Write the features (channels, frames, bins) of a recording outside any dataset, which
    has neither a DCASE name nor metadata, atomically; ``content`` is its file's hash."""
    with _new_h5(path) as h5:
        _create_features(h5, features, config)
        h5.attrs.update(
            {
                "name": content,
                "duration_s": duration_s,
                "frames_per_second": config.frames_per_second,
                "config_hash": config.hash(),
                "store_version": STORE_VERSION,
                "classes": ",".join(CLASSES),
                "input_content": content,
            }
        )


def read_features(path: Path) -> tuple[np.ndarray, float]:
    """A feature file's tensor (channels, frames, bins) and its recording's length in seconds."""
    with h5py.File(path, "r") as h5:
        return h5["features"][()], float(h5.attrs["duration_s"])


def recorded_inputs(h5: h5py.File) -> dict[str, str]:
    """The input fingerprints a feature file was made from."""
    return {k: str(h5.attrs.get(f"input_{k}", "")) for k in ("audio", "metadata")}


def stale_reason(
    path: Path, config: FeatureConfig, inputs: Mapping[str, str] | None = None
) -> str | None:
    """Why ``path`` cannot be used as the features of ``config`` made from ``inputs`` (e.g.
    ``"metadata changed"``), or ``None`` when it can. Without ``inputs`` the inputs are not
    checked."""
    if not Path(path).exists():
        return "missing"
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("store_version") != STORE_VERSION or "features" not in h5:
                return "written by another version"
            if h5.attrs.get("config_hash") != config.hash():
                return "another feature config"
            short = _short_datasets(h5)
            if short is not None:
                return short
            changed = [] if inputs is None else changed_inputs(recorded_inputs(h5), inputs)
    except (OSError, KeyError):
        return "unreadable"
    return f"{' and '.join(changed)} changed" if changed else None


#: the datasets of a feature file with one row per feature frame
_FRAME_DATASETS = ("activity", "azimuth", "elevation", "tracks", "distances")


def _short_datasets(h5: h5py.File) -> str | None:
    """Why a feature file's datasets do not cover its recording (a writer that stopped early,
    a file patched by hand), or None: the features hold fewer frames than its duration at its
    frame rate, or a target dataset another number of frames than the features."""
    frames = h5["features"].shape[1]
    expected = int(
        float(h5.attrs.get("duration_s", 0)) * float(h5.attrs.get("frames_per_second", 0))
    )
    if frames < expected:
        return f"short: {frames} feature frames of the recording's {expected}"
    for key in _FRAME_DATASETS:
        if key in h5 and h5[key].shape[0] != frames:
            return f"short: {key} holds {h5[key].shape[0]} frames, the features {frames}"
    return None


def is_complete(path: Path, config: FeatureConfig, inputs: Mapping[str, str] | None = None) -> bool:
    """Whether ``path`` is a readable, current feature file of ``config`` (and, when given, of
    these ``inputs``), so extraction can skip it."""
    return stale_reason(path, config, inputs) is None


def _events(h5: h5py.File, path: Path) -> list[Event]:
    if "events" not in h5:
        raise DatasetError(path, "feature file holds no events (evaluation recording?)")
    return [
        Event(
            r["label"].decode(),
            float(r["start"]),
            float(r["end"]),
            float(r["elevation"]),
            float(r["azimuth"]),
            float(r["distance"]),
        )
        for r in h5["events"][()]
    ]


def read_events(path: Path) -> list[Event]:
    with h5py.File(path, "r") as h5:
        return _events(h5, path)


def reference_rows(path: Path) -> tuple[np.ndarray, int]:
    """A feature file's reference, and the number of label frames of its recording (what the
    scorer needs): DCASE 2019 submission rows at the 20 ms label rate, or another format's
    track-wise rows at its own rate (:class:`LabelFacts`)."""
    with h5py.File(path, "r") as h5:
        labels = LabelFacts.of(h5)
        frames = labels.num_frames(float(h5.attrs["duration_s"]))
        if labels.dataset_format != "dcase2019":
            if "reference" not in h5:
                raise DatasetError(path, "feature file holds no reference (evaluation recording?)")
            return h5["reference"][()], frames
        events = _events(h5, path)
    return events_to_rows(events, frames), frames


@dataclass(frozen=True)
class Scaler:
    """Per channel and bin mean and standard deviation: arrays of shape (channels, bins)."""

    mean: np.ndarray
    std: np.ndarray
    frames: int
    #: fingerprint of the feature files it was fitted on (:func:`training_inputs`)
    inputs: str = ""

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(channels, frames, bins), or with leading axes -> standardised float32."""
        return ((features - self.mean[:, None, :]) / self.std[:, None, :]).astype(np.float32)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean, std=self.std, frames=self.frames, inputs=self.inputs)

    @classmethod
    def load(cls, path: Path) -> Scaler:
        with np.load(path, allow_pickle=False) as data:
            inputs = str(data["inputs"]) if "inputs" in data else ""
            return cls(data["mean"], data["std"], int(data["frames"]), inputs)


def fit_scaler(paths: Iterable[Path], block_frames: int = 4096) -> Scaler:
    """Mean and std over all frames of the given files, streamed block by block.

    Memory stays at one block whatever the dataset size; block statistics are merged with Chan's
    parallel formula in float64, which keeps the variance exact to rounding.
    """
    count, mean, m2 = 0, None, None
    for path in paths:
        with h5py.File(path, "r") as h5:
            data = h5["features"]
            for start in range(0, data.shape[1], block_frames):
                block = data[:, start : start + block_frames, :].astype(np.float64)
                n = block.shape[1]
                block_mean = block.mean(axis=1)
                block_m2 = ((block - block_mean[:, None, :]) ** 2).sum(axis=1)
                if mean is None:
                    count, mean, m2 = n, block_mean, block_m2
                    continue
                delta = block_mean - mean
                total = count + n
                mean = mean + delta * (n / total)
                m2 = m2 + block_m2 + delta**2 * (count * n / total)
                count = total
    if mean is None:
        raise ValueError("cannot fit a scaler on no feature files")
    std = np.sqrt(m2 / count)
    # a constant channel/bin would divide by zero: leave it unscaled instead
    std = np.where(std > 1e-8, std, 1.0)
    return Scaler(mean.astype(np.float32), std.astype(np.float32), count)


def training_inputs(paths: Iterable[Path]) -> str:
    """One fingerprint of a set of feature files: their recordings' input fingerprints."""
    parts = {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            parts[str(h5.attrs["name"])] = recorded_inputs(h5)
    return combined(parts)


def fold_scaler(root: Path, fmt: str, fold: Fold, subset: str = "dev") -> Scaler:
    """The scaler of one fold, fitted on that fold's training recordings only, cached on disk
    and refitted when those recordings' inputs changed."""
    path = root / "scalers" / f"{fmt}_{fold.protocol}_fold{fold.index}.npz"
    train = [feature_path(root, fmt, subset, name.stem) for name in fold.train]
    inputs = training_inputs(train)
    if path.exists():
        cached = Scaler.load(path)
        if cached.inputs == inputs:
            return cached
    scaler = replace(fit_scaler(train), inputs=inputs)
    scaler.save(path)
    return scaler
