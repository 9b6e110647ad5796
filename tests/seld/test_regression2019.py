"""The DCASE 2019 metrics on continuous directions (``dcase2019-regr``) against their literal
reference on random and edge-case recordings, against the official grid scorer on directions
of its grid, and on one recording counted by hand."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from reference_dcase2019_regr import Counter
from test_location_aware import EDGE_CASES, _noisy, _random_rows, _rows

from seld.metrics.location_aware import pool
from seld.metrics.regression2019 import count_recordings
from seld.metrics.suites import get_suite, label_problem

C, BLOCK = 13, 10


def _check(cases, per_block: int = BLOCK, classes: int = C) -> None:
    reference = Counter(classes)
    for ref, pred, frames in cases:
        reference.add(ref, pred, frames, per_block)
    counts = count_recordings(cases, per_block, classes)
    total = counts[0]
    for c in counts[1:]:
        total = total + c
    assert (total.S, total.D, total.I) == (reference.S, reference.D, reference.I)
    assert (total.TP, total.Nref, total.Nsys) == (reference.TP, reference.Nref, reference.Nsys)
    assert (total.n_pred_doa, total.n_good_frames) == (reference.n_pred, reference.good)
    assert total.doa_cost_deg == pytest.approx(reference.cost, abs=1e-9)
    got = total.scores().as_dict()
    for name, value in reference.scores().items():
        assert got[name] == pytest.approx(value, abs=1e-9, nan_ok=True), name


@pytest.mark.parametrize("seed", range(8))
def test_random_recordings_equal_the_literal_reference(seed):
    rng = np.random.default_rng(300 + seed)
    cases = []
    for _ in range(5):
        frames = int(rng.integers(30, 120))
        ref = _random_rows(rng, frames, int(rng.integers(0, 8)), overlap=seed % 2 == 1)
        cases.append((ref, _noisy(rng, ref, frames), frames))
    _check(cases)


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_equal_the_literal_reference(case):
    _check(EDGE_CASES[case])


def test_on_the_2019_grid_it_equals_the_official_grid_scorer():
    """Directions on the 10 degree grid (elevations -40..40), 50 frames per second, 11 classes,
    one direction per class and frame: the grid scorer's numbers to 1e-9."""
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(6):
        frames = int(rng.integers(100, 400))
        rows = []
        for _ in ("reference", "prediction"):
            cells = {
                (int(rng.integers(0, frames + 10)), int(rng.integers(0, 11)))
                for _ in range(int(rng.integers(0, 300)))
            }
            rows.append(
                np.array(
                    [
                        [f, c, 0, rng.integers(-18, 18) * 10, rng.integers(-4, 5) * 10]
                        for f, c in sorted(cells)
                    ],
                    dtype=np.float64,
                ).reshape(-1, 5)
            )
        cases.append((rows[0], rows[1], frames))
    grid, regression = get_suite("dcase2019"), get_suite("dcase2019-regr")
    expected = grid.scores(pool(grid.count_many(cases, 50.0, 11)))
    got = regression.scores(pool(regression.count_many(cases, 50.0, 11)))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert label_problem(regression, 10.0, 13, False) is None  # any rate, any classes


def test_hand_counted_recording():
    """20 frames at 10 per second. SED: block 0 reads frames 0-8 (class 1 in both, class 2
    predicted only: an insertion), block 1 frames 10-18 (class 1 missed: a deletion); frame 9,
    where class 3 is referenced and class 4 predicted, is not read. DOA: frame 0 matches 10
    degrees off, frame 9 90 degrees off (class is ignored), frames 3 and 12 have unequal
    counts; the 16 empty frames are good."""
    ref = _rows([0, 1, 0, 0, 0], [9, 3, 0, 0, 0], [12, 1, 0, 0, 0])
    pred = _rows([0, 1, 0, 10, 0], [3, 2, 0, 0, 0], [9, 4, 0, 90, 0])
    (c,) = count_recordings([(ref, pred, 20)], BLOCK, C)
    assert (c.TP, c.Nref, c.Nsys) == (1, 2, 2)  # (0, 1) both; (1, 1) only ref; (0, 2) only pred
    assert (c.S, c.D, c.I) == (0, 1, 1)
    assert (c.n_pred_doa, c.n_good_frames, c.n_frames, c.n_blocks) == (3, 18, 20, 2)
    assert c.doa_cost_deg == pytest.approx(100.0)
    scores = get_suite("dcase2019-regr").scores({k: np.float64(v) for k, v in asdict(c).items()})
    assert scores["er"] == pytest.approx(1.0) and scores["f"] == pytest.approx(0.5)
    assert scores["doa_error"] == pytest.approx(100 / 3)
    assert scores["frame_recall"] == pytest.approx(0.9)
