"""The DCASE 2019 metrics on continuous directions, at any label rate and class count: what the
2019 baseline scores its regression outputs with.

The official 2019 challenge scorer (:mod:`seld.metrics.reference`) grids every direction on
10 degrees, with elevations -40..40 and 50 label frames per second, so it cannot take the later
datasets (elevations to +-90, 100 ms frames). The same repository (``seld-dcase2019``,
``metrics/evaluation_metrics.py``) scores the baseline's own regression outputs with
``compute_sed_scores`` and ``compute_doa_scores_regr``: the 2019 definitions on per-frame
arrays of one direction per class, which the DCASE 2020 baseline and EIN-SELD also report as
the "2019" scores of later data. This module computes them from track-wise rows ``(frame,
class, track, azimuth, elevation)`` (degrees), many recordings' counts at once. A frame with
several instances of a class is scored with the first in the file (the arrays hold one), as
:mod:`seld.metrics.dcase2020` does.

* SED, per one-second block (``frames_per_block`` label frames) and class: active where any
  of the block's frames is, the block being ``frames[i * n : i * n + n - 1]`` as the official
  slice has it (the last frame of every block is not read). Per block, with FP and FN summed
  over classes, ``S += min(FP, FN)``, ``D += max(0, FN - FP)``, ``I += max(0, FP - FN)``;
  ``TP``, ``Nref`` and ``Nsys`` count active (block, class) pairs.
* DOA, per frame: the directions of the reference's and the prediction's active classes are
  matched, ignoring class, by the minimum total great-circle angle (Hungarian); the matched
  angles add to the DOA cost. Frames whose counts of active classes agree (zero included) are
  good frames.

The counts are :class:`seld.metrics.scores.SeldCounts`, so the scores are the 2019 ones: ER,
F, DOA error = cost / predicted directions, frame recall = good frames / frames, and SELD =
mean(ER, 1 - F, DOA error / 180, 1 - frame recall). On directions of the 10 degree grid at
50 frames per second they equal the official grid scorer's (a test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seld.metrics.matching import (
    first_per_cell,
    great_circle_deg,
    match_cells,
    stack_recordings,
)
from seld.metrics.scores import SeldCounts

__all__ = ["count_recordings"]


def count_recordings(
    recordings: Sequence[tuple[np.ndarray, np.ndarray, int]],
    frames_per_block: int,
    num_classes: int,
) -> list[SeldCounts]:
    """Each ``(reference rows, predicted rows, num_frames)``'s counts, all recordings at once;
    rows at or past ``num_frames`` are dropped, as the official arrays have no room for them."""
    n = frames_per_block
    frames = np.array([int(f) for _, _, f in recordings], dtype=np.int64)
    blocks = -(-frames // n)
    # each recording on one frame axis from a whole block on, so that a block never spans two
    offsets = np.concatenate([[0], np.cumsum(blocks * n)])
    sides = []
    for side, at in (("reference", 0), ("prediction", 1)):
        rows = []
        for recording, num_frames in zip(recordings, frames, strict=True):
            r = np.asarray(recording[at], dtype=np.float64)
            rows.append(r[r[:, 0] < num_frames] if r.ndim == 2 and len(r) else r)
        sides.append(first_per_cell(*stack_recordings(rows, offsets, num_classes, side)))
    (ref_key, ref), (pred_key, pred) = sides
    block_of = np.repeat(np.arange(len(recordings)), blocks)  # global block -> recording
    frame_of = np.repeat(np.arange(len(recordings)), blocks * n)  # global frame -> recording
    real = (np.arange(offsets[-1]) - np.repeat(offsets[:-1], blocks * n)) < np.repeat(
        frames, blocks * n
    )

    # SED: (block, class) pairs active in a block's read frames
    def active(key: np.ndarray) -> np.ndarray:
        frame = key // num_classes
        kept = frame % n != n - 1  # the official slice leaves it out
        return np.unique(frame[kept] // n * num_classes + key[kept] % num_classes)

    ref_on, pred_on = active(ref_key), active(pred_key)
    hit = np.isin(pred_on, ref_on, assume_unique=True)
    missed = ref_on[~np.isin(ref_on, pred_on, assume_unique=True)]
    total_blocks = int(blocks.sum())
    fp = np.bincount(pred_on[~hit] // num_classes, minlength=total_blocks)
    fn = np.bincount(missed // num_classes, minlength=total_blocks)
    m = len(recordings)

    def per_recording(values: np.ndarray, at: np.ndarray) -> np.ndarray:
        return np.bincount(at, weights=values, minlength=m)

    sed = {
        "S": per_recording(np.minimum(fp, fn), block_of),
        "D": per_recording(np.maximum(0, fn - fp), block_of),
        "I": per_recording(np.maximum(0, fp - fn), block_of),
        "TP": per_recording(np.ones(int(hit.sum())), block_of[pred_on[hit] // num_classes]),
        "Nref": per_recording(np.ones(len(ref_on)), block_of[ref_on // num_classes]),
        "Nsys": per_recording(np.ones(len(pred_on)), block_of[pred_on // num_classes]),
    }

    # DOA: per frame, the active classes' directions matched ignoring class
    n_ref = np.bincount(ref_key // num_classes, minlength=len(real))
    n_pred = np.bincount(pred_key // num_classes, minlength=len(real))
    ref_start, pred_start = np.cumsum(n_ref) - n_ref, np.cumsum(n_pred) - n_pred
    both = np.flatnonzero((n_ref > 0) & (n_pred > 0))
    cost = np.zeros(m)
    shapes = n_ref[both] * (num_classes + 1) + n_pred[both]
    for shape in np.unique(shapes):
        at = both[shapes == shape]
        n_r, n_p = int(shape // (num_classes + 1)), int(shape % (num_classes + 1))
        r_at = ref_start[at][:, None] + np.arange(n_r)  # (frames, n_r)
        p_at = pred_start[at][:, None] + np.arange(n_p)
        angles = great_circle_deg(
            ref[r_at, 3][:, :, None],
            ref[r_at, 4][:, :, None],
            pred[p_at, 3][:, None, :],
            pred[p_at, 4][:, None, :],
        )  # (frames, n_r, n_p)
        cell, row, col = match_cells(angles)
        cost += per_recording(angles[cell, row, col], frame_of[at[cell]])
    good = per_recording(((n_ref == n_pred) & real).astype(np.float64), frame_of)
    n_predicted = per_recording(n_pred.astype(np.float64), frame_of)
    return [
        SeldCounts(
            **{k: int(v[i]) for k, v in sed.items()},
            doa_cost_deg=float(cost[i]),
            n_pred_doa=int(n_predicted[i]),
            n_good_frames=int(good[i]),
            n_frames=int(frames[i]),
            n_blocks=int(blocks[i]),
        )
        for i in range(m)
    ]
