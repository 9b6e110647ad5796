"""One trial of a hyperparameter search: the search space's sampled config paths applied to the
base experiment config, checked before the search starts; the trial's cross-validation, reported
to Ray Tune after every epoch all its folds have finished (the mean validation score over its
folds), then its method's validation SELD score (see :mod:`orchestrator.hparams`)."""

from __future__ import annotations

import difflib
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from orchestrator.cv import CVSettings
from orchestrator.cv_jobs import run_fold_jobs
from orchestrator.cv_run import create_cv_runs
from orchestrator.evaluation import evaluate_split
from orchestrator.search_space import SearchSpace, SearchSpaceError
from orchestrator.sink import start_sink
from orchestrator.tracking import flatten, log_params, log_scores, tracking_client
from seld.config import ConfigError, ExperimentConfig
from seld.methods.registry import get_stage


def check_space(space: SearchSpace, base: ExperimentConfig, path: str | Path = "") -> None:
    """Every parameter must name a path of the experiment config (``train.lr``, ``method``)
    and every value it can take (its bounds, each choice) must make a valid config of
    ``base``; a :class:`SearchSpaceError` names the first that does not."""
    where = path or space.name
    valid = set(base.leaves())
    for param in space.params:
        if param.name not in valid:
            leaf = param.name.rsplit(".", 1)[-1]
            close = sorted(p for p in valid if p.rsplit(".", 1)[-1] == leaf) or (
                difflib.get_close_matches(param.name, sorted(valid), n=3)
            )
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SearchSpaceError(
                f"{where}: params.{param.name}: not a path of the experiment config "
                f"(e.g. train.lr, model.width, method, features.n_mels){hint}"
            )
        if param.per_class:
            raise SearchSpaceError(
                f"{where}: params.{param.name}.per_class: only thresholds can be per class"
            )
        values = param.choices if param.type == "categorical" else (param.low, param.high)
        for value in values:
            if param.type == "int":
                value = int(value)
            try:
                base.with_overrides({param.name: value}, source=f"{where}: params.{param.name}")
            except ConfigError as exc:
                raise SearchSpaceError(str(exc)) from None


def trial_config(base: ExperimentConfig, params: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment config of a trial: ``base`` with the sampled config paths set."""
    return base.with_overrides(params, source="sampled parameters")


def stage_epochs(s: CVSettings) -> int:
    return s.train_config(s.stages[0]).epochs


def validation_scores(s: CVSettings) -> dict[str, float]:
    """Two-stage SELD scores of the validation splits of the run's folds, together."""
    return evaluate_split(s, "validation").overall.overall.as_dict()


def iteration_metrics(
    history: Mapping[str, Mapping[int, Mapping[str, float]]],
    folds: tuple[int, ...],
    epochs: int,
    iteration: int,
    stages: tuple[str, ...] = ("sed", "doa"),
) -> dict[str, float] | None:
    """The mean over folds of one epoch's validation scores (iteration ``i``: SED epoch ``i``
    for ``i <= epochs``, else DOA epoch ``i - epochs``), or None until every fold has it."""
    stage, epoch = stages[min((iteration - 1) // epochs, len(stages) - 1)], iteration
    epoch = iteration - stages.index(stage) * epochs
    rows = [history.get(f"fold{k}/{stage}", {}).get(epoch) for k in folds]
    if any(row is None for row in rows):
        return None
    # the validation scores of the selection suite (DCASE 2019's: seld, er, f, doa_error,
    # frame_recall; the location-aware ones: seld, er, f, le, lr; ...), which every fold has
    keys = [k for k in rows[0] if k.startswith("val_") and k != "val_selection"]
    out = {key: float(np.mean([_finite(row[key]) for row in rows])) for key in keys}
    # stage_is_doa: a stage that localizes only (the two-stage DOA stage), whose scores are
    # on the reference activity
    return out | {"stage_is_doa": float(get_stage(stage).oracle_activity), "epoch": float(epoch)}


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e3


def run_trial(config: dict[str, Any], base: dict[str, Any], name: str, parent_run: str) -> None:
    """One search trial: a cross-validation with the sampled config, reported per epoch."""
    trial_id = tune.get_context().get_trial_id()
    base_settings = CVSettings.from_dict(base)
    s = base_settings.with_config(
        trial_config(base_settings.experiment, config),
        run=f"{name}/{trial_id}",
        cpus_per_worker=_worker_cpus(base_settings),
        predict_splits=("validation",),
    )
    if (s.experiment.features, s.fmt) != (base_settings.experiment.features, base_settings.fmt):
        extract_trial_features(
            s
        )  # a trial of other features extracts them first (cached by config hash)
    epochs = stage_epochs(s)
    client = tracking_client(s.tracking_uri)
    experiment = client.get_run(parent_run).info.experiment_id
    runs = create_cv_runs(
        client,
        s,
        experiment,
        run_name=f"trial-{trial_id}",
        tags={"mlflow.parentRunId": parent_run, "kind": "trial", "trial_id": trial_id},
    )
    trial_run = runs["parent"]
    log_params(client, trial_run, flatten(config, "hparam."))
    # a trial restarted by Tuner.restore continues after the iterations it already reported
    reported = _reported_iterations(tune.get_checkpoint())
    # a driver killed between logging an iteration and checkpointing it: log each step once
    logged = {m.step for m in client.get_metric_history(trial_run, "iter_val_seld")}

    def on_history(history: Mapping[str, Mapping[int, Mapping[str, float]]]) -> None:
        nonlocal reported
        while reported < len(s.stages) * epochs:
            metrics = iteration_metrics(history, s.folds, epochs, reported + 1, s.stages)
            if metrics is None:
                return
            reported += 1
            if reported not in logged:
                log_scores(client, trial_run, "iter_", metrics, step=reported)
            _report(metrics | {"final": 0.0}, reported)

    sink = start_sink(s.tracking_uri)
    run_fold_jobs(s, {k: runs["children"][str(k)] for k in s.folds}, sink, on_history=on_history)
    on_history(ray.get(sink.get_history.remote()))  # epochs reported after the last poll
    scores = validation_scores(s)
    log_scores(client, trial_run, "val_cv_", scores)
    client.set_terminated(trial_run, "FINISHED")
    _report({f"val_{k}": _finite(v) for k, v in scores.items()} | {"final": 1.0}, reported + 1)


def _report(metrics: dict[str, float], iteration: int) -> None:
    """Report to Tune with a tiny checkpoint: how many iterations this trial has reported."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "progress.json").write_text(json.dumps({"reported": iteration}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _reported_iterations(checkpoint: tune.Checkpoint | None) -> int:
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        return int(json.loads((Path(folder) / "progress.json").read_text())["reported"])


TRIAL_CPUS = 0.01  # the trial function only waits for its fold jobs


def _worker_cpus(s: CVSettings) -> float:
    """CPUs per Train worker inside a trial: the trial's own share comes out of its workers',
    so that a trial fits exactly where its cross-validation would (2 folds on 2 CPUs)."""
    workers = len(s.folds) * s.workers_per_fold
    return max(0.01, s.cpus_per_worker - TRIAL_CPUS / workers)


def extract_trial_features(s: CVSettings) -> None:
    """Extract the features of a trial's config on the running Ray (skipping those cached)."""
    from orchestrator.extract import extract_dataset

    summary = extract_dataset(Path(s.dataset), Path(s.workspace), s.experiment.features, s.fmt)
    if summary.failed:
        raise RuntimeError(f"feature extraction failed: {'; '.join(summary.failed.values())}")
