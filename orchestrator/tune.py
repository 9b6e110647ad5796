"""Threshold search on a finished cv run: Ray Tune trials, an Optuna TPE searcher, no training.

Every trial thresholds (and optionally median-filters) cached validation predictions and scores
them; the best setting is then applied, unchanged, to the test splits and logged next to the
untuned scores of the cv run. Jointly (the default), one search scores the validation splits of
all folds together and one setting serves every fold; ``per_fold`` searches each fold's
validation split alone and applies each fold's best to its own test split.

A trial costs milliseconds, so the search is built for thousands of them: the predictions and
references are prepared once (:class:`seld.methods.inference.ThresholdScorer`) and shipped to the
trial actor once through the object store, and Tune writes no per-trial files (see
:data:`FAST_TUNE_ENV`). Every trial is still a Ray Tune trial that the Optuna searcher suggests
and sees the result of.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune

from orchestrator.cv import CVSettings
from orchestrator.evaluation import Postprocessing, Split, load_split, run_decode, run_labels
from orchestrator.layout import ray_storage
from orchestrator.search_space import SearchSpace
from orchestrator.study import export_study, results_frame
from orchestrator.tracking import flatten, log_params, log_scores, tracking_client
from seld.data.dcase import CLASSES
from seld.data.formats import get_format
from seld.errors import ConfigError
from seld.features.store import LabelFacts
from seld.fsutil import atomic_path
from seld.methods.inference import SuiteScorer, ThresholdScorer
from seld.methods.registry import get_method
from seld.metrics.scores import ScoreReport
from seld.metrics.suites import get_suite, label_problem

DEFAULT_THRESHOLD = 0.3

#: Ray Tune settings for thousands of trials of a few milliseconds each (read by the driver
#: when a search starts; set only for the search, then restored).
FAST_TUNE_ENV = {
    # no per-trial result files (result.json, progress.csv, TensorBoard events): the results
    # stay in memory and are written once, as trials.csv
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # the experiment state (every trial and the searcher's study) is saved when the search
    # ends, not every few seconds: a search of a minute or two has nothing to resume
    "TUNE_GLOBAL_CHECKPOINT_S": str(24 * 3600),
}


def postprocessing(
    config: dict[str, Any], classes: tuple[str, ...] = CLASSES
) -> tuple[np.ndarray, int]:
    """(per-class thresholds, median filter length) from a trial's parameters (see
    :meth:`orchestrator.evaluation.Postprocessing.from_params`), for ``classes``."""
    post = Postprocessing.from_params(config, DEFAULT_THRESHOLD, classes)
    return post.thresholds, post.median_frames


#: what a search scores with: the DCASE 2019 scorer, or a metric suite's
Scorer = ThresholdScorer | SuiteScorer


def search_mode(space: SearchSpace, suite: str | None = None) -> str:
    """``"min"`` or ``"max"``: the direction of the space's metric (``val_<score>``) in the
    suite (DCASE 2019's by default). Raises :class:`ConfigError` naming the suite's scores
    when the metric is not one of them."""
    chosen = get_suite(suite or "dcase2019")
    key = space.metric.removeprefix("val_")
    for metric in chosen.metrics:
        if metric.key == key:
            return "max" if metric.higher_is_better else "min"
    raise ConfigError(
        f"search space {space.name}: metric {space.metric!r} is not a score of the "
        f"{chosen.name} suite (val_ + one of {', '.join(m.key for m in chosen.metrics)})"
    )


def score_with(scorer: ThresholdScorer, config: dict[str, Any]) -> ScoreReport:
    """Scores of the scorer's recordings under a trial's post-processing (as ``score_files``
    of the thresholded submissions gives them)."""
    thresholds, median = postprocessing(config, scorer.classes)
    return scorer.report(thresholds, median)


def _trial(config: dict[str, Any], scorer: Scorer, missing: float = 1e9) -> None:
    """One trial: the scores of the scorer's predictions under the trial's post-processing;
    a score that cannot be computed (NaN) is reported as ``missing``, the worst value in the
    search's direction."""
    thresholds, median = postprocessing(config, scorer.classes)
    scores = scorer.scores(thresholds, median)
    tune.report({f"val_{k}": (v if v == v else missing) for k, v in scores.items()})


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def search(
    scorer: Scorer,
    space: SearchSpace,
    *,
    trials: int,
    seed: int,
    concurrency: int,
    storage: Path,
    name: str,
    mode: str = "min",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run ``trials`` Ray Tune trials suggested by a seeded Optuna TPE searcher, each scoring
    ``scorer``'s predictions under its setting; returns the best config and one row per trial
    (:func:`orchestrator.study.results_frame`).

    With ``concurrency`` 1 the sampler sees every result before the next suggestion, so a seed
    gives the same search every time.
    """
    missing = 1e9 if mode == "min" else -1e9
    trial = tune.with_parameters(_trial, scorer=scorer, missing=missing)
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=mode,
            num_samples=trials,
            search_alg=space.searcher(seed, mode=mode),
            reuse_actors=True,
            max_concurrent_trials=concurrency,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    # without per-trial result files, Tune's analysis warns once per trial that it found none
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        with _environment(FAST_TUNE_ENV):
            results = tuner.fit()
    finally:
        analysis_log.setLevel(level)
    return dict(results.get_best_result().config), results_frame(results)


def search_folds(
    validation: Mapping[int, Split],
    test: Mapping[int, Split],
    space: SearchSpace,
    *,
    trials: int = 1000,
    seed: int = 0,
    concurrency: int = 1,
    per_fold: bool = False,
    storage: Path,
    name: str,
    suite: str | None = None,
    labels: LabelFacts | None = None,
    decode: Any = None,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The search on in-memory predictions: fold -> (predictions, references) of its
    validation and test splits.

    ``suite``: a metric suite (:mod:`seld.metrics.suites`) whose scores the search optimises
    (the space's metric, in that score's direction) and reports; DCASE 2019's by default.
    ``labels``: the predictions' dataset format, label rate and classes (DCASE 2019's).
    ``decode``: the method's predictions to rows (:attr:`seld.methods.method.Method.decode`).

    Jointly, one search of ``trials`` trials scores all validation splits together and its best
    setting is applied to every test split; ``per_fold``, each fold gets a search of ``trials``
    trials of its own (same seed) and its best setting is applied to its own test split. Test
    scores pool the counts of all folds' test recordings, as the cross-validated scores do.

    Returns the summary (best config(s), the table before / after tuning, trials and time) and
    the trials of each search (``"all"`` or ``"fold<k>"``).
    """
    folds = list(validation)
    mode = search_mode(space, suite)

    def scorer(predictions: dict, refs: dict) -> Scorer:
        if suite is None:
            return ThresholdScorer(predictions, refs)
        return SuiteScorer(get_suite(suite), predictions, refs, labels=labels, decode=decode)

    val = {k: scorer(*validation[k]) for k in folds}
    tst = {k: scorer(*test[k]) for k in folds}
    started = time.perf_counter()
    if per_fold:
        best, frames = {}, {}
        for k in folds:
            best[k], frames[f"fold{k}"] = search(
                val[k], space, trials=trials, seed=seed, concurrency=concurrency,
                storage=storage, name=f"{name}-fold{k}", mode=mode,
            )  # fmt: skip
    else:
        joint = scorer(
            {s: p for k in folds for s, p in validation[k][0].items()},
            {s: r for k in folds for s, r in validation[k][1].items()},
        )
        config, frame = search(
            joint, space, trials=trials, seed=seed, concurrency=concurrency,
            storage=storage, name=name, mode=mode,
        )  # fmt: skip
        best, frames = dict.fromkeys(folds, config), {"all": frame}
    search_s = time.perf_counter() - started
    default = {"threshold": DEFAULT_THRESHOLD}

    def pooled(scorers: dict[int, Scorer], configs: Mapping[int, dict]) -> dict:
        counts = {}
        for k in folds:
            counts.update(scorers[k].counts(*postprocessing(configs[k], scorers[k].classes)))
        return scorers[folds[0]].pooled(counts)

    table = {
        "validation_default": pooled(val, dict.fromkeys(folds, default)),
        "validation_tuned": pooled(val, best),
        "test_default": pooled(tst, dict.fromkeys(folds, default)),
        "test_tuned": pooled(tst, best),
    }
    if per_fold:
        table |= {
            f"fold{k}_{split}_{kind}": (val if split == "validation" else tst)[k].scores(
                *postprocessing(default if kind == "default" else best[k])
            )
            for k in folds
            for split in ("validation", "test")
            for kind in ("default", "tuned")
        }
    n_trials = sum(len(f) for f in frames.values())
    summary = {
        "best_config": {f"fold{k}": best[k] for k in folds} if per_fold else best[folds[0]],
        "per_fold": per_fold,
        "scores": table,
        "trials": n_trials,
        "search_s": search_s,
        "trials_per_s": n_trials / search_s,
        "seed": seed,
        "concurrency": concurrency,
        "suite": suite or "dcase2019",
        "mode": mode,
    }
    return summary, frames


def tune_thresholds(
    settings: CVSettings,
    space: SearchSpace,
    *,
    trials: int = 1000,
    seed: int = 0,
    concurrency: int = 1,
    per_fold: bool = False,
    experiment: str | None = None,
    suite: str | None = None,
) -> dict[str, Any]:
    """Search the space on a cv run's validation predictions; apply the best to its test
    splits (:func:`search_folds`), write ``trials.csv``, ``importance.png`` and
    ``summary.json`` under ``<run>/<experiment>/`` (per fold: ``fold<k>/`` for the first two)
    and log them to MLflow.

    ``suite``: optimise and report a metric suite's scores instead of DCASE 2019's; the
    search's folder and MLflow names then carry the suite's name (``thresholds-dcase2022``,
    ``tuned_dcase2022_cv_seld``).

    With ``concurrency`` 1 (the default) the TPE sampler sees every result before the next
    suggestion, so a seed gives the same search every time.
    """
    labels = run_labels(settings)
    if labels.dataset_format != "dcase2019":  # the format's own suite unless another is asked
        suite = suite or get_format(labels.dataset_format).default_suite
        space = space.for_classes(labels.classes)  # per-class parameters over its classes
    elif get_method(settings.experiment.method).tracks > 1:
        # the fast grid scorer holds one direction per class: the 2019 suite counts the rows
        # the method decodes, several per class where it predicts them
        suite = suite or "dcase2019"
    mode = search_mode(space, suite)  # a metric the suite lacks fails before any loading
    if suite is not None:  # as does a suite that cannot score these labels or predictions
        distances = get_method(settings.experiment.method).distances
        rate, classes = labels.label_frames_per_second, labels.num_classes
        problem = label_problem(get_suite(suite), rate, classes, distances)
        if problem:
            raise ConfigError(problem)
    experiment = experiment or ("thresholds-per-fold" if per_fold else "thresholds") + (
        f"-{suite}" if suite else ""
    )
    started = time.time()
    validation = {k: load_split(settings, "validation", (k,)) for k in settings.folds}
    test = {k: load_split(settings, "test", (k,)) for k in settings.folds}
    summary, frames = search_folds(
        validation, test, space, trials=trials, seed=seed, concurrency=concurrency,
        per_fold=per_fold, storage=Path(ray_storage(settings.workspace)),
        name=f"{settings.run}-{experiment}-{int(started)}", suite=suite, labels=labels,
        decode=run_decode(settings),
    )  # fmt: skip
    out_dir = settings.run_dir / experiment
    artifacts: list[tuple[Path, str | None]] = []
    summary["importances"] = {}
    for key, frame in frames.items():
        folder = out_dir if key == "all" else out_dir / key
        exported = export_study(
            frame, space, space.metric, mode, folder, f"{settings.run} {experiment} {key}"
        )
        summary["importances"][key] = exported["importances"]
        for path in (exported["trials_csv"], exported["importance_png"]):
            if path is not None:
                artifacts.append((path, None if key == "all" else key))
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    artifacts.append((out_dir / "summary.json", None))
    _log(settings, experiment, summary, artifacts)
    return summary


def _log(
    settings: CVSettings,
    experiment: str,
    summary: dict[str, Any],
    artifacts: list[tuple[Path, str | None]],
) -> None:
    """A child run of the cv run for the search, and the tuned test scores on the cv run."""
    runs = json.loads(settings.layout.mlflow_runs.read_text())
    client = tracking_client(settings.tracking_uri)
    parent = client.get_run(runs["parent"])
    child = client.create_run(
        parent.info.experiment_id,
        run_name=f"tune-{experiment}",
        tags={
            "mlflow.parentRunId": runs["parent"],
            "kind": f"tune-{experiment}",
            "seed": str(summary["seed"]),
            "per_fold": str(summary["per_fold"]),
        },
    )
    run_id = child.info.run_id
    log_params(client, run_id, flatten(summary["best_config"], "best."))
    for name, scores in summary["scores"].items():
        log_scores(client, run_id, f"{name}_", scores)
    client.log_metric(run_id, "trials_per_s", summary["trials_per_s"])
    for path, folder in artifacts:
        client.log_artifact(run_id, str(path), folder)
    client.set_terminated(run_id, "FINISHED")
    prefix = "tuned_per_fold_cv_" if summary["per_fold"] else "tuned_cv_"
    if summary["suite"] != "dcase2019":
        prefix = prefix.replace("tuned_", f"tuned_{summary['suite'].replace('-', '_')}_")
    log_scores(client, runs["parent"], prefix, summary["scores"]["test_tuned"])
