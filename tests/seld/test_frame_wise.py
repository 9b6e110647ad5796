"""The frame-wise DCASE 2024 metric suite (with distances) against its literal reference."""

from __future__ import annotations

import numpy as np
import pytest
from reference_frame_wise import Counter, angle, unit
from test_location_aware import _noisy, _random_rows

from seld.metrics.frame_wise import FrameWise
from seld.metrics.location_aware import pool

C = 13


def _with_distance(rng: np.random.Generator, rows: np.ndarray, scale: float) -> np.ndarray:
    d = rng.uniform(0.5, 4.0, len(rows)) * scale
    return np.concatenate([rows, d[:, None]], axis=1) if len(rows) else np.zeros((0, 6))


def _pair(rng: np.random.Generator, frames: int, overlap: bool):
    ref = _with_distance(rng, _random_rows(rng, frames, int(rng.integers(0, 8)), overlap), 1.0)
    pred = _noisy(rng, ref[:, :5], frames) if len(ref) else _noisy(rng, ref.reshape(0, 5), frames)
    pred = _with_distance(rng, pred, 1.0)
    if len(pred) and len(ref):  # most predicted distances near the reference ones
        m = min(len(pred), len(ref))
        pred[:m, 5] = ref[:m, 5] * rng.uniform(0.3, 2.5, m)
    return ref, pred, frames


def _check(cases, average: str) -> None:
    suite = FrameWise("t", average=average)
    counter = Counter(C)
    for ref, pred, frames in cases:
        counter.add(ref, pred, frames)
    each = suite.count_many(cases, C)
    counts = pool(each)
    for name, values in counter.k.items():
        np.testing.assert_allclose(counts[name], values, rtol=0, atol=1e-9, err_msg=name)
    for name in ("S", "D", "I"):
        assert counts[name] == getattr(counter, name), name
    expected = counter.scores(average)
    got = suite.scores(counts)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(float(value), abs=1e-9, nan_ok=True), name


@pytest.mark.parametrize("average", ["macro", "micro"])
@pytest.mark.parametrize("seed", range(6))
def test_random_recordings_equal_the_literal_reference(seed, average):
    rng = np.random.default_rng(100 + seed)
    _check([_pair(rng, int(rng.integers(20, 90)), seed % 2 == 1) for _ in range(5)], average)


def _rows(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


EDGE = {
    "empty reference": [(_rows(), _rows([3, 1, 0, 10, 0, 2.0]), 10)],
    "empty prediction": [(_rows([3, 1, 0, 10, 0, 2.0]), _rows(), 10)],
    "wrap-around and poles": [(_rows([0, 2, 0, 179, 89.9, 1.0], [1, 2, 0, -179, -90, 1.0]),
                               _rows([0, 2, 0, -179, 89.0, 1.1], [1, 2, 0, 180, -89, 0.9]), 5)],
    "distance far off within the angle": [(_rows([0, 3, 0, 0, 0, 1.0]),
                                           _rows([0, 3, 0, 5, 0, 3.5]), 5)],
    "same-class overlap": [(_rows([0, 4, 0, 0, 0, 1.0], [0, 4, 1, 90, 0, 2.0]),
                            _rows([0, 4, 0, 85, 0, 2.0], [0, 4, 0, 5, 0, 1.2],
                                  [0, 4, 0, -90, 0, 1.0]), 5)],
    "the last reference frame is not scored": [(_rows([4, 1, 0, 0, 0, 1.0]),
                                                _rows([4, 1, 0, 0, 0, 1.0]), 4)],
    "recordings without frames": [(_rows(), _rows(), 0),
                                  (_rows([1, 2, 0, 0, 0, 1.0]), _rows([1, 2, 0, 30, 0, 1.0]), 3),
                                  (_rows(), _rows([0, 1, 0, 0, 0, 1.0]), 0)],
}  # fmt: skip


@pytest.mark.parametrize("average", ["macro", "micro"])
@pytest.mark.parametrize("case", list(EDGE))
def test_edge_cases_equal_the_literal_reference(case, average):
    _check(EDGE[case], average)


def test_hand_counted_frames():
    """Frame 0: class 1 found 10 degrees off at the right distance (TP); frame 1: class 1 at the
    right direction but twice as far plus 0.1 (relative error 1.1 > 1: a spatial FP); class 2
    missed."""
    ref = _rows([0, 1, 0, 0, 0, 1.0], [1, 1, 0, 0, 0, 1.0], [1, 2, 0, 50, 0, 2.0])
    pred = _rows([0, 1, 0, 10, 0, 1.0], [1, 1, 0, 0, 0, 2.1])
    c = FrameWise("t").count_many([(ref, pred, 2)], C)[0]
    assert (c["TP"][1], c["FP_spatial"][1], c["FN"][2], c["DE_TP"][1]) == (1, 1, 1, 2)
    assert c["RelDistE"][1] == pytest.approx(1.1)
    assert c["AngE"][1] == pytest.approx(10 + angle(unit(0, 0), unit(0, 0)))
    assert (c["S"], c["D"], c["I"]) == (1, 0, 0)  # frame 1: one miss and one spatial FP


def test_rows_without_distances_are_refused():
    with pytest.raises(ValueError, match="reference: rows need 6 columns"):
        FrameWise("t").count_many([(np.zeros((1, 5)), _rows(), 3)], C)
    with pytest.raises(ValueError, match="prediction: a row without a distance"):
        FrameWise("t").count_many([(_rows(), _rows([0, 1, 0, 0, 0, np.nan]), 3)], C)
