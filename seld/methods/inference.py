"""Two-stage inference: per-frame SED probabilities and directions, thresholds, masked DOA.

A model sees a whole recording (in overlapping windows when it is long) and gives, per feature
frame, class probabilities and directions. These are brought to the 50 frames-per-second label
rate and cached as arrays; thresholds (global or per class) are applied afterwards, so they can
be tuned without running a model again. In the two-stage method, the classes detected by the SED
model get the directions of the DOA model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from scipy.ndimage import median_filter

from seld.data.dcase import CLASSES, LABEL_FRAMES_PER_SECOND
from seld.data.metadata import unit_vectors
from seld.data.submission import predictions_to_rows
from seld.features.augment import (
    FeatureMap,
    Symmetry,
    feature_map,
    inverse,
    symmetries,
)
from seld.features.store import LabelFacts, Scaler
from seld.fsutil import atomic_path
from seld.metrics.batched import count_masks, pooled_counts, prepare_references
from seld.metrics.grid import predicted_cells
from seld.metrics.location_aware import pool
from seld.metrics.scores import ScoreReport, SeldCounts, SeldScores, report_from_counts
from seld.metrics.suites import MetricSuite, tracked, untracked


@dataclass
class Prediction:
    """One recording's outputs at the label rate: ``sed`` probabilities, ``azimuth`` and
    ``elevation`` in degrees, each (label frames, classes), and for a model that predicts
    source distances ``distance`` in metres, of the same shape (None otherwise). A
    multi-ACCDOA model's columns are its ``tracks * classes``, track-major."""

    stem: str
    sed: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    distance: np.ndarray | None = None


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    window: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, ...]:
    """Run a model over one recording's (standardised) features (channels, frames, bins), or
    over several views of it at once (views, channels, frames, bins), one batch.

    Returns per feature frame: probabilities, azimuth and elevation in radians, each
    (frames, classes), or (views, frames, classes); for a multi-ACCDOA model the vectors'
    lengths for the probabilities, and ``tracks * classes`` columns, track-major; for a model
    that predicts distances (multi-ACCDDOA), its distances in metres as a fourth array of the
    same shape. With ``window`` frames and a longer recording, windows overlap by half;
    probabilities and distances are averaged and directions are averaged as unit vectors
    where windows overlap.
    """
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    single = x.ndim == 3
    if single:
        x = x[None]
    frames = x.shape[2]
    if window is None or frames <= window:
        starts = [0]
        window = frames
    else:
        hop = max(1, window // 2)
        starts = list(range(0, frames - window + 1, hop))
        if starts[-1] != frames - window:
            starts.append(frames - window)
    sed_sum = xyz_sum = distance_sum = None
    counts = np.zeros((frames, 1), dtype=np.float64)
    for start in starts:
        chunk = x[:, :, start : start + window].to(device)
        out = model(chunk)
        # a model's detection: its event probabilities, or a multi-ACCDOA vector's length
        activity = out["activity"] if "sed_logits" not in out else torch.sigmoid(out["sed_logits"])
        prob = activity.float().cpu().numpy()
        azi = out["azimuth"].float().cpu().numpy()
        ele = out["elevation"].float().cpu().numpy()
        xyz = np.stack([np.cos(ele) * np.cos(azi), np.cos(ele) * np.sin(azi), np.sin(ele)])
        if sed_sum is None:
            sed_sum = np.zeros((len(x), frames, prob.shape[-1]))
            xyz_sum = np.zeros((3, len(x), frames, prob.shape[-1]))
            if "distance" in out:
                distance_sum = np.zeros((len(x), frames, prob.shape[-1]))
        sed_sum[:, start : start + window] += prob
        xyz_sum[:, :, start : start + window] += xyz
        if distance_sum is not None:
            distance_sum[:, start : start + window] += out["distance"].float().cpu().numpy()
        counts[start : start + window] += 1
    sed = sed_sum / counts
    azimuth = np.arctan2(xyz_sum[1], xyz_sum[0])
    elevation = np.arctan2(xyz_sum[2], np.hypot(xyz_sum[0], xyz_sum[1]))
    arrays = [sed, azimuth, elevation]
    if distance_sum is not None:
        arrays.append(distance_sum / counts)
    result = tuple(a.astype(np.float32) for a in arrays)
    return tuple(a[0] for a in result) if single else result


@dataclass(frozen=True)
class View:
    """One test-time view of a recording: its features under a channel symmetry of the array
    (:mod:`seld.features.augment`), and the symmetry that brings the view's directions back."""

    features: FeatureMap
    back: Symmetry


def symmetry_views(fmt: str, kind: str) -> tuple[View, ...]:
    """Every channel symmetry of the array as a test-time view, the identity first (8 for
    ``mic``, 16 for ``foa``): the ``inference.tta`` of a config."""
    return tuple(View(feature_map(s, kind), inverse(s, fmt)) for s in symmetries(fmt))


def views_of(experiment: Any) -> tuple[View, ...]:
    """The views an experiment (:class:`seld.config.ExperimentConfig`, which imports this
    module) predicts with: every symmetry of its format with ``inference.tta``, none (the
    recording as it is) without."""
    if not experiment.inference.tta:
        return ()
    return symmetry_views(experiment.format, experiment.features.kind)


def run_views(
    model: torch.nn.Module,
    features: np.ndarray,
    scaler: Scaler | None,
    views: Sequence[View] = (),
    *,
    window: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, ...]:
    """:func:`run_model` on unscaled features (channels, frames, bins), standardised with
    ``scaler``. With ``views`` (test-time augmentation), the model sees each view (on a GPU all
    in one batch; on the CPU one after another, which is twice as fast there as a batch of 8);
    each view's directions are mapped back to the recording's frame, then probabilities (and
    distances, which no symmetry of the array changes) are averaged and directions averaged as
    unit vectors. Returns what :func:`run_model` does."""

    def scaled(x: np.ndarray) -> np.ndarray:
        return scaler.apply(x) if scaler is not None else x

    if not views:
        return run_model(model, scaled(features), window=window, device=device)
    if torch.device(device).type == "cpu":
        outputs = [
            run_model(model, scaled(v.features.apply(features)), window=window, device=device)
            for v in views
        ]
        sed, azimuth, elevation, *distance = (np.stack(a) for a in zip(*outputs, strict=True))
    else:
        batch = scaled(np.stack([v.features.apply(features) for v in views]))
        sed, azimuth, elevation, *distance = run_model(model, batch, window=window, device=device)
    xyz = np.zeros((*sed.shape[1:], 3))
    for view, azi, ele in zip(views, azimuth, elevation, strict=True):
        xyz += unit_vectors(*view.back.directions(np.degrees(azi), np.degrees(ele)))
    return (
        sed.mean(axis=0),
        np.arctan2(xyz[..., 1], xyz[..., 0]).astype(np.float32),
        np.arctan2(xyz[..., 2], np.hypot(xyz[..., 0], xyz[..., 1])).astype(np.float32),
        *(d.mean(axis=0) for d in distance),
    )


def to_label_rate(
    array: np.ndarray,
    frames_per_second: float,
    num_frames: int,
    label_frames_per_second: float = LABEL_FRAMES_PER_SECOND,
    *,
    mean: bool = False,
) -> np.ndarray:
    """Feature frames to ``num_frames`` label frames. At DCASE 2019's 20 ms: the feature frame
    nearest each label frame's start (as the seed does). At a longer label frame (100 ms): the
    feature frame at its middle, or with ``mean`` the mean of the feature frames inside it
    (probabilities). Past the end, the last frame repeats."""
    ratio = frames_per_second / label_frames_per_second
    last = len(array) - 1
    if label_frames_per_second == LABEL_FRAMES_PER_SECOND:
        index = np.minimum(np.round(np.arange(num_frames) * ratio).astype(int), last)
        return array[index]
    starts = np.minimum(np.floor(np.arange(num_frames) * ratio + 1e-9).astype(int), last)
    stops = np.maximum(
        np.minimum(np.floor(np.arange(1, num_frames + 1) * ratio + 1e-9).astype(int), last + 1),
        starts + 1,
    )
    if not mean:
        return array[(starts + stops - 1) // 2]
    sums = np.concatenate([np.zeros((1, *array.shape[1:])), np.cumsum(array, axis=0)])
    return ((sums[stops] - sums[starts]) / (stops - starts)[:, None]).astype(array.dtype)


def predict_file(
    model: torch.nn.Module,
    path: Path,
    scaler: Scaler | None,
    *,
    window: int | None = None,
    device: torch.device | str = "cpu",
    views: Sequence[View] = (),
) -> Prediction:
    """Predict one feature file at the label rate (its duration gives the label frame count),
    through each of ``views`` when given (:func:`run_views`)."""
    with h5py.File(path, "r") as h5:
        features = h5["features"][()]
        fps = float(h5.attrs["frames_per_second"])
        labels = LabelFacts.of(h5)
        frames = labels.num_frames(float(h5.attrs["duration_s"]))
        stem = str(h5.attrs["name"])
    outputs = run_views(model, features, scaler, views, window=window, device=device)
    return label_rate_prediction(stem, outputs, fps, frames, labels.label_frames_per_second)


def label_rate_prediction(
    stem: str, outputs: Sequence[np.ndarray], fps: float, frames: int, rate: float
) -> Prediction:
    """A :class:`Prediction` of ``frames`` label frames at ``rate`` per second from what
    :func:`run_views` gives at ``fps`` feature frames per second: probabilities averaged over
    each label frame, directions (in degrees) and distances read at its middle (as
    :func:`to_label_rate` does)."""
    sed, azimuth, elevation, *distance = outputs
    return Prediction(
        stem,
        to_label_rate(sed, fps, frames, rate, mean=True),
        np.degrees(to_label_rate(azimuth, fps, frames, rate)),
        np.degrees(to_label_rate(elevation, fps, frames, rate)),
        *(to_label_rate(d, fps, frames, rate) for d in distance),
    )


def ensemble(predictions: Sequence[Prediction]) -> Prediction:
    """One prediction from several models' predictions of the same recording: probabilities
    averaged, directions averaged as unit vectors (the mean direction, which no azimuth
    wrap-around can pull to the opposite side, as a mean of angles would: the mean of 170° and
    -170° is 180°, not 0°), distances (where they predict them) averaged. One prediction is
    returned unchanged."""
    if not predictions:
        raise ValueError("an ensemble needs at least one prediction")
    first = predictions[0]
    if len(predictions) == 1:
        return first
    if any(p.stem != first.stem or p.sed.shape != first.sed.shape for p in predictions):
        raise ValueError(f"predictions of {first.stem} do not match in name or shape")
    sed = np.mean([p.sed for p in predictions], axis=0, dtype=np.float64)
    xyz = np.zeros((3, *first.sed.shape))
    for p in predictions:
        azimuth = np.radians(p.azimuth, dtype=np.float64)
        elevation = np.radians(p.elevation, dtype=np.float64)
        xyz += np.stack(
            [
                np.cos(elevation) * np.cos(azimuth),
                np.cos(elevation) * np.sin(azimuth),
                np.sin(elevation),
            ]
        )
    azimuth = np.degrees(np.arctan2(xyz[1], xyz[0]))
    elevation = np.degrees(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1])))
    distance = None
    if any(p.distance is not None for p in predictions):
        if any(p.distance is None for p in predictions):
            raise ValueError(f"predictions of {first.stem}: some with distances, some without")
        distance = np.mean([p.distance for p in predictions], axis=0, dtype=np.float64)
        distance = distance.astype(np.float32)
    return Prediction(
        first.stem,
        sed.astype(np.float32),
        azimuth.astype(np.float32),
        elevation.astype(np.float32),
        distance,
    )


@dataclass(frozen=True)
class Postprocessing:
    """How probabilities become detections: a threshold per class, and a median filter over
    ``median_frames`` label frames (20 ms each; 1 = off) of each class's activity."""

    thresholds: np.ndarray
    median_frames: int = 1
    #: the dataset format's classes, in index order (DCASE 2019's by default)
    classes: tuple[str, ...] = CLASSES

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any],
        default_threshold: float = 0.3,
        classes: Sequence[str] = CLASSES,
    ) -> Postprocessing:
        """From a search's parameters: ``threshold`` (one for every class) or
        ``threshold_<class>``, and ``median_frames``."""
        classes = tuple(classes)
        if f"threshold_{classes[0]}" in params:
            values = [params[f"threshold_{c}"] for c in classes]
        else:
            values = [params.get("threshold", default_threshold)] * len(classes)
        thresholds = np.asarray(values, dtype=np.float32)
        return cls(thresholds, int(params.get("median_frames", 1)), classes)

    def to_params(self) -> dict[str, Any]:
        """Plain values that :meth:`from_params` reads back (JSON, an exported model)."""
        # str() of a float32 is its shortest exact form: 0.3, not 0.30000001192092896
        values = [float(str(v)) for v in np.asarray(self.thresholds, dtype=np.float32)]
        if len(set(values)) == 1:
            return {"threshold": values[0], "median_frames": int(self.median_frames)}
        per_class = {f"threshold_{c}": v for c, v in zip(self.classes, values, strict=True)}
        return {**per_class, "median_frames": int(self.median_frames)}

    def rows(self, prediction: Prediction) -> np.ndarray:
        """The submission rows of one prediction under this post-processing."""
        return submission_rows(prediction, self.thresholds, median_frames=self.median_frames)

    def tracked_rows(self, prediction: Prediction, decode: Any = None) -> np.ndarray:
        """The track-wise rows ``(frame, class, track, azimuth, elevation)`` of one prediction
        under this post-processing, with the directions as predicted (and a distance in metres
        where the method predicts distances): by ``decode`` (a method's,
        :attr:`seld.methods.method.Method.decode`), else class by class (:func:`tracked_rows`)."""
        decode = decode or tracked_rows
        return decode(prediction, self.thresholds, self.median_frames, rounded=False)


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
        activity = detections(prediction, thresholds, median_frames)
    return predictions_to_rows(activity.astype(bool), *_rounded_directions(prediction))


def detections(
    prediction: Prediction,
    thresholds: float | Sequence[float] | np.ndarray = 0.3,
    median_frames: int = 1,
) -> np.ndarray:
    """(frames, classes) bool: where a class's probability exceeds its threshold, then a median
    filter over ``median_frames`` label frames (1: none)."""
    activity = prediction.sed > np.asarray(thresholds, dtype=np.float32)
    if median_frames > 1:  # smooth each class's detections over time
        activity = median_filter(activity.astype(np.uint8), size=(median_frames, 1)) > 0
    return activity


def activity_rows(prediction: Prediction, activity: np.ndarray) -> np.ndarray:
    """Track-wise rows ``(frame, class, 0, azimuth, elevation)`` of the active (frame, class)
    pairs of ``activity``, with the predicted (continuous) directions."""
    frames, classes = np.nonzero(activity)
    return np.stack(
        [
            frames,
            classes,
            np.zeros(len(frames)),
            prediction.azimuth[frames, classes],
            prediction.elevation[frames, classes],
        ],
        axis=1,
    ).astype(np.float64)


def tracked_rows(
    prediction: Prediction,
    thresholds: float | Sequence[float] | np.ndarray = 0.3,
    median_frames: int = 1,
    *,
    rounded: bool = True,
) -> np.ndarray:
    """Track-wise rows ``(frame, class, 0, azimuth, elevation)`` of the detections, as metric
    suites take them (:mod:`seld.metrics.suites`): the directions rounded to the 10 degree grid
    as a DCASE 2019 submission writes them, or (``rounded=False``) as predicted, for the suites
    that score continuous directions."""
    if rounded:
        return tracked(submission_rows(prediction, thresholds, median_frames=median_frames))
    return activity_rows(prediction, detections(prediction, thresholds, median_frames))


def round_rows_to_grid(rows: np.ndarray) -> np.ndarray:
    """Track-wise rows with their directions rounded to the nearest 10 degrees, as a DCASE
    2019 submission writes them (azimuth 180 as -180)."""
    out = np.array(rows, dtype=np.float64, copy=True).reshape(-1, np.shape(rows)[-1])
    out[:, 3], out[:, 4] = _grid_angles(out[:, 3], out[:, 4])
    return out


def grid_rows(
    prediction: Prediction,
    thresholds: float | Sequence[float] | np.ndarray = 0.3,
    median_frames: int = 1,
    decode: Any = None,
) -> np.ndarray:
    """DCASE 2019 submission rows ``(frame, class, azimuth, elevation)`` (int, on the 10
    degree grid) of a prediction: class by class (:func:`submission_rows`), or, for a method
    that decodes several tracks per class (``decode``,
    :attr:`seld.methods.method.Method.decode`), its decoded rows: a class may then hold
    several directions in a frame, as the 2019 format allows."""
    if decode is None or decode is tracked_rows:
        return submission_rows(prediction, thresholds, median_frames=median_frames)
    out = untracked(decode(prediction, thresholds, median_frames, rounded=True))
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def _rounded_directions(prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation (degrees) rounded to the nearest 10 degrees, as submitted."""
    return _grid_angles(prediction.azimuth, prediction.elevation)


def _grid_angles(azimuth: np.ndarray, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles in degrees rounded to the nearest 10 degrees."""
    # 180 and -180 are one direction; the scorer's grid only has -180 (it clips 180 to 170)
    azimuth = (np.round(azimuth / 10.0) * 10.0 + 180.0) % 360.0 - 180.0
    return azimuth, np.round(elevation / 10.0) * 10.0


@lru_cache(maxsize=32)
def _median_plan(offsets: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose median window crosses the edge of their segment (``offsets``: int64 segment
    bounds as bytes), and the window of each padded by reflection (scipy's default mode,
    ``d c b a | a b c d | d c b a``): (E,) and (E, size) frame indices."""
    bounds = np.frombuffer(offsets, dtype=np.int64).tolist()
    before, after = size // 2, size - 1 - size // 2
    edges, windows = [np.zeros(0, np.int64)], [np.zeros((0, size), np.int64)]
    for first, stop in itertools.pairwise(bounds):
        n = stop - first
        near = np.unique(np.r_[0 : min(n, before), max(0, n - after) : n])
        local = (near[:, None] + np.arange(-before, after + 1)) % (2 * n)
        edges.append(first + near)
        windows.append(first + np.where(local < n, local, 2 * n - 1 - local))
    return np.concatenate(edges), np.concatenate(windows)


def _binary_median(activity: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(a.T.astype(np.uint8), size=(size, 1)).T > 0`` of each
    recording's segment ``a = activity[:, offsets[k]:offsets[k + 1]]`` of a (classes, frames)
    bool array, all segments at once.

    On 0/1 values the median is a majority vote: the sorted window's element at index
    ``size // 2`` is 1 when the window holds at most ``size // 2`` zeros. Windows are summed by
    shifted slices over all segments together; the few frames whose window crosses a segment's
    edge are then redone with the reflected padding.
    """
    before, after = size // 2, size - 1 - size // 2
    edges, windows = _median_plan(np.asarray(offsets, dtype=np.int64).tobytes(), size)
    ones = activity.view(np.uint8)
    total = ones.shape[1]
    votes = np.zeros(ones.shape, dtype=np.uint8 if size < 256 else np.int32)
    for shift in range(-before, after + 1):  # votes[:, i] += ones[:, i + shift]
        votes[:, max(0, -shift) : total - max(0, shift)] += ones[
            :, max(0, shift) : total + min(0, shift)
        ]
    votes[:, edges] = ones[:, windows].sum(axis=2, dtype=votes.dtype)
    out = votes >= size - before
    for first, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        if size > 2 * (stop - first):  # scipy extends a window past twice the length its own way
            segment = np.ascontiguousarray(ones[:, first:stop].T)
            out[:, first:stop] = (median_filter(segment, size=(size, 1)) > 0).T
    return out


class ThresholdScorer:
    """Scores one set of predictions under many thresholds / median filters, fast.

    ``scorer.counts(thresholds, median_frames)`` equals, number for number, ``count_file`` of
    ``submission_rows(p, thresholds, median_frames=median_frames)`` against each recording's
    reference, and ``report`` equals ``score_files`` of them: the references
    (:func:`seld.metrics.batched.prepare_references`) and the grid cells of the rounded
    directions are prepared once, and each call only thresholds, filters and counts, all
    recordings at once.

    ``predictions``: name -> :class:`Prediction`; ``refs``: name -> ``(ref_rows, num_frames)``
    for at least those names. Recordings keep the order of ``predictions``. An instance holds
    only arrays: it pickles cheaply (e.g. into Ray's object store).
    """

    def __init__(
        self,
        predictions: Mapping[str, Prediction],
        refs: Mapping[str, tuple[np.ndarray, int]],
        *,
        official_blocks: bool = True,
    ):
        #: the classes the predictions' columns are (DCASE 2019's)
        self.classes: tuple[str, ...] = CLASSES
        names = list(predictions)
        self.references = prepare_references(
            {name: refs[name] for name in names}, official_blocks=official_blocks
        )
        preds = [predictions[name] for name in names]
        lengths = np.array([len(p.sed) for p in preds])
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        #: (classes, frames of all predictions) probabilities, classes contiguous per row
        self.sed = np.ascontiguousarray(np.concatenate([p.sed for p in preds]).T)
        cells, finite = [], []
        for p in preds:
            azimuth, elevation = (np.asarray(a, dtype=np.float64) for a in _rounded_directions(p))
            ok = np.isfinite(azimuth) & np.isfinite(elevation)
            azimuth, elevation = (
                np.rint(np.where(ok, azimuth, 0)),
                np.rint(np.where(ok, elevation, 0)),
            )
            cells.append(predicted_cells(azimuth.astype(np.int64), elevation.astype(np.int64)))
            finite.append(ok)
        cells = np.concatenate(cells).astype(np.int16)
        self._finite = None
        if not all(f.all() for f in finite):
            self._finite = np.ascontiguousarray(np.concatenate(finite).T)
        # each prediction's frames on the reference frame axis (cropped, or padded with nothing)
        frames = self.references.num_frames
        self._to_reference = None
        #: (reference frames, classes) grid cell of each class's rounded predicted direction
        self.cells = cells
        if not np.array_equal(lengths, frames):
            kept = np.minimum(lengths, frames)

            def frames_kept(offsets: np.ndarray) -> np.ndarray:
                return np.concatenate(
                    [o + np.arange(k) for o, k in zip(offsets[:-1], kept, strict=True)]
                )

            src, dst = frames_kept(self._offsets), frames_kept(self.references.frame_offsets)
            self._to_reference = (src, dst)
            self.cells = np.zeros((int(frames.sum()), cells.shape[1]), dtype=np.int16)
            self.cells[dst] = cells[src]

    @property
    def names(self) -> tuple[str, ...]:
        return self.references.names

    def masks(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> np.ndarray:
        """(reference frames,) uint16 class masks (:func:`seld.metrics.batched.class_masks`) of the
        detections that :func:`submission_rows` makes."""
        limits = np.asarray(thresholds, dtype=np.float32)
        active = self.sed > (limits[:, None] if limits.ndim == 1 else limits)
        if median_frames > 1:
            active = _binary_median(active, self._offsets, median_frames)
        if self._finite is not None and (active & ~self._finite).any():
            raise ValueError("NaN or infinite angle at an active (frame, class)")
        masks = np.zeros(active.shape[1], dtype=np.uint16)
        for c, row in enumerate(active.view(np.uint8)):
            masks |= row.astype(np.uint16) << c
        if self._to_reference is None:
            return masks
        src, dst = self._to_reference
        out = np.zeros(len(self.cells), dtype=np.uint16)
        out[dst] = masks[src]
        return out

    def counts(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> dict[str, SeldCounts]:
        """Each recording's counts, as ``count_file`` gives them."""
        return count_masks(self.references, self.masks(thresholds, median_frames), self.cells)

    def report(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> ScoreReport:
        """What ``score_files`` gives for the thresholded submissions of every recording."""
        return report_from_counts(self.counts(thresholds, median_frames))

    def overall(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> SeldScores:
        """The scores of all recordings together (``report(...).overall``, without the rest)."""
        masks = self.masks(thresholds, median_frames)
        return pooled_counts(self.references, masks, self.cells).scores()

    def scores(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> dict[str, float]:
        """:meth:`overall` as a dict (what :class:`SuiteScorer` gives too)."""
        return self.overall(thresholds, median_frames).as_dict()

    @staticmethod
    def pooled(counts: Mapping[str, SeldCounts]) -> dict[str, float]:
        """The scores of per-recording counts pooled (from :meth:`counts` of any scorers)."""
        return report_from_counts(counts).overall.as_dict()


class SuiteScorer:
    """:class:`ThresholdScorer`'s job for any metric suite (:mod:`seld.metrics.suites`): one
    set of predictions scored under many thresholds / median filters. Each call thresholds
    the predictions into track-wise rows (:func:`tracked_rows`: the 10 degree grid for a suite
    that rounds, the predicted directions otherwise) and counts all recordings in one pass.

    ``predictions``: name -> :class:`Prediction`; ``refs``: name -> ``(ref_rows, num_frames)``
    for at least those names: DCASE 2019 rows, or under ``labels`` another dataset format's
    track-wise rows (:func:`seld.features.store.reference_rows`)."""

    def __init__(
        self,
        suite: MetricSuite,
        predictions: Mapping[str, Prediction],
        refs: Mapping[str, tuple[np.ndarray, int]],
        *,
        labels: LabelFacts | None = None,
        decode: Any = None,
    ):
        self.suite = suite
        #: predictions to rows: a method's decoding (several tracks per class), else
        #: :func:`tracked_rows`
        self.decode = decode or tracked_rows
        self.names = tuple(predictions)
        self._predictions = [predictions[n] for n in self.names]
        labels = labels or LabelFacts()
        # DCASE 2019 references are (frame, class, azimuth, elevation); other formats' are
        # track-wise already
        wise = tracked if labels.dataset_format == "dcase2019" else np.asarray
        self._references = [(wise(refs[n][0]), refs[n][1]) for n in self.names]
        self._rate, self._classes = labels.label_frames_per_second, labels.num_classes
        #: the classes the predictions' columns are
        self.classes: tuple[str, ...] = labels.classes

    def counts(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> dict[str, dict[str, np.ndarray]]:
        """Each recording's counts under this post-processing."""
        rounded = self.suite.rounds_to_grid
        recordings = [
            (ref, self.decode(p, thresholds, median_frames, rounded=rounded), frames)
            for (ref, frames), p in zip(self._references, self._predictions, strict=True)
        ]
        each = self.suite.count_many(recordings, self._rate, self._classes)
        return dict(zip(self.names, each, strict=True))

    def scores(
        self, thresholds: float | Sequence[float] | np.ndarray = 0.3, median_frames: int = 1
    ) -> dict[str, float]:
        """The suite's scores of all recordings together."""
        return self.pooled(self.counts(thresholds, median_frames))

    def pooled(self, counts: Mapping[str, dict[str, np.ndarray]]) -> dict[str, float]:
        """The suite's scores of per-recording counts pooled."""
        return self.suite.scores(pool(list(counts.values())))


def save_predictions(path: Path, predictions: Sequence[Prediction]) -> None:
    """Cache predictions as one ``.npz`` (arrays named ``<stem>/sed`` etc., ``<stem>/distance``
    where they have distances), atomically."""
    arrays = {}
    for p in predictions:
        arrays[f"{p.stem}/sed"] = p.sed
        arrays[f"{p.stem}/azimuth"] = p.azimuth
        arrays[f"{p.stem}/elevation"] = p.elevation
        if p.distance is not None:
            arrays[f"{p.stem}/distance"] = p.distance
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_predictions(path: Path) -> dict[str, Prediction]:
    with np.load(path, allow_pickle=False) as data:
        stems = sorted({key.split("/")[0] for key in data.files})
        return {
            s: Prediction(
                s,
                data[f"{s}/sed"],
                data[f"{s}/azimuth"],
                data[f"{s}/elevation"],
                data[f"{s}/distance"] if f"{s}/distance" in data.files else None,
            )
            for s in stems
        }
