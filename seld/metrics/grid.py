"""The official 10-degree direction grid and the matching of directions, shared by both scorers.

The official scorer (``seld-dcase2019``, ``calculate_SELD_metrics.py``) turns every active
(frame, class, direction) into a 1-cell on a grid of 36 azimuths (-180..170) x 9 elevations
(-40..40), in degrees; the flat cell of integer angles is
``((azi + 180) // 10) * 9 + (ele + 40) // 10`` (324 cells). Off-grid angles are floored onto it.

Quirks of the official code reproduced on purpose:

* Predicted angles are clipped to [-180, 170] x [-40, 40] before gridding, so a predicted azimuth
  of 180 scores as 170; reference angles are not clipped.
* Rows at frames past the end of the recording are dropped; duplicate (frame, class, cell)
  entries count once; two classes in the same cell count as two directions.
* The great-circle formula ``arccos(sin e1 sin e2 + cos e1 cos e2 cos|a1 - a2|)`` leaves up to
  ~1e-6 degrees of rounding noise for identical directions; kept, to match the official numbers.

Where the official code would crash or silently alias, we differ: a reference azimuth of exactly
180 is treated as -180 (the same direction; the official array index overflows), and reference
directions outside azimuth [-180, 180] or elevation [-40, 50) raise ``ValueError``.

In each frame the directions are matched, ignoring class, by the minimum total great-circle
angle (Hungarian; :func:`min_assignment_cost`).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from seld.data.dcase import AZIMUTH_GRID, ELEVATION_GRID, GRID_STEP_DEG, NUM_CLASSES

__all__ = [
    "MAX_PERMUTATIONS",
    "NUM_CELLS",
    "cell_distance_table",
    "cell_keys",
    "min_assignment_cost",
    "predicted_cells",
]

_NUM_AZI = len(AZIMUTH_GRID)  # 36
_NUM_ELE = len(ELEVATION_GRID)  # 9
#: Number of grid cells (324).
NUM_CELLS = _NUM_AZI * _NUM_ELE
#: Largest number of injective assignments tried at once per frame; above it, scipy per frame.
MAX_PERMUTATIONS = 5000
#: Bound on the elements of one batched (frames x assignments x pairs) array.
_MAX_BATCH_ELEMENTS = 2_000_000


def cell_keys(rows: np.ndarray, num_frames: int, *, prediction: bool) -> np.ndarray:
    """Sorted unique 1-cells of one file, each encoded as ``(frame * 11 + class) * 324 + cell``.

    ``rows``: (n, 4) int64 ``(frame, class, azimuth, elevation)``, angles in degrees. Rows at or
    past ``num_frames`` are dropped; predicted angles are clipped to the grid, reference angles
    are checked against it (``ValueError``).
    """
    rows = rows[rows[:, 0] < num_frames]
    azi, ele = rows[:, 2], rows[:, 3]
    if prediction:
        azi = np.clip(azi, AZIMUTH_GRID[0], AZIMUTH_GRID[-1])
        ele = np.clip(ele, ELEVATION_GRID[0], ELEVATION_GRID[-1])
    else:
        azi = np.where(azi == 180, -180, azi)
        bad = (azi < -180) | (azi >= 180) | (ele < -40) | (ele >= 50)
        if bad.any():
            a, e = rows[np.argmax(bad), 2:]
            raise ValueError(
                f"reference direction (azimuth {a}, elevation {e}) is outside the DCASE 2019 grid "
                "(azimuth -180..180, elevation -40..49)"
            )
    cell = _grid_cell(azi, ele)
    return np.unique((rows[:, 0] * NUM_CLASSES + rows[:, 1]) * NUM_CELLS + cell)


def _grid_cell(azi: np.ndarray, ele: np.ndarray) -> np.ndarray:
    """Flat grid cell of integer angles in degrees (floored onto the 10-degree grid)."""
    return ((azi - AZIMUTH_GRID[0]) // GRID_STEP_DEG) * _NUM_ELE + (
        ele - ELEVATION_GRID[0]
    ) // GRID_STEP_DEG


def predicted_cells(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Grid cells the scorer gives predicted integer angles (degrees): clipped to the grid,
    then floored onto it, as for submission rows. Any shape; int64."""
    azi = np.clip(np.asarray(azimuth, dtype=np.int64), AZIMUTH_GRID[0], AZIMUTH_GRID[-1])
    ele = np.clip(np.asarray(elevation, dtype=np.int64), ELEVATION_GRID[0], ELEVATION_GRID[-1])
    return _grid_cell(azi, ele)


@lru_cache(maxsize=1)
def cell_distance_table() -> np.ndarray:
    """(324, 324) great-circle angles in degrees between grid cells, by the official formula."""
    cells = np.arange(NUM_CELLS)
    azi = (cells // _NUM_ELE * GRID_STEP_DEG + AZIMUTH_GRID[0]) * np.pi / 180
    ele = (cells % _NUM_ELE * GRID_STEP_DEG + ELEVATION_GRID[0]) * np.pi / 180
    a1, a2 = azi[:, None], azi[None, :]
    e1, e2 = ele[:, None], ele[None, :]
    cosine = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(np.abs(a1 - a2))
    table = np.arccos(np.clip(cosine, -1, 1)) * 180 / np.pi
    table.setflags(write=False)
    return table


def min_assignment_cost(costs: np.ndarray) -> np.ndarray:
    """Minimum total cost of matching min(n, m) pairs in each of G (n, m) cost matrices.

    ``costs``: (G, n, m) degrees -> (G,) degrees. All injective assignments of the smaller side
    are tried at once; past :data:`MAX_PERMUTATIONS` it falls back to scipy frame by frame.
    """
    if costs.shape[1] > costs.shape[2]:
        costs = costs.transpose(0, 2, 1)
    g, n, m = costs.shape
    if math.perm(m, n) > MAX_PERMUTATIONS:
        out = np.empty(g)
        for k in range(g):
            rows, cols = linear_sum_assignment(costs[k])
            out[k] = costs[k][rows, cols].sum()
        return out
    perms = np.array(list(itertools.permutations(range(m), n)), dtype=np.intp)  # (P, n)
    chunk = max(1, _MAX_BATCH_ELEMENTS // (len(perms) * n))
    out = np.empty(g)
    for start in range(0, g, chunk):
        part = costs[start : start + chunk]  # (g', n, m)
        totals = part[:, np.arange(n)[None, :], perms].sum(axis=2)  # (g', P)
        out[start : start + chunk] = totals.min(axis=1)
    return out
