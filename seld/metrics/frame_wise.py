"""The frame-wise SELD metrics of DCASE 2024: F within 20 degrees and a relative distance error
of 1, class-dependent DOA error, distance errors and localization recall, macro or micro.

What the official code (``DCASE2024_seld_baseline``, ``SELDMetrics`` with ``eval_dist=True``,
``lad_doa_thresh=20``, ``lad_reldist_thresh=1``, no absolute distance threshold, driven by
``cls_compute_seld_results.py`` at frame level) computes, here from arrays. Rows are track-wise
with a distance: ``(frame, class, track, azimuth, elevation, distance)``; the instances of a
class in a frame are told apart by their order in the file (the track index is read, not used:
it only feeds the official identity-switch count, which is no score).

Per frame and class, where both sides have the class, the reference and predicted directions
(unit vectors, the official chord formula with its ``1e-10``) are matched by the minimum total
angle (Hungarian). Of the ``K = min(P, R)`` matched pairs, those whose angle exceeds 20 degrees
or whose relative distance error ``|d_ref - d_pred| / d_ref`` exceeds 1 are spatial false
positives, the rest true positives; every matched pair adds its angle, distance error and
relative distance error to the class's totals (``DE_TP`` counts them); ``P - R`` more
predictions are false positives, ``R - P`` more references false negatives. A class only in the
reference: ``R`` false negatives; only predicted: ``P`` false positives. Per frame, with false
negatives and all false positives summed over classes, ``S``, ``D`` and ``I`` as in 2019.

Scores: ``F = TP / (TP + FP_spatial + (FP + FN) / 2)``; ``DOAE``, ``DE``, ``RDE``: the totals
divided by ``DE_TP`` (NaN where a class has none); ``LR = DE_TP / (DE_TP + DE_FN)``; ``ER``
pooled over classes; ``SELD = nanmean(1 - F, DOAE / 180, RDE)``. ``macro`` (DCASE 2024): per
class, then averaged (NaN-aware for the errors); ``micro``: counts summed over classes first.

Frames scored: ``[0, num_frames)``; the official script passes the reference's largest frame
index, so that frame itself is not scored. Distances: the official script reads the reference
in centimetres and converts them to metres, and reads predictions as they are (metres); the
format's reader (:mod:`seld.data.formats`) does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seld.metrics.matching import match_cells, stack_recordings

__all__ = ["CLASS_COUNTS", "FrameWise"]

_EPS = float(np.finfo(float).eps)
CLASS_COUNTS = (
    "TP", "FP", "FP_spatial", "FN", "Nref", "AngE", "DistE", "RelDistE", "DE_TP", "DE_FP",
    "DE_FN",
)  # fmt: skip


def unit_vectors(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """(..., 3) as the official polar-to-Cartesian conversion computes them."""
    ele = np.asarray(elevation_deg, dtype=np.float64) * np.pi / 180.0
    azi = np.asarray(azimuth_deg, dtype=np.float64) * np.pi / 180.0
    c = np.cos(ele)
    return np.stack([np.cos(azi) * c, np.sin(azi) * c, np.sin(ele)], axis=-1)


def chord_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees between (..., 3) vectors, with the official normalisation."""
    n1 = np.sqrt(a[..., 0] ** 2 + a[..., 1] ** 2 + a[..., 2] ** 2 + 1e-10)
    n2 = np.sqrt(b[..., 0] ** 2 + b[..., 1] ** 2 + b[..., 2] ** 2 + 1e-10)
    dot = (
        a[..., 0] / n1 * (b[..., 0] / n2)
        + a[..., 1] / n1 * (b[..., 1] / n2)
        + a[..., 2] / n1 * (b[..., 2] / n2)
    )
    return np.arccos(np.clip(dot, -1, 1)) * 180 / np.pi


@dataclass(frozen=True)
class _Side:
    key: np.ndarray  # frame * classes + class, sorted, file order within a key
    xyz: np.ndarray  # (rows, 3)
    distance: np.ndarray  # (rows,)


def _side(rows: Sequence[np.ndarray], offsets: np.ndarray, num_classes: int, what: str) -> _Side:
    key, r = stack_recordings(
        rows, offsets, num_classes, what, 6, "frame, class, track, az, el, distance"
    )
    if np.isnan(r[:, 5]).any():
        raise ValueError(f"{what}: a row without a distance")
    return _Side(key, unit_vectors(r[:, 3], r[:, 4]), r[:, 5])


@dataclass(frozen=True)
class FrameWise:
    """The frame-wise metric suite of DCASE 2024 (``average`` ``"macro"``) or its micro
    average, detections within ``threshold_deg`` and ``reldist_threshold``."""

    name: str
    average: str = "macro"
    threshold_deg: float = 20.0
    reldist_threshold: float = 1.0

    def count_many(
        self, recordings: Sequence[tuple[np.ndarray, np.ndarray, int]], num_classes: int
    ) -> list[dict[str, np.ndarray]]:
        """Each ``(reference, prediction, num_frames)``'s counts: :data:`CLASS_COUNTS` as
        (classes,) arrays, ``S``, ``D``, ``I`` as scalars; counts of recordings add up. Only
        the (frame, class) cells that either side has are visited."""
        n_frames_each = np.array([max(int(n), 0) for _, _, n in recordings], dtype=np.int64)
        offsets = np.r_[0, np.cumsum(n_frames_each)]
        ref = _side([r for r, _, _ in recordings], offsets, num_classes, "reference")
        pred = _side([p for _, p, _ in recordings], offsets, num_classes, "prediction")
        cells = np.union1d(ref.key, pred.key)  # every occupied (frame, class), sorted
        r_keys, r_at, r_n = np.unique(ref.key, return_index=True, return_counts=True)
        p_keys, p_at, p_n = np.unique(pred.key, return_index=True, return_counts=True)
        n_r = np.zeros(len(cells), dtype=np.int64)
        n_p = np.zeros(len(cells), dtype=np.int64)
        n_r[np.searchsorted(cells, r_keys)] = r_n
        n_p[np.searchsorted(cells, p_keys)] = p_n
        ang_sum, dist_sum, rel_sum = (np.zeros(len(cells)) for _ in range(3))
        exceeded = np.zeros(len(cells), dtype=np.int64)
        both = np.flatnonzero((n_r > 0) & (n_p > 0))
        if len(both):
            first_r = r_at[np.searchsorted(r_keys, cells[both])]
            first_p = p_at[np.searchsorted(p_keys, cells[both])]
            nr, np_ = n_r[both], n_p[both]
            shapes = nr * 1024 + np_
            pairs_cell, pairs_r, pairs_p = [], [], []
            for shape in np.unique(shapes):
                group = np.flatnonzero(shapes == shape)
                a, b = divmod(int(shape), 1024)
                ri = first_r[group][:, None] + np.arange(a)
                pi = first_p[group][:, None] + np.arange(b)
                cost = chord_angles(ref.xyz[ri][:, :, None, :], pred.xyz[pi][:, None, :, :])
                cell, row, col = match_cells(cost)
                pairs_cell.append(both[group[cell]])
                pairs_r.append(ri[cell, row])
                pairs_p.append(pi[cell, col])
            cell, i_r, i_p = (np.concatenate(x) for x in (pairs_cell, pairs_r, pairs_p))
            order = np.argsort(cell, kind="stable")
            cell, i_r, i_p = cell[order], i_r[order], i_p[order]
            ang = chord_angles(ref.xyz[i_r], pred.xyz[i_p])
            dist = np.abs(ref.distance[i_r] - pred.distance[i_p])
            rel = dist / (ref.distance[i_r] + _EPS)
            over = (ang > self.threshold_deg) | (rel > self.reldist_threshold)
            size = len(cells)
            ang_sum = np.bincount(cell, weights=ang, minlength=size)
            dist_sum = np.bincount(cell, weights=dist, minlength=size)
            rel_sum = np.bincount(cell, weights=rel, minlength=size)
            exceeded = np.bincount(cell, weights=over, minlength=size).astype(np.int64)
        present = (n_r > 0) & (n_p > 0)
        matched = np.where(present, np.minimum(n_r, n_p), 0)
        extra_p = np.where(present, np.maximum(0, n_p - n_r), np.where(n_r == 0, n_p, 0))
        extra_r = np.where(present, np.maximum(0, n_r - n_p), np.where(n_p == 0, n_r, 0))
        # per frame (over its occupied cells), then per recording
        frame = cells // num_classes
        frames, frame_of = np.unique(frame, return_inverse=True)
        loc_fp = np.bincount(frame_of, weights=extra_p + exceeded, minlength=len(frames))
        loc_fn = np.bincount(frame_of, weights=extra_r, minlength=len(frames))
        n_rec = len(recordings)
        rec_of_frame = np.searchsorted(offsets, frames, side="right") - 1
        sdi = {
            "S": np.minimum(loc_fp, loc_fn),
            "D": np.maximum(0, loc_fn - loc_fp),
            "I": np.maximum(0, loc_fp - loc_fn),
        }
        per_rec = {k: np.bincount(rec_of_frame, weights=v, minlength=n_rec) for k, v in sdi.items()}
        # per recording and class
        slot = rec_of_frame[frame_of] * num_classes + cells % num_classes
        size = n_rec * num_classes

        def by_class(values: np.ndarray) -> np.ndarray:
            counts = np.bincount(slot, weights=values, minlength=size)
            return counts.reshape(n_rec, num_classes)

        m, x = by_class(matched), by_class(exceeded)
        fp, fn = by_class(extra_p), by_class(extra_r)
        nref, ang_c, dist_c, rel_c = (by_class(v) for v in (n_r, ang_sum, dist_sum, rel_sum))
        return [
            {
                "TP": m[i] - x[i],
                "FP": fp[i],
                "FP_spatial": x[i],
                "FN": fn[i],
                "Nref": nref[i],
                "AngE": ang_c[i],
                "DistE": dist_c[i],
                "RelDistE": rel_c[i],
                "DE_TP": m[i],
                "DE_FP": fp[i].copy(),
                "DE_FN": fn[i].copy(),
                "S": per_rec["S"][i],
                "D": per_rec["D"][i],
                "I": per_rec["I"][i],
            }
            for i in range(n_rec)
        ]

    def scores(self, counts: dict[str, np.ndarray]) -> dict[str, float]:
        return {k: float(v) for k, v in self._scores(counts)[0].items()}

    def class_scores(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._scores(counts)[1]

    def _scores(self, c: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        er = (c["S"] + c["D"] + c["I"]) / (c["Nref"].sum() + _EPS)
        f = c["TP"] / (_EPS + c["TP"] + c["FP_spatial"] + 0.5 * (c["FP"] + c["FN"]))
        none = c["DE_TP"] == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = {
                k: np.where(none, np.nan, c[total] / (c["DE_TP"] + _EPS))
                for k, total in (("doae", "AngE"), ("de", "DistE"), ("rde", "RelDistE"))
            }
        lr = c["DE_TP"] / (_EPS + c["DE_TP"] + c["DE_FN"])
        seld = _nanmean_rows([1 - f, errors["doae"] / 180, errors["rde"]])
        per_class = {"er": np.repeat(er, len(f)), "f": f, **errors, "lr": lr, "seld": seld}
        if self.average == "macro":
            overall = {
                "er": er,
                "f": f.mean(),
                **{k: _nanmean(v) for k, v in errors.items()},
                "lr": lr.mean(),
                "seld": seld.mean(),
            }
        else:
            tp, de_tp = c["TP"].sum(), c["DE_TP"].sum()
            f_all = tp / (_EPS + tp + c["FP_spatial"].sum() + 0.5 * (c["FP"].sum() + c["FN"].sum()))
            err = {
                k: (c[total].sum() / float(de_tp + _EPS) if de_tp else np.nan)
                for k, total in (("doae", "AngE"), ("de", "DistE"), ("rde", "RelDistE"))
            }
            lr_all = de_tp / (_EPS + de_tp + c["DE_FN"].sum())
            seld_all = _nanmean([1 - f_all, err["doae"] / 180, err["rde"]])
            overall = {"er": er, "f": f_all, **err, "lr": lr_all, "seld": seld_all}
        return overall, per_class


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else np.nan


def _nanmean_rows(rows: list[np.ndarray]) -> np.ndarray:
    """``np.nanmean(rows, 0)`` without its warning on all-NaN columns."""
    stacked = np.asarray(rows, dtype=np.float64)
    seen = ~np.isnan(stacked)
    total = np.where(seen, stacked, 0).sum(axis=0)
    n = seen.sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)
