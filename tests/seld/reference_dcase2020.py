"""A literal, slow re-statement of the DCASE 2020 SELD metric (``seld-dcase2020``).

Written from the semantics of the official code: a recording's rows as a dictionary of frames,
cut into one-second blocks of class -> (frames, directions per frame), then counted block by
block and class by class in Python loops, with the official formulas. The 2020 code holds one
direction per class and frame (it fails on two); here, as in :mod:`seld.metrics.dcase2020`, the
first one in the file is used. The oracle of :mod:`seld.metrics.dcase2020`; nothing here is
fast on purpose.
"""

from __future__ import annotations

import math

EPS = 2.220446049250313e-16


def blocks_of(rows, max_frames: int, per_block: int) -> dict[int, dict[int, tuple]]:
    frames: dict[int, list] = {}
    for frame, cls, _track, azimuth, elevation in rows:
        frames.setdefault(int(frame), []).append([int(cls), azimuth, elevation])
    out: dict[int, dict[int, tuple]] = {}
    for b in range(math.ceil(max_frames / per_block)):
        per_class: dict[int, dict[int, list]] = {}
        for frame in range(b * per_block, (b + 1) * per_block):
            for cls, azimuth, elevation in frames.get(frame, []):
                per_class.setdefault(cls, {}).setdefault(frame - b * per_block, [])
                per_class[cls][frame - b * per_block].append([azimuth, elevation])
        out[b] = {c: (list(v), [v[f][0] for f in v]) for c, v in per_class.items()}
    return out


def angle_rad(az1: float, el1: float, az2: float, el2: float) -> float:
    c = math.sin(el1) * math.sin(el2) + math.cos(el1) * math.cos(el2) * math.cos(abs(az1 - az2))
    return math.acos(min(1.0, max(-1.0, c))) * 180 / math.pi


class Counter:
    def __init__(self, num_classes: int, threshold: float = 20.0):
        self.c, self.threshold = num_classes, threshold
        names = ("TP", "FP", "FN", "Nref", "Nsys", "total_DE", "DE_TP")
        self.per_class = {n: [0.0] * num_classes for n in names}
        self.S = self.D = self.I = 0

    def add(self, ref_rows, pred_rows, max_frames: int, per_block: int) -> None:
        gt, pred = (
            blocks_of(ref_rows, max_frames, per_block),
            blocks_of(pred_rows, max_frames, per_block),
        )
        k = self.per_class
        for b in range(len(gt)):
            loc_fn = loc_fp = 0
            for cls in range(self.c):
                if cls in gt[b]:
                    k["Nref"][cls] += 1
                if cls in pred[b]:
                    k["Nsys"][cls] += 1
                if cls in gt[b] and cls in pred[b]:
                    gt_frames, gt_values = gt[b][cls]
                    pred_frames, pred_values = pred[b][cls]
                    total, matching = 0.0, 0
                    for i, frame in enumerate(gt_frames):
                        if frame in pred_frames:
                            matching += 1
                            p = pred_values[pred_frames.index(frame)]
                            g = gt_values[i]
                            total += angle_rad(
                                *(v * math.pi / 180 for v in (g[0], g[1], p[0], p[1]))
                            )
                    if total == 0 and matching == 0:
                        loc_fn += 1
                        k["FN"][cls] += 1
                    else:
                        mean = total / matching
                        k["total_DE"][cls] += mean
                        k["DE_TP"][cls] += 1
                        if mean <= self.threshold:
                            k["TP"][cls] += 1
                        else:
                            loc_fn += 1
                            k["FN"][cls] += 1
                elif cls in gt[b]:
                    loc_fn += 1
                    k["FN"][cls] += 1
                elif cls in pred[b]:
                    loc_fp += 1
                    k["FP"][cls] += 1
            self.S += min(loc_fp, loc_fn)
            self.D += max(0, loc_fn - loc_fp)
            self.I += max(0, loc_fp - loc_fn)

    def scores(self) -> dict[str, float]:
        k = {n: sum(v) for n, v in self.per_class.items()}
        er = (self.S + self.D + self.I) / float(k["Nref"] + EPS)
        prec = float(k["TP"]) / float(k["Nsys"] + EPS)
        recall = float(k["TP"]) / float(k["Nref"] + EPS)
        f = 2 * prec * recall / (prec + recall + EPS)
        de = k["total_DE"] / float(k["DE_TP"] + EPS) if k["DE_TP"] else 180
        de_prec = float(k["DE_TP"]) / float(k["Nsys"] + EPS)
        de_recall = float(k["DE_TP"]) / float(k["Nref"] + EPS)
        de_f = 2 * de_prec * de_recall / (de_prec + de_recall + EPS)
        seld = (er + (1 - f) + de / 180 + (1 - de_f)) / 4
        return {"er": er, "f": f, "le": de, "lr": de_f, "seld": seld}
