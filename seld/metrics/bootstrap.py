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
from typing import Any

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


def _as_vector(counts: SeldCounts | Mapping[str, np.ndarray]) -> np.ndarray:
    """One recording's counts as a flat vector: DCASE 2019 counts in their field order, a
    metric suite's counts (name -> scalar or per-class array) in name order."""
    if isinstance(counts, SeldCounts):
        return counts.as_array()
    return np.concatenate(
        [np.ravel(np.asarray(counts[k], dtype=np.float64)) for k in sorted(counts)]
    )


def _stack(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """(seeds, recordings, count fields) of the given recordings, in ``names`` order."""
    return np.stack([np.stack([_as_vector(run[name]) for name in names]) for run in runs])


def _suite_metric(suite: Any, like: Mapping[str, np.ndarray], metric: str):
    """A function of pooled flat count vectors (..., fields) to ``metric`` (...), through the
    suite's own scores (``like``: one recording's counts, for the names and shapes)."""
    keys = sorted(like)
    shapes = [np.shape(like[k]) for k in keys]
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])

    def metric_of(pooled: np.ndarray) -> np.ndarray:
        flat = pooled.reshape(-1, pooled.shape[-1])
        out = np.empty(len(flat))
        for i, vector in enumerate(flat):
            counts = {
                k: vector[a:b].reshape(shape)
                for k, shape, a, b in zip(keys, shapes, bounds[:-1], bounds[1:], strict=True)
            }
            out[i] = suite.scores(counts)[metric]
        return out.reshape(pooled.shape[:-1])

    return metric_of


def paired_bootstrap(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    *,
    metric: str = "seld",
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    suite: Any = None,
) -> PairedDifference:
    """Paired bootstrap of ``metric(a) - metric(b)`` over the recordings both were scored on.

    ``a[i]`` and ``b[i]`` are the per-recording counts of seed ``i`` of each system (the same
    seeds, in the same order): DCASE 2019 :class:`SeldCounts`, or with ``suite`` (a
    :mod:`seld.metrics.suites` suite) that suite's counts, re-pooled and scored by the suite.
    Only recordings present in every run are used; there must be at least two. The interval is
    the percentile interval of the resampled differences."""
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

    if suite is None:

        def score(pooled: np.ndarray) -> np.ndarray:
            return scores_of_arrays(pooled)[metric]

    else:
        score = _suite_metric(suite, a[0][names[0]], metric)

    def mean_metric(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
        pooled = np.einsum("sr,krf->skf", w, counts)  # (samples, seeds, fields)
        with np.errstate(invalid="ignore"):
            return np.nanmean(score(pooled), axis=1)

    ones = np.ones((1, n))
    observed = float((mean_metric(counts_a, ones) - mean_metric(counts_b, ones))[0])
    diffs = mean_metric(counts_a, weights) - mean_metric(counts_b, weights)
    diffs = diffs[np.isfinite(diffs)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail]) if diffs.size else (np.nan, np.nan)
    return PairedDifference(
        metric, observed, float(low), float(high), level, n, len(a), int(diffs.size)
    )
