"""A literal, slow re-statement of the DCASE 2019 metrics on continuous directions: the 2019
baseline's ``compute_sed_scores`` and ``compute_doa_scores_regr`` (``seld-dcase2019``).

Written from the semantics of that code, independent of ``seld.metrics``: each recording's
track-wise rows become dense per-frame arrays of activity, azimuth and elevation (frames x
classes, one direction per class and frame: the first row of a cell in the file); SED is
counted over one-second blocks built by a Python loop (block ``i`` is ``frames[i * n : i * n +
n - 1]``), DOA frame by frame with ``scipy.optimize.linear_sum_assignment`` on the directions of
the active classes; counts add over recordings and the scores are computed once at the end.
Where no direction is predicted at all the DOA error is NaN here (the 2019 function reports 0),
as the tool's DCASE 2019 scores have it. The oracle of :mod:`seld.metrics.regression2019`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = np.finfo(float).eps


def dense(rows, num_frames: int, num_classes: int):
    """(activity, azimuth, elevation) arrays [frames, classes]; angles in radians."""
    activity = np.zeros((num_frames, num_classes))
    azimuth = np.zeros((num_frames, num_classes))
    elevation = np.zeros((num_frames, num_classes))
    for row in rows:
        frame, cls = int(row[0]), int(row[1])
        if frame >= num_frames or activity[frame, cls]:
            continue  # no room past the end; a class holds one direction per frame
        activity[frame, cls] = 1
        azimuth[frame, cls] = row[3] * math.pi / 180.0
        elevation[frame, cls] = row[4] * math.pi / 180.0
    return activity, azimuth, elevation


def angle_deg(az1: float, el1: float, az2: float, el2: float) -> float:
    c = math.sin(el1) * math.sin(el2) + math.cos(el1) * math.cos(el2) * math.cos(abs(az1 - az2))
    return math.acos(min(1.0, max(-1.0, c))) * 180 / math.pi


class Counter:
    def __init__(self, num_classes: int):
        self.c = num_classes
        self.S = self.D = self.I = self.TP = self.Nref = self.Nsys = 0
        self.cost = 0.0
        self.n_pred = self.good = self.frames = 0

    def add(self, reference, prediction, num_frames: int, per_block: int) -> None:
        t, t_azi, t_ele = dense(reference, num_frames, self.c)
        o, o_azi, o_ele = dense(prediction, num_frames, self.c)
        # SED: one-second blocks, the official slice leaving out each block's last frame
        for i in range(math.ceil(num_frames / per_block)):
            o_block = o[i * per_block : i * per_block + per_block - 1].max(axis=0)
            t_block = t[i * per_block : i * per_block + per_block - 1].max(axis=0)
            fp = int(np.logical_and(t_block == 0, o_block == 1).sum())
            fn = int(np.logical_and(t_block == 1, o_block == 0).sum())
            self.S += min(fp, fn)
            self.D += max(0, fn - fp)
            self.I += max(0, fp - fn)
            self.TP += int(((2 * t_block - o_block) == 1).sum())
            self.Nref += int(t_block.sum())
            self.Nsys += int(o_block.sum())
        # DOA: per frame, the active classes' directions matched ignoring class
        for frame in range(num_frames):
            n_ref, n_pred = int(t[frame].sum()), int(o[frame].sum())
            self.n_pred += n_pred
            if n_ref == n_pred:
                self.good += 1
            if n_ref and n_pred:
                ref = [(t_azi[frame, k], t_ele[frame, k]) for k in range(self.c) if t[frame, k]]
                pred = [(o_azi[frame, k], o_ele[frame, k]) for k in range(self.c) if o[frame, k]]
                cost = np.zeros((n_ref, n_pred))
                for r, (a1, e1) in enumerate(ref):
                    for p, (a2, e2) in enumerate(pred):
                        cost[r, p] = angle_deg(a1, e1, a2, e2)
                rows, cols = linear_sum_assignment(cost)
                self.cost += cost[rows, cols].sum()
        self.frames += num_frames

    def scores(self) -> dict[str, float]:
        er = (self.S + self.D + self.I) / self.Nref if self.Nref else math.nan
        precision = self.TP / (self.Nsys + EPS)
        recall = self.TP / (self.Nref + EPS)
        f = 2 * precision * recall / (precision + recall + EPS)
        doa_error = self.cost / self.n_pred if self.n_pred else math.nan
        frame_recall = self.good / self.frames
        seld = (er + (1 - f) + doa_error / 180 + (1 - frame_recall)) / 4
        return {
            "er": er,
            "f": f,
            "doa_error": doa_error,
            "frame_recall": frame_recall,
            "seld": seld,
        }
