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
  no reference activity, ER is NaN (0/0) or inf.

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
    write_submission,
)

__all__ = [
    "GROUPS",
    "ScoreReport",
    "SeldCounts",
    "SeldScores",
    "count_file",
    "events_to_rows",
    "predictions_to_rows",
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
    """``numerator / denominator`` with NumPy's semantics for a zero denominator (NaN or inf)."""
    if denominator == 0:
        return math.nan if numerator == 0 else math.inf
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
    cell = ((azi - AZIMUTH_GRID[0]) // GRID_STEP_DEG) * _NUM_ELE + (
        ele - ELEVATION_GRID[0]
    ) // GRID_STEP_DEG
    return np.unique((rows[:, 0] * NUM_CLASSES + rows[:, 1]) * _NUM_CELLS + cell)


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
) -> ScoreReport:
    """Score a folder of submission CSVs against a folder of reference metadata CSVs.

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
        try:
            counts[stem] = count_file(ref_rows, pred_rows, frames, official_blocks=official_blocks)
        except ValueError as exc:  # only the reference can still be at fault here
            raise DatasetError(ref_path, str(exc)) from None
    return report_from_counts(counts)
