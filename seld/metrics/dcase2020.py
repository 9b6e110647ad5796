"""The SELD metrics of DCASE 2020 (TAU-NIGENS Spatial Sound Events 2020): location-aware
detection and class-dependent localization in one-second blocks, one direction per class.

What the official code (``seld-dcase2020``, ``metrics/SELD_evaluation_metrics.py``,
``update_seld_scores`` with polar coordinates, driven by ``cls_compute_seld_results.py``)
computes, from arrays. Rows are track-wise ``(frame, class, track, azimuth, elevation)`` in
degrees; the track is not read. The 2020 code holds one direction per class and frame (with
two it fails); here a frame with several instances of a class is scored with the first in the
file, and :func:`several_per_frame` says whether that happened.

Per one-second block (``frames_per_block`` label frames) and class:

* ``Nref`` counts 1 where the reference has the class in the block, ``Nsys`` 1 where the
  prediction has it.
* Both have it: over the frames where both have it, the mean great-circle angle between the
  reference and the prediction. No such frame: one false negative. Otherwise a localization
  true positive (``DE_TP``, its mean angle added to ``total_DE``), and a detection TP when the
  mean is within the threshold (20 degrees), else a false negative (not a false positive).
* Only the reference: one false negative; only the prediction: one false positive.
* Per block, ``FN`` and ``FP`` summed over classes: ``S += min(FP, FN)``, ``D += max(0, FN -
  FP)``, ``I += max(0, FP - FN)``.

Scores (micro, every count summed over classes; ``eps`` in the denominators as there):
``ER = (S + D + I) / Nref``; ``F`` the harmonic mean of ``TP / Nsys`` and ``TP / Nref``;
``LE = total_DE / DE_TP`` (180 where there is no localization TP); ``LR`` the harmonic mean of
``DE_TP / Nsys`` and ``DE_TP / Nref`` (the code's ``DE_F``); ``SELD = mean(ER, 1 - F, LE / 180,
1 - LR)``. Blocks: ``ceil(num_frames / frames_per_block)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seld.metrics.matching import first_per_cell, great_circle_deg, stack_recordings

__all__ = ["Dcase2020", "several_per_frame"]

_EPS = float(np.finfo(float).eps)
CLASS_COUNTS = ("TP", "FP", "FN", "Nref", "Nsys", "total_DE", "DE_TP")
GLOBAL_COUNTS = ("S", "D", "I")


def several_per_frame(rows: np.ndarray) -> bool:
    """Whether any frame has a class more than once (the 2020 scorer cannot score that)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return False
    cells = rows[:, :2].astype(np.int64)
    return len(np.unique(cells, axis=0)) < len(cells)


def _present(
    key: np.ndarray, frames_per_block: int, num_classes: int, shape: tuple[int, int]
) -> np.ndarray:
    """(blocks, classes): where a class has a row in a block."""
    cells = key // num_classes // frames_per_block * num_classes + key % num_classes
    return np.bincount(cells, minlength=shape[0] * shape[1]).reshape(shape) > 0


@dataclass(frozen=True)
class Dcase2020:
    """The DCASE 2020 metrics (see the module docstring)."""

    name: str = "dcase2020"
    threshold_deg: float = 20.0

    def count_many(
        self,
        recordings: Sequence[tuple[np.ndarray, np.ndarray, int]],
        frames_per_block: int,
        num_classes: int,
    ) -> list[dict[str, np.ndarray]]:
        """Each ``(reference, prediction, num_frames)``'s counts: :data:`CLASS_COUNTS` as
        (classes,) arrays, :data:`GLOBAL_COUNTS` as scalars. Counts of recordings add up."""
        out = []
        for reference, prediction, num_frames in recordings:
            n_blocks = -(-int(num_frames) // frames_per_block)
            offsets = np.array([0, n_blocks * frames_per_block])
            sides = []
            for rows, side in ((reference, "reference"), (prediction, "prediction")):
                key, r = stack_recordings([rows], offsets, num_classes, side)
                sides.append(first_per_cell(key, r))
            (ref_key, ref), (pred_key, pred) = sides
            shape = (n_blocks, num_classes)

            in_ref, in_pred = (
                _present(key, frames_per_block, num_classes, shape) for key in (ref_key, pred_key)
            )
            both, r_at, p_at = np.intersect1d(
                ref_key, pred_key, assume_unique=True, return_indices=True
            )
            angle = great_circle_deg(ref[r_at, 3], ref[r_at, 4], pred[p_at, 3], pred[p_at, 4])
            cell = both // num_classes // frames_per_block * num_classes + both % num_classes
            size = n_blocks * num_classes
            # summed in frame order, as the official loop adds them
            dist_sum = np.bincount(cell, weights=angle, minlength=size).reshape(shape)
            dist_n = np.bincount(cell, minlength=size).reshape(shape)
            paired = in_ref & in_pred & (dist_n > 0)
            mean = np.divide(dist_sum, dist_n, out=np.zeros(shape), where=paired)
            tp = paired & (mean <= self.threshold_deg)
            fn = (in_ref & ~in_pred) | (in_ref & in_pred & ~paired) | (paired & ~tp)
            fp = in_pred & ~in_ref
            loc_fn, loc_fp = fn.sum(axis=1), fp.sum(axis=1)
            out.append(
                {
                    "TP": tp.sum(axis=0).astype(np.float64),
                    "FP": fp.sum(axis=0).astype(np.float64),
                    "FN": fn.sum(axis=0).astype(np.float64),
                    "Nref": in_ref.sum(axis=0).astype(np.float64),
                    "Nsys": in_pred.sum(axis=0).astype(np.float64),
                    "total_DE": np.where(paired, mean, 0.0).sum(axis=0),
                    "DE_TP": paired.sum(axis=0).astype(np.float64),
                    "S": np.float64(np.minimum(loc_fp, loc_fn).sum()),
                    "D": np.float64(np.maximum(0, loc_fn - loc_fp).sum()),
                    "I": np.float64(np.maximum(0, loc_fp - loc_fn).sum()),
                }
            )
        return out

    def scores(self, counts: dict[str, np.ndarray]) -> dict[str, float]:
        """ER, F, LE, LR and SELD of (pooled) counts, with the official formulas and eps."""
        pooled = self._scores({k: np.sum(v) for k, v in counts.items()})
        return {k: float(v) for k, v in pooled.items()}

    def class_scores(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same formulas class by class (ER pooled over classes, as it is defined)."""
        er = self._scores({k: np.sum(v) for k, v in counts.items()})["er"]
        per = self._scores({k: np.asarray(v, dtype=np.float64) for k, v in counts.items()})
        return {**per, "er": np.full(np.shape(counts["TP"]), er)}

    @staticmethod
    def _scores(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        er = (c["S"] + c["D"] + c["I"]) / (c["Nref"] + _EPS)
        prec, recall = c["TP"] / (c["Nsys"] + _EPS), c["TP"] / (c["Nref"] + _EPS)
        f = 2 * prec * recall / (prec + recall + _EPS)
        le = np.where(c["DE_TP"] > 0, c["total_DE"] / (c["DE_TP"] + _EPS), 180.0)
        de_prec, de_recall = c["DE_TP"] / (c["Nsys"] + _EPS), c["DE_TP"] / (c["Nref"] + _EPS)
        lr = 2 * de_prec * de_recall / (de_prec + de_recall + _EPS)
        seld = np.mean([er, 1 - f, le / 180, 1 - lr], axis=0)
        return {"er": er, "f": f, "le": le, "lr": lr, "seld": seld}
