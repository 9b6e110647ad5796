"""A literal, slow re-statement of the DCASE 2022 location-aware SELD metric (and of DCASE
2021's, whose counts are the same and whose F differs).

Written from the semantics of the official scorer (``seld-dcase2022``: a recording's rows as a
dictionary of frames, cut into one-second blocks of class -> (frames, instance lists), then
counted block by block and class by class in Python loops) to be the oracle of
:mod:`seld.metrics.location_aware`. Nothing here is fast or vectorised on purpose.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = float(np.finfo(float).eps)


def frame_dict(rows) -> dict[int, list[list[float]]]:
    """Rows (frame, class, track, azimuth, elevation) -> {frame: [[class, track, az, el], ...]}
    in file order."""
    out: dict[int, list[list[float]]] = {}
    for frame, cls, track, azimuth, elevation in rows:
        out.setdefault(int(frame), []).append([int(cls), int(track), azimuth, elevation])
    return out


def blocks_of(frames: dict, max_frames: int, per_block: int) -> dict[int, dict]:
    """{block: {class: (frames of the block with the class, [instances per such frame])}}."""
    n_blocks = math.ceil(max_frames / per_block)
    out: dict[int, dict] = {b: {} for b in range(n_blocks)}
    for b in range(n_blocks):
        per_class: dict[int, dict[int, list]] = {}
        for frame in range(b * per_block, b * per_block + per_block):
            for value in frames.get(frame, []):
                per_class.setdefault(value[0], {}).setdefault(frame - b * per_block, [])
                per_class[value[0]][frame - b * per_block].append(value[1:])
        for cls, by_frame in per_class.items():
            out[b][cls] = (list(by_frame), [by_frame[f] for f in by_frame])
    return out


def angle(az1: float, el1: float, az2: float, el2: float) -> float:
    a1, e1, a2, e2 = (v * math.pi / 180.0 for v in (az1, el1, az2, el2))
    c = math.sin(e1) * math.sin(e2) + math.cos(e1) * math.cos(e2) * math.cos(abs(a1 - a2))
    return math.acos(min(1.0, max(-1.0, c))) * 180 / math.pi


class Counter:
    """Accumulates the official counts over recordings."""

    def __init__(self, num_classes: int, threshold: float = 20.0):
        self.c = num_classes
        self.threshold = threshold
        names = ("TP", "FP", "FP_spatial", "FN", "Nref", "total_DE", "DE_TP", "DE_FP", "DE_FN")
        self.per_class = {n: [0.0] * num_classes for n in names}
        self.S = self.D = self.I = 0

    def add(self, ref_rows, pred_rows, max_frames: int, per_block: int) -> None:
        ref = blocks_of(frame_dict(ref_rows), max_frames, per_block)
        pred = blocks_of(frame_dict(pred_rows), max_frames, per_block)
        k = self.per_class
        for b in range(len(ref)):
            loc_fn = loc_fp = 0
            for cls in range(self.c):
                nb_ref = max(len(v) for v in ref[b][cls][1]) if cls in ref[b] else None
                nb_pred = max(len(v) for v in pred[b][cls][1]) if cls in pred[b] else None
                if nb_ref is not None:
                    k["Nref"][cls] += nb_ref
                if nb_ref is not None and nb_pred is not None:
                    ref_frames, ref_values = ref[b][cls]
                    pred_frames, pred_values = pred[b][cls]
                    per_track: dict[int, list[float]] = {}
                    for i, frame in enumerate(ref_frames):
                        if frame not in pred_frames:
                            continue
                        gt = ref_values[i]
                        pr = pred_values[pred_frames.index(frame)]
                        cost = np.zeros((len(gt), len(pr)))
                        for r, g in enumerate(gt):
                            for q, p in enumerate(pr):
                                cost[r, q] = angle(g[1], g[2], p[1], p[2])
                        rows, cols = linear_sum_assignment(cost)
                        for r, q in zip(rows, cols, strict=True):
                            per_track.setdefault(int(r), []).append(float(cost[r, q]))
                    if not per_track:
                        loc_fn += nb_pred
                        k["FN"][cls] += nb_pred
                        k["DE_FN"][cls] += nb_pred
                    else:
                        for dists in per_track.values():
                            mean = sum(dists) / len(dists)
                            k["total_DE"][cls] += mean
                            k["DE_TP"][cls] += 1
                            if mean <= self.threshold:
                                k["TP"][cls] += 1
                            else:
                                loc_fp += 1
                                k["FP_spatial"][cls] += 1
                        if nb_pred > nb_ref:
                            loc_fp += nb_pred - nb_ref
                            k["FP"][cls] += nb_pred - nb_ref
                            k["DE_FP"][cls] += nb_pred - nb_ref
                        elif nb_pred < nb_ref:
                            loc_fn += nb_ref - nb_pred
                            k["FN"][cls] += nb_ref - nb_pred
                            k["DE_FN"][cls] += nb_ref - nb_pred
                elif nb_ref is not None:
                    loc_fn += nb_ref
                    k["FN"][cls] += nb_ref
                    k["DE_FN"][cls] += nb_ref
                elif nb_pred is not None:
                    loc_fp += nb_pred
                    k["FP"][cls] += nb_pred
                    k["DE_FP"][cls] += nb_pred
            self.S += min(loc_fp, loc_fn)
            self.D += max(0, loc_fn - loc_fp)
            self.I += max(0, loc_fp - loc_fn)

    def scores(self, average: str) -> dict[str, float]:
        k = {n: np.array(v) for n, v in self.per_class.items()}
        er = (self.S + self.D + self.I) / (k["Nref"].sum() + EPS)
        if average == "2021":  # seld-dcase2021: spatial false positives are FP, F over FP + FN
            tp = k["TP"].sum()
            fp = k["FP"].sum() + k["FP_spatial"].sum()
            f = tp / (EPS + tp + 0.5 * (fp + k["FN"].sum()))
            de_tp = k["DE_TP"].sum()
            le = k["total_DE"].sum() / float(de_tp + EPS) if de_tp else 180
            lr = de_tp / (EPS + de_tp + k["DE_FN"].sum())
            seld = np.mean([er, 1 - f, le / 180, 1 - lr])
            return {"er": er, "f": f, "le": le, "lr": lr, "seld": seld}
        if average == "micro":
            tp = k["TP"].sum()
            f = tp / (EPS + tp + k["FP_spatial"].sum() + 0.5 * (k["FP"].sum() + k["FN"].sum()))
            de_tp = k["DE_TP"].sum()
            le = k["total_DE"].sum() / float(de_tp + EPS) if de_tp else 180
            lr = de_tp / (EPS + de_tp + k["DE_FN"].sum())
            seld = np.mean([er, 1 - f, le / 180, 1 - lr])
            return {"er": er, "f": f, "le": le, "lr": lr, "seld": seld}
        f = k["TP"] / (EPS + k["TP"] + k["FP_spatial"] + 0.5 * (k["FP"] + k["FN"]))
        le = k["total_DE"] / (k["DE_TP"] + EPS)
        le[k["DE_TP"] == 0] = 180.0
        lr = k["DE_TP"] / (EPS + k["DE_TP"] + k["DE_FN"])
        seld = np.mean([np.repeat(er, self.c), 1 - f, le / 180, 1 - lr], 0)
        return {"er": er, "f": f.mean(), "le": le.mean(), "lr": lr.mean(), "seld": seld.mean()}
