"""Is one system better than another, or within noise? A paired bootstrap over recordings.

Two systems (variants) scored on the same recordings with the same seeds differ partly because
of which recordings happen to be in the set. Resampling the recordings with replacement, and
re-pooling each system's per-recording :class:`~seld.metrics.scores.SeldCounts` over the same
draw, gives the spread of the difference in a metric that this sampling alone explains. The
metrics are micro averages (counts are summed before the ratio), so each draw pools counts and
scores them again, exactly as the scorer does; it does not average per-recording scores.

Seeds are paired too: for each draw, a system's score is the mean over its seeds of the score of
that seed's pooled counts, and the difference is taken between those means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from seld.metrics.scores import SeldCounts, scores_of_arrays

__all__ = ["PairedDifference", "paired_bootstrap"]


@dataclass(frozen=True)
class PairedDifference:
    """``metric(a) - metric(b)`` (mean over seeds) on all recordings, and its bootstrap
    interval at ``level``. ``within_noise`` when the interval holds 0."""

    metric: str
    difference: float
    low: float
    high: float
    level: float
    recordings: int
    seeds: int
    samples: int

    @property
    def within_noise(self) -> bool:
        return bool(self.low <= 0.0 <= self.high)


def _stack(runs: Sequence[Mapping[str, SeldCounts]], names: Sequence[str]) -> np.ndarray:
    """(seeds, recordings, count fields) of the given recordings, in ``names`` order."""
    return np.stack([np.stack([run[name].as_array() for name in names]) for run in runs])


def paired_bootstrap(
    a: Sequence[Mapping[str, SeldCounts]],
    b: Sequence[Mapping[str, SeldCounts]],
    *,
    metric: str = "seld",
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of ``metric(a) - metric(b)`` over the recordings both were scored on.

    ``a[i]`` and ``b[i]`` are the per-recording counts of seed ``i`` of each system (the same
    seeds, in the same order). Only recordings present in every run are used; there must be at
    least two. The interval is the percentile interval of the resampled differences."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired runs needed: {len(a)} seed(s) against {len(b)}")
    names = sorted(set.intersection(*(set(run) for run in [*a, *b])))
    if len(names) < 2:
        raise ValueError(f"{len(names)} recording(s) in common; a bootstrap needs at least 2")
    counts_a, counts_b = _stack(a, names), _stack(b, names)
    rng = np.random.default_rng(seed)
    n = len(names)
    # how often each recording is drawn in each resample: (samples, recordings)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)])

    def mean_metric(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
        pooled = np.einsum("sr,krf->skf", w, counts)  # (samples, seeds, fields)
        return np.nanmean(scores_of_arrays(pooled)[metric], axis=1)

    ones = np.ones((1, n))
    observed = float((mean_metric(counts_a, ones) - mean_metric(counts_b, ones))[0])
    diffs = mean_metric(counts_a, weights) - mean_metric(counts_b, weights)
    diffs = diffs[np.isfinite(diffs)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail]) if diffs.size else (np.nan, np.nan)
    return PairedDifference(
        metric, observed, float(low), float(high), level, n, len(a), int(diffs.size)
    )
