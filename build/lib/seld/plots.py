"""Prediction-versus-reference figures: azimuth and elevation over time, one colour per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt
import numpy as np

from seld.dcase import CLASSES, LABEL_HOP_S
from seld.fsutil import atomic_path


def plot_recording(
    reference: np.ndarray, predicted: np.ndarray, num_frames: int, title: str, path: Path
) -> Path:
    """Write a PNG of one recording: reference rows as thick lines, predicted rows as dots.

    ``reference`` and ``predicted``: submission rows ``(frame, class, azimuth, elevation)``.
    """
    fig, axes = plt.subplots(
        3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [1, 2, 2]}
    )
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(CLASSES), endpoint=False))
    for rows, style in (
        (reference, {"s": 14, "marker": "s", "alpha": 0.35}),
        (predicted, {"s": 4, "marker": "o", "alpha": 0.9}),
    ):
        if len(rows) == 0:
            continue
        t = rows[:, 0] * LABEL_HOP_S
        c = colours[rows[:, 1]]
        axes[0].scatter(t, rows[:, 1], color=c, **style)
        axes[1].scatter(t, rows[:, 2], color=c, **style)
        axes[2].scatter(t, rows[:, 3], color=c, **style)
    axes[0].set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
    axes[0].set_ylabel("class")
    axes[1].set_ylabel("azimuth (°)")
    axes[1].set_ylim(-185, 185)
    axes[2].set_ylabel("elevation (°)")
    axes[2].set_ylim(-50, 50)
    axes[2].set_xlabel("time (s): reference = squares, prediction = dots")
    axes[2].set_xlim(0, num_frames * LABEL_HOP_S)
    axes[0].set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
