"""Speed of the location-aware (DCASE 2021, 2022), DCASE 2020 and frame-wise (DCASE 2024)
metric suites against their literal references.

On ``--recordings`` one-minute recordings at 100 ms label frames (600 frames, 13 classes) of
moving sources, a quarter of them with same-class overlaps, and noisy predictions of them: the
literal re-statement of the official scorer (``tests/seld/reference_location_aware.py``, block
by block and class by class in Python) against :meth:`LocationAware.count_many` (all
recordings at once), both from the same rows; then the jackknife intervals from counts (every
leave-one-out pooling is the total minus one recording) against re-scoring each subset with
the literal reference, as the official script does; then the frame-wise DCASE 2024 counts (the
same rows with a distance each) against ``tests/seld/reference_frame_wise.py``; then the DCASE
2020 counts (``tests/seld/reference_dcase2020.py``; a frame's first instance of a class) and the
DCASE 2021 scores (the location-aware reference's 2021 formulas), and the DCASE 2019 metrics
on continuous directions (``tests/seld/reference_dcase2019_regr.py``). Prints each
time, the ratio, and the largest difference of the scores (0 expected to 1e-9).

    python bench/metric_suites.py [--recordings 100] [--seed 0] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "seld"))

from reference_dcase2019_regr import Counter as Counter2019Regression
from reference_dcase2020 import Counter as Counter2020
from reference_frame_wise import Counter as FrameCounter
from reference_location_aware import Counter
from test_location_aware import _noisy, _random_rows

from seld.metrics.dcase2020 import Dcase2020
from seld.metrics.frame_wise import FrameWise
from seld.metrics.location_aware import LocationAware, pool
from seld.metrics.suites import get_suite, jackknife

CLASSES, PER_BLOCK, FRAMES = 13, 10, 600


def recordings(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ref = _random_rows(rng, FRAMES, 40, overlap=i % 4 == 0)
        out.append((ref, _noisy(rng, ref, FRAMES), FRAMES))
    return out


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jackknife-recordings", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = recordings(args.recordings, args.seed)
    rows = sum(len(r) + len(p) for r, p, _ in data)
    print(f"{args.recordings} recordings of {FRAMES} frames, {rows} rows (reference + prediction)")

    def literal(subset):
        counter = Counter(CLASSES)
        for ref, pred, frames in subset:
            counter.add(ref, pred, frames, PER_BLOCK)
        return counter.scores("macro")

    scorer = LocationAware("dcase2022")
    t_literal, expected = best_of(lambda: literal(data))
    t_fast, counts = best_of(lambda: pool(scorer.count_many(data, PER_BLOCK, CLASSES)))
    got = scorer.scores(counts)
    diff = max(abs(float(expected[k]) - got[k]) for k in got)
    print(
        f"counts and scores   literal {t_literal:8.3f} s   fast {t_fast:8.3f} s   "
        f"ratio {t_literal / t_fast:6.1f}x   largest score difference {diff:.1e}"
    )

    subset = data[: args.jackknife_recordings]
    suite = get_suite("dcase2022")
    t_lit_jk, partial = best_of(
        lambda: [literal(subset[:i] + subset[i + 1 :]) for i in range(len(subset))], repeats=1
    )
    whole = literal(subset)
    t_fast_jk, (intervals, _) = best_of(
        lambda: jackknife(suite, suite.count_many(subset, PER_BLOCK, CLASSES))
    )
    n = len(subset)
    t_value = stats.t.ppf(0.975, n - 1)
    jk_diff = 0.0
    for key in ("er", "f", "le", "lr", "seld"):
        p = np.array([float(x[key]) for x in partial])
        bias = (n - 1) * (p.mean() - float(whole[key]))
        se = np.sqrt((n - 1) * np.mean((p - p.mean()) ** 2))
        low, high = float(whole[key]) - bias - t_value * se, float(whole[key]) - bias + t_value * se
        jk_diff = max(jk_diff, abs(low - intervals[key][0]), abs(high - intervals[key][1]))
    print(
        f"jackknife ({len(subset)} rec.) literal {t_lit_jk:8.3f} s   fast {t_fast_jk:8.3f} s   "
        f"ratio {t_lit_jk / t_fast_jk:6.1f}x   SELD interval "
        f"[{intervals['seld'][0]:.4f}, {intervals['seld'][1]:.4f}], largest interval difference "
        f"{jk_diff:.1e}"
    )
    rng = np.random.default_rng(args.seed + 1)
    with_distance = [
        (
            *(np.concatenate([r, rng.uniform(0.5, 4, (len(r), 1))], axis=1) for r in (ref, pred)),
            frames,
        )
        for ref, pred, frames in data
    ]

    def literal_2024():
        counter = FrameCounter(CLASSES)
        for ref, pred, frames in with_distance:
            counter.add(ref, pred, frames)
        return counter.scores("macro")

    frame_wise = FrameWise("dcase2024")
    t_lit24, expected24 = best_of(literal_2024, repeats=1)
    t_fast24, counts24 = best_of(lambda: pool(frame_wise.count_many(with_distance, CLASSES)))
    got24 = frame_wise.scores(counts24)
    diff24 = max(abs(float(expected24[k]) - got24[k]) for k in got24)
    print(
        f"dcase2024 frame-wise  literal {t_lit24:8.3f} s   fast {t_fast24:8.3f} s   "
        f"ratio {t_lit24 / t_fast24:6.1f}x   largest score difference {diff24:.1e}"
    )
    others = {}
    for name, make, metric in (
        ("dcase2020", lambda: Counter2020(CLASSES), Dcase2020()),
        ("dcase2019-regr", lambda: Counter2019Regression(CLASSES), get_suite("dcase2019-regr")),
        (
            "dcase2021",
            lambda: Counter(CLASSES),
            LocationAware("dcase2021", "micro", 20.0, spatial_fp_weight=0.5),
        ),
    ):

        def literal_other(make=make, name=name):
            counter = make()
            for ref, pred, frames in data:
                counter.add(ref, pred, frames, PER_BLOCK)
            return counter.scores("2021") if name == "dcase2021" else counter.scores()

        t_lit_o, expected_o = best_of(literal_other, repeats=1)
        t_fast_o, counts_o = best_of(
            lambda metric=metric: pool(metric.count_many(data, PER_BLOCK, CLASSES))
        )
        got_o = metric.scores(counts_o)
        diff_o = max(abs(float(expected_o[k]) - got_o[k]) for k in got_o)
        others[name] = {"literal_s": t_lit_o, "fast_s": t_fast_o, "ratio": t_lit_o / t_fast_o,
                        "largest_difference": diff_o}  # fmt: skip
        print(
            f"{name:21s} literal {t_lit_o:8.3f} s   fast {t_fast_o:8.3f} s   "
            f"ratio {t_lit_o / t_fast_o:6.1f}x   largest score difference {diff_o:.1e}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "recordings": args.recordings,
                    "rows": rows,
                    "literal_s": t_literal,
                    "fast_s": t_fast,
                    "ratio": t_literal / t_fast,
                    "largest_difference": diff,
                    "jackknife_literal_s": t_lit_jk,
                    "jackknife_fast_s": t_fast_jk,
                    "jackknife_largest_difference": jk_diff,
                    "jackknife_ratio": t_lit_jk / t_fast_jk,
                    **{f"{k}_{m}": v for k, d in others.items() for m, v in d.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
