"""The fast threshold-search path: the prepared scorer gives exactly the numbers of
``submission_rows`` + ``score_files``; the search (real Ray Tune, seeded Optuna) is
reproducible, jointly and per fold."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import median_filter

from orchestrator.search_space import load_search_space
from orchestrator.tune import postprocessing, search_folds
from seld.data.dcase import CLASSES, NUM_CLASSES
from seld.data.metadata import Event
from seld.data.submission import events_to_rows
from seld.methods.inference import Prediction, ThresholdScorer, _binary_median, submission_rows
from seld.metrics.batched import prepare_references
from seld.metrics.reference import count_file, score_files
from seld.metrics.scores import SeldCounts

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def random_recording(
    rng: np.random.Generator, stem: str, frames: int, length: int | None = None
) -> tuple[Prediction, tuple[np.ndarray, int]]:
    """A reference of up to two overlapping tracks (off-grid angles included) and a prediction
    of ``length`` frames (default: as many as the reference) with probabilities that follow it,
    azimuths across the +-180 seam and elevations beyond the grid."""
    events = []
    for _ in range(2):
        t = rng.uniform(0, 0.5)
        while t < frames / 50 - 0.3:
            end = t + rng.uniform(0.1, 1.5)
            cls, azi, ele = (
                rng.integers(NUM_CLASSES),
                rng.integers(-180, 181),
                rng.integers(-40, 50),
            )
            events.append(Event(CLASSES[cls], float(t), float(end), int(ele), int(azi), 1))
            t = end + rng.uniform(0.05, 1.0)
    ref = events_to_rows(events, frames)
    length = length or frames
    active = np.zeros((length, NUM_CLASSES))
    kept = ref[ref[:, 0] < length]
    active[kept[:, 0], kept[:, 1]] = 1
    sed = np.clip(0.7 * active + rng.normal(0.15, 0.2, active.shape), 0, 1).astype(np.float32)
    azimuth = rng.uniform(-200, 200, active.shape).astype(np.float32)
    elevation = rng.uniform(-70, 70, active.shape).astype(np.float32)
    return Prediction(stem, sed, azimuth, elevation), (ref, frames)


def random_split(seed: int, lengths: dict[str, tuple[int, int | None]]):
    rng = np.random.default_rng(seed)
    preds, refs = {}, {}
    for stem, (frames, length) in lengths.items():
        preds[stem], refs[stem] = random_recording(rng, stem, frames, length)
    return preds, refs


SPLIT = {
    "split1_ir0_ov1_0": (500, None),
    "split1_ir1_ov2_1": (437, None),  # a partial last second
    "split2_ir2_ov2_2": (300, 340),  # a prediction longer than the recording
    "split3_ir3_ov1_3": (400, 260),  # and one shorter
    "split4_ir4_ov2_4": (120, None),
}


def old_counts(preds, refs, thresholds, median, official_blocks=True):
    return {
        stem: count_file(
            refs[stem][0],
            submission_rows(p, thresholds, median_frames=median),
            refs[stem][1],
            official_blocks=official_blocks,
        )
        for stem, p in preds.items()
    }


@pytest.mark.parametrize("official_blocks", [True, False])
def test_prepared_scorer_equals_submission_rows_and_score_files(official_blocks):
    preds, refs = random_split(3, SPLIT)
    scorer = ThresholdScorer(preds, refs, official_blocks=official_blocks)
    per_class = np.linspace(0.2, 0.7, NUM_CLASSES).astype(np.float32)
    for thresholds, median in [(0.3, 1), (0.5, 5), (0.05, 3), (0.9, 15), (per_class, 7), (0.4, 4)]:
        expected = old_counts(preds, refs, thresholds, median, official_blocks)
        assert scorer.counts(thresholds, median) == expected  # every count and float, exactly
        report = score_files(
            {
                s: (refs[s][0], submission_rows(p, thresholds, median_frames=median), refs[s][1])
                for s, p in preds.items()
            },
            official_blocks=official_blocks,
        )
        assert repr(scorer.report(thresholds, median).as_dict()) == repr(report.as_dict())
        assert repr(scorer.overall(thresholds, median)) == repr(report.overall)


def test_prepared_scorer_edge_cases():
    preds, refs = random_split(
        4, {"split1_ir0_ov1_0": (200, None), "split2_ir0_ov1_1": (150, None)}
    )
    # no reference activity in one recording, no detections at all in the other
    refs["split1_ir0_ov1_0"] = (np.zeros((0, 4), dtype=np.int64), 200)
    preds["split2_ir0_ov1_1"].sed[:] = 0
    scorer = ThresholdScorer(preds, refs)
    for thresholds in (0.3, 1.0, 0.0):
        assert scorer.counts(thresholds) == old_counts(preds, refs, thresholds, 1)
    # an angle that is NaN where nothing is detected is fine, where a class is detected it is not
    p = preds["split1_ir0_ov1_0"]
    p.azimuth[10, 2] = np.nan
    p.sed[10, 2] = 0.1
    scorer = ThresholdScorer(preds, refs)
    assert scorer.counts(0.3) == old_counts(preds, refs, 0.3, 1)
    with pytest.raises(ValueError, match="NaN or infinite angle"):
        submission_rows(p, 0.05)
    with pytest.raises(ValueError, match="NaN or infinite angle"):
        scorer.counts(0.05)
    with pytest.raises(ValueError, match="outside the DCASE 2019 grid"):
        prepare_references({"x": (np.array([[0, 1, 10, 60]]), 10)})
    with pytest.raises(ValueError, match="no recordings"):
        prepare_references({})


def test_vectorised_median_is_scipys_median():
    rng = np.random.default_rng(0)
    for _ in range(40):
        lengths = rng.integers(1, 60, rng.integers(1, 5))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        active = rng.random((NUM_CLASSES, offsets[-1])) < rng.uniform(0.1, 0.9)
        for size in range(1, 2 * int(lengths.min()) + 1):
            expected = np.concatenate(
                [
                    median_filter(active[:, a:b].T.astype(np.uint8), size=(size, 1)).T > 0
                    for a, b in itertools.pairwise(offsets)
                ],
                axis=1,
            )
            assert np.array_equal(_binary_median(active, offsets, size), expected), size


def test_postprocessing_reads_global_and_per_class_thresholds():
    thresholds, median = postprocessing({"threshold": 0.4, "median_frames": 5})
    assert thresholds.dtype == np.float32 and np.all(thresholds == np.float32(0.4)) and median == 5
    per_class = {f"threshold_{c}": i / 20 for i, c in enumerate(CLASSES)}
    thresholds, median = postprocessing(per_class)
    assert thresholds[3] == np.float32(0.15) and median == 1


def folds_data():
    """Four folds under the DCASE 2019 protocol: fold k tests on split k, validates on k + 1."""
    splits = {
        k: random_split(
            10 + k, {f"split{k}_ir{j}_ov{j % 2 + 1}_{4 * k + j}": (250, None) for j in (0, 1)}
        )
        for k in (1, 2, 3, 4)
    }
    return {k: splits[k % 4 + 1] for k in splits}, splits


@pytest.mark.slow
def test_search_is_reproducible_jointly_and_per_fold(local_ray, tmp_path: Path):
    validation, test = folds_data()
    space = load_search_space(SPACES / "tiny.yaml")
    kw = dict(trials=6, seed=5, concurrency=1, storage=tmp_path)
    first, frames = search_folds(validation, test, space, name="a", **kw)
    second, again = search_folds(validation, test, space, name="b", **kw)
    assert first["best_config"] == second["best_config"]
    columns = sorted(c for c in frames["all"].columns if c.startswith("config/"))
    assert columns == ["config/median_frames", "config/smooth", "config/threshold"]
    assert frames["all"][columns].equals(again["all"][columns])  # the same suggestions
    assert first["trials"] == 6 and len(frames["all"]) == 6
    assert (frames["all"]["status"] == "COMPLETE").all()
    best = min(frames["all"]["val_seld"])
    assert first["scores"]["validation_tuned"]["seld"] == pytest.approx(best, abs=1e-12)
    assert (
        first["scores"]["validation_tuned"]["seld"] <= first["scores"]["validation_default"]["seld"]
    )

    per_fold, fold_frames = search_folds(validation, test, space, name="c", per_fold=True, **kw)
    assert sorted(fold_frames) == ["fold1", "fold2", "fold3", "fold4"]
    assert per_fold["trials"] == 24 and per_fold["per_fold"]
    assert sorted(per_fold["best_config"]) == ["fold1", "fold2", "fold3", "fold4"]
    # each fold's best is applied to its own test split; the test scores pool the four
    counts = {}
    for k in (1, 2, 3, 4):
        config = per_fold["best_config"][f"fold{k}"]
        assert min(fold_frames[f"fold{k}"]["val_seld"]) == pytest.approx(
            per_fold["scores"][f"fold{k}_validation_tuned"]["seld"], abs=1e-12
        )
        thresholds, median = postprocessing(config)
        counts |= old_counts(*test[k], thresholds, median)
    pooled = sum(counts.values(), SeldCounts()).scores()
    assert repr(pooled.as_dict()) == repr(per_fold["scores"]["test_tuned"])
    assert per_fold["scores"]["test_default"] == first["scores"]["test_default"]
