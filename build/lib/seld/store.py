"""HDF5 feature store: one file per recording, per-fold scalers, lazily read training windows.

Layout under a workspace::

    features/<config hash>/config.json
    features/<config hash>/<format>_<subset>/<recording>.h5
    features/<config hash>/scalers/<format>_<protocol>_fold<k>.npz

Each ``.h5`` holds ``features`` (channels, frames, bins), frame-level targets at the feature frame
rate (``activity``, ``azimuth``, ``elevation``: (frames, classes), degrees), the metadata events,
and the recording's name, split, ir, ov and audio facts as attributes. Files are written under a
temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from seld.dcase import CLASSES, RecordingName, num_label_frames
from seld.features import FeatureConfig
from seld.folds import Fold
from seld.fsutil import atomic_path
from seld.metadata import DatasetError, Event, FrameTargets, atomic_write_text
from seld.submission import events_to_rows

STORE_VERSION = 1
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


def write_feature_file(
    path: Path,
    features: np.ndarray,
    targets: FrameTargets | None,
    events: Sequence[Event] | None,
    *,
    name: RecordingName,
    fmt: str,
    subset: str,
    config: FeatureConfig,
    duration_s: float,
) -> None:
    """Write one recording's features atomically (temporary name in the folder, then rename).

    ``features``: (channels, frames, bins); ``targets`` at the feature frame rate, ``None`` for
    recordings without metadata.
    """
    chunk_frames = max(1, min(features.shape[1], round(config.frames_per_second)))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(
            "features",
            data=features,
            chunks=(features.shape[0], chunk_frames, features.shape[2]),
        )
        if targets is not None:
            h5.create_dataset("activity", data=targets.activity.astype(np.uint8))
            h5.create_dataset("azimuth", data=targets.azimuth.astype(np.float32))
            h5.create_dataset("elevation", data=targets.elevation.astype(np.float32))
        if events is not None:
            rows = [
                (e.label.encode(), e.start, e.end, e.elevation, e.azimuth, e.distance)
                for e in events
            ]
            h5.create_dataset("events", data=np.array(rows, dtype=_EVENT_DTYPE))
        h5.attrs.update(
            {
                "name": name.stem,
                "split": name.split,
                "ir": name.ir,
                "ov": name.ov,
                "index": name.index,
                "format": fmt,
                "subset": subset,
                "duration_s": duration_s,
                "frames_per_second": config.frames_per_second,
                "config_hash": config.hash(),
                "store_version": STORE_VERSION,
                "classes": ",".join(CLASSES),
            }
        )


def is_complete(path: Path, config: FeatureConfig) -> bool:
    """Whether ``path`` is a readable feature file of ``config`` (so extraction can skip it)."""
    try:
        with h5py.File(path, "r") as h5:
            return (
                h5.attrs.get("config_hash") == config.hash()
                and h5.attrs.get("store_version") == STORE_VERSION
                and "features" in h5
            )
    except (OSError, KeyError):
        return False


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files left by an interrupted writer; returns how many."""
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


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
    """A feature file's reference as submission rows at the 20 ms label rate, and the number of
    label frames of its recording (what the scorer needs)."""
    with h5py.File(path, "r") as h5:
        frames = num_label_frames(float(h5.attrs["duration_s"]))
        events = _events(h5, path)
    return events_to_rows(events, frames), frames


@dataclass(frozen=True)
class Scaler:
    """Per channel and bin mean and standard deviation: arrays of shape (channels, bins)."""

    mean: np.ndarray
    std: np.ndarray
    frames: int

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(channels, frames, bins) -> standardised float32."""
        return ((features - self.mean[:, None, :]) / self.std[:, None, :]).astype(np.float32)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean, std=self.std, frames=self.frames)

    @classmethod
    def load(cls, path: Path) -> Scaler:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["std"], int(data["frames"]))


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


def fold_scaler(root: Path, fmt: str, fold: Fold, subset: str = "dev") -> Scaler:
    """The scaler of one fold, fitted on that fold's training recordings only, cached on disk."""
    path = root / "scalers" / f"{fmt}_{fold.protocol}_fold{fold.index}.npz"
    if path.exists():
        return Scaler.load(path)
    scaler = fit_scaler(feature_path(root, fmt, subset, name.stem) for name in fold.train)
    scaler.save(path)
    return scaler
