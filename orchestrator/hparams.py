"""Hyperparameter search: every trial is a cross-validation of the two-stage method.

A Ray Tune experiment with an Optuna searcher (seeded TPE) samples a training config from a
search space (``search_spaces/hparams.yaml``); the trial runs the chosen folds exactly as
``seld-orch cv`` does (per fold SED then DOA on Ray Train) and reports, after every epoch that
all its folds have finished, the mean validation SELD score over its folds; ASHA stops the
trials that fall behind. Iterations ``1..E`` are the SED epochs, ``E+1..2E`` the DOA epochs
(each stage's own validation score, see ``seld.methods.training.evaluate_files``), and iteration
``2E+1`` the two-stage validation SELD score of the thresholded, masked predictions: the
score that ranks the trials. The test splits are never predicted during the search.

Files (``<workspace>/runs/<name>/``): ``tune.json`` (settings and MLflow parent run),
``<trial_id>/`` (each trial's cv run folder), ``trials.csv``, ``importance.png``,
``summary.json``; the Tune experiment itself is in ``<storage>/<name>`` and is
resumed by running the same command again (``Tuner.restore``).

MLflow: a parent run for the search (kind ``tune-hparams``); a child run per trial (kind
``trial``: sampled params, the per-iteration curve, the final validation scores, tag ``best``
on the winner), each with its fold/stage runs below it; then, unless disabled, a ``cv`` run of
the best config on all requested folds that reports the untouched test splits.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from orchestrator.cv import CVSettings
from orchestrator.cv_run import resolved_config, run_cv
from orchestrator.evaluation import check_suites
from orchestrator.layout import RunLayout
from orchestrator.ray_utils import HEAD_NODE
from orchestrator.search_space import SearchSpace
from orchestrator.tracking import (
    flatten,
    get_experiment,
    log_params,
    log_scores,
    tracking_client,
)
from orchestrator.trial import (
    TRIAL_CPUS,
    check_space,
    extract_trial_features,
    run_trial,
    stage_epochs,
    trial_config,
)
from seld.fsutil import atomic_path

METRIC = "val_seld"


def default_concurrency(s: CVSettings) -> int:
    """Trials at once: as many whole cross-validations as the cluster's GPUs (or CPUs) hold,
    each fold job taking its share of a GPU."""
    resources = ray.cluster_resources()
    per_trial = len(s.folds) * s.workers_per_fold
    if s.use_gpu:  # a share of a GPU per job: several trials' folds share each GPU
        return max(1, int(resources.get("GPU", 0) / (per_trial * s.gpus_per_job) + 1e-9))
    return max(1, int(resources.get("CPU", 1) // (per_trial * s.cpus_per_worker)))


def tune_hparams(
    base: CVSettings,
    space: SearchSpace,
    *,
    name: str = "hparams",
    trials: int = 20,
    seed: int = 0,
    concurrency: int | None = None,
    grace_period: int = 1,
    reduction_factor: int = 2,
    final_folds: tuple[int, ...] | None = (1, 2, 3, 4),
    experiment_name: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search ``name``; return its summary (best config, scores, paths).

    ``base.folds`` are the folds each trial cross-validates (a subset is faster);
    ``final_folds`` the folds of the closing cv run of the best config (None: no final run).
    Must be called with Ray initialised.
    """
    say = on_progress or (lambda _msg: None)
    check_space(space, base.experiment)
    check_suites(base)  # a selection suite that cannot score the dataset fails before any work
    started = time.time()
    out_dir = RunLayout.named(base.workspace, name).root
    out_dir.mkdir(parents=True, exist_ok=True)
    client = tracking_client(base.tracking_uri)
    experiment = get_experiment(
        client,
        experiment_name or f"seld-{Path(base.dataset).resolve().name}",
        Path(base.workspace),
    )
    parent_run = _parent_run(client, experiment, base, space, name, trials, seed, out_dir)
    epochs = stage_epochs(base)
    max_t = len(base.stages) * epochs + 1  # every stage's epochs, then the final report
    concurrency = concurrency or default_concurrency(base)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base.to_dict(), name=name, parent_run=parent_run),
        # on the head node, next to the tracking store; its fold jobs' workers take the resources
        {"cpu": TRIAL_CPUS, **HEAD_NODE},
    )
    storage = base.storage_path
    experiment_dir = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(experiment_dir):
        say(f"resuming the search in {experiment_dir}")
        tuner = tune.Tuner.restore(
            experiment_dir, trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="min",
                num_samples=trials,
                search_alg=space.searcher(seed, METRIC),
                scheduler=scheduler,
                max_concurrent_trials=concurrency,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    say(f"{trials} trials, {concurrency} at a time, {len(base.folds)} fold(s) each")
    results = tuner.fit()
    search_s = time.time() - started

    rows = []
    for result in results:
        history = result.metrics_dataframe
        curve = []
        if history is not None and METRIC in history:
            # one value per iteration, even if a resumed trial reported one again
            if "training_iteration" in history:
                history = history.drop_duplicates("training_iteration", keep="last")
            curve = history[METRIC].tolist()
        metrics = result.metrics or {}
        rows.append(
            {
                "trial_id": str(metrics.get("trial_id", "")),
                "config": dict(result.config or {}),
                "iterations": int(metrics.get("training_iteration", 0)),
                "completed": bool(metrics.get("final", 0.0) == 1.0),
                "val_seld": float(metrics.get(METRIC, float("nan"))),
                "error": str(result.error) if result.error else "",
                "curve": curve,
            }
        )
    completed = [r for r in rows if r["completed"]]
    if not completed:
        raise RuntimeError(f"no trial of the search {name!r} finished; see {experiment_dir}")
    best = min(completed, key=lambda r: r["val_seld"])
    _close_trial_runs(client, base, name, rows, best)

    from orchestrator.study import export_study

    # every trial in trials.csv; only the finished ones (their two-stage score) rank parameters
    frame = results.get_dataframe()
    finished = frame["final"] == 1.0 if "final" in frame else frame[METRIC].isna()
    frame["last_reported_val_seld"] = frame.get(METRIC)
    frame.loc[~finished, METRIC] = float("nan")
    frame["status"] = np.where(finished, "COMPLETE", "PRUNED")
    exported = export_study(frame, space, METRIC, "min", out_dir, f"search {name}")
    summary: dict[str, Any] = {
        "name": name,
        "mlflow_parent_run": parent_run,
        "experiment_id": experiment,
        "tracking_uri": base.tracking_uri,
        "seed": seed,
        "scheduler": {
            "name": "ASHA",
            "max_t": max_t,
            "grace_period": grace_period,
            "reduction_factor": reduction_factor,
        },
        "concurrency": concurrency,
        "folds": list(base.folds),
        "trials": rows,
        "best": {
            "trial_id": best["trial_id"],
            "config": best["config"],
            "val_seld": best["val_seld"],
            "overrides": best["config"],
            "experiment": trial_config(base.experiment, best["config"]).to_dict(),
        },
        "importances": exported.get("importances") or {},
        "search_s": search_s,
    }
    client.log_metric(parent_run, f"best_{METRIC}", best["val_seld"])
    log_params(client, parent_run, flatten(best["config"], "best."))
    client.set_tag(parent_run, "best_trial", best["trial_id"])
    for key in ("trials_csv", "importance_png"):
        if exported.get(key):
            client.log_artifact(parent_run, str(exported[key]))

    if final_folds:
        say(f"final cv of the best config (trial {best['trial_id']}) on folds {final_folds}")
        best_config = trial_config(base.experiment, best["config"])
        final = base.with_config(
            best_config.with_overrides({"cv.folds": list(final_folds)}),
            run=f"{name}-best",
            predict_splits=("validation", "test"),
        )
        if (best_config.features, best_config.format) != (base.experiment.features, base.fmt):
            extract_trial_features(final)
        _reuse_trained_folds(base, name, best["trial_id"], final)
        result = run_cv(final, experiment_name=client.get_experiment(experiment).name)
        client.set_tag(result["mlflow_parent_run"], "tuned_by", parent_run)
        summary["final_cv"] = {
            "run": final.run,
            "mlflow_run": result["mlflow_parent_run"],
            "overall": result["overall"],
            "folds": result["folds"],
        }
        log_scores(client, parent_run, "final_cv_", result["overall"])
    path = out_dir / "summary.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    client.log_artifact(parent_run, str(path))
    client.set_terminated(parent_run, "FINISHED")
    return summary


def _parent_run(
    client: MlflowClient,
    experiment: str,
    base: CVSettings,
    space: SearchSpace,
    name: str,
    trials: int,
    seed: int,
    out_dir: Path,
) -> str:
    """The search's MLflow run, created once and found again when the search resumes."""
    path = out_dir / "tune.json"
    if path.exists():
        return json.loads(path.read_text())["mlflow_parent_run"]
    run = client.create_run(
        experiment, run_name=name, tags={"kind": "tune-hparams", "seed": str(seed)}
    )
    run_id = run.info.run_id
    params = {
        "space": space.name,
        "trials": trials,
        "seed": seed,
        "folds": list(base.folds),
        **{f"base.{k}": v for k, v in flatten(resolved_config(base)).items()},
    }
    log_params(client, run_id, flatten(params))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"mlflow_parent_run": run_id, "settings": base.to_dict()}))
    return run_id


def _close_trial_runs(
    client: MlflowClient,
    base: CVSettings,
    name: str,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
) -> None:
    """Trials stopped by ASHA (or failed) end their MLflow runs here; the best is tagged."""
    for row in rows:
        path = RunLayout.named(base.workspace, name).child(row["trial_id"]).mlflow_runs
        if not path.exists():
            continue
        runs = json.loads(path.read_text())
        trial_run = runs["parent"]
        status = "FINISHED" if row["completed"] else ("FAILED" if row["error"] else "KILLED")
        client.set_tag(trial_run, "stopped_early", str(not row["completed"] and not row["error"]))
        client.set_tag(trial_run, "best", str(row is best))
        client.log_metric(trial_run, "iterations", row["iterations"])
        if client.get_run(trial_run).info.status == "RUNNING":
            client.set_terminated(trial_run, status)
        for stages in runs["children"].values():
            for run_id in stages.values():
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, status)


def _reuse_trained_folds(base: CVSettings, name: str, trial_id: str, final: CVSettings) -> None:
    """The best trial already trained its folds with this exact config and seed: copy those
    stages (checkpoints, ``done.json``) into the final run instead of training them again."""
    trial = RunLayout.named(base.workspace, name).child(trial_id)
    for k in set(base.folds) & set(final.folds):
        for stage in final.stages:
            source, target = trial.stage(k, stage), final.layout.stage(k, stage)
            if trial.done(k, stage).exists() and not target.exists():
                shutil.copytree(source, target)
