"""The paired bootstrap of a metric difference over recordings and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from seld.metrics.bootstrap import paired_bootstrap
from seld.metrics.reference import count_file
from seld.metrics.scores import SeldCounts, report_from_counts, scores_of_arrays


def _recordings(rng: np.random.Generator, n: int, miss: float) -> dict[str, SeldCounts]:
    """``n`` one-minute recordings with one source each; the system misses ``miss`` of the
    active frames and points 10-40 degrees off."""
    out = {}
    for i in range(n):
        frames = np.arange(0, 3000, 1)
        cls = i % 11
        ref = np.stack([frames, np.full(3000, cls), np.full(3000, 20), np.full(3000, 10)], 1)
        keep = rng.random(3000) >= miss
        err = rng.integers(1, 4) * 10
        pred = ref[keep].copy()
        pred[:, 2] += err
        out[f"split1_ir0_ov1_{i}"] = count_file(ref, pred, 3000)
    return out


def test_vectorised_scores_equal_the_scorer():
    rng = np.random.default_rng(0)
    counts = _recordings(rng, 5, 0.3)
    report = report_from_counts(counts)
    pooled = sum(counts.values(), SeldCounts()).as_array()
    vector = scores_of_arrays(pooled[None, :])
    for metric, value in report.overall.as_dict().items():
        assert vector[metric][0] == pytest.approx(value)
    assert report.counts == counts
    assert SeldCounts.from_dict(vars(counts["split1_ir0_ov1_0"])) == counts["split1_ir0_ov1_0"]


def test_a_system_against_itself_is_within_noise():
    rng = np.random.default_rng(1)
    runs = [_recordings(rng, 12, 0.3) for _ in range(3)]
    diff = paired_bootstrap(runs, runs, samples=500)
    assert diff.difference == 0 and diff.low == 0 and diff.high == 0 and diff.within_noise
    assert (diff.recordings, diff.seeds, diff.samples) == (12, 3, 500)


def test_a_clearly_worse_system_is_not_within_noise():
    rng = np.random.default_rng(2)
    good = [_recordings(rng, 12, 0.05) for _ in range(2)]
    bad = [_recordings(rng, 12, 0.6) for _ in range(2)]
    diff = paired_bootstrap(bad, good, samples=500)
    observed = np.mean([report_from_counts(b).overall.seld for b in bad]) - np.mean(
        [report_from_counts(g).overall.seld for g in good]
    )
    assert diff.difference == pytest.approx(observed)
    assert 0 < diff.low <= diff.difference <= diff.high and not diff.within_noise


def test_noisy_small_differences_are_within_noise_and_seeded():
    rng = np.random.default_rng(3)
    a = [_recordings(rng, 6, 0.30)]
    b = [_recordings(rng, 6, 0.32)]
    first = paired_bootstrap(a, b, samples=400, seed=7)
    assert first == paired_bootstrap(a, b, samples=400, seed=7)
    assert first.low < first.difference < first.high


def test_unpaired_input_is_refused():
    rng = np.random.default_rng(4)
    a = [_recordings(rng, 3, 0.3)]
    with pytest.raises(ValueError, match="paired runs"):
        paired_bootstrap(a, a * 2)
    with pytest.raises(ValueError, match="in common"):
        paired_bootstrap(a, [{"split9_ir0_ov1_0": SeldCounts()}])


def _suite_counts(suite, noise_deg: float, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per-recording counts of a metric suite for 12 recordings of a predictor whose directions
    are off by ``noise_deg`` (normal), at 100 ms frames and 13 classes."""
    from test_location_aware import _random_rows

    rng = np.random.default_rng(seed)
    recordings = []
    for _ in range(12):
        ref = _random_rows(rng, 100, 6, overlap=False)
        pred = ref.copy()
        if len(pred):
            pred[:, 3] = (pred[:, 3] + rng.normal(0, noise_deg, len(pred)) + 180) % 360 - 180
        recordings.append((ref, pred, 100))
    each = suite.count_many(recordings, 10.0, 13)
    return {f"rec{i}": c for i, c in enumerate(each)}


@pytest.mark.parametrize("name", ["dcase2022", "dcase2020", "dcase2021"])
def test_a_suites_counts_are_bootstrapped_through_the_suite(name):
    from seld.metrics.location_aware import pool
    from seld.metrics.suites import get_suite

    suite = get_suite(name)
    good, bad = _suite_counts(suite, 5.0, 1), _suite_counts(suite, 60.0, 1)
    same = paired_bootstrap([good], [good], suite=suite, samples=300)
    assert same.difference == 0 and same.low == 0 == same.high and same.within_noise
    diff = paired_bootstrap([bad], [good], suite=suite, samples=300, seed=4)
    observed = suite.scores(pool(list(bad.values())))["seld"]
    observed -= suite.scores(pool(list(good.values())))["seld"]
    assert diff.difference == pytest.approx(observed, abs=1e-12)
    assert diff.low > 0 and not diff.within_noise  # 60 degrees off is worse beyond noise
    assert diff.recordings == 12 and diff.samples == 300
