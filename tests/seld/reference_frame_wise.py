"""A literal, slow re-statement of the DCASE 2024 frame-wise SELD metric with distances.

Written from the semantics of the official scorer (``DCASE2024_seld_baseline``: rows turned to
unit vectors, a dictionary of frames -> classes -> tracks over the reference's frames, then, frame
by frame and class by class, a Hungarian matching on the angle, thresholds on the angle and the
relative distance error) to be the oracle of :mod:`seld.metrics.frame_wise`. Nothing here is
fast on purpose.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = float(np.finfo(float).eps)


def unit(azimuth: float, elevation: float) -> tuple[float, float, float]:
    a, e = azimuth * math.pi / 180.0, elevation * math.pi / 180.0
    return math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), math.sin(e)


def angle(p: tuple, q: tuple) -> float:
    n1 = math.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2 + 1e-10)
    n2 = math.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2 + 1e-10)
    c = (p[0] / n1) * (q[0] / n2) + (p[1] / n1) * (q[1] / n2) + (p[2] / n1) * (q[2] / n2)
    return math.acos(min(1.0, max(-1.0, c))) * 180 / math.pi


def organize(rows, frames: int) -> dict[int, dict[int, list]]:
    """{frame: {class: [(x, y, z, distance), ...] in file order}} for frames 0..frames-1."""
    out: dict[int, dict[int, list]] = {f: {} for f in range(frames)}
    for frame, cls, _track, azimuth, elevation, distance in rows:
        if int(frame) < frames:
            out[int(frame)].setdefault(int(cls), []).append((*unit(azimuth, elevation), distance))
    return out


class Counter:
    def __init__(self, num_classes: int, doa_t: float = 20.0, reldist_t: float = 1.0):
        self.c, self.doa_t, self.reldist_t = num_classes, doa_t, reldist_t
        names = ("TP", "FP", "FP_spatial", "FN", "Nref", "AngE", "DistE", "RelDistE",
                 "DE_TP", "DE_FP", "DE_FN")  # fmt: skip
        self.k = {n: [0.0] * num_classes for n in names}
        self.S = self.D = self.I = 0

    def add(self, ref_rows, pred_rows, frames: int) -> None:
        ref, pred = organize(ref_rows, frames), organize(pred_rows, frames)
        k = self.k
        for f in range(frames):
            loc_fn = loc_fp = 0
            for c in range(self.c):
                if c in ref[f]:
                    k["Nref"][c] += len(ref[f][c])
                if c in ref[f] and c in pred[f]:
                    gt, pr = ref[f][c], pred[f][c]
                    cost = np.zeros((len(gt), len(pr)))
                    for i, g in enumerate(gt):
                        for j, p in enumerate(pr):
                            cost[i, j] = angle(g, p)
                    rows, cols = linear_sum_assignment(cost)
                    exceeded = 0
                    for i, j in zip(rows, cols, strict=True):
                        doa = cost[i, j]
                        dist = abs(gt[i][3] - pr[j][3])
                        rel = dist / (gt[i][3] + EPS)
                        k["AngE"][c] += doa
                        k["DistE"][c] += dist
                        k["RelDistE"][c] += rel
                        exceeded += doa > self.doa_t or rel > self.reldist_t
                    n_p, n_r = len(pr), len(gt)
                    matched = min(n_p, n_r)
                    k["TP"][c] += matched - exceeded
                    k["DE_TP"][c] += matched
                    k["FP"][c] += max(0, n_p - n_r)
                    k["DE_FP"][c] += max(0, n_p - n_r)
                    k["FP_spatial"][c] += exceeded
                    k["FN"][c] += max(0, n_r - n_p)
                    k["DE_FN"][c] += max(0, n_r - n_p)
                    loc_fp += max(0, n_p - n_r) + exceeded
                    loc_fn += max(0, n_r - n_p)
                elif c in ref[f]:
                    loc_fn += len(ref[f][c])
                    k["FN"][c] += len(ref[f][c])
                    k["DE_FN"][c] += len(ref[f][c])
                elif c in pred[f]:
                    loc_fp += len(pred[f][c])
                    k["FP"][c] += len(pred[f][c])
                    k["DE_FP"][c] += len(pred[f][c])
            self.S += min(loc_fp, loc_fn)
            self.D += max(0, loc_fn - loc_fp)
            self.I += max(0, loc_fp - loc_fn)

    def scores(self, average: str) -> dict[str, float]:
        with warnings.catch_warnings():  # a class without matches: NaN errors, as the official
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._scores(average)

    def _scores(self, average: str) -> dict[str, float]:
        k = {n: np.array(v) for n, v in self.k.items()}
        er = (self.S + self.D + self.I) / (k["Nref"].sum() + EPS)
        if average == "micro":
            tp, de_tp = k["TP"].sum(), k["DE_TP"].sum()
            f = tp / (EPS + tp + k["FP_spatial"].sum() + 0.5 * (k["FP"].sum() + k["FN"].sum()))
            ang = k["AngE"].sum() / float(de_tp + EPS) if de_tp else np.nan
            dist = k["DistE"].sum() / float(de_tp + EPS) if de_tp else np.nan
            rel = k["RelDistE"].sum() / float(de_tp + EPS) if de_tp else np.nan
            lr = de_tp / (EPS + de_tp + k["DE_FN"].sum())
            seld = np.nanmean([1 - f, ang / 180, rel], 0)
            return {"er": er, "f": f, "doae": ang, "de": dist, "rde": rel, "lr": lr, "seld": seld}
        f = k["TP"] / (EPS + k["TP"] + k["FP_spatial"] + 0.5 * (k["FP"] + k["FN"]))
        with np.errstate(invalid="ignore"):
            ang = k["AngE"] / (k["DE_TP"] + EPS)
            dist = k["DistE"] / (k["DE_TP"] + EPS)
            rel = k["RelDistE"] / (k["DE_TP"] + EPS)
        for a in (ang, dist, rel):
            a[k["DE_TP"] == 0] = np.nan
        lr = k["DE_TP"] / (EPS + k["DE_TP"] + k["DE_FN"])
        seld = np.nanmean([1 - f, ang / 180, rel], 0)
        return {"er": er, "f": f.mean(), "doae": np.nanmean(ang), "de": np.nanmean(dist),
                "rde": np.nanmean(rel), "lr": lr.mean(), "seld": seld.mean()}  # fmt: skip
