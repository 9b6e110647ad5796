"""The location-aware (DCASE 2021, 2022) metric suites against their literal reference, on
random and edge-case recordings."""

from __future__ import annotations

import numpy as np
import pytest
from reference_location_aware import Counter

from seld.metrics.location_aware import LocationAware, official_num_frames, pool

C = 13  # STARSS classes
BLOCK = 10  # 100 ms label frames


def _random_rows(rng: np.random.Generator, frames: int, events: int, overlap: bool) -> np.ndarray:
    """Track-wise rows of moving events: each event a class, a start, a length, a direction that
    drifts; with ``overlap`` some share a class at once (the same-class case)."""
    rows = []
    for track in range(events):
        cls = int(rng.integers(0, 3 if overlap else C))
        start = int(rng.integers(0, frames))
        length = int(rng.integers(1, 40))
        az = rng.uniform(-180, 180)
        el = rng.uniform(-89.9, 89.9)
        speed = rng.uniform(-8, 8)
        for f in range(start, min(frames + 5, start + length)):
            az_f = (az + speed * (f - start) + 180) % 360 - 180
            rows.append([f, cls, track % 3, az_f, el])
    rows = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return rows[rng.permutation(len(rows))] if len(rows) and rng.random() < 0.3 else rows


def _noisy(rng: np.random.Generator, ref: np.ndarray, frames: int) -> np.ndarray:
    """A prediction: the reference with direction noise (some far off), dropped and extra rows."""
    keep = ref[rng.random(len(ref)) > 0.2].copy()
    if len(keep):
        keep[:, 3] = (keep[:, 3] + rng.normal(0, 15, len(keep)) + 180) % 360 - 180
        keep[:, 4] = np.clip(keep[:, 4] + rng.normal(0, 10, len(keep)), -90, 90)
    extra = _random_rows(rng, frames, int(rng.integers(0, 4)), overlap=False)
    return np.concatenate([keep, extra]) if len(extra) else keep


def _check(cases, average: str, threshold: float = 20.0) -> None:
    """``average``: ``macro``, ``micro`` (DCASE 2022) or ``2021`` (micro, spatial false
    positives at one half in F)."""
    if average == "2021":
        suite = LocationAware("test", "micro", threshold, spatial_fp_weight=0.5)
    else:
        suite = LocationAware("test", average=average, threshold_deg=threshold)
    ref_counter = Counter(C, threshold)
    for ref, pred, frames in cases:
        ref_counter.add(ref, pred, frames, BLOCK)
    each = suite.count_many(cases, BLOCK, C)
    counts = pool(each)
    for one, case in zip(each, cases, strict=True):  # all at once equals one at a time
        alone = suite.count(*case, BLOCK, C)
        for name in one:
            np.testing.assert_array_equal(one[name], alone[name], err_msg=name)
    for name, values in ref_counter.per_class.items():
        np.testing.assert_allclose(counts[name], values, rtol=0, atol=1e-9, err_msg=name)
    for name in ("S", "D", "I"):
        assert counts[name] == getattr(ref_counter, name), name
    expected = ref_counter.scores(average)
    got = suite.scores(counts)
    for name, value in expected.items():
        assert got[name] == pytest.approx(float(value), abs=1e-9), name


@pytest.mark.parametrize("average", ["macro", "micro", "2021"])
@pytest.mark.parametrize("seed", range(6))
def test_random_recordings_equal_the_literal_reference(seed, average):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(5):
        frames = int(rng.integers(30, 120))
        ref = _random_rows(rng, frames, int(rng.integers(0, 8)), overlap=seed % 2 == 1)
        cases.append((ref, _noisy(rng, ref, frames), frames))
    _check(cases, average)


def _rows(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


EDGE_CASES = {
    "empty reference": [(_rows(), _rows([3, 1, 0, 10, 0]), 20)],
    "empty prediction": [(_rows([3, 1, 0, 10, 0], [4, 1, 0, 12, 0]), _rows(), 20)],
    "both empty": [(_rows(), _rows(), 20)],
    "wrap-around at 180": [
        (
            _rows([0, 2, 0, 179, 0], [1, 2, 0, -179, 5]),
            _rows([0, 2, 0, -179, 0], [1, 2, 0, 178, 4]),
            10,
        )
    ],
    "elevations near the poles": [
        (
            _rows([0, 0, 0, 0, 89.9], [1, 0, 0, 90, -89.99]),
            _rows([0, 0, 0, 170, 89.5], [1, 0, 0, -30, 89.99]),
            10,
        )
    ],
    "same class in the block but never in one frame": [
        (_rows([0, 4, 0, 0, 0], [1, 4, 0, 0, 0]), _rows([5, 4, 0, 0, 0]), 10)
    ],
    "never in one frame, more instances in the reference": [
        (_rows([0, 4, 0, 0, 0], [0, 4, 1, 40, 0], [1, 4, 0, 0, 0]), _rows([5, 4, 0, 0, 0]), 10)
    ],
    "never in one frame, more instances predicted": [
        (_rows([0, 4, 0, 0, 0]), _rows([5, 4, 0, 0, 0], [5, 4, 0, 30, 0], [6, 4, 0, 60, 0]), 10)
    ],
    "same-class overlap, more predicted": [
        (
            _rows([0, 4, 0, 0, 0], [0, 4, 1, 90, 0]),
            _rows([0, 4, 0, 85, 0], [0, 4, 0, 5, 0], [0, 4, 0, -90, 0]),
            10,
        )
    ],
    "same-class overlap, fewer predicted": [
        (
            _rows([0, 4, 0, 0, 0], [0, 4, 1, 90, 0], [2, 4, 0, 1, 0], [2, 4, 1, 91, 0]),
            _rows([0, 4, 0, 88, 0], [2, 4, 0, 3, 0]),
            10,
        )
    ],
    "recordings without frames between and after others": [
        (_rows([3, 1, 0, 0, 0]), _rows([3, 1, 0, 5, 0]), 12),
        (_rows(), _rows(), 0),
        (_rows([1, 2, 0, 0, 0]), _rows([1, 2, 0, 50, 0]), 10),
        (_rows(), _rows([0, 1, 0, 0, 0]), 0),
    ],
    "a frame past the scored blocks": [(_rows([25, 1, 0, 0, 0]), _rows([25, 1, 0, 0, 0]), 20)],
    "a frame past num_frames inside the last block": [
        (_rows([14, 1, 0, 0, 0]), _rows([14, 1, 0, 0, 0]), 12)
    ],
    "exactly at the threshold": [(_rows([0, 3, 0, 0, 0]), _rows([0, 3, 0, 20, 0]), 10)],
}


@pytest.mark.parametrize("average", ["macro", "micro", "2021"])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_equal_the_literal_reference(case, average):
    _check(EDGE_CASES[case], average)


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_an_error_equal_to_the_threshold_is_a_detection(average):
    """Within means at most: the threshold set to the very angle the scorer computes."""
    from reference_location_aware import angle

    exact = angle(0, 0, 17, 3)
    _check([(_rows([0, 3, 0, 0, 0]), _rows([0, 3, 0, 17, 3]), 10)], average, threshold=exact)
    c = LocationAware("t", threshold_deg=exact).count(
        _rows([0, 3, 0, 0, 0]), _rows([0, 3, 0, 17, 3]), 10, BLOCK, C
    )
    assert c["TP"][3] == 1 and c["FP_spatial"][3] == 0


def test_hand_counted_recording():
    """Two blocks: class 1 found at 10 degrees in block 0 and missed in block 1; class 2
    predicted 30 degrees off (a spatial false positive) in block 0."""
    ref = _rows([0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [12, 1, 0, 0, 0], [3, 2, 0, 50, 0])
    pred = _rows([0, 1, 0, 10, 0], [3, 2, 0, 80, 0])
    c = LocationAware("t").count(ref, pred, 20, BLOCK, C)
    assert c["TP"][1] == 1 and c["FN"][1] == 1 and c["FP_spatial"][2] == 1
    assert c["total_DE"][1] == pytest.approx(10) and c["total_DE"][2] == pytest.approx(30)
    assert (c["S"], c["D"], c["I"]) == (0, 1, 1)  # block 0: one spatial FP; block 1: one miss
    assert c["Nref"].sum() == 3


def test_bad_rows_are_refused_with_the_side_named():
    suite = LocationAware("t")
    with pytest.raises(ValueError, match=r"prediction: class index outside 0\.\.12"):
        suite.count(_rows([0, 1, 0, 0, 0]), _rows([0, 13, 0, 0, 0]), 10, BLOCK, C)
    with pytest.raises(ValueError, match="reference: negative frame"):
        suite.count(_rows([-1, 1, 0, 0, 0]), _rows(), 10, BLOCK, C)


def test_official_num_frames_is_the_last_reference_frame():
    assert official_num_frames(_rows([3, 1, 0, 0, 0], [41, 2, 0, 0, 0])) == 41
    assert official_num_frames(_rows()) == 0
