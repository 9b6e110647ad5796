"""Scorer benchmark: ``seld.metrics`` against the literal per-frame re-implementation of the
official DCASE 2019 scorer (``tests/reference_dcase2019.py``), on synthetic recordings.

Each recording gets reference events on one track (ov1) or two overlapping tracks (ov2), on the
DCASE 10-degree grid, and a prediction that a fair model could make: rows dropped, onsets and
offsets shifted, directions off by up to a few grid steps (some past the grid's edges), a few
wrong classes and short false alarms. Both scorers see the same recordings; the numbers (ER, F,
DOA error, frame recall, SELD, all files and per split / ov / ir) must agree to 1e-9.

    python bench/scorer.py [--recordings 100] [--seconds 60] [--seed 0] [--json out.json]

Part 2 times ``score_directories`` (CSV reading included) on the same recordings written as a
DCASE layout (metadata CSVs and submission CSVs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "seld"))

from seld.data.dcase import AZIMUTH_GRID, CLASSES, ELEVATION_GRID, NUM_CLASSES, num_label_frames
from seld.data.metadata import Event, write_metadata
from seld.data.submission import events_to_rows, write_submission
from seld.metrics.reference import score_directories, score_files

from reference_dcase2019 import is_nan_equal, reference_score

METRICS = ("er", "f", "doa_error", "frame_recall", "seld")


def recording_names(count: int) -> list[str]:
    """DCASE 2019 names cycling splits 1-4, rooms ir0-ir4 and overlaps ov1/ov2."""
    return [f"split{k % 4 + 1}_ir{k % 5}_ov{(k // 4) % 2 + 1}_{k}" for k in range(count)]


def synthetic_events(rng: np.random.Generator, seconds: float, overlap: int) -> list[Event]:
    """``overlap`` tracks of non-overlapping events (0.3-3 s long, 0.2-2 s apart) on the DCASE
    grid; events of the two tracks that overlap in time differ in class."""
    events: list[Event] = []
    for track in range(overlap):
        t = float(rng.uniform(0.0, 1.0 + track))
        while True:
            end = t + float(rng.uniform(0.3, 3.0))
            if end >= seconds:
                break
            busy = {e.label for e in events if e.start < end and t < e.end}
            label = str(rng.choice([c for c in CLASSES if c not in busy]))
            azimuth = int(rng.choice(AZIMUTH_GRID))
            elevation = int(rng.choice(ELEVATION_GRID))
            events.append(Event(label, round(t, 4), round(end, 4), elevation, azimuth, 1))
            t = end + float(rng.uniform(0.2, 2.0))
    return sorted(events, key=lambda e: (e.start, e.label))


def noisy_prediction(rng: np.random.Generator, events: list[Event], frames: int) -> np.ndarray:
    """Submission rows of a plausible model for ``events``: misses, shifted boundaries, direction
    errors of a few grid steps (some beyond the grid's edges), wrong classes, false alarms."""
    rows = []
    for e in events:
        if rng.random() < 0.08:  # missed event
            continue
        first = int(e.start * 50) + int(rng.integers(-8, 9))
        last = int(e.end * 50) + int(rng.integers(-8, 9))
        cls = int(rng.integers(NUM_CLASSES)) if rng.random() < 0.05 else CLASSES.index(e.label)
        for frame in range(max(0, first), min(frames, last)):
            if rng.random() < 0.03:  # flicker
                continue
            azi = round(e.azimuth + rng.normal(0, 12), -1)
            ele = round(e.elevation + rng.normal(0, 8), -1)
            rows.append((frame, cls, int((azi + 180) % 360 - 180), int(ele)))
    for _ in range(int(rng.integers(0, 8))):  # short false alarms
        first = int(rng.integers(0, frames))
        cls = int(rng.integers(NUM_CLASSES))
        azi, ele = int(rng.choice(AZIMUTH_GRID)), int(rng.choice(ELEVATION_GRID)) + 10
        rows += [(f, cls, azi, ele) for f in range(first, min(frames, first + 20))]
    if not rows:
        return np.zeros((0, 4), dtype=np.int64)
    return np.asarray(sorted(set(rows)), dtype=np.int64)


def synthetic_dataset(
    count: int, seconds: float, seed: int
) -> dict[str, tuple[list[Event], np.ndarray, int]]:
    """Recording name -> (reference events, predicted rows, label frames)."""
    rng = np.random.default_rng(seed)
    frames = num_label_frames(seconds)
    out = {}
    for name in recording_names(count):
        events = synthetic_events(rng, seconds, int(name.split("_ov")[1][0]))
        out[name] = (events, noisy_prediction(rng, events, frames), frames)
    return out


def ours_as_dict(report) -> dict:
    return {"all": report.overall.as_dict()} | {
        group: {key: s.as_dict() for key, s in per_key.items()}
        for group, per_key in report.groups.items()
    }


def max_difference(ours: dict, reference: dict) -> float:
    """Largest absolute difference over every metric of every group; asserts both agree."""
    worst = 0.0
    pairs = [(ours["all"], reference["all"])]
    for group in ("split", "ov", "ir"):
        assert set(ours[group]) == set(reference[group]), group
        pairs += [(ours[group][k], reference[group][k]) for k in reference[group]]
    for a, b in pairs:
        for metric in METRICS:
            assert is_nan_equal(a[metric], b[metric]), (metric, a[metric], b[metric])
            if not (math.isnan(a[metric]) or math.isinf(a[metric])):
                worst = max(worst, abs(a[metric] - b[metric]))
    return worst


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = synthetic_dataset(args.recordings, args.seconds, args.seed)
    frames = num_label_frames(args.seconds)
    pairs = {name: (events_to_rows(ev, n), pred, n) for name, (ev, pred, n) in files.items()}

    t_ours, report = best_of(lambda: score_files(pairs), args.repeats)
    t_ref, expected = best_of(lambda: reference_score(files), 1)
    diff = max_difference(ours_as_dict(report), expected)

    with tempfile.TemporaryDirectory() as tmp:
        ref_dir, pred_dir = Path(tmp) / "metadata_dev", Path(tmp) / "pred"
        for name, (events, pred, _) in files.items():
            write_metadata(ref_dir / f"{name}.csv", events)
            write_submission(pred_dir / f"{name}.csv", pred)
        t_dirs, from_dirs = best_of(
            lambda: score_directories(ref_dir, pred_dir, default_duration_s=args.seconds),
            args.repeats,
        )
    # the same numbers from the files (groups summed in file-name order: equal to 1e-9)
    max_difference(ours_as_dict(from_dirs), ours_as_dict(report))

    overall = report.overall
    result = {
        "recordings": args.recordings,
        "seconds_each": args.seconds,
        "frames_each": frames,
        "rows_predicted": int(sum(len(p) for _, p, _ in files.values())),
        "ours_score_files_s": t_ours,
        "ours_score_directories_s": t_dirs,
        "reference_s": t_ref,
        "speedup": t_ref / t_ours,
        "max_abs_difference": diff,
        "overall": overall.as_dict(),
    }
    print(
        f"{args.recordings} recordings x {args.seconds:g} s ({frames} frames each), "
        f"{result['rows_predicted']} predicted rows"
    )
    print(
        f"  scores: ER {overall.er:.4f}  F {overall.f:.4f}  DOA {overall.doa_error:.2f} deg  "
        f"frame recall {overall.frame_recall:.4f}  SELD {overall.seld:.4f}"
    )
    print(f"  identical to the reference (all, split, ov, ir): max |diff| {diff:.1e}")
    print(f"  ours, score_files (in memory)        {t_ours:8.3f} s")
    print(f"  ours, score_directories (CSV files)  {t_dirs:8.3f} s")
    print(f"  reference, literal per-frame         {t_ref:8.3f} s")
    print(f"  speed-up                             {result['speedup']:8.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
