"""The official DCASE 2019 Task 3 metrics (ER, F, DOA error, frame recall, SELD score), vectorised.

This reproduces the numbers of the official scorer (``seld-dcase2019``,
``calculate_SELD_metrics.py``) without its dense ``[frames, 11, 324]`` arrays and per-frame
Python loop. Both reference and prediction become sets of 1-cells ``(frame, class, grid cell)``
on the official 10-degree grid (azimuth -180..170, elevation -40..40; cell
``((azi + 180) // 10) * 9 + (ele + 40) // 10``), and:

* SED: class activity is pooled into one-second blocks by max; per block S = min(FP, FN),
  D = max(0, FN - FP), I = max(0, FP - FN); ER = (S + D + I) / Nref, F = 2PR / (P + R).
* DOA: in each frame the directions of the 1-cells are matched, ignoring class, by the minimum
  total great-circle angle (Hungarian); the summed angles are divided by the number of predicted
  1-cells in all frames. Frame recall is the share of frames whose counts of 1-cells agree.
* SELD = mean(ER, 1 - F, DOA / 180, 1 - frame recall).

Counts are summed over the files of a group before any ratio is taken (micro average), as the
official script does for all files and per split, ov and ir.

Quirks of the official code reproduced on purpose (``official_blocks=True``, the default):

* A block is ``frames[i * 50 : i * 50 + 49]``: the last frame of every second is ignored by SED.
  ``official_blocks=False`` uses whole seconds ``[i * 50 : (i + 1) * 50]`` instead.
* Predicted angles are clipped to [-180, 170] x [-40, 40] before gridding, so a predicted azimuth
  of 180 scores as 170; reference angles are not clipped. Off-grid angles are floored to the grid.
* Predicted rows at frames past the end of the recording are dropped; duplicate (frame, class,
  cell) entries count once; two classes in the same cell count as two directions.
* The great-circle formula ``arccos(sin e1 sin e2 + cos e1 cos e2 cos|a1 - a2|)`` leaves up to
  ~1e-6 degrees of rounding noise for identical directions; kept, to match the official numbers.
* With no predicted directions at all, DOA error is 0/0 = NaN (and so is the SELD score); with
  no reference activity, ER is NaN ("n/a"). The official code gives inf there when the system
  detected something; a score that cannot be computed is reported as missing rather than as
  infinitely bad, so that tables, JSON and MLflow stay valid.

Where the official code would crash or silently alias, we differ: a reference azimuth of exactly
180 is treated as -180 (the same direction; the official array index overflows), and reference
directions outside azimuth [-180, 180] or elevation [-40, 50) raise ``ValueError``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from seld.dcase import (
    AZIMUTH_GRID,
    ELEVATION_GRID,
    GRID_STEP_DEG,
    LABEL_FRAMES_PER_SECOND,
    NUM_CLASSES,
    num_label_frames,
    parse_recording_name,
)
from seld.metadata import DatasetError, read_metadata
from seld.submission import (
    check_rows,
    events_to_rows,
    predictions_to_rows,
    read_submission,
    submission_problems,
    write_submission,
)

__all__ = [
    "GROUPS",
    "ReferenceFrames",
    "ScoreReport",
    "SeldCounts",
    "SeldScores",
    "class_masks",
    "count_file",
    "count_masks",
    "events_to_rows",
    "pooled_counts",
    "predicted_cells",
    "predictions_to_rows",
    "prepare_references",
    "read_submission",
    "report_from_counts",
    "score_directories",
    "score_files",
    "write_submission",
]

logger = logging.getLogger(__name__)

#: Ways the official script groups recordings, in its order (besides "all").
GROUPS: tuple[str, ...] = ("split", "ov", "ir")

_NUM_AZI = len(AZIMUTH_GRID)  # 36
_NUM_ELE = len(ELEVATION_GRID)  # 9
_NUM_CELLS = _NUM_AZI * _NUM_ELE  # 324
_EPS = float(np.finfo(float).eps)
#: Largest number of injective assignments tried at once per frame; above it, scipy per frame.
MAX_PERMUTATIONS = 5000
#: Bound on the elements of one batched (frames x assignments x pairs) array.
_MAX_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class SeldScores:
    """The four DCASE 2019 metrics and the SELD score (lower is better).

    ``er`` and ``f`` in [0, 1] (ER may exceed 1), ``doa_error`` in degrees, ``frame_recall`` in
    [0, 1]. NaN where the official formula divides zero by zero.
    """

    er: float
    f: float
    doa_error: float
    frame_recall: float
    seld: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SeldCounts:
    """Everything the metrics of a set of files are computed from; add counts to pool files.

    SED counts are over one-second blocks x classes; ``doa_cost_deg`` is the sum of matched
    great-circle angles (degrees), ``n_pred_doa`` the number of predicted 1-cells, and
    ``n_good_frames`` the frames whose reference and predicted 1-cell counts agree, out of
    ``n_frames``.
    """

    S: int = 0
    D: int = 0
    I: int = 0
    TP: int = 0
    Nref: int = 0
    Nsys: int = 0
    doa_cost_deg: float = 0.0
    n_pred_doa: int = 0
    n_good_frames: int = 0
    n_frames: int = 0
    n_blocks: int = 0

    def __add__(self, other: SeldCounts) -> SeldCounts:
        if not isinstance(other, SeldCounts):
            return NotImplemented
        return SeldCounts(
            **{name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        )

    def scores(self) -> SeldScores:
        """ER, F, DOA error, frame recall and SELD score, with the official formulas and eps."""
        er = _ratio(self.S + self.D + self.I, self.Nref)
        precision = self.TP / (self.Nsys + _EPS)
        recall = self.TP / (self.Nref + _EPS)
        f = 2 * precision * recall / (precision + recall + _EPS)
        doa_error = _ratio(self.doa_cost_deg, self.n_pred_doa)
        frame_recall = _ratio(self.n_good_frames, self.n_frames)
        seld = (er + (1 - f) + doa_error / 180 + (1 - frame_recall)) / 4
        return SeldScores(float(er), float(f), float(doa_error), float(frame_recall), float(seld))


_COUNT_FIELDS = tuple(SeldCounts.__dataclass_fields__)


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN (not computable) for a zero denominator."""
    if denominator == 0:
        return math.nan
    return numerator / denominator


@dataclass
class ScoreReport:
    """Scores of a set of files: all together, per file, and per split / ov / ir value."""

    overall: SeldScores
    per_file: dict[str, SeldScores] = field(default_factory=dict)
    groups: dict[str, dict[int, SeldScores]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready nesting of plain dicts (NaN stays a float NaN)."""
        return {
            "overall": self.overall.as_dict(),
            "per_file": {name: s.as_dict() for name, s in self.per_file.items()},
            "groups": {
                group: {str(key): s.as_dict() for key, s in sorted(per_key.items())}
                for group, per_key in self.groups.items()
            },
        }


# ------------------------------------------------------------------ grid cells


def _cell_keys(rows: np.ndarray, num_frames: int, *, prediction: bool) -> np.ndarray:
    """Sorted unique 1-cells of one file, each encoded as ``(frame * 11 + class) * 324 + cell``.

    ``rows``: (n, 4) int64 ``(frame, class, azimuth, elevation)``, angles in degrees.
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
    return np.unique((rows[:, 0] * NUM_CLASSES + rows[:, 1]) * _NUM_CELLS + cell)


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
def _cell_distance_table() -> np.ndarray:
    """(324, 324) great-circle angles in degrees between grid cells, by the official formula."""
    cells = np.arange(_NUM_CELLS)
    azi = (cells // _NUM_ELE * GRID_STEP_DEG + AZIMUTH_GRID[0]) * np.pi / 180
    ele = (cells % _NUM_ELE * GRID_STEP_DEG + ELEVATION_GRID[0]) * np.pi / 180
    a1, a2 = azi[:, None], azi[None, :]
    e1, e2 = ele[:, None], ele[None, :]
    cosine = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(np.abs(a1 - a2))
    table = np.arccos(np.clip(cosine, -1, 1)) * 180 / np.pi
    table.setflags(write=False)
    return table


# ------------------------------------------------------------------ SED


def _sed_counts(
    ref_keys: np.ndarray, pred_keys: np.ndarray, num_frames: int, official_blocks: bool
) -> tuple[int, int, int, int, int, int, int]:
    """S, D, I, TP, Nref, Nsys over one-second blocks x classes, and the number of blocks."""
    block = LABEL_FRAMES_PER_SECOND
    n_blocks = -(-num_frames // block)

    def block_activity(keys: np.ndarray) -> np.ndarray:
        frame_class = np.unique(keys // _NUM_CELLS)
        frame = frame_class // NUM_CLASSES
        if official_blocks:  # the official slice [i*50 : i*50+49] skips each second's last frame
            kept = frame % block != block - 1
            frame_class, frame = frame_class[kept], frame[kept]
        return np.unique(frame // block * NUM_CLASSES + frame_class % NUM_CLASSES)

    ref_blocks, pred_blocks = block_activity(ref_keys), block_activity(pred_keys)
    hit = np.isin(pred_blocks, ref_blocks, assume_unique=True)
    fp = np.bincount(pred_blocks[~hit] // NUM_CLASSES, minlength=n_blocks)
    fn = np.bincount(
        ref_blocks[~np.isin(ref_blocks, pred_blocks, assume_unique=True)] // NUM_CLASSES,
        minlength=n_blocks,
    )
    s = int(np.minimum(fp, fn).sum())
    d = int(np.maximum(0, fn - fp).sum())
    i = int(np.maximum(0, fp - fn).sum())
    return s, d, i, int(hit.sum()), len(ref_blocks), len(pred_blocks), n_blocks


# ------------------------------------------------------------------ DOA


def _min_assignment_cost(costs: np.ndarray) -> np.ndarray:
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


def _doa_counts(
    ref_keys: np.ndarray, pred_keys: np.ndarray, num_frames: int
) -> tuple[float, int, int]:
    """Summed matched angle (degrees), number of predicted 1-cells, frames with equal counts."""
    per_frame = NUM_CLASSES * _NUM_CELLS
    ref_frame, pred_frame = ref_keys // per_frame, pred_keys // per_frame
    n_ref = np.bincount(ref_frame, minlength=num_frames)
    n_pred = np.bincount(pred_frame, minlength=num_frames)
    n_good = int((n_ref == n_pred).sum())
    # keys are sorted, so each frame's cells are contiguous, starting at these offsets
    ref_start = np.cumsum(n_ref) - n_ref
    pred_start = np.cumsum(n_pred) - n_pred
    ref_cells, pred_cells = ref_keys % _NUM_CELLS, pred_keys % _NUM_CELLS
    table = _cell_distance_table()

    both = np.flatnonzero((n_ref > 0) & (n_pred > 0))
    shapes = n_ref[both] * (per_frame + 1) + n_pred[both]
    total = 0.0
    for shape in np.unique(shapes):
        frames = both[shapes == shape]
        n, m = int(n_ref[frames[0]]), int(n_pred[frames[0]])
        ref = ref_cells[ref_start[frames][:, None] + np.arange(n)]  # (G, n)
        pred = pred_cells[pred_start[frames][:, None] + np.arange(m)]  # (G, m)
        total += float(_min_assignment_cost(table[ref[:, :, None], pred[:, None, :]]).sum())
    return total, len(pred_keys), n_good


# ------------------------------------------------------------------ many recordings at once

#: Number of set bits, and their positions (ascending, padded with 0), of every class mask.
_POPCOUNT = np.array([bin(m).count("1") for m in range(1 << NUM_CLASSES)], dtype=np.int64)
_SET_BITS = np.array(
    [
        [c for c in range(NUM_CLASSES) if m >> c & 1] + [0] * (NUM_CLASSES - bin(m).count("1"))
        for m in range(1 << NUM_CLASSES)
    ],
    dtype=np.intp,
)


def class_masks(activity: np.ndarray) -> np.ndarray:
    """(T, classes) bool -> (T,) uint16 with bit ``c`` set where class ``c`` is active."""
    activity = np.asarray(activity, dtype=bool)
    masks = np.zeros(len(activity), dtype=np.uint16)
    for c in range(activity.shape[1]):
        masks |= activity[:, c].astype(np.uint16) << c
    return masks


@dataclass(frozen=True)
class ReferenceFrames:
    """The references of several recordings, laid end to end on one frame axis, with everything
    the scorer derives from them computed once (for scoring many predictions of the same
    recordings, e.g. one per threshold trial; see :func:`count_masks`).

    ``T`` is the total number of label frames and ``B`` of one-second blocks; class sets are
    bit masks (:func:`class_masks`). Arrays are read-only, so one instance can be shared (also
    through Ray's object store).
    """

    names: tuple[str, ...]
    #: (F + 1,) first frame of each recording on the frame axis, and T at the end
    frame_offsets: np.ndarray
    #: (F + 1,) first block of each recording, and B at the end
    block_offsets: np.ndarray
    #: (T,) recording index of each frame
    recording: np.ndarray
    #: (T,) number of reference 1-cells of each frame
    n_ref: np.ndarray
    #: (T, max 1-cells per frame) reference cells of each frame, in the scorer's order
    ref_cells: np.ndarray
    #: (B,) first frame of each block
    block_starts: np.ndarray
    #: (T,) uint16, all ones for frames that count for SED, 0 for the others (the official
    #: blocks skip each second's last frame)
    sed_frames: np.ndarray
    #: (B,) uint16 class mask of the reference activity of each block
    ref_blocks: np.ndarray

    @property
    def num_frames(self) -> np.ndarray:
        """(F,) label frames of each recording."""
        return np.diff(self.frame_offsets)


def prepare_references(
    refs: Mapping[str, tuple[np.ndarray, int]], *, official_blocks: bool = True
) -> ReferenceFrames:
    """Lay out the references of several recordings for :func:`count_masks`.

    ``refs``: recording name -> ``(ref_rows, num_frames)`` as for :func:`count_file`. Raises
    ``ValueError`` as :func:`count_file` does (bad rows, directions off the grid).
    """
    if not refs:
        raise ValueError("no recordings to score")
    block = LABEL_FRAMES_PER_SECOND
    frames = np.array([n for _, n in refs.values()], dtype=np.int64)
    if (frames <= 0).any():
        raise ValueError(f"num_frames must be positive, got {int(frames.min())}")
    blocks = -(-frames // block)
    frame_offsets = np.concatenate([[0], np.cumsum(frames)])
    block_offsets = np.concatenate([[0], np.cumsum(blocks)])
    total = int(frame_offsets[-1])
    per_frame = NUM_CLASSES * _NUM_CELLS
    keys = [
        _cell_keys(check_rows(rows, "reference rows"), n, prediction=False)
        for rows, n in refs.values()
    ]
    frame = np.concatenate(
        [k // per_frame + o for k, o in zip(keys, frame_offsets[:-1], strict=True)]
    )
    cls = np.concatenate(keys) // _NUM_CELLS % NUM_CLASSES
    cell = np.concatenate(keys) % _NUM_CELLS
    n_ref = np.bincount(frame, minlength=total)
    # keys are sorted, so each frame's cells are contiguous, in the scorer's order
    slot = np.arange(len(frame)) - (np.cumsum(n_ref) - n_ref)[frame]
    ref_cells = np.zeros((total, max(1, int(n_ref.max(initial=0)))), dtype=np.int16)
    ref_cells[frame, slot] = cell
    recording = np.repeat(np.arange(len(frames), dtype=np.int32), frames)
    local = np.arange(total) - frame_offsets[recording]
    counted = (local % block != block - 1) if official_blocks else np.ones(total, dtype=bool)
    block_of = local // block + block_offsets[recording]
    ref_blocks = np.zeros(int(block_offsets[-1]), dtype=np.uint16)
    kept = counted[frame]
    np.bitwise_or.at(ref_blocks, block_of[frame[kept]], (1 << cls[kept]).astype(np.uint16))
    block_starts = frame_offsets[:-1, None] + np.arange(int(blocks.max())) * block
    block_starts = block_starts[np.arange(block_starts.shape[1]) < blocks[:, None]]
    sed_frames = np.where(counted, np.uint16(0xFFFF), np.uint16(0))
    arrays = (frame_offsets, block_offsets, recording, n_ref, ref_cells, block_starts)
    for array in (*arrays, sed_frames, ref_blocks):
        array.setflags(write=False)
    return ReferenceFrames(tuple(refs), *arrays, sed_frames, ref_blocks)


def count_masks(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray
) -> dict[str, SeldCounts]:
    """Metric counts of each recording from its detections: what :func:`count_file` gives for
    the submission rows ``(frame, class, azimuth, elevation)`` of every detected class.

    ``masks``: (T,) uint16 class masks of the detections on ``refs``' frame axis
    (:func:`class_masks`); ``cells``: (T, classes) the grid cell of each class's predicted
    direction (:func:`predicted_cells`), read where detected. Equal, number for number, to
    ``count_file`` of each recording.
    """
    ints, angles = _mask_counts(refs, masks, cells)
    return {
        name: SeldCounts(*row[:6], angle, *row[6:])
        for name, row, angle in zip(refs.names, ints.tolist(), angles, strict=True)
    }


def pooled_counts(refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray) -> SeldCounts:
    """``sum(count_masks(...).values(), SeldCounts())`` (the same numbers), in one step."""
    ints, angles = _mask_counts(refs, masks, cells)
    row = ints.sum(axis=0).tolist()
    return SeldCounts(*row[:6], sum(angles, 0.0), *row[6:])


def _mask_counts(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """(F, 10) integer counts per recording (the fields of :class:`SeldCounts` but the summed
    angle, in order) and the summed matched angle of each recording."""
    if masks.shape != refs.n_ref.shape or cells.shape != (len(masks), NUM_CLASSES):
        raise ValueError(
            f"masks and cells must have shapes ({len(refs.n_ref)},) and ({len(refs.n_ref)}, "
            f"{NUM_CLASSES}), got {masks.shape} and {cells.shape}"
        )
    # SED: one-second blocks x classes
    pred_blocks = np.bitwise_or.reduceat(masks & refs.sed_frames, refs.block_starts)
    ref_blocks = refs.ref_blocks
    fp = _POPCOUNT[pred_blocks & ~ref_blocks]
    fn = _POPCOUNT[ref_blocks & ~pred_blocks]
    per_block = np.stack(
        [
            np.minimum(fp, fn),
            np.maximum(0, fn - fp),
            np.maximum(0, fp - fn),
            _POPCOUNT[pred_blocks & ref_blocks],
            _POPCOUNT[ref_blocks],
            _POPCOUNT[pred_blocks],
        ],
        axis=1,
    )
    sed = np.add.reduceat(per_block, refs.block_offsets[:-1], axis=0)
    # DOA: one direction per detected (frame, class)
    n_pred = _POPCOUNT[masks]
    per_frame = np.stack([n_pred, n_pred == refs.n_ref], axis=1)
    doa = np.add.reduceat(per_frame, refs.frame_offsets[:-1], axis=0)
    sizes = np.stack([np.diff(refs.frame_offsets), np.diff(refs.block_offsets)], axis=1)
    ints = np.concatenate([sed, doa, sizes], axis=1)
    return ints, _matched_angles(refs, masks, cells, n_pred)


def _matched_angles(
    refs: ReferenceFrames, masks: np.ndarray, cells: np.ndarray, n_pred: np.ndarray
) -> list[float]:
    """Summed matched angle (degrees) of each recording, added up in exactly the order
    :func:`_doa_counts` adds them (by frame shape, then frame), so that the floats are equal."""
    n_ref = refs.n_ref
    both = np.flatnonzero((n_ref > 0) & (n_pred > 0))
    totals = [0.0] * len(refs.names)
    if not len(both):
        return totals
    # frames grouped by shape (reference count, predicted count); frames are laid out
    # recording after recording, so a stable sort keeps each shape's frames by recording, then
    # in frame order: runs of one (shape, recording) are _doa_counts' per-file shape groups
    shapes = n_ref[both] * (NUM_CLASSES + 1) + n_pred[both]
    if shapes.max() < 1 << 16:
        shapes = shapes.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    order = np.argsort(shapes, kind="stable")
    shapes, frames = shapes[order], both[order]
    owner = refs.recording[frames]
    table = _cell_distance_table().ravel()
    cost = np.empty(len(frames))
    bounds = (np.flatnonzero(np.diff(shapes)) + 1).tolist()
    for first, stop in zip([0, *bounds], [*bounds, len(frames)], strict=True):
        group = frames[first:stop]
        n, m = divmod(int(shapes[first]), NUM_CLASSES + 1)
        ref = refs.ref_cells[group, :n].astype(np.int64)
        pred = cells[group[:, None], _SET_BITS[masks[group], :m]]  # in class order
        pairs = table.take(ref[:, :, None] * _NUM_CELLS + pred[:, None, :])  # (G, n, m)
        cost[first:stop] = _min_assignment_cost(pairs)
    runs = (np.flatnonzero((np.diff(shapes) != 0) | (np.diff(owner) != 0)) + 1).tolist()
    owners = owner[[0, *runs]].tolist()
    for k, first, stop in zip(owners, [0, *runs], [*runs, len(frames)], strict=True):
        totals[k] += float(cost[first:stop].sum())  # shapes ascend within each recording
    return totals


# ------------------------------------------------------------------ public scoring


def count_file(
    ref_rows: np.ndarray, pred_rows: np.ndarray, num_frames: int, *, official_blocks: bool = True
) -> SeldCounts:
    """Metric counts of one recording.

    ``ref_rows`` and ``pred_rows``: (n, 4) integer rows ``(frame, class, azimuth, elevation)``
    in 20 ms frames and degrees, as from :func:`read_submission` or :func:`events_to_rows`;
    ``num_frames``: label frames of the recording (3000 for one minute). Rows at or past
    ``num_frames`` are ignored. ``official_blocks=False`` pools whole seconds for SED.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    ref_keys = _cell_keys(check_rows(ref_rows, "reference rows"), num_frames, prediction=False)
    pred_keys = _cell_keys(check_rows(pred_rows, "predicted rows"), num_frames, prediction=True)
    s, d, i, tp, nref, nsys, n_blocks = _sed_counts(
        ref_keys, pred_keys, num_frames, official_blocks
    )
    cost, n_pred_doa, n_good = _doa_counts(ref_keys, pred_keys, num_frames)
    return SeldCounts(s, d, i, tp, nref, nsys, cost, n_pred_doa, n_good, num_frames, n_blocks)


def score_files(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray, int]], *, official_blocks: bool = True
) -> ScoreReport:
    """Score recordings like the official script: all together, per file, per split / ov / ir.

    ``pairs``: recording name -> ``(ref_rows, pred_rows, num_frames)`` (see :func:`count_file`).
    Counts are summed within each group before scoring. Names that are not DCASE 2019 recording
    names (``split1_ir0_ov1_7``) count in ``overall`` and ``per_file`` but in no group.
    """
    if not pairs:
        raise ValueError("no recordings to score")
    return report_from_counts(
        {
            name: count_file(ref, pred, frames, official_blocks=official_blocks)
            for name, (ref, pred, frames) in pairs.items()
        }
    )


def report_from_counts(counts: Mapping[str, SeldCounts]) -> ScoreReport:
    """Pool per-recording counts into overall, per-file and per split / ov / ir scores."""
    grouped: dict[str, dict[int, SeldCounts]] = {group: {} for group in GROUPS}
    for name, c in counts.items():
        try:
            parsed = parse_recording_name(name)
        except ValueError:
            logger.warning("%s is not a DCASE 2019 recording name; scored in 'all' only", name)
            continue
        for group in GROUPS:
            key = getattr(parsed, group)
            grouped[group][key] = grouped[group].get(key, SeldCounts()) + c
    return ScoreReport(
        overall=sum(counts.values(), SeldCounts()).scores(),
        per_file={name: c.scores() for name, c in counts.items()},
        groups={
            group: {key: c.scores() for key, c in sorted(per_key.items())}
            for group, per_key in grouped.items()
        },
    )


def score_directories(
    ref_dir: Path,
    pred_dir: Path,
    *,
    durations: Mapping[str, float] | None = None,
    default_duration_s: float = 60.0,
    official_blocks: bool = True,
    strict: bool = False,
    warnings: list[DatasetError] | None = None,
) -> ScoreReport:
    """Score a folder of submission CSVs against a folder of reference metadata CSVs.

    Rows the official scorer silently repairs (impossible directions, frames past the end; see
    :func:`seld.submission.submission_problems`) are appended to ``warnings``, or, when
    ``strict``, raised as :class:`DatasetError`.

    Files are paired by stem. ``durations``: recording stem -> length in seconds (sets the frame
    count; ``default_duration_s`` for stems not in it). Raises :class:`DatasetError` for a
    prediction without reference, for references without prediction (all listed at once), and
    for any malformed file.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for folder, what in ((ref_dir, "reference metadata"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DatasetError(folder, f"{what} folder does not exist")
    refs = {p.stem: p for p in sorted(ref_dir.glob("*.csv"))}
    preds = {p.stem: p for p in sorted(pred_dir.glob("*.csv"))}
    if not refs:
        raise DatasetError(ref_dir, "no reference metadata CSVs")
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise DatasetError(
            pred_dir,
            f"{len(extra)} prediction(s) without a reference in {ref_dir}: {', '.join(extra)}",
        )
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DatasetError(
            pred_dir,
            f"missing predictions for {len(missing)} reference recording(s): {', '.join(missing)}",
        )
    durations = durations or {}
    counts = {}
    for stem, ref_path in refs.items():
        duration = durations.get(stem, default_duration_s)
        frames = num_label_frames(duration)
        ref_rows = events_to_rows(read_metadata(ref_path, duration_s=duration), frames)
        pred_rows = read_submission(preds[stem])
        for problem in submission_problems(pred_rows, frames):
            if strict:
                raise DatasetError(preds[stem], problem)
            if warnings is not None:
                warnings.append(DatasetError(preds[stem], problem))
        try:
            counts[stem] = count_file(ref_rows, pred_rows, frames, official_blocks=official_blocks)
        except ValueError as exc:  # only the reference can still be at fault here
            raise DatasetError(ref_path, str(exc)) from None
    return report_from_counts(counts)
