"""DCASE 2019 submission CSVs: reading with validation, atomic writing, and building rows.

A submission holds one CSV per recording, without a header, one integer row
``frame,class,azimuth,elevation`` per active (frame, class) at the 20 ms label rate; angles are in
degrees. In memory a submission is an ``(n, 4)`` int64 array of those rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from seld.data.dcase import LABEL_HOP_S, NUM_CLASSES
from seld.data.metadata import (
    DatasetError,
    Event,
    atomic_write_text,
    event_frame_span,
    read_text_file,
)

#: Columns of a submission row.
SUBMISSION_COLUMNS: tuple[str, ...] = ("frame", "class", "azimuth", "elevation")


def empty_rows() -> np.ndarray:
    """A submission with no rows: shape (0, 4), int64."""
    return np.zeros((0, len(SUBMISSION_COLUMNS)), dtype=np.int64)


def parse_submission(text: str, path: str | os.PathLike[str] = "<submission>") -> np.ndarray:
    """Parse the text of a submission CSV into (n, 4) int64 rows ``(frame, class, azi, ele)``.

    Blank lines are skipped. A malformed row (wrong field count, non-integer field, class outside
    ``0..10``, negative frame) raises :class:`DatasetError` naming ``path`` and the line.
    Angles are not range-checked: the official scorer clips predicted angles to its grid.
    """
    rows: list[tuple[int, int, int, int]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != len(SUBMISSION_COLUMNS):
            raise DatasetError(
                path,
                f"line {line_no}: expected 4 fields (frame,class,azimuth,elevation), "
                f"found {len(fields)} in {line.strip()!r}",
            )
        try:
            frame, cls, azi, ele = (int(field) for field in fields)
        except ValueError:
            hint = " (submission CSVs have no header line)" if line_no == 1 else ""
            raise DatasetError(
                path, f"line {line_no}: non-integer field in {line.strip()!r}{hint}"
            ) from None
        if not 0 <= cls < NUM_CLASSES:
            raise DatasetError(
                path, f"line {line_no}: class index {cls} outside 0..{NUM_CLASSES - 1}"
            )
        if frame < 0:
            raise DatasetError(path, f"line {line_no}: negative frame index {frame}")
        rows.append((frame, cls, azi, ele))
    if not rows:
        return empty_rows()
    return np.asarray(rows, dtype=np.int64)


def read_submission(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one submission CSV into (n, 4) int64 rows ``(frame, class, azimuth, elevation)``.

    Every problem raises :class:`DatasetError` naming the file (and the line, for bad rows).
    """
    path = Path(path)
    return parse_submission(read_text_file(path, "submission"), path)


def check_rows(rows: np.ndarray, what: str = "rows") -> np.ndarray:
    """Return ``rows`` as an (n, 4) int64 array; ``ValueError`` for a bad shape, a class outside
    ``0..10`` or a negative frame."""
    array = np.asarray(rows)
    if array.size == 0:
        return empty_rows()
    if array.ndim != 2 or array.shape[1] != len(SUBMISSION_COLUMNS):
        raise ValueError(f"{what} must have shape (n, 4), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers (frame, class, azimuth, elevation)")
    array = array.astype(np.int64, copy=False)
    if array[:, 1].min() < 0 or array[:, 1].max() >= NUM_CLASSES:
        raise ValueError(f"{what}: class index outside 0..{NUM_CLASSES - 1}")
    if array[:, 0].min() < 0:
        raise ValueError(f"{what}: negative frame index")
    return array


def format_submission(rows: np.ndarray) -> str:
    """The text of a submission CSV (no header, one ``frame,class,azi,ele`` line per row)."""
    rows = check_rows(rows)
    return "".join(f"{f},{c},{a},{e}\n" for f, c, a, e in rows.tolist())


def write_submission(path: str | os.PathLike[str], rows: np.ndarray) -> None:
    """Write (n, 4) integer rows as a submission CSV atomically (readers never see half a file)."""
    atomic_write_text(Path(path), format_submission(rows))


def write_tracked_submission(path: str | os.PathLike[str], rows: np.ndarray) -> None:
    """Track-wise rows ``(frame, class, track, azimuth, elevation)`` as the DCASE 2020-2023
    output format writes them (no header, directions in degrees to 0.01), atomically; the
    folder is made when missing. Rows of six columns ``(..., distance)`` are written as the
    DCASE 2024 output format has them: the distance in metres, to 0.01 (the centimetres of
    its references), after the direction, as
    :meth:`seld.data.formats.TrackwiseFormat.read_prediction` reads them with ``distances``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(-1, 5) if rows.size == 0 else rows
    if rows.shape[1] >= 6:
        if not np.isfinite(rows[:, 5]).all():
            raise ValueError(f"{path}: a row without a finite distance")
        text = "".join(
            f"{int(f)},{int(c)},{int(t)},{a:.2f},{e:.2f},{d:.2f}\n"
            for f, c, t, a, e, d in rows[:, :6].tolist()
        )
    else:
        text = "".join(
            f"{int(f)},{int(c)},{int(t)},{a:.2f},{e:.2f}\n"
            for f, c, t, a, e in rows[:, :5].tolist()
        )
    atomic_write_text(path, text)


def predictions_to_rows(
    activity: np.ndarray, azimuth_deg: np.ndarray, elevation_deg: np.ndarray
) -> np.ndarray:
    """Frame-level predictions to submission rows.

    ``activity``: (frames, classes) bool, True where a class is detected; ``azimuth_deg`` and
    ``elevation_deg``: (frames, classes) in degrees, read only where active and rounded to the
    nearest integer (halves to even). Returns (n, 4) int64 rows sorted by frame, then class.
    """
    activity = np.asarray(activity, dtype=bool)
    azimuth_deg = np.asarray(azimuth_deg, dtype=np.float64)
    elevation_deg = np.asarray(elevation_deg, dtype=np.float64)
    if activity.ndim != 2 or activity.shape[1] != NUM_CLASSES:
        raise ValueError(f"activity must have shape (frames, {NUM_CLASSES}), got {activity.shape}")
    if azimuth_deg.shape != activity.shape or elevation_deg.shape != activity.shape:
        raise ValueError(
            f"angle arrays must match activity {activity.shape}, got azimuth "
            f"{azimuth_deg.shape} and elevation {elevation_deg.shape}"
        )
    frames, classes = np.nonzero(activity)
    azi = azimuth_deg[frames, classes]
    ele = elevation_deg[frames, classes]
    if not (np.isfinite(azi).all() and np.isfinite(ele).all()):
        raise ValueError("NaN or infinite angle at an active (frame, class)")
    return np.stack([frames, classes, np.rint(azi), np.rint(ele)], axis=1).astype(np.int64)


def events_to_rows(events: Iterable[Event], num_frames: int) -> np.ndarray:
    """Reference events as submission rows (an oracle submission, or the scorer's reference).

    Each event is active on frames ``floor(start * 50) .. ceil(end * 50)`` inclusive, clipped to
    ``num_frames`` (the official label code's convention); angles are rounded to integers (the
    official code reads them as integers). Returns unique (n, 4) int64 rows sorted by frame,
    class, azimuth, elevation.
    """
    blocks = []
    for event in events:
        first, stop = event_frame_span(event, LABEL_HOP_S, num_frames)
        if stop <= first:
            continue
        block = np.empty((stop - first, 4), dtype=np.int64)
        block[:, 0] = np.arange(first, stop)
        block[:, 1] = event.class_index
        block[:, 2] = round(event.azimuth)
        block[:, 3] = round(event.elevation)
        blocks.append(block)
    if not blocks:
        return empty_rows()
    return np.unique(np.concatenate(blocks), axis=0)


def submission_problems(rows: np.ndarray, frames: int) -> list[str]:
    """What the scorer would silently repair in a submission's rows ``(frame, class, azimuth,
    elevation)`` of a recording of ``frames`` label frames: directions that are no direction
    (azimuth outside [-180, 180], elevation outside [-90, 90]; scored clipped onto the grid)
    and rows past the end (dropped)."""
    problems = []
    checks = (
        (
            (rows[:, 2] < -180) | (rows[:, 2] > 180),
            "azimuth outside [-180, 180] (scored clipped to the grid)",
        ),
        (
            (rows[:, 3] < -90) | (rows[:, 3] > 90),
            "elevation outside [-90, 90] (scored clipped to the grid)",
        ),
        (rows[:, 0] >= frames, f"frame past the recording's last frame {frames - 1} (dropped)"),
    )
    for bad, what in checks:
        if bad.any():
            first = rows[np.flatnonzero(bad)[0]]
            problems.append(
                f"{int(bad.sum())} row(s) with {what}, e.g. {','.join(map(str, first))}"
            )
    return problems
