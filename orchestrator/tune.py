"""Threshold search on a finished cv run: Ray Tune trials, an Optuna TPE searcher, no training.

Every trial thresholds (and optionally median-filters) the cached validation predictions of all
folds of the run and scores them together; the best setting is then applied, unchanged, to the
test splits and logged next to the untuned scores of the cv run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from orchestrator.cv import CVSettings, settings_fold_data
from orchestrator.fold import references, two_stage_predictions
from orchestrator.search_space import SearchSpace
from orchestrator.tracking import flatten, log_scores
from seld.dcase import CLASSES, NUM_CLASSES
from seld.fsutil import atomic_path
from seld.inference import Prediction, submission_rows
from seld.metrics import ScoreReport, score_files

DEFAULT_THRESHOLD = 0.3


def postprocessing(config: dict[str, Any]) -> tuple[np.ndarray, int]:
    """(per-class thresholds, median filter length) from a trial's parameters: ``threshold``
    or ``threshold_<class>``, and ``median_frames`` (1 = off)."""
    if f"threshold_{CLASSES[0]}" in config:
        thresholds = np.array([config[f"threshold_{c}"] for c in CLASSES], dtype=np.float32)
    else:
        thresholds = np.full(NUM_CLASSES, config.get("threshold", DEFAULT_THRESHOLD), np.float32)
    return thresholds, int(config.get("median_frames", 1))


def score_with(
    predictions: dict[str, Prediction],
    refs: dict[str, tuple[np.ndarray, int]],
    config: dict[str, Any],
) -> ScoreReport:
    thresholds, median = postprocessing(config)
    return score_files(
        {
            stem: (
                refs[stem][0],
                submission_rows(p, thresholds, median_frames=median),
                refs[stem][1],
            )
            for stem, p in predictions.items()
        }
    )


def load_split(s: CVSettings, split: str) -> tuple[dict, dict]:
    """Two-stage predictions and references of all folds' ``validation`` or ``test`` splits."""
    predictions, refs = {}, {}
    for k in s.folds:
        data = settings_fold_data(s, k)
        predictions.update(two_stage_predictions(data, s.run_dir, split))
        refs.update(references(data, split))
    return predictions, refs


def _trial(config: dict[str, Any], data: tuple[dict, dict]) -> None:
    predictions, refs = data  # put in the object store once by tune.with_parameters
    scores = score_with(predictions, refs, config).overall.as_dict()
    tune.report({f"val_{k}": (v if v == v else 1e9) for k, v in scores.items()})


def tune_thresholds(
    settings: CVSettings,
    space: SearchSpace,
    *,
    trials: int = 1000,
    seed: int = 0,
    concurrency: int = 1,
    experiment: str = "thresholds",
) -> dict[str, Any]:
    """Search the space on validation predictions; apply the best to the test splits.

    With ``concurrency`` 1 (the default) the TPE sampler sees every result before the next
    suggestion, so a seed gives the same search every time.
    """
    started = time.time()
    val_preds, val_refs = load_split(settings, "validation")
    searcher = OptunaSearch(
        space=space.define_by_run,
        metric=space.metric,
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    storage = (Path(settings.workspace) / "ray_results").resolve()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, data=(val_preds, val_refs)), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode="min",
            num_samples=trials,
            search_alg=searcher,
            reuse_actors=True,
            max_concurrent_trials=concurrency,
        ),
        run_config=tune.RunConfig(
            name=f"{settings.run}-{experiment}-{int(started)}",
            storage_path=str(storage),
            verbose=0,
        ),
    )
    results = tuner.fit()
    search_s = time.time() - started
    best = results.get_best_result()
    best_config = dict(best.config)
    test_preds, test_refs = load_split(settings, "test")
    default = {"threshold": DEFAULT_THRESHOLD}
    table = {
        "validation_default": score_with(val_preds, val_refs, default).overall.as_dict(),
        "validation_tuned": score_with(val_preds, val_refs, best_config).overall.as_dict(),
        "test_default": score_with(test_preds, test_refs, default).overall.as_dict(),
        "test_tuned": score_with(test_preds, test_refs, best_config).overall.as_dict(),
    }
    frame = results.get_dataframe()
    out_dir = settings.run_dir / experiment
    trials_csv = out_dir / "trials.csv"
    with atomic_path(trials_csv) as tmp:
        frame.to_csv(tmp, index=False)
    summary = {
        "best_config": best_config,
        "scores": table,
        "trials": len(frame),
        "search_s": search_s,
        "trials_per_s": len(frame) / search_s,
        "seed": seed,
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    _log(settings, experiment, summary, trials_csv, out_dir / "summary.json")
    return summary


def _log(settings: CVSettings, experiment: str, summary: dict[str, Any], *files: Path) -> None:
    """A child run of the cv run for the search, and the tuned test scores on the cv run."""
    runs = json.loads((settings.run_dir / "mlflow_runs.json").read_text())
    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(runs["parent"])
    child = client.create_run(
        parent.info.experiment_id,
        run_name=f"tune-{experiment}",
        tags={
            "mlflow.parentRunId": runs["parent"],
            "kind": f"tune-{experiment}",
            "seed": str(summary["seed"]),
        },
    )
    run_id = child.info.run_id
    for key, value in flatten(summary["best_config"], "best.").items():
        client.log_param(run_id, key, value)
    for name, scores in summary["scores"].items():
        log_scores(client, run_id, f"{name}_", scores)
    client.log_metric(run_id, "trials_per_s", summary["trials_per_s"])
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    log_scores(client, runs["parent"], "tuned_cv_", summary["scores"]["test_tuned"])
