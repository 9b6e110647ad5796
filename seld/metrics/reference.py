"""The per-file DCASE 2019 Task 3 scorer: equal to the official one, number for number.

This reproduces the numbers of the official scorer (``seld-dcase2019``,
``calculate_SELD_metrics.py``) without its dense ``[frames, 11, 324]`` arrays and per-frame
Python loop. Both reference and prediction become sorted sets of 1-cells
``(frame, class, grid cell)`` on the official grid (:mod:`seld.metrics.grid`), and:

* SED: class activity is pooled into one-second blocks (50 label frames of 20 ms) by max; per
  block S = min(FP, FN), D = max(0, FN - FP), I = max(0, FP - FN).
* DOA: in each frame the directions of the 1-cells are matched, ignoring class, by the minimum
  total great-circle angle (degrees); frames whose counts of 1-cells agree are counted for frame
  recall.

The counts (:class:`~seld.metrics.scores.SeldCounts`) become scores as described in
:mod:`seld.metrics.scores`. A block is, as in the official code (``official_blocks=True``, the
default), ``frames[i * 50 : i * 50 + 49]``: the last frame of every second is ignored by SED.
``official_blocks=False`` uses whole seconds ``[i * 50 : (i + 1) * 50]`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seld.data.dcase import LABEL_FRAMES_PER_SECOND, NUM_CLASSES, num_label_frames
from seld.data.metadata import DatasetError, read_metadata
from seld.data.submission import check_rows, events_to_rows, read_submission, submission_problems
from seld.metrics.grid import NUM_CELLS, cell_distance_table, cell_keys, min_assignment_cost
from seld.metrics.scores import ScoreReport, SeldCounts, report_from_counts

__all__ = ["count_file", "read_directories", "score_directories", "score_files"]


def _sed_counts(
    ref_keys: np.ndarray, pred_keys: np.ndarray, num_frames: int, official_blocks: bool
) -> tuple[int, int, int, int, int, int, int]:
    """S, D, I, TP, Nref, Nsys over one-second blocks x classes, and the number of blocks."""
    block = LABEL_FRAMES_PER_SECOND
    n_blocks = -(-num_frames // block)

    def block_activity(keys: np.ndarray) -> np.ndarray:
        frame_class = np.unique(keys // NUM_CELLS)
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


def _doa_counts(
    ref_keys: np.ndarray, pred_keys: np.ndarray, num_frames: int
) -> tuple[float, int, int]:
    """Summed matched angle (degrees), number of predicted 1-cells, frames with equal counts."""
    per_frame = NUM_CLASSES * NUM_CELLS
    ref_frame, pred_frame = ref_keys // per_frame, pred_keys // per_frame
    n_ref = np.bincount(ref_frame, minlength=num_frames)
    n_pred = np.bincount(pred_frame, minlength=num_frames)
    n_good = int((n_ref == n_pred).sum())
    # keys are sorted, so each frame's cells are contiguous, starting at these offsets
    ref_start = np.cumsum(n_ref) - n_ref
    pred_start = np.cumsum(n_pred) - n_pred
    ref_cells, pred_cells = ref_keys % NUM_CELLS, pred_keys % NUM_CELLS
    table = cell_distance_table()

    both = np.flatnonzero((n_ref > 0) & (n_pred > 0))
    shapes = n_ref[both] * (per_frame + 1) + n_pred[both]
    total = 0.0
    for shape in np.unique(shapes):
        frames = both[shapes == shape]
        n, m = int(n_ref[frames[0]]), int(n_pred[frames[0]])
        ref = ref_cells[ref_start[frames][:, None] + np.arange(n)]  # (G, n)
        pred = pred_cells[pred_start[frames][:, None] + np.arange(m)]  # (G, m)
        total += float(min_assignment_cost(table[ref[:, :, None], pred[:, None, :]]).sum())
    return total, len(pred_keys), n_good


def count_file(
    ref_rows: np.ndarray, pred_rows: np.ndarray, num_frames: int, *, official_blocks: bool = True
) -> SeldCounts:
    """Metric counts of one recording.

    ``ref_rows`` and ``pred_rows``: (n, 4) integer rows ``(frame, class, azimuth, elevation)``
    in 20 ms frames and degrees, as from :func:`seld.data.submission.read_submission` or
    :func:`seld.data.submission.events_to_rows`; ``num_frames``: label frames of the recording (3000
    for one minute). Rows at or past ``num_frames`` are ignored. ``official_blocks=False`` pools
    whole seconds for SED.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    ref_keys = cell_keys(check_rows(ref_rows, "reference rows"), num_frames, prediction=False)
    pred_keys = cell_keys(check_rows(pred_rows, "predicted rows"), num_frames, prediction=True)
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
    """Score a folder of submission CSVs against a folder of reference metadata CSVs
    (:func:`read_directories` reads and checks them)."""
    pairs = read_directories(
        ref_dir,
        pred_dir,
        durations=durations,
        default_duration_s=default_duration_s,
        strict=strict,
        warnings=warnings,
    )
    counts = {}
    for stem, (ref_rows, pred_rows, frames) in pairs.items():
        try:
            counts[stem] = count_file(ref_rows, pred_rows, frames, official_blocks=official_blocks)
        except ValueError as exc:  # only the reference can still be at fault here
            raise DatasetError(Path(ref_dir) / f"{stem}.csv", str(exc)) from None
    return report_from_counts(counts)


def read_directories(
    ref_dir: Path,
    pred_dir: Path,
    *,
    durations: Mapping[str, float] | None = None,
    default_duration_s: float = 60.0,
    strict: bool = False,
    warnings: list[DatasetError] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Each recording's reference rows (from its metadata CSV), predicted rows (its submission
    CSV) and label frame count, by stem.

    Rows the official scorer silently repairs (impossible directions, frames past the end; see
    :func:`seld.data.submission.submission_problems`) are appended to ``warnings``, or, when
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
    pairs = {}
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
        pairs[stem] = (ref_rows, pred_rows, frames)
    return pairs
