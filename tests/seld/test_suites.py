"""Metric suites: the registry, the DCASE 2019 suite against the existing scorer, and the
jackknife intervals against a literal leave-one-out recomputation."""

from __future__ import annotations

import numpy as np
import pytest
from reference_location_aware import Counter
from scipy import stats
from test_location_aware import _noisy, _random_rows

from seld.errors import ConfigError
from seld.metrics.reference import score_files
from seld.metrics.suites import SUITES, get_suite, jackknife, score_recordings, tracked


def _dcase2019_pairs(seed: int, n: int = 6) -> dict:
    """DCASE 2019 rows (frame, class, azimuth, elevation) on the grid, at 50 fps."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        frames = 300
        ref, pred = [], []
        for _ in range(4):
            cls, start = int(rng.integers(0, 11)), int(rng.integers(0, 250))
            az, el = int(rng.integers(-18, 18)) * 10, int(rng.integers(-4, 5)) * 10
            for f in range(start, start + int(rng.integers(5, 50))):
                ref.append([f, cls, az, el])
                if rng.random() < 0.8:
                    pred.append([f, cls, az + 10 * int(rng.integers(-2, 3)), el])
        out[f"split1_ir0_ov1_{i}"] = (
            np.array(ref, dtype=np.int64).reshape(-1, 4),
            np.array(pred, dtype=np.int64).reshape(-1, 4),
            frames,
        )
    return out


def test_the_registry_names_its_suites_and_refuses_others():
    assert {"dcase2019", "dcase2020", "dcase2021", "dcase2022", "dcase2022-micro"} <= set(SUITES)
    with pytest.raises(ConfigError, match="unknown metric suite 'dcase1999'; choose one of"):
        get_suite("dcase1999")
    for suite in SUITES.values():
        keys = [m.key for m in suite.metrics]
        assert suite.aggregate in keys and len(set(keys)) == len(keys)
        assert not next(m for m in suite.metrics if m.key == suite.aggregate).higher_is_better


def test_the_2019_suite_gives_the_existing_scorer_numbers():
    pairs = _dcase2019_pairs(0)
    expected = score_files(pairs)
    report = score_recordings(
        get_suite("dcase2019"), {k: (tracked(r), tracked(p), n) for k, (r, p, n) in pairs.items()}
    )
    assert report.overall == pytest.approx(expected.overall.as_dict(), abs=1e-12)
    for name, scores in expected.per_file.items():
        assert report.per_file[name] == pytest.approx(scores.as_dict(), abs=1e-12, nan_ok=True)
    assert report.per_class is None


def test_the_2019_suite_refuses_other_label_rates():
    with pytest.raises(ValueError, match="50 frames per second, 11 classes"):
        get_suite("dcase2019").count_many([], 10, 13)


def test_directions_of_metrics():
    metrics = {m.key: m for m in get_suite("dcase2022").metrics}
    assert metrics["f"].better(0.9, 0.8) and not metrics["le"].better(30, 20)
    assert metrics["seld"].better(0.2, 0.3)


def _official_jackknife(global_value: float, partial: np.ndarray) -> tuple[float, float]:
    n = len(partial)
    mean = np.mean(partial)
    bias = (n - 1) * (mean - global_value)
    se = np.sqrt((n - 1) * np.mean((partial - mean) * (partial - mean)))
    t = stats.t.ppf(1 - 0.05 / 2, n - 1)
    return global_value - bias - t * se, global_value - bias + t * se


@pytest.mark.parametrize("name", ["dcase2022", "dcase2022-micro"])
def test_jackknife_intervals_equal_a_leave_one_out_recomputation(name):
    suite = get_suite(name)
    rng = np.random.default_rng(3)
    recordings = []
    for _ in range(7):
        ref = _random_rows(rng, 80, 6, overlap=True)
        recordings.append((ref, _noisy(rng, ref, 80), 80))
    average = "macro" if name == "dcase2022" else "micro"

    def literal(subset) -> dict[str, float]:
        counter = Counter(13)
        for ref, pred, frames in subset:
            counter.add(ref, pred, frames, 10)
        return counter.scores(average)

    whole = literal(recordings)
    leave_out = [literal(recordings[:i] + recordings[i + 1 :]) for i in range(len(recordings))]
    intervals, per_class = jackknife(suite, suite.count_many(recordings, 10, 13))
    for key in ("er", "f", "le", "lr", "seld"):
        expected = _official_jackknife(whole[key], np.array([p[key] for p in leave_out]))
        assert intervals[key] == pytest.approx(expected, abs=1e-9), key
    assert set(per_class) == {"er", "f", "le", "lr", "seld"}
    assert all(len(v) == 13 for v in per_class.values())


def test_score_recordings_reports_per_class_and_intervals():
    rng = np.random.default_rng(4)
    recordings = {}
    for i in range(4):
        ref = _random_rows(rng, 100, 5, overlap=False)
        recordings[f"r{i}"] = (ref, _noisy(rng, ref, 100), 100)
    report = score_recordings(
        get_suite("dcase2022"),
        recordings,
        frames_per_second=10,
        num_classes=13,
        with_jackknife=True,
    )
    assert set(report.per_file) == set(recordings)
    assert len(report.per_class["f"]) == 13
    assert report.overall["f"] == pytest.approx(np.mean(report.per_class["f"]))
    low, high = report.intervals["seld"]
    assert low < high


def test_the_one_direction_ceiling_scores_the_references_against_their_first_instances():
    from reference_location_aware import Counter

    from seld.metrics.suites import one_direction_ceiling, one_direction_per_class

    # class 1 twice in frame 0 (sources 1 and 0, file order), once in frame 1; class 2 once
    ref = np.array(
        [[0, 1, 1, 50, 0, 1], [0, 1, 0, 10, 0, 1], [1, 1, 0, 10, 0, 1], [1, 2, 0, 0, 0, 2]],
        dtype=float,
    )
    best = one_direction_per_class(ref)
    assert best[:, :4].tolist() == [[0, 1, 0, 10], [1, 1, 0, 10], [1, 2, 0, 0]]
    ceiling = one_direction_ceiling(get_suite("dcase2022-micro"), [(ref, 10)], 10.0, 13)
    assert ceiling.overlapping_cells == pytest.approx(1 / 3)
    counter = Counter(13)
    counter.add(ref[:, :5], best[:, :5], 10, 10)
    expected = counter.scores("micro")
    assert ceiling.overall == pytest.approx({k: float(v) for k, v in expected.items()})
    assert ceiling.overall["f"] < 1  # the second instance cannot be predicted
    plain = np.array([[0, 3, 0, 20, 5, 1]], dtype=float)
    perfect = one_direction_ceiling(get_suite("dcase2022-micro"), [(plain, 10)], 10.0, 13)
    assert perfect.overlapping_cells == 0 and perfect.overall["f"] == pytest.approx(1.0)
