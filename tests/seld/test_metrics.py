"""Tests of the DCASE 2019 scorer: hand-worked cases, the official quirks, aggregation, file I/O,
and cross-checks against a literal re-implementation (tests/reference_dcase2019.py) and sed_eval.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from seld.data.dcase import CLASSES, NUM_CLASSES
from seld.data.metadata import DatasetError, Event, read_metadata, write_metadata
from seld.data.submission import (
    events_to_rows,
    predictions_to_rows,
    read_submission,
    write_submission,
)
from seld.metrics.grid import min_assignment_cost as _min_assignment_cost
from seld.metrics.reference import count_file, score_directories, score_files
from seld.metrics.scores import SeldCounts, SeldScores

from conftest import REFERENCE_METADATA
from reference_dcase2019 import is_nan_equal, reference_score

EVENTS = (
    Event("speech", 0.1, 0.9, 10, -40, 1),  # frames 5..45
    Event("knock", 1.0, 1.5, -20, 170, 2),  # frames 50..75
)
METRICS = ("er", "f", "doa_error", "frame_recall", "seld")


def rows(*entries: tuple[int, int, int, int]) -> np.ndarray:
    return np.array(entries, dtype=np.int64).reshape(-1, 4)


def span(first: int, last: int, cls: int, azi: int, ele: int) -> np.ndarray:
    """Rows for one class at one direction on frames ``first..last`` inclusive."""
    frames = np.arange(first, last + 1)
    return np.stack(
        [frames, np.full_like(frames, cls), np.full_like(frames, azi), np.full_like(frames, ele)],
        axis=1,
    )


def scores(ref: np.ndarray, pred: np.ndarray, frames: int, **kw) -> SeldScores:
    return count_file(ref, pred, frames, **kw).scores()


# ------------------------------------------------------------------ hand-worked cases


def test_perfect_prediction_scores_zero():
    ref = events_to_rows(EVENTS, 100)
    s = scores(ref, ref.copy(), 100)
    assert s.er == 0
    assert s.f == pytest.approx(1, abs=1e-12)
    # the official formula leaves ~1e-6 degrees of rounding noise for identical directions
    assert s.doa_error == pytest.approx(0, abs=1e-5)
    assert s.frame_recall == 1
    assert s.seld == pytest.approx(0, abs=1e-7)


def test_empty_prediction():
    ref = events_to_rows(EVENTS, 100)
    counts = count_file(ref, np.zeros((0, 4), dtype=np.int64), 100)
    s = counts.scores()
    # blocks: second 0 has speech, second 1 has knock (frame 99 is ignored, knock ends at 75)
    assert (counts.S, counts.D, counts.I, counts.Nref, counts.Nsys) == (0, 2, 0, 2, 0)
    assert s.er == 1
    assert s.f == 0
    assert math.isnan(s.doa_error)  # 0 / 0: no predicted direction at all
    # reference active on 41 + 26 = 67 of 100 frames; the other 33 agree (0 == 0)
    assert s.frame_recall == pytest.approx(0.33)
    assert math.isnan(s.seld)


def test_single_event_at_known_offset_direction():
    ref = span(10, 29, cls=5, azi=0, ele=0)
    pred = span(10, 29, cls=5, azi=90, ele=0)
    s = scores(ref, pred, 100)
    assert (s.er, s.frame_recall) == (0, 1)
    assert s.doa_error == pytest.approx(90, abs=1e-9)
    assert s.seld == pytest.approx((0 + 0 + 90 / 180 + 0) / 4, abs=1e-12)
    # elevation only: 0 vs 40 degrees is a 40 degree arc; azimuth at elevation 40: 60 degrees
    # of azimuth is arccos(sin^2 40 + cos^2 40 cos 60) = 45.87 degrees
    assert scores(ref, span(10, 29, 5, 0, 40), 100).doa_error == pytest.approx(40, abs=1e-6)
    expected = math.degrees(
        math.acos(math.sin(math.radians(40)) ** 2 + math.cos(math.radians(40)) ** 2 * 0.5)
    )
    s = scores(span(10, 29, 5, 0, 40), span(10, 29, 5, 60, 40), 100)
    assert s.doa_error == pytest.approx(expected, abs=1e-9)


def test_substitution_deletion_insertion_worked_by_hand():
    # 3 blocks (150 frames). block 0: ref {0, 1}, pred {0, 2} -> FP 1, FN 1 -> S 1, TP 1
    #                        block 1: ref {3},    pred {}     -> FN 1       -> D 1
    #                        block 2: ref {},     pred {4, 5} -> FP 2       -> I 2
    # Nref = 3, Nsys = 4, TP = 1: ER = (1 + 1 + 2) / 3, P = 1/4, R = 1/3, F = 2PR/(P+R) = 2/7.
    ref = rows((10, 0, 0, 0), (10, 1, 0, 0), (60, 3, 0, 0))
    pred = rows((10, 0, 0, 0), (10, 2, 0, 0), (110, 4, 0, 0), (110, 5, 0, 0))
    counts = count_file(ref, pred, 150)
    assert (counts.S, counts.D, counts.I, counts.TP, counts.Nref, counts.Nsys) == (1, 1, 2, 1, 3, 4)
    assert counts.n_blocks == 3
    s = counts.scores()
    assert s.er == pytest.approx(4 / 3)
    assert s.f == pytest.approx(2 / 7)
    # DOA: frame 10 matches 2 to 2 at the same direction; frames 60 (1 vs 0) and 110 (0 vs 2)
    # disagree in count; all 4 predicted directions are in the denominator
    assert (counts.n_pred_doa, counts.n_good_frames, counts.n_frames) == (4, 148, 150)
    assert s.doa_error == pytest.approx(0, abs=1e-5)
    assert s.frame_recall == pytest.approx(148 / 150)


def test_last_frame_of_each_second_is_ignored_in_official_mode_only():
    ref = rows((10, 0, 0, 0), (99, 1, 0, 0))  # class 1 only on the last frame of second 1
    pred = rows((10, 0, 0, 0), (49, 2, 0, 0))  # class 2 only on the last frame of second 0
    official = count_file(ref, pred, 100)
    corrected = count_file(ref, pred, 100, official_blocks=False)
    assert (official.Nref, official.Nsys, official.I, official.D) == (1, 1, 0, 0)
    assert official.scores().er == 0
    assert (corrected.Nref, corrected.Nsys, corrected.I, corrected.D) == (2, 2, 1, 1)
    assert corrected.scores().er == 1
    # frame recall and DOA do not use blocks: frames 49 and 99 disagree in both modes
    assert official.n_good_frames == corrected.n_good_frames == 98


def test_predicted_azimuth_180_is_clipped_to_170():
    s = scores(span(0, 9, 0, 170, 0), span(0, 9, 0, 180, 0), 50)
    assert s.doa_error == pytest.approx(0, abs=1e-9)
    # so 180 against a reference at -180 (the same direction) costs 10 degrees
    s = scores(span(0, 9, 0, -180, 0), span(0, 9, 0, 180, 0), 50)
    assert s.doa_error == pytest.approx(10, abs=1e-9)
    # elevation is clipped to [-40, 40] too
    assert scores(span(0, 9, 0, 0, 40), span(0, 9, 0, 0, 90), 50).doa_error == pytest.approx(
        0, abs=1e-6
    )


def test_reference_azimuth_180_is_the_same_cell_as_minus_180():
    s = scores(span(0, 9, 0, 180, 0), span(0, 9, 0, -180, 0), 50)
    assert s.doa_error == pytest.approx(0, abs=1e-9)


def test_off_grid_angles_are_floored_to_the_grid():
    # (19, 9) -> cell (10, 0); (-1, -1) -> cell (-10, -10); (-175, 44) -> cell (-180, 40)
    ref = rows((0, 0, 10, 0), (1, 0, -10, -10), (2, 0, -180, 40))
    pred = rows((0, 0, 19, 9), (1, 0, -1, -1), (2, 0, -175, 44))
    assert scores(ref, pred, 50).doa_error == pytest.approx(0, abs=1e-6)
    # off-grid reference angles floor the same way
    assert scores(pred, ref, 50).doa_error == pytest.approx(0, abs=1e-6)
    # 20 is a grid line: (20, 0) vs (19, 0) is 10 degrees apart after flooring
    assert scores(rows((0, 0, 20, 0)), rows((0, 0, 19, 0)), 50).doa_error == pytest.approx(10)


def test_two_references_three_predictions_hungarian_and_denominator():
    # on the equator the angle is the azimuth difference. refs A = 0, B = 40; preds 30, 70, -20
    # costs A: [30, 70, 20], B: [10, 30, 60]; best pairs A-(-20) + B-30 = 30 degrees
    ref = rows((5, 0, 0, 0), (5, 1, 40, 0))
    pred = rows((5, 2, 30, 0), (5, 3, 70, 0), (5, 4, -20, 0))
    counts = count_file(ref, pred, 50)
    assert counts.doa_cost_deg == pytest.approx(30)
    assert counts.n_pred_doa == 3  # the unmatched prediction still counts in the denominator
    assert counts.scores().doa_error == pytest.approx(10)
    assert counts.n_good_frames == 49
    # and 3 references against 2 predictions: the extra reference is simply unmatched
    swapped = count_file(pred, ref, 50)
    assert swapped.doa_cost_deg == pytest.approx(30)
    assert swapped.n_pred_doa == 2


def test_matching_ignores_class():
    ref = span(0, 49, cls=0, azi=30, ele=10)
    pred = span(0, 49, cls=1, azi=30, ele=10)
    counts = count_file(ref, pred, 50)
    s = counts.scores()
    assert s.doa_error == pytest.approx(0, abs=1e-5)
    assert s.frame_recall == 1
    assert (counts.S, counts.TP) == (1, 0)
    assert s.er == 1
    assert s.f == 0


def test_duplicates_collapse_and_frames_past_the_end_are_dropped():
    ref = span(0, 9, 0, 0, 0)
    pred = np.concatenate([ref, ref, rows((50, 3, 0, 0), (1000, 4, 0, 0))])
    counts = count_file(ref, pred, 50)
    assert counts.n_pred_doa == 10
    assert counts.Nsys == 1
    # two classes in one cell are two directions
    assert count_file(ref, np.concatenate([ref, span(0, 9, 1, 0, 0)]), 50).n_pred_doa == 20


def test_min_assignment_cost_matches_scipy_including_the_fallback():
    rng = np.random.default_rng(3)
    for n, m in [(1, 1), (2, 3), (3, 2), (3, 3), (4, 7), (6, 11), (11, 6)]:
        costs = rng.uniform(0, 180, size=(5, n, m))
        expected = []
        for c in costs:
            r, k = linear_sum_assignment(c)
            expected.append(c[r, k].sum())
        np.testing.assert_allclose(_min_assignment_cost(costs), expected, rtol=1e-12)


def test_partial_last_second_and_zero_reference():
    # 120 frames = 3 blocks, the last one 20 frames long (all of them scored)
    ref = rows((119, 0, 0, 0))
    counts = count_file(ref, ref.copy(), 120)
    assert (counts.n_blocks, counts.Nref, counts.TP) == (3, 1, 1)
    # no reference activity at all: ER is 0/0 or x/0, not computable either way
    assert math.isnan(count_file(rows(), rows(), 50).scores().er)
    assert math.isnan(count_file(rows(), ref, 120).scores().er)  # n/a, never inf


# ------------------------------------------------------------------ aggregation


def test_groups_accumulate_counts_not_scores():
    busy_ref = np.concatenate([span(0, 299, 0, 0, 0), span(0, 299, 1, 90, 0)])
    quiet_ref = span(0, 20, 2, 0, 0)
    quiet_pred = np.concatenate([span(0, 20, 3, 60, 0), span(100, 299, 4, 0, 0)])
    pairs = {
        "split1_ir0_ov1_1": (busy_ref, busy_ref.copy(), 300),
        "split2_ir0_ov1_2": (quiet_ref, quiet_pred, 300),
    }
    report = score_files(pairs)
    counts = [count_file(*pair) for pair in pairs.values()]
    pooled = (counts[0] + counts[1]).scores()
    for name in METRICS:
        assert getattr(report.overall, name) == pytest.approx(getattr(pooled, name))
    mean_of_files = np.mean(
        [[getattr(s, m) for m in METRICS] for s in report.per_file.values()], axis=0
    )
    assert abs(report.overall.er - mean_of_files[0]) > 0.1
    assert abs(report.overall.seld - mean_of_files[4]) > 0.05
    assert set(report.groups) == {"split", "ov", "ir"}
    assert report.groups["split"][1] == report.per_file["split1_ir0_ov1_1"]
    assert report.groups["ir"][0] == report.overall
    assert report.groups["ov"][1] == report.overall
    data = report.as_dict()
    assert set(data["groups"]["split"]) == {"1", "2"}
    assert data["overall"]["seld"] == report.overall.seld


def test_counts_add_up_and_zero_is_neutral():
    a = count_file(span(0, 9, 0, 0, 0), span(5, 20, 0, 10, 0), 50)
    assert a + SeldCounts() == a
    assert sum([a, a], SeldCounts()).n_frames == 100


# ------------------------------------------------------------------ random cross-check


def random_file(rng: np.random.Generator, num_frames: int) -> tuple[list[Event], np.ndarray]:
    """Reference events on up to 3 overlapping tracks (off-grid integer angles) and a noisy
    prediction: dropped rows, angle noise pushing past the grid, wrong classes, extra rows
    (some past the last frame), duplicates."""
    seconds = num_frames / 50
    events = []
    for _ in range(3):
        t = rng.uniform(0, 1)
        while t < seconds - 0.2:
            end = t + rng.uniform(0.1, 2.5)
            events.append(
                Event(
                    CLASSES[rng.integers(NUM_CLASSES)],
                    float(t),
                    float(end),
                    int(rng.integers(-40, 50)),
                    int(rng.integers(-180, 180)),
                    1,
                )
            )
            t = end + rng.uniform(0.0, 1.5)
    ref = events_to_rows(events, num_frames)
    pred = ref[rng.random(len(ref)) > 0.15].copy()
    pred[:, 2] += rng.integers(-40, 41, len(pred))
    pred[:, 3] += rng.integers(-30, 31, len(pred))
    wrong = rng.random(len(pred)) < 0.05
    pred[wrong, 1] = rng.integers(0, NUM_CLASSES, wrong.sum())
    extra = np.stack(
        [
            rng.integers(0, num_frames + 40, 200),
            rng.integers(0, NUM_CLASSES, 200),
            rng.integers(-200, 200, 200),
            rng.integers(-70, 70, 200),
        ],
        axis=1,
    )
    pred = np.concatenate([pred, extra, pred[:20]])
    return events, pred[rng.permutation(len(pred))]


@pytest.fixture(scope="module")
def random_files() -> dict[str, tuple[list[Event], np.ndarray, int]]:
    rng = np.random.default_rng(2019)
    files = {}
    for i, (split, ir, ov) in enumerate([(1, 0, 1), (1, 1, 2), (2, 0, 2), (2, 2, 1), (3, 4, 2)]):
        frames = 437 if i == 2 else 500  # one file with a partial last second
        events, pred = random_file(rng, frames)
        files[f"split{split}_ir{ir}_ov{ov}_{i}"] = (events, pred, frames)
    return files


@pytest.mark.parametrize("official_blocks", [True, False])
def test_matches_literal_reimplementation_on_random_submissions(random_files, official_blocks):
    report = score_files(
        {name: (events_to_rows(ev, n), pred, n) for name, (ev, pred, n) in random_files.items()},
        official_blocks=official_blocks,
    )
    expected = reference_score(random_files, official_blocks=official_blocks)
    ours = {"all": report.overall.as_dict()} | {
        group: {key: s.as_dict() for key, s in per_key.items()}
        for group, per_key in report.groups.items()
    }
    assert report.overall.doa_error > 1  # a real test: errors of every kind are present
    assert 0 < report.overall.frame_recall < 1
    for metric in METRICS:
        assert is_nan_equal(ours["all"][metric], expected["all"][metric]), metric
    for group in ("split", "ov", "ir"):
        assert set(ours[group]) == set(expected[group])
        for key, values in expected[group].items():
            for metric in METRICS:
                assert is_nan_equal(ours[group][key][metric], values[metric]), (group, key, metric)


@pytest.mark.skipif(not REFERENCE_METADATA.is_dir(), reason="shared/reference not beside the repo")
def test_matches_literal_reimplementation_on_real_dcase2019_metadata():
    # includes split1_ir0_ov2_11, whose last event ends 0.69 s after the recording
    rng = np.random.default_rng(7)
    files = {}
    for path in sorted(REFERENCE_METADATA.glob("*.csv")):
        events = read_metadata(path)
        pred = events_to_rows(events, 3000)
        pred = pred[rng.random(len(pred)) > 0.2]
        pred[:, 2:] += rng.integers(-15, 16, pred[:, 2:].shape)
        files[path.stem] = (events, pred, 3000)
    report = score_files({n: (events_to_rows(e, f), p, f) for n, (e, p, f) in files.items()})
    expected = reference_score(files)["all"]
    for metric in METRICS:
        assert is_nan_equal(getattr(report.overall, metric), expected[metric]), metric


def activity_to_event_list(activity: np.ndarray, filename: str) -> list[dict]:
    """Per-class runs of active frames [a, b] as sed_eval events [a / 50, (b + 1) / 50)."""
    events = []
    padded = np.pad(activity.astype(np.int8), ((1, 1), (0, 0)))
    for cls in range(activity.shape[1]):
        edges = np.diff(padded[:, cls])
        for a, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            events.append(
                {
                    "event_label": CLASSES[cls],
                    "event_onset": a / 50,
                    "event_offset": stop / 50,
                    "filename": filename,
                }
            )
    return events


def frame_activity(rows_: np.ndarray, num_frames: int) -> np.ndarray:
    activity = np.zeros((num_frames, NUM_CLASSES), dtype=bool)
    kept = rows_[rows_[:, 0] < num_frames]
    activity[kept[:, 0], kept[:, 1]] = True
    return activity


@pytest.mark.parametrize("official_blocks", [True, False])
def test_er_and_f_match_sed_eval(random_files, official_blocks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sed_eval imports the deprecated pkg_resources
        import sed_eval

    metrics = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=list(CLASSES), time_resolution=1.0
    )
    total = SeldCounts()
    for name, (events, pred, n) in random_files.items():
        ref = events_to_rows(events, n)
        total += count_file(ref, pred, n, official_blocks=official_blocks)
        ref_act, pred_act = frame_activity(ref, n), frame_activity(pred, n)
        if official_blocks:  # the official blocks never see a second's last frame
            ref_act[49::50] = False
            pred_act[49::50] = False
        metrics.evaluate(
            activity_to_event_list(ref_act, name), activity_to_event_list(pred_act, name)
        )
    ours = total.scores()
    assert ours.er == pytest.approx(metrics.overall_error_rate()["error_rate"], abs=1e-9)
    assert ours.f == pytest.approx(metrics.overall_f_measure()["f_measure"], abs=1e-9)


# ------------------------------------------------------------------ submission files


def test_submission_round_trip_and_predictions_to_rows(tmp_path: Path):
    activity = np.zeros((4, NUM_CLASSES), dtype=bool)
    activity[1, 3] = activity[2, 0] = activity[2, 10] = True
    azi = np.full((4, NUM_CLASSES), np.nan)
    ele = np.full((4, NUM_CLASSES), np.nan)
    azi[1, 3], ele[1, 3] = 12.6, -0.4
    azi[2, 0], ele[2, 0] = -179.5, 39.5
    azi[2, 10], ele[2, 10] = 180.0, -40.0
    got = predictions_to_rows(activity, azi, ele)
    np.testing.assert_array_equal(got, [[1, 3, 13, 0], [2, 0, -180, 40], [2, 10, 180, -40]])
    assert got.dtype == np.int64
    path = tmp_path / "split1_ir0_ov1_1.csv"
    write_submission(path, got)
    assert path.read_text().splitlines()[0] == "1,3,13,0"
    np.testing.assert_array_equal(read_submission(path), got)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    write_submission(path, np.zeros((0, 4), dtype=np.int64))
    assert read_submission(path).shape == (0, 4)
    with pytest.raises(ValueError, match="must match activity"):
        predictions_to_rows(activity, azi[:2], ele)


def test_events_to_rows_uses_the_official_frame_span():
    got = events_to_rows([Event("knock", 0.1, 0.15, -20, 170, 2)], 100)
    np.testing.assert_array_equal(got[:, 0], [5, 6, 7, 8])  # floor(5.0) .. ceil(7.5)
    assert set(map(tuple, got[:, 1:].tolist())) == {(0, 170, -20)}
    assert events_to_rows([Event("knock", 1.9, 3.0, 0, 0, 1)], 100)[:, 0].max() == 99


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0,1,2\n", "line 1: expected 4 fields"),
        ("frame,class,azi,ele\n", "line 1: non-integer field in 'frame,class,azi,ele' (submission"),
        ("0,1,2,3\n\n2,1,2.5,3\n", "line 3: non-integer field"),
        ("0,11,0,0\n", "line 1: class index 11 outside 0..10"),
        ("0,-1,0,0\n", "line 1: class index -1 outside"),
        ("-3,1,0,0\n", "line 1: negative frame index -3"),
    ],
)
def test_malformed_submission_names_file_and_line(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "split1_ir0_ov1_1.csv"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_submission(path)
    assert info.value.path == path
    assert problem in info.value.problem
    with pytest.raises(DatasetError, match="missing submission file"):
        read_submission(tmp_path / "nope.csv")


def write_case(root: Path, stems: list[str], pred_stems: list[str]) -> tuple[Path, Path]:
    ref_dir, pred_dir = root / "metadata_dev", root / "pred"
    for stem in stems:
        write_metadata(ref_dir / f"{stem}.csv", EVENTS)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for stem in pred_stems:
        write_submission(pred_dir / f"{stem}.csv", events_to_rows(EVENTS, 3000))
    return ref_dir, pred_dir


def test_score_directories_oracle_and_durations(tmp_path: Path):
    stems = ["split1_ir0_ov1_1", "split2_ir1_ov2_2"]
    ref_dir, pred_dir = write_case(tmp_path, stems, stems)
    report = score_directories(ref_dir, pred_dir)
    assert report.overall.seld == pytest.approx(0, abs=1e-7)
    assert set(report.per_file) == set(stems)
    assert set(report.groups["split"]) == {1, 2}
    # a 2 s recording: 100 frames, so the same perfect prediction recalls every frame
    short = score_directories(ref_dir, pred_dir, durations={"split1_ir0_ov1_1": 2.0})
    assert short.per_file["split1_ir0_ov1_1"].frame_recall == 1
    # a silent prediction for one file: frame recall of that file is its share of silent frames
    write_submission(pred_dir / "split1_ir0_ov1_1.csv", np.zeros((0, 4), dtype=np.int64))
    report = score_directories(ref_dir, pred_dir)
    assert report.per_file["split1_ir0_ov1_1"].frame_recall == pytest.approx(2933 / 3000)


def test_score_directories_lists_every_missing_prediction(tmp_path: Path):
    stems = ["split1_ir0_ov1_1", "split1_ir0_ov1_2", "split2_ir0_ov2_3"]
    ref_dir, pred_dir = write_case(tmp_path, stems, stems[1:2])
    with pytest.raises(DatasetError) as info:
        score_directories(ref_dir, pred_dir)
    assert info.value.path == pred_dir
    assert "missing predictions for 2 reference recording(s)" in info.value.problem
    assert "split1_ir0_ov1_1" in info.value.problem and "split2_ir0_ov2_3" in info.value.problem


def test_score_directories_rejects_a_prediction_without_reference(tmp_path: Path):
    ref_dir, pred_dir = write_case(
        tmp_path, ["split1_ir0_ov1_1"], ["split1_ir0_ov1_1", "split9_ir0_ov1_9"]
    )
    with pytest.raises(DatasetError, match=r"without a reference.*split9_ir0_ov1_9"):
        score_directories(ref_dir, pred_dir)


def test_score_directories_names_bad_files(tmp_path: Path):
    stems = ["split1_ir0_ov1_1"]
    ref_dir, pred_dir = write_case(tmp_path, stems, stems)
    (pred_dir / "split1_ir0_ov1_1.csv").write_text("0,1,2,3\n1,x,2,3\n")
    with pytest.raises(DatasetError, match=r"split1_ir0_ov1_1\.csv: line 2: non-integer"):
        score_directories(ref_dir, pred_dir)
    write_metadata(ref_dir / "split1_ir0_ov1_1.csv", [Event("speech", 0.1, 0.9, 60, 0, 1)])
    write_submission(pred_dir / "split1_ir0_ov1_1.csv", rows((0, 0, 0, 0)))
    with pytest.raises(DatasetError, match=r"metadata_dev.*outside the DCASE 2019 grid"):
        score_directories(ref_dir, pred_dir)
