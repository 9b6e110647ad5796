"""Threshold-search benchmark: trials per second of the real search behind
``seld-orch tune thresholds`` (Ray Tune trials, a seeded Optuna TPE searcher).

By default the cached predictions are synthesized in memory, shaped like the README's tiny cv
run (4 splits x 16 recordings x 20 s, one validation and one test split per fold): references
from random events on the DCASE grid (ov1 and ov2), SED probabilities that follow the reference
activity with smeared boundaries, noise and false alarms, and directions a few grid steps off.
``--run-dir`` uses a finished cv run's cached predictions instead.

Prints the time of one trial's scoring (the old path: submission rows, then ``score_files``;
the new path: prepared references), the search's trials per second, and the before / after table.

    python bench/threshold_search.py [--trials 1000] [--per-split 16] [--seconds 20]
        [--space search_spaces/thresholds.yaml] [--concurrency 1] [--run NAME --workspace DIR]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from seld.data.dcase import num_label_frames
from seld.data.metadata import Event, events_to_targets
from seld.data.submission import events_to_rows
from seld.methods.inference import Prediction

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scorer import synthetic_events

ROOT = Path(__file__).resolve().parents[1]


def synthetic_prediction(
    rng: np.random.Generator, stem: str, events: list[Event], frames: int
) -> Prediction:
    """What a half-trained two-stage model gives at the label rate: (frames, 11) probabilities
    following the reference activity (boundaries smeared, noise, false alarms) and directions in
    degrees near the reference where a class is active, anywhere elsewhere."""
    targets = events_to_targets(events, frames, 0.02)
    kernel = np.hanning(15)
    kernel /= kernel.sum()
    smeared = np.apply_along_axis(np.convolve, 0, targets.activity, kernel, mode="same")
    noise = rng.normal(0, 1, (frames, 11))
    noise = np.apply_along_axis(np.convolve, 0, noise, np.ones(25) / 5, mode="same")
    alarms = (rng.random((frames, 11)) < 0.0004).astype(float)
    alarms = np.apply_along_axis(np.convolve, 0, alarms, np.ones(25), mode="same")
    logit = 6 * smeared - 4 + 1.2 * noise + 2.5 * np.minimum(alarms, 1)
    sed = (1 / (1 + np.exp(-logit))).astype(np.float32)
    active = targets.activity > 0
    azimuth = np.where(
        active,
        targets.azimuth + rng.normal(0, 12, active.shape),
        rng.uniform(-180, 180, active.shape),
    )
    azimuth = (azimuth + 180) % 360 - 180
    elevation = np.where(
        active, targets.elevation + rng.normal(0, 8, active.shape), rng.normal(0, 20, active.shape)
    )
    return Prediction(stem, sed, azimuth.astype(np.float32), elevation.astype(np.float32))


def synthetic_folds(per_split: int, seconds: float, seed: int) -> tuple[dict, dict]:
    """fold -> (predictions, references) of its validation and its test split, under the
    DCASE 2019 protocol (fold k tests on split k and validates on split k + 1). Each split's
    recordings get two predictions, as from two fold models: fold k's model predicts split k's
    test recordings and fold k - 1's model predicts them as validation."""
    rng = np.random.default_rng(seed)
    frames = num_label_frames(seconds)
    validation, test = {}, {}
    for split in (1, 2, 3, 4):
        refs, as_test, as_validation = {}, {}, {}
        for j in range(per_split):
            stem = f"split{split}_ir{j % 5}_ov{j % 2 + 1}_{(split - 1) * per_split + j}"
            events = synthetic_events(rng, seconds, j % 2 + 1)
            refs[stem] = (events_to_rows(events, frames), frames)
            as_test[stem] = synthetic_prediction(rng, stem, events, frames)
            as_validation[stem] = synthetic_prediction(rng, stem, events, frames)
        test[split] = (as_test, refs)
        validation[(split - 2) % 4 + 1] = (as_validation, refs)
    return dict(sorted(validation.items())), test


def run_folds(run_dir: Path) -> tuple[dict, dict]:
    """A finished cv run's cached validation and test predictions, per fold."""
    from orchestrator.cv import CVSettings
    from orchestrator.evaluation import load_split

    s = CVSettings.from_run(run_dir)
    return (
        {k: load_split(s, "validation", (k,)) for k in s.folds},
        {k: load_split(s, "test", (k,)) for k in s.folds},
    )


def one_trial_times(preds, refs, repeats: int = 5) -> dict:
    """Seconds to score one trial's setting the old way (submission rows per recording, then
    ``score_files``) and the new way (a prepared ``ThresholdScorer``); the numbers must agree."""
    from orchestrator.tune import postprocessing
    from seld.methods.inference import ThresholdScorer, submission_rows
    from seld.metrics.reference import score_files

    start = time.perf_counter()
    scorer = ThresholdScorer(preds, refs)
    prepare_s = time.perf_counter() - start
    out = {"recordings": len(preds), "prepare_s": prepare_s, "old_s": 0.0, "new_s": 0.0}
    configs = [{"threshold": 0.3}, {"threshold": 0.55, "median_frames": 7}]
    for config in configs:
        thresholds, median = postprocessing(config)

        def old(thresholds=thresholds, median=median):
            return score_files(
                {
                    s: (
                        refs[s][0],
                        submission_rows(p, thresholds, median_frames=median),
                        refs[s][1],
                    )
                    for s, p in preds.items()
                }
            )

        t_old, expected = best_of(old, repeats)
        t_new, got = best_of(lambda t=thresholds, m=median: scorer.report(t, m), repeats)
        assert repr(got.as_dict()) == repr(expected.as_dict()), config  # identical numbers
        out["old_s"] += t_old / len(configs)
        out["new_s"] += t_new / len(configs)
    out["speedup"] = out["old_s"] / out["new_s"]
    return out


def best_of(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _legacy_trial(config, data) -> None:
    """The trial as it was before (orchestrator/tune.py at 7be0c74): submission rows of every
    recording, then ``score_files``, with the predictions shipped as a dict."""
    from ray import tune

    from orchestrator.tune import postprocessing
    from seld.methods.inference import submission_rows
    from seld.metrics.reference import score_files

    preds, refs = data
    thresholds, median = postprocessing(config)
    pairs = {
        s: (refs[s][0], submission_rows(p, thresholds, median_frames=median), refs[s][1])
        for s, p in preds.items()
    }
    scores = score_files(pairs).overall.as_dict()
    tune.report({f"val_{k}": (v if v == v else 1e9) for k, v in scores.items()})


def legacy_search(preds, refs, space, trials: int, seed: int, storage: Path) -> float:
    """Trials per second of the search as it was before: the old trial and Tune's default
    per-trial logging and experiment checkpoints."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_legacy_trial, data=(preds, refs)), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode="min",
            num_samples=trials,
            search_alg=space.searcher(seed),
            reuse_actors=True,
            max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(name="legacy", storage_path=str(storage), verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return trials / (time.perf_counter() - start)


def main() -> None:
    import logging
    import tempfile

    import ray

    from orchestrator.search_space import load_search_space
    from orchestrator.tune import search_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--per-split", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "thresholds.yaml")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-fold", action="store_true")
    parser.add_argument(
        "--legacy-trials",
        type=int,
        default=200,
        help="trials of the search as it was before (old trial, Tune defaults); 0 skips it",
    )
    parser.add_argument("--run-dir", type=Path, help="a finished cv run (runs/<name>)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if args.run_dir:
        validation, test = run_folds(args.run_dir)
        source = f"cv run {args.run_dir}"
    else:
        validation, test = synthetic_folds(args.per_split, args.seconds, args.seed)
        source = f"synthetic, 4 splits x {args.per_split} recordings x {args.seconds:g} s"
    space = load_search_space(args.space)
    all_preds = {s: p for k in validation for s, p in validation[k][0].items()}
    all_refs = {s: r for k in validation for s, r in validation[k][1].items()}
    frames = sum(len(p.sed) for p in all_preds.values())
    print(
        f"predictions: {source}; validation of all folds: "
        f"{len(all_preds)} recordings, {frames} frames"
    )

    one = one_trial_times(all_preds, all_refs)
    print("one trial's scoring (all validation recordings), identical numbers:")
    print(f"  before: submission rows + score_files   {1000 * one['old_s']:8.2f} ms")
    print(f"  after:  ThresholdScorer                 {1000 * one['new_s']:8.2f} ms")
    print(f"  speed-up                                {one['speedup']:8.1f}x")
    print(f"  (preparing the scorer once: {1000 * one['prepare_s']:.0f} ms)")

    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    result = {"source": source, "recordings": len(all_preds), "frames": frames, "one_trial": one}
    with tempfile.TemporaryDirectory() as tmp:
        if args.legacy_trials:
            result["legacy_trials"] = args.legacy_trials
            result["legacy_trials_per_s"] = legacy_search(
                all_preds, all_refs, space, args.legacy_trials, args.seed, Path(tmp)
            )
        summary, _ = search_folds(
            validation,
            test,
            space,
            trials=args.trials,
            seed=args.seed,
            concurrency=args.concurrency,
            per_fold=args.per_fold,
            storage=Path(tmp),
            name="bench",
        )
    ray.shutdown()
    result["search"] = summary
    mode = "per fold" if args.per_fold else "joint"
    print(f"search ({mode}, space {space.name}, concurrency {args.concurrency}, seed {args.seed}):")
    if args.legacy_trials:
        print(
            f"  before: {args.legacy_trials} trials, {result['legacy_trials_per_s']:.1f} trials/s"
        )
    print(
        f"  after:  {summary['trials']} trials in {summary['search_s']:.1f} s, "
        f"{summary['trials_per_s']:.1f} trials/s"
    )
    print(f"  best: {summary['best_config']}")
    print(f"  {'':20s} {'ER':>7s} {'F':>7s} {'DOA':>7s} {'FR':>7s} {'SELD':>7s}")
    for name in ("validation_default", "validation_tuned", "test_default", "test_tuned"):
        v = summary["scores"][name]
        print(
            f"  {name:20s} {v['er']:7.4f} {v['f']:7.4f} {v['doa_error']:7.2f} "
            f"{v['frame_recall']:7.4f} {v['seld']:7.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
