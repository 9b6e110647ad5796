"""The DCASE 2020 metric suite against its literal reference, on random and edge-case
recordings, and the DCASE 2021 suite's one difference from 2022's (micro) counted by hand."""

from __future__ import annotations

import numpy as np
import pytest
from reference_dcase2020 import Counter
from test_location_aware import EDGE_CASES, _noisy, _random_rows, _rows

from seld.metrics.dcase2020 import Dcase2020, several_per_frame
from seld.metrics.location_aware import pool
from seld.metrics.suites import get_suite

C, BLOCK = 13, 10


def _check(cases, threshold: float = 20.0) -> None:
    metric = Dcase2020(threshold_deg=threshold)
    reference = Counter(C, threshold)
    for ref, pred, frames in cases:
        reference.add(ref, pred, frames, BLOCK)
    each = metric.count_many(cases, BLOCK, C)
    counts = pool(each)
    for name, values in reference.per_class.items():
        np.testing.assert_allclose(counts[name], values, rtol=0, atol=1e-9, err_msg=name)
    for name in ("S", "D", "I"):
        assert counts[name] == getattr(reference, name), name
    got = metric.scores(counts)
    for name, value in reference.scores().items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("seed", range(8))
def test_random_recordings_equal_the_literal_reference(seed):
    rng = np.random.default_rng(100 + seed)
    cases = []
    for _ in range(5):
        frames = int(rng.integers(30, 120))
        ref = _random_rows(rng, frames, int(rng.integers(0, 8)), overlap=seed % 2 == 1)
        cases.append((ref, _noisy(rng, ref, frames), frames))
    _check(cases)


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_equal_the_literal_reference(case):
    _check(EDGE_CASES[case])


def test_hand_counted_recording():
    """Block 0: class 1 found 10 degrees off, class 2 found 30 degrees off (a false negative in
    2020, not a false positive), class 5 predicted only; block 1: class 1 missed."""
    ref = _rows([0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [12, 1, 0, 0, 0], [3, 2, 0, 50, 0])
    pred = _rows([0, 1, 0, 10, 0], [3, 2, 0, 80, 0], [4, 5, 0, 0, 0])
    (c,) = Dcase2020().count_many([(ref, pred, 20)], BLOCK, C)
    assert (c["TP"].sum(), c["FN"].sum(), c["FP"].sum()) == (1, 2, 1)
    assert (c["Nref"].sum(), c["Nsys"].sum(), c["DE_TP"].sum()) == (3, 3, 2)
    assert (c["S"], c["D"], c["I"]) == (1, 1, 0)  # block 0: 1 FN, 1 FP; block 1: 1 FN
    scores = Dcase2020().scores(c)
    assert scores["er"] == pytest.approx(2 / 3) and scores["f"] == pytest.approx(1 / 3)
    assert scores["le"] == pytest.approx(20.0) and scores["lr"] == pytest.approx(2 / 3)
    assert several_per_frame(_rows([0, 1, 0, 0, 0], [0, 1, 1, 9, 0])) and not several_per_frame(ref)


def test_the_2021_suite_weighs_a_spatial_false_positive_by_one_half():
    """Class 1 found (TP), class 2 30 degrees off (a spatial FP), class 1 missed in block 1."""
    ref = _rows([0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [12, 1, 0, 0, 0], [3, 2, 0, 50, 0])
    pred = _rows([0, 1, 0, 10, 0], [3, 2, 0, 80, 0])
    scores = {}
    for name in ("dcase2021", "dcase2022-micro"):
        suite = get_suite(name)
        scores[name] = suite.scores(pool(suite.count_many([(ref, pred, 20)], 10.0, C)))
    assert scores["dcase2021"]["f"] == pytest.approx(1 / (1 + 0.5 * (1 + 1)))
    assert scores["dcase2022-micro"]["f"] == pytest.approx(1 / (1 + 1 + 0.5 * 1))
    for key in ("er", "le", "lr"):
        assert scores["dcase2021"][key] == scores["dcase2022-micro"][key]
