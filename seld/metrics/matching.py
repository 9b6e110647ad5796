"""The (frame, class) cells of the location-aware and frame-wise SELD metrics: many recordings'
track-wise rows on one frame axis, and the minimum-cost matching of the instances of many
cells at once (their Hungarian step)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["first_per_cell", "great_circle_deg", "match_cells", "stack_recordings"]

#: largest instance count matched by trying every assignment (beyond it, one
#: ``linear_sum_assignment`` call per cell)
ENUMERATED = 5


def great_circle_deg(
    az1: np.ndarray, el1: np.ndarray, az2: np.ndarray, el2: np.ndarray
) -> np.ndarray:
    """Great-circle angles in degrees between directions given in degrees, as the official
    polar paths compute them (radians by ``* pi / 180.``, the spherical law of cosines)."""
    az1, el1, az2, el2 = (
        np.asarray(a, dtype=np.float64) * np.pi / 180.0 for a in (az1, el1, az2, el2)
    )
    cos = np.sin(el1) * np.sin(el2) + np.cos(el1) * np.cos(el2) * np.cos(np.abs(az1 - az2))
    return np.arccos(np.clip(cos, -1, 1)) * 180 / np.pi


def first_per_cell(key: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row (in file order) of each (frame, class) cell of sorted ``key``s
    (:func:`stack_recordings`): what a scorer holding one direction per class and frame reads."""
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    return key[first], rows[first]


def stack_recordings(
    rows: Sequence[np.ndarray],
    offsets: np.ndarray,
    num_classes: int,
    side: str,
    columns: int = 5,
    what: str = "frame, class, track, azimuth, elevation",
) -> tuple[np.ndarray, np.ndarray]:
    """Track-wise rows of many recordings on one frame axis: recording ``i``'s frames
    ``[0, n_i)`` become ``offsets[i] + frame``, rows at or past ``n_i = offsets[i + 1] -
    offsets[i]`` are dropped. Returns the cell keys (``frame * num_classes + class``, sorted;
    file order kept within a cell, which is how the official scorers tell a cell's instances
    apart) and the rows' first ``columns`` columns in that order. ``ValueError`` names the
    ``side`` for rows with fewer columns, a class out of range or a negative frame."""
    keys, kept_rows = [], []
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.float64)
        if r.size == 0:
            continue
        if r.ndim != 2 or r.shape[1] < columns:
            raise ValueError(f"{side}: rows need {columns} columns ({what})")
        if r[:, 1].min() < 0 or r[:, 1].max() >= num_classes:
            raise ValueError(f"{side}: class index outside 0..{num_classes - 1}")
        if r[:, 0].min() < 0:
            raise ValueError(f"{side}: negative frame index")
        kept = r[:, 0] < offsets[i + 1] - offsets[i]
        kept_rows.append(r[kept, :columns])
        frames = r[kept, 0].astype(np.int64) + offsets[i]
        keys.append(frames * num_classes + r[kept, 1].astype(np.int64))
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros((0, columns))
    key, stacked = np.concatenate(keys), np.concatenate(kept_rows)
    order = np.argsort(key, kind="stable")
    return key[order], stacked[order]


def match_cells(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The minimum-cost matchings of ``cells`` equal-shaped cost matrices ``(cells, n_r, n_p)``:
    for every match, its cell, row and column; cell by cell, rows ascending, as
    ``scipy.optimize.linear_sum_assignment`` gives them. Cells of up to :data:`ENUMERATED`
    instances are solved together by trying every assignment; a cell whose best total is tied
    (within 1e-9), or a larger one, goes to ``linear_sum_assignment`` itself, so that ties are
    broken as the official scorers break them."""
    n_cells, n_r, n_p = cost.shape
    k = min(n_r, n_p)
    out_c, out_r, out_q = [], [], []
    solve = np.ones(n_cells, dtype=bool)
    if max(n_r, n_p) <= ENUMERATED:
        if n_r <= n_p:  # every row gets a distinct column: rows 0..n_r-1 already ascending
            perms = np.array(list(itertools.permutations(range(n_p), n_r)))  # (P, n_r)
            rows_of, cols_of = np.broadcast_to(np.arange(n_r), perms.shape), perms
        else:  # every column gets a distinct row: sort each assignment by row
            perms = np.array(list(itertools.permutations(range(n_r), n_p)))  # (P, n_p)
            by_row = np.argsort(perms, axis=1)
            rows_of = np.take_along_axis(perms, by_row, axis=1)
            cols_of = np.take_along_axis(np.broadcast_to(np.arange(n_p), perms.shape), by_row, 1)
        totals = cost[:, rows_of, cols_of].sum(axis=2)  # (cells, P)
        if totals.shape[1] > 1:
            two = np.partition(totals, 1, axis=1)[:, :2]
            solve = two[:, 1] - two[:, 0] <= 1e-9 * np.maximum(1.0, two[:, 0])
        else:
            solve = np.zeros(n_cells, dtype=bool)
        easy = np.flatnonzero(~solve)
        best = np.argmin(totals[easy], axis=1)
        out_c.append(np.repeat(easy, k))
        out_r.append(rows_of[best].ravel())
        out_q.append(cols_of[best].ravel())
    for g in np.flatnonzero(solve):
        rows, cols = linear_sum_assignment(cost[g])
        out_c.append(np.full(len(rows), g))
        out_r.append(rows)
        out_q.append(cols)
    if not out_c:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    cell, row, col = (np.concatenate(a).astype(np.int64) for a in (out_c, out_r, out_q))
    return cell, row, col
