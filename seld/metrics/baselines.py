"""Trivial reference systems that bound what a model must beat, as submission rows.

Each takes a recording's reference events and returns rows ``(frame, class, azimuth,
elevation)`` at the 20 ms label rate, the DCASE 2019 submission format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from seld.data.metadata import Event
from seld.data.submission import events_to_rows


def oracle(events: Sequence[Event], num_frames: int) -> np.ndarray:
    """The reference itself: scores SELD 0 (a check of the scorer and the file round trip)."""
    return events_to_rows(events, num_frames)


def constant_direction(
    events: Sequence[Event], num_frames: int, azimuth: int = 0, elevation: int = 0
) -> np.ndarray:
    """Perfect detection, no localisation: every detected event points at one fixed direction.

    Its DOA error is what a DOA model has to beat by a clear margin.
    """
    rows = events_to_rows(events, num_frames).copy()
    rows[:, 2] = azimuth
    rows[:, 3] = elevation
    return np.unique(rows, axis=0) if len(rows) else rows


def silence(events: Sequence[Event], num_frames: int) -> np.ndarray:
    """Predicts nothing: ER 1, F 0, no DOA error defined, frame recall = share of silent frames."""
    return np.zeros((0, 4), dtype=np.int64)


BASELINES: dict[str, Callable[[Sequence[Event], int], np.ndarray]] = {
    "oracle": oracle,
    "constant-direction": constant_direction,
    "silence": silence,
}
