"""A literal, slow re-implementation of the official DCASE 2019 Task 3 scorer: the tests' oracle.

Written from the published description of the official algorithm (``seld-dcase2019``), step by
step and without shortcuts, so that ``seld.metrics`` can be checked against it:

* dense one-hot label arrays ``[frames, 11 classes, 36 * 9 grid cells]`` for the reference (from
  metadata events: frames ``floor(start * 50) .. ceil(end * 50)`` inclusive, angles floored to
  the grid, not clipped) and for the prediction (angles clipped to [-180, 170] x [-40, 40], rows
  past the last frame dropped);
* SED over one-second blocks built by a Python loop, the official block being
  ``[i * 50 : i * 50 + 49]`` (``official_blocks=False``: ``[i * 50 : (i + 1) * 50]``);
* DOA frame by frame with ``scipy.optimize.linear_sum_assignment``;
* counts accumulated over files, metrics computed once at the end; groups by the characters of
  the file name, as the official script does.

Deliberately independent of ``seld.metrics`` and ``seld.data.submission``; it only borrows the
``Event`` type and the class order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from seld.data.dcase import CLASS_INDEX
from seld.data.metadata import Event

FRAMES_PER_SECOND = 50
AZIMUTHS = list(range(-180, 180, 10))
ELEVATIONS = list(range(-40, 50, 10))
NUM_CLASSES = len(CLASS_INDEX)
NUM_CELLS = len(AZIMUTHS) * len(ELEVATIONS)
EPS = np.finfo(float).eps
#: Character of a DCASE 2019 file name holding the split / ir / ov digit (official script).
GROUP_CHARACTER = {"split": 5, "ir": 9, "ov": 13}


def grid_index(azimuth: int, elevation: int) -> int:
    """Flat grid cell of an integer direction in degrees (floor division, as officially)."""
    return (azimuth - AZIMUTHS[0]) // 10 * len(ELEVATIONS) + (elevation - ELEVATIONS[0]) // 10


def grid_direction(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation in degrees of flat grid cells."""
    return index // len(ELEVATIONS) * 10 + AZIMUTHS[0], index % len(ELEVATIONS) * 10 + ELEVATIONS[0]


def reference_labels(events: Iterable[Event], num_frames: int) -> np.ndarray:
    """Dense reference labels ``[num_frames, 11, 324]`` (uint8) from metadata events."""
    labels = np.zeros((num_frames, NUM_CLASSES, NUM_CELLS), dtype=np.uint8)
    for event in events:
        start = int(np.floor(event.start * FRAMES_PER_SECOND))
        end = int(np.ceil(event.end * FRAMES_PER_SECOND))
        end = min(end, num_frames)
        cell = grid_index(int(event.azimuth), int(event.elevation))
        labels[start : end + 1, CLASS_INDEX[event.label], cell] = 1
    return labels


def prediction_labels(rows: Sequence[Sequence[int]], num_frames: int) -> np.ndarray:
    """Dense predicted labels ``[num_frames, 11, 324]`` (uint8) from submission rows."""
    labels = np.zeros((num_frames, NUM_CLASSES, NUM_CELLS), dtype=np.uint8)
    for frame, cls, azimuth, elevation in rows:
        if frame >= num_frames:
            continue
        azimuth = int(np.clip(azimuth, AZIMUTHS[0], AZIMUTHS[-1]))
        elevation = int(np.clip(elevation, ELEVATIONS[0], ELEVATIONS[-1]))
        labels[frame, cls, grid_index(azimuth, elevation)] = 1
    return labels


def great_circle_deg(az1, ele1, az2, ele2):
    """Angle in degrees between directions given in radians (the official formula)."""
    cosine = np.sin(ele1) * np.sin(ele2) + np.cos(ele1) * np.cos(ele2) * np.cos(np.abs(az1 - az2))
    return np.arccos(np.clip(cosine, -1, 1)) * 180 / np.pi


class ReferenceSeldMetrics:
    """Accumulates the official counts file by file; ``compute`` gives the five numbers."""

    def __init__(self, official_blocks: bool = True):
        self.block_length = FRAMES_PER_SECOND - 1 if official_blocks else FRAMES_PER_SECOND
        self.S = self.D = self.I = self.TP = self.Nref = self.Nsys = 0
        self.doa_cost = 0.0
        self.n_pred_doa = 0
        self.n_good_frames = 0
        self.n_frames = 0

    def update_sed(self, predicted: np.ndarray, reference: np.ndarray) -> None:
        """``predicted``, ``reference``: [frames, classes] activity in {0, 1}."""
        n_blocks = int(np.ceil(predicted.shape[0] / FRAMES_PER_SECOND))
        pred_blocks = np.zeros((n_blocks, NUM_CLASSES))
        ref_blocks = np.zeros((n_blocks, NUM_CLASSES))
        for i in range(n_blocks):
            first = i * FRAMES_PER_SECOND
            pred_blocks[i] = predicted[first : first + self.block_length].max(axis=0)
            ref_blocks[i] = reference[first : first + self.block_length].max(axis=0)
        for block in range(n_blocks):
            o, t = pred_blocks[block], ref_blocks[block]
            fp = int(np.sum((t == 0) & (o == 1)))
            fn = int(np.sum((t == 1) & (o == 0)))
            self.S += min(fp, fn)
            self.D += max(0, fn - fp)
            self.I += max(0, fp - fn)
            self.TP += int(np.sum((t == 1) & (o == 1)))
            self.Nref += int(t.sum())
            self.Nsys += int(o.sum())

    def update_doa(self, predicted: np.ndarray, reference: np.ndarray) -> None:
        """``predicted``, ``reference``: [frames, classes, cells] one-hot labels."""
        self.n_pred_doa += int(predicted.sum())
        self.n_frames += predicted.shape[0]
        for frame in range(predicted.shape[0]):
            n_ref = int(reference[frame].sum())
            n_pred = int(predicted[frame].sum())
            if n_ref == n_pred:
                self.n_good_frames += 1
            if n_ref and n_pred:
                ref_azi, ref_ele = grid_direction(np.nonzero(reference[frame])[1])
                pred_azi, pred_ele = grid_direction(np.nonzero(predicted[frame])[1])
                ref_azi, ref_ele = ref_azi * np.pi / 180, ref_ele * np.pi / 180
                pred_azi, pred_ele = pred_azi * np.pi / 180, pred_ele * np.pi / 180
                cost = np.zeros((n_ref, n_pred))
                for r in range(n_ref):
                    for p in range(n_pred):
                        cost[r, p] = great_circle_deg(
                            ref_azi[r], ref_ele[r], pred_azi[p], pred_ele[p]
                        )
                rows, cols = linear_sum_assignment(cost)
                self.doa_cost += cost[rows, cols].sum()

    def update(
        self, events: Iterable[Event], rows: Sequence[Sequence[int]], num_frames: int
    ) -> None:
        reference = reference_labels(events, num_frames)
        predicted = prediction_labels(rows, num_frames)
        self.update_sed(predicted.max(axis=2), reference.max(axis=2))
        self.update_doa(predicted, reference)

    def compute(self) -> dict[str, float]:
        with np.errstate(divide="ignore", invalid="ignore"):
            er = np.float64(self.S + self.D + self.I) / np.float64(self.Nref)
            precision = self.TP / (self.Nsys + EPS)
            recall = self.TP / (self.Nref + EPS)
            f = 2 * precision * recall / (precision + recall + EPS)
            doa_error = np.float64(self.doa_cost) / np.float64(self.n_pred_doa)
            frame_recall = self.n_good_frames / self.n_frames
        seld = np.mean([er, 1 - f, doa_error / 180, 1 - frame_recall])
        return {
            "er": float(er),
            "f": float(f),
            "doa_error": float(doa_error),
            "frame_recall": float(frame_recall),
            "seld": float(seld),
        }


def reference_score(
    files: Mapping[str, tuple[Sequence[Event], Sequence[Sequence[int]], int]],
    *,
    official_blocks: bool = True,
) -> dict[str, dict]:
    """Official-style scores: ``{"all": {...}, "split": {1: {...}}, "ir": ..., "ov": ...}``.

    ``files``: recording name -> (reference events, predicted rows, number of frames).
    """
    out: dict[str, dict] = {}
    for group in ("all", "split", "ov", "ir"):
        members: dict[int, list[str]] = {}
        for name in files:
            key = 0 if group == "all" else int(name[GROUP_CHARACTER[group]])
            members.setdefault(key, []).append(name)
        results = {}
        for key in sorted(members):
            metrics = ReferenceSeldMetrics(official_blocks)
            for name in members[key]:
                metrics.update(*files[name])
            results[key] = metrics.compute()
        out[group] = results[0] if group == "all" else results
    return out


def is_nan_equal(a: float, b: float, tolerance: float = 1e-9) -> bool:
    """Equal to ``tolerance`` (absolute or relative), NaN equal to NaN, inf to inf."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
