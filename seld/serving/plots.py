"""Prediction-versus-reference figures: classes, azimuth and elevation over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from seld.features.store import LabelFacts
from seld.fsutil import atomic_path

#: the reference: a wide grey band per frame, under the predictions (one colour per class)
REFERENCE_STYLE = {"colors": "0.55", "linewidth": 7, "alpha": 0.45, "zorder": 1}


def _polar(rows: np.ndarray) -> np.ndarray:
    """``(frame, class, azimuth, elevation)`` of DCASE 2019 rows or of track-wise rows
    ``(frame, class, track, azimuth, elevation[, distance])``."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return rows.reshape(0, 4)
    return rows if rows.shape[1] == 4 else rows[:, [0, 1, 3, 4]]


def plot_recording(
    reference: np.ndarray,
    predicted: np.ndarray,
    num_frames: int,
    title: str,
    path: Path,
    labels: LabelFacts | None = None,
) -> Path:
    """Write a PNG of one recording: the reference as wide grey bands (a thin line of the
    class's colour along each), the prediction as dots coloured by class on top, so a miss
    shows as a bare band and a false alarm as dots alone.

    ``reference`` and ``predicted``: submission rows ``(frame, class, azimuth, elevation)``,
    or track-wise rows ``(frame, class, track, azimuth, elevation[, distance])``; ``labels``:
    the dataset format's classes and label rate (DCASE 2019's by default).
    """
    labels = labels or LabelFacts()
    classes, hop = labels.classes, 1.0 / labels.label_frames_per_second
    reference, predicted = _polar(reference), _polar(predicted)
    fig, axes = plt.subplots(
        3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [1, 2, 2]}
    )
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(classes), endpoint=False))
    if len(reference):
        t = reference[:, 0] * hop
        c = colours[reference[:, 1].astype(int)]
        for ax, column in zip(axes, (1, 2, 3), strict=True):
            ax.hlines(reference[:, column], t, t + hop, **REFERENCE_STYLE)
            # a thin line of the class's colour along the band: which class it is
            ax.hlines(reference[:, column], t, t + hop, colors=c, linewidth=0.8, zorder=1)
    if len(predicted):
        t = predicted[:, 0] * hop + hop / 2
        c = colours[predicted[:, 1].astype(int)]
        for ax, column in zip(axes, (1, 2, 3), strict=True):
            ax.scatter(t, predicted[:, column], color=c, s=5, marker="o", zorder=2)
    axes[0].set_yticks(range(len(classes)), classes, fontsize=7)
    axes[0].set_ylabel("class")
    axes[1].set_ylabel("azimuth (°)")
    axes[1].set_ylim(-185, 185)
    axes[2].set_ylabel("elevation (°)")
    # DCASE 2019's elevations span -40..40; the later datasets' the whole sphere
    axes[2].set_ylim(*((-50, 50) if labels.dataset_format == "dcase2019" else (-95, 95)))
    axes[2].set_xlabel("time (s)")
    axes[2].set_xlim(0, num_frames * hop)
    axes[0].set_title(title)
    handles = [
        Line2D([], [], color="0.55", alpha=0.45, linewidth=7, label="reference (grey band)"),
        Line2D(
            [],
            [],
            color="C0",
            marker="o",
            linestyle="",
            markersize=4,
            label="prediction (colour = class)",
        ),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


#: the metrics of a comparison figure, with their axis labels (lower is better except F, FR)
COMPARED_METRICS = {
    "er": "ER",
    "f": "F",
    "doa_error": "DOA error (°)",
    "frame_recall": "frame recall",
    "seld": "SELD score",
}


def plot_comparison(
    values: dict[str, dict[str, list[float]]],
    title: str,
    path: Path,
    published: dict[str, dict[str, float]] | None = None,
    metrics: dict[str, str] | None = None,
) -> Path:
    """Write a PNG comparing variants: one panel per metric, each seed's value as a dot, the
    mean over seeds with ± one standard deviation as a bar, and a published value (when given
    for a variant) as a star.

    ``values``: variant -> metric -> one value per seed (NaN values are left out); ``metrics``:
    the panels (key -> label), DCASE 2019's by default."""
    names = list(values)
    metrics = metrics or COMPARED_METRICS
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 4))
    positions = np.arange(len(names))
    for ax, (metric, label) in zip(axes, metrics.items(), strict=True):
        for i, name in enumerate(names):
            seeds = np.asarray(values[name].get(metric, []), dtype=float)
            seeds = seeds[np.isfinite(seeds)]
            if seeds.size:
                ax.scatter(np.full(seeds.size, i), seeds, s=14, color="0.55", zorder=2)
                sd = seeds.std(ddof=1) if seeds.size > 1 else 0.0
                ax.errorbar(i, seeds.mean(), yerr=sd, fmt="o", color="C0", capsize=4, zorder=3)
            paper = (published or {}).get(name, {}).get(metric)
            if paper is not None:
                ax.scatter(i, paper, marker="*", s=90, color="C3", zorder=4)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title + ("   (★ published)" if published else ""), fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
