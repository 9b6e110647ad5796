"""The location-aware SELD metrics of DCASE 2022 (and 2023): ER and F counted within 20 degrees,
class-dependent localization error and recall, macro or micro averaging.

What the official code (``seld-dcase2022``, ``SELD_evaluation_metrics.py`` after its fix of
2022-04-30, driven by ``cls_compute_seld_results.py`` with polar coordinates) computes, here
from arrays instead of nested dictionaries. Rows are track-wise, one per active (frame, class,
instance): ``(frame, class, track, azimuth, elevation)`` in degrees. The track index is read
but, as in the official code, not used: the instances of a class in a frame are told apart by
their order in the file.

Per one-second block (``frames_per_block`` label frames) and class:

* ``nb_ref`` / ``nb_pred``: the most instances of the class in any frame of the block.
* Class in both: in every frame where both have it, the reference and predicted directions are
  matched by the minimum total great-circle angle (Hungarian); each reference instance
  (by its position in the frame) collects the angles of its matches over the block. Each
  instance matched at least once is a localization true positive (``DE_TP``) whose error is its
  mean angle (summed into ``total_DE``); it is a detection TP when that mean is within the
  threshold, else a spatial false positive (``FP_spatial``). Then ``nb_pred - nb_ref`` more are
  false positives, or ``nb_ref - nb_pred`` more false negatives. When the class is in both
  but never in the same frame, ``nb_pred`` false negatives are counted (as the official code
  does; ``nb_ref`` would be the natural count).
* Class only in the reference: ``nb_ref`` false negatives; only predicted: ``nb_pred`` false
  positives. Localization counts (``DE_FN``, ``DE_FP``) follow the same cases.
* Per block, with ``FN`` and ``FP`` (spatial ones included) summed over classes:
  ``S += min(FP, FN)``, ``D += max(0, FN - FP)``, ``I += max(0, FP - FN)``; ``Nref`` sums
  ``nb_ref``.

Scores: ``ER = (S + D + I) / Nref`` (always pooled over classes);
``F = TP / (TP + FP_spatial + (FP + FN) / 2)``; ``LE = total_DE / DE_TP`` (180 where there is
no localization TP); ``LR = DE_TP / (DE_TP + DE_FN)``; ``SELD = mean(ER, 1 - F, LE / 180,
1 - LR)``. ``macro``: F, LE, LR and SELD per class, then averaged over classes (DCASE 2022,
2023); ``micro``: every count summed over classes first. DCASE 2021 (``seld-dcase2021``)
counts the same, micro-averaged, but a spatial false positive is one more ``FP``, so F is
``TP / (TP + (FP + FP_spatial + FN) / 2)`` (``spatial_fp_weight`` 0.5). The official ``eps``
(float64) is in every denominator, so an empty denominator gives 0 rather than NaN, as there.

Blocks: ``ceil(num_frames / frames_per_block)`` of them, each covering whole blocks of frames
(frames past ``num_frames`` inside the last block count; frames after it do not). The official
script passes the reference's largest frame index as ``num_frames``
(:func:`official_num_frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seld.metrics.matching import great_circle_deg, match_cells, stack_recordings

__all__ = ["COUNT_NAMES", "LocationAware", "official_num_frames"]

_EPS = float(np.finfo(float).eps)

#: per-class counts, in the order :meth:`LocationAware.count` returns them
CLASS_COUNTS = ("TP", "FP", "FP_spatial", "FN", "Nref", "total_DE", "DE_TP", "DE_FP", "DE_FN")
#: counts over all classes
GLOBAL_COUNTS = ("S", "D", "I")
COUNT_NAMES = CLASS_COUNTS + GLOBAL_COUNTS


def official_num_frames(reference: np.ndarray) -> int:
    """What the official script scores a recording over: its reference's largest frame index
    (so a reference whose last active frame ends a block loses that frame)."""
    return int(np.asarray(reference)[:, 0].max()) if len(reference) else 0


@dataclass(frozen=True)
class _Table:
    """One side's rows inside the scored blocks, grouped by (frame, class) in file order."""

    key: np.ndarray  # frame * classes + class, sorted (stable: file order within a key)
    azimuth: np.ndarray
    elevation: np.ndarray
    count: np.ndarray  # (frames, classes) instances per frame and class


def _table(rows: Sequence[np.ndarray], offsets: np.ndarray, num_classes: int, side: str) -> _Table:
    key, r = stack_recordings(rows, offsets, num_classes, side)
    total = int(offsets[-1])
    count = np.bincount(key, minlength=total * num_classes).reshape(total, num_classes)
    return _Table(key, r[:, 3], r[:, 4], count)


def _match_group(
    ref: _Table, pred: _Table, ref_at: np.ndarray, pred_at: np.ndarray, n_r: int, n_p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-angle matching in many (frame, class) cells that all have ``n_r`` reference
    and ``n_p`` predicted instances: for every match, its cell (an index into ``ref_at``), the
    matched reference instance and the angle, cell by cell with the instances ascending (as
    ``linear_sum_assignment`` gives them). Small cells are solved at once by trying every
    assignment; a cell whose best total is tied, or a larger one, goes to
    ``linear_sum_assignment`` itself, so ties are broken as the official code breaks them."""
    n_r, n_p = int(n_r), int(n_p)
    r_idx = ref_at[:, None] + np.arange(n_r)  # (cells, n_r)
    p_idx = pred_at[:, None] + np.arange(n_p)
    cost = great_circle_deg(
        ref.azimuth[r_idx][:, :, None],
        ref.elevation[r_idx][:, :, None],
        pred.azimuth[p_idx][:, None, :],
        pred.elevation[p_idx][:, None, :],
    )  # (cells, n_r, n_p)
    cell, row, col = match_cells(cost)
    return cell, row, cost[cell, row, col]


@dataclass(frozen=True)
class LocationAware:
    """The location-aware metric suite: ``average`` ``"macro"`` (DCASE 2022, 2023) or
    ``"micro"``, a detection within ``threshold_deg`` (20) degrees."""

    name: str
    average: str = "macro"
    threshold_deg: float = 20.0
    description: str = ""
    #: the weight of a spatial false positive in F: 1 from DCASE 2022; DCASE 2021 counts it as
    #: a plain false positive, at one half
    spatial_fp_weight: float = 1.0

    def count(
        self,
        reference: np.ndarray,
        prediction: np.ndarray,
        num_frames: int,
        frames_per_block: int,
        num_classes: int,
    ) -> dict[str, np.ndarray]:
        """One recording's counts: each of :data:`CLASS_COUNTS` a (classes,) array, each of
        :data:`GLOBAL_COUNTS` a scalar array. Counts of recordings add up."""
        return self.count_many(
            [(reference, prediction, num_frames)], frames_per_block, num_classes
        )[0]

    def count_many(
        self,
        recordings: Sequence[tuple[np.ndarray, np.ndarray, int]],
        frames_per_block: int,
        num_classes: int,
    ) -> list[dict[str, np.ndarray]]:
        """:meth:`count` of each ``(reference, prediction, num_frames)``, all in one pass."""
        n_blocks_each = np.array(
            [-(-int(n) // frames_per_block) for _, _, n in recordings], dtype=np.int64
        )
        block_offsets = np.r_[0, np.cumsum(n_blocks_each)]
        n_blocks = int(block_offsets[-1])
        offsets = block_offsets * frames_per_block
        ref = _table([r for r, _, _ in recordings], offsets, num_classes, "reference")
        pred = _table([p for _, p, _ in recordings], offsets, num_classes, "prediction")
        shape = (n_blocks, frames_per_block, num_classes)
        nb_ref = ref.count.reshape(shape).max(axis=1, initial=0)
        nb_pred = pred.count.reshape(shape).max(axis=1, initial=0)

        # every (frame, class) that both have: match directions, collect per reference instance
        both = np.flatnonzero((ref.count > 0).ravel() & (pred.count > 0).ravel())
        max_instances = max(int(ref.count.max(initial=0)), 1)
        dist_sum = np.zeros((n_blocks, num_classes, max_instances))
        dist_n = np.zeros((n_blocks, num_classes, max_instances), dtype=np.int64)
        if len(both):
            ref_at = np.searchsorted(ref.key, both)
            pred_at = np.searchsorted(pred.key, both)
            n_r, n_p = ref.count.ravel()[both], pred.count.ravel()[both]
            single = (n_r == 1) & (n_p == 1)
            # one instance on each side: the match is the pair itself
            s = np.flatnonzero(single)
            d = great_circle_deg(
                ref.azimuth[ref_at[s]],
                ref.elevation[ref_at[s]],
                pred.azimuth[pred_at[s]],
                pred.elevation[pred_at[s]],
            )
            keys, tracks, dists = [both[s]], [np.zeros(len(s), dtype=np.int64)], [d]
            multi = np.flatnonzero(~single)  # same-class overlaps: the Hungarian matching
            shapes = n_r[multi] * 1024 + n_p[multi]
            for shape in np.unique(shapes):
                group = multi[shapes == shape]
                cell, rows, dist = _match_group(
                    ref, pred, ref_at[group], pred_at[group], *divmod(shape, 1024)
                )
                keys.append(both[group[cell]])
                tracks.append(rows)
                dists.append(dist)
            key, track, dist = (np.concatenate(a) for a in (keys, tracks, dists))
            # in frame order, so each instance's angles are summed in the official order
            order = np.argsort(key, kind="stable")
            key, track, dist = key[order], track[order], dist[order]
            flat = key // num_classes // frames_per_block * num_classes + key % num_classes
            flat = flat * max_instances + track
            size = dist_sum.size
            dist_sum = np.bincount(flat, weights=dist, minlength=size).reshape(dist_sum.shape)
            dist_n = np.bincount(flat, minlength=size).reshape(dist_n.shape)

        matched = dist_n > 0
        mean = np.divide(dist_sum, dist_n, out=np.zeros_like(dist_sum), where=matched)
        n_matched = matched.sum(axis=2)
        within = (matched & (mean <= self.threshold_deg)).sum(axis=2)
        both_present = (nb_ref > 0) & (nb_pred > 0)
        never_together = both_present & (n_matched == 0)
        paired = both_present & (n_matched > 0)
        extra_pred = np.where(paired, np.maximum(0, nb_pred - nb_ref), 0)
        extra_ref = np.where(paired, np.maximum(0, nb_ref - nb_pred), 0)
        only_ref = np.where((nb_ref > 0) & (nb_pred == 0), nb_ref, 0)
        only_pred = np.where((nb_ref == 0) & (nb_pred > 0), nb_pred, 0)

        fn = np.where(never_together, nb_pred, 0) + extra_ref + only_ref  # (blocks, classes)
        fp = extra_pred + only_pred
        fp_spatial = np.where(paired, n_matched - within, 0)
        loc_fn = fn.sum(axis=1)
        loc_fp = (fp + fp_spatial).sum(axis=1)
        per_block = {
            "TP": np.where(paired, within, 0),
            "FP": fp,
            "FP_spatial": fp_spatial,
            "FN": fn,
            "Nref": nb_ref,
            "total_DE": np.where(matched, mean, 0).sum(axis=2),
            "DE_TP": n_matched,
            "DE_FP": fp,
            "DE_FN": fn,
            "S": np.minimum(loc_fp, loc_fn),
            "D": np.maximum(0, loc_fn - loc_fp),
            "I": np.maximum(0, loc_fp - loc_fn),
        }
        # each recording's blocks summed (a recording's blocks are contiguous); a zero row after
        # the last block, so that recordings without blocks have a start to point at
        empty = n_blocks_each == 0
        totals = {}
        for name, values in per_block.items():
            padded = np.concatenate([values, np.zeros((1, *values.shape[1:]))]).astype(np.float64)
            out = np.add.reduceat(padded, block_offsets[:-1], axis=0)
            out[empty] = 0
            totals[name] = out
        return [{name: v[i] for name, v in totals.items()} for i in range(len(recordings))]

    def scores(self, counts: dict[str, np.ndarray]) -> dict[str, float]:
        """ER, F, LE, LR and SELD of (pooled) counts, with the official formulas and eps."""
        return {k: float(v) for k, v in self._scores(counts)[0].items()}

    def class_scores(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """F, LE, LR and SELD per class (with the pooled ER), as the official ``macro`` table
        lists them; under ``micro`` the same per-class formulas."""
        return self._scores(counts)[1]

    def _scores(self, c: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        er = (c["S"] + c["D"] + c["I"]) / (c["Nref"].sum() + _EPS)
        w = self.spatial_fp_weight
        f = c["TP"] / (_EPS + c["TP"] + w * c["FP_spatial"] + 0.5 * (c["FP"] + c["FN"]))
        le = c["total_DE"] / (c["DE_TP"] + _EPS)
        le = np.where(c["DE_TP"] == 0, 180.0, le)
        lr = c["DE_TP"] / (_EPS + c["DE_TP"] + c["DE_FN"])
        seld = np.mean([np.repeat(er, len(f)), 1 - f, le / 180, 1 - lr], axis=0)
        per_class = {"er": np.repeat(er, len(f)), "f": f, "le": le, "lr": lr, "seld": seld}
        if self.average == "macro":
            overall = {
                "er": er,
                "f": f.mean(),
                "le": le.mean(),
                "lr": lr.mean(),
                "seld": seld.mean(),
            }
        else:
            tp, fp_s = c["TP"].sum(), c["FP_spatial"].sum()
            f_all = tp / (_EPS + tp + w * fp_s + 0.5 * (c["FP"].sum() + c["FN"].sum()))
            de_tp = c["DE_TP"].sum()
            le_all = c["total_DE"].sum() / float(de_tp + _EPS) if de_tp else 180.0
            lr_all = de_tp / (_EPS + de_tp + c["DE_FN"].sum())
            seld_all = np.mean([er, 1 - f_all, le_all / 180, 1 - lr_all])
            overall = {"er": er, "f": f_all, "le": le_all, "lr": lr_all, "seld": seld_all}
        return overall, per_class


def pool(counts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The counts of several recordings together (summed)."""
    return {k: np.sum([c[k] for c in counts], axis=0) for k in counts[0]}
