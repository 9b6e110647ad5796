"""Two-stage inference: per-frame SED probabilities and directions, thresholds, masked DOA.

A model sees a whole recording (in overlapping windows when it is long) and gives, per feature
frame, class probabilities and directions. These are brought to the 50 frames-per-second label
rate and cached as arrays; thresholds (global or per class) are applied afterwards, so they can
be tuned without running a model again. In the two-stage method, the classes detected by the SED
model get the directions of the DOA model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.ndimage import median_filter

from seld.dcase import LABEL_FRAMES_PER_SECOND, num_label_frames
from seld.fsutil import atomic_path
from seld.store import Scaler
from seld.submission import predictions_to_rows


@dataclass
class Prediction:
    """One recording's outputs at the label rate: ``sed`` probabilities, ``azimuth`` and
    ``elevation`` in degrees, each (label frames, classes)."""

    stem: str
    sed: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    window: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a model over one recording's (standardised) features (channels, frames, bins).

    Returns per feature frame: probabilities, azimuth and elevation in radians, each
    (frames, classes). With ``window`` frames and a longer recording, windows overlap by half;
    probabilities are averaged and directions are averaged as unit vectors where windows overlap.
    """
    model.eval()
    frames = features.shape[1]
    if window is None or frames <= window:
        starts = [0]
        window = frames
    else:
        hop = max(1, window // 2)
        starts = list(range(0, frames - window + 1, hop))
        if starts[-1] != frames - window:
            starts.append(frames - window)
    sed_sum = xyz_sum = None
    counts = np.zeros((frames, 1), dtype=np.float64)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    for start in starts:
        chunk = x[None, :, start : start + window].to(device)
        out = model(chunk)
        prob = torch.sigmoid(out["sed_logits"].float())[0].cpu().numpy()
        azi = out["azimuth"].float()[0].cpu().numpy()
        ele = out["elevation"].float()[0].cpu().numpy()
        xyz = np.stack([np.cos(ele) * np.cos(azi), np.cos(ele) * np.sin(azi), np.sin(ele)])
        if sed_sum is None:
            sed_sum = np.zeros((frames, prob.shape[1]))
            xyz_sum = np.zeros((3, frames, prob.shape[1]))
        sed_sum[start : start + window] += prob
        xyz_sum[:, start : start + window] += xyz
        counts[start : start + window] += 1
    sed = sed_sum / counts
    azimuth = np.arctan2(xyz_sum[1], xyz_sum[0])
    elevation = np.arctan2(xyz_sum[2], np.hypot(xyz_sum[0], xyz_sum[1]))
    return sed.astype(np.float32), azimuth.astype(np.float32), elevation.astype(np.float32)


def to_label_rate(array: np.ndarray, frames_per_second: float, num_frames: int) -> np.ndarray:
    """Pick the feature frame nearest each 20 ms label frame (as the seed does), then crop or
    pad (repeating the last frame) to ``num_frames``."""
    ratio = frames_per_second / LABEL_FRAMES_PER_SECOND
    index = np.minimum(np.round(np.arange(num_frames) * ratio).astype(int), len(array) - 1)
    return array[index]


def predict_file(
    model: torch.nn.Module,
    path: Path,
    scaler: Scaler | None,
    *,
    window: int | None = None,
    device: torch.device | str = "cpu",
) -> Prediction:
    """Predict one feature file at the label rate (its duration gives the label frame count)."""
    with h5py.File(path, "r") as h5:
        features = h5["features"][()]
        fps = float(h5.attrs["frames_per_second"])
        frames = num_label_frames(float(h5.attrs["duration_s"]))
        stem = str(h5.attrs["name"])
    if scaler is not None:
        features = scaler.apply(features)
    sed, azi, ele = run_model(model, features, window=window, device=device)
    return Prediction(
        stem,
        to_label_rate(sed, fps, frames),
        np.degrees(to_label_rate(azi, fps, frames)),
        np.degrees(to_label_rate(ele, fps, frames)),
    )


def combine(sed: Prediction, doa: Prediction) -> Prediction:
    """The two-stage prediction: detection from the SED model, directions from the DOA model."""
    if sed.stem != doa.stem or sed.sed.shape != doa.azimuth.shape:
        raise ValueError(f"predictions of {sed.stem} and {doa.stem} do not match")
    return Prediction(sed.stem, sed.sed, doa.azimuth, doa.elevation)


def submission_rows(
    prediction: Prediction,
    thresholds: float | Sequence[float] | np.ndarray = 0.3,
    activity: np.ndarray | None = None,
    median_frames: int = 1,
) -> np.ndarray:
    """DCASE submission rows: classes whose probability exceeds the threshold (one value or one
    per class) get the predicted direction, rounded to the nearest 10 degrees as in the seed.
    ``activity`` (frames, classes) replaces the detection (e.g. the reference, to judge a DOA
    model alone)."""
    if activity is None:
        activity = prediction.sed > np.asarray(thresholds, dtype=np.float32)
        if median_frames > 1:  # smooth each class's detections over time
            activity = median_filter(activity.astype(np.uint8), size=(median_frames, 1)) > 0
    # 180 and -180 are one direction; the scorer's grid only has -180 (it clips 180 to 170)
    azimuth = (np.round(prediction.azimuth / 10.0) * 10.0 + 180.0) % 360.0 - 180.0
    elevation = np.round(prediction.elevation / 10.0) * 10.0
    return predictions_to_rows(activity.astype(bool), azimuth, elevation)


def save_predictions(path: Path, predictions: Sequence[Prediction]) -> None:
    """Cache predictions as one ``.npz`` (arrays named ``<stem>/sed`` etc.), atomically."""
    arrays = {}
    for p in predictions:
        arrays[f"{p.stem}/sed"] = p.sed
        arrays[f"{p.stem}/azimuth"] = p.azimuth
        arrays[f"{p.stem}/elevation"] = p.elevation
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_predictions(path: Path) -> dict[str, Prediction]:
    with np.load(path, allow_pickle=False) as data:
        stems = sorted({key.split("/")[0] for key in data.files})
        return {
            s: Prediction(s, data[f"{s}/sed"], data[f"{s}/azimuth"], data[f"{s}/elevation"])
            for s in stems
        }
