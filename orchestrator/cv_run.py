"""The driver of ``seld-orch cv``: MLflow runs, fold jobs, cross-validated scores, artifacts.

Run folder (``<workspace>/runs/<run>``): per fold the stage checkpoints and cached predictions
(see ``orchestrator.fold``), plus ``mlflow_runs.json`` (so a rerun continues the same MLflow
runs), ``submissions/`` (every test recording's CSV, all folds together) and ``metrics.json``.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient

from orchestrator.cv import CVSettings
from orchestrator.cv_jobs import run_fold_jobs, warm_fold_workers
from orchestrator.evaluation import (
    check_suites,
    evaluate_split,
    evaluate_split_suite,
    split_ceiling,
    suite_reports,
)
from orchestrator.extract import current_inputs
from orchestrator.jsonout import to_json
from orchestrator.ray_utils import ray_session
from orchestrator.runs import RunLock, check_same_settings, interrupt
from orchestrator.sink import start_sink
from orchestrator.tracking import (
    flatten,
    get_experiment,
    log_params,
    log_scores,
    provenance_tags,
    tracking_client,
)
from seld.data.fingerprint import combined
from seld.data.formats import dataset_format_of, dataset_recordings
from seld.fsutil import atomic_path, remove_stale_temporaries
from seld.metrics.scores import ScoreReport
from seld.metrics.suites import MetricSuite, get_suite
from seld.serving.plots import plot_recording


def dataset_inputs(s: CVSettings) -> str:
    """One fingerprint of the run's development recordings (audio and metadata)."""
    recordings = dataset_recordings(s.dataset, s.fmt, "dev", required=True)
    return combined({r.stem: current_inputs(r) or {} for r in recordings})


def resolved_config(s: CVSettings) -> dict[str, Any]:
    """The whole configuration of a cv run (its ``config.json``): the experiment config, how
    the run executes it, and the fingerprint of the data (so a run is never continued on
    changed recordings)."""
    run = {k: v for k, v in s.to_dict().items() if k != "config"}
    return {"config": dict(s.config), "run": run, "inputs": {"dataset": dataset_inputs(s)}}


def _compared(config: dict[str, Any]) -> dict[str, Any]:
    """What must match for a run to be continued, keyed as the user writes it (``train.lr``,
    ``run.workers_per_fold``)."""
    return {**config["config"], "run": config["run"], "inputs": config["inputs"]}


def settings_params(s: CVSettings) -> dict[str, str]:
    """MLflow params of a cv run: every leaf of its experiment config under its dotted path
    (``train.lr``, ``features.n_mels``), how it ran (``run.*``) and its data (``inputs.*``)."""
    return flatten(_compared(resolved_config(s)))


def settings_tags(s: CVSettings) -> dict[str, str]:
    """Tags that find a run by its config: the preset or file name and the config's hash."""
    experiment = s.experiment
    return {
        "config": experiment.name,
        "config_hash": experiment.hash(),
        "method": experiment.method,
    }


@contextmanager
def claimed_run(s: CVSettings, overwrite: bool = False) -> Iterator[Path]:
    """Hold the run folder's lock and make sure it is this configuration's: a new folder gets
    ``config.json`` before any work; an existing one with other settings is refused (or, with
    ``overwrite``, emptied first)."""
    with RunLock(s.run_dir):
        config_path = s.layout.config_json
        config = resolved_config(s)
        if overwrite:
            for child in s.run_dir.iterdir():
                if child.name not in (".lock", "lock.json"):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif config_path.exists():
            old = _compared(json.loads(config_path.read_text()))
            check_same_settings(old, _compared(config), s.run, s.run_dir)
        # what a killed run was writing (a checkpoint, predictions) is left as temporaries
        remove_stale_temporaries(s.run_dir, recursive=True)
        with atomic_path(config_path) as tmp:
            tmp.write_text(json.dumps(config, indent=2))
        with atomic_path(s.layout.config_yaml) as tmp:
            tmp.write_text(s.experiment.to_yaml())
        yield s.run_dir


@contextmanager
def killed_on_interrupt(client: MlflowClient, runs: dict[str, Any]) -> Iterator[None]:
    """SIGTERM ends the block like Ctrl-C; either marks the run's MLflow runs KILLED (the
    ``ray_session`` inside is left on the way out, which stops the local Ray)."""
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        stage_runs = (r for stages in runs["children"].values() for r in stages.values())
        for run_id in [runs["parent"], *stage_runs]:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def create_cv_runs(
    client: MlflowClient,
    s: CVSettings,
    experiment: str,
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Create the cv run (its config as params) and a child run per fold and stage, or reuse
    those of an interrupted run of the same name. ``tags`` may nest the cv run under another
    (``mlflow.parentRunId``) and set its ``kind`` (``cv`` by default)."""
    path = s.layout.mlflow_runs
    if path.exists():
        return json.loads(path.read_text())
    parent = client.create_run(
        experiment,
        run_name=run_name or s.run,
        tags={**provenance_tags(), **settings_tags(s), "kind": "cv", **(tags or {})},
    )
    pid = parent.info.run_id
    log_params(client, pid, settings_params(s))
    children = {
        str(k): {
            stage: client.create_run(
                experiment,
                run_name=f"fold{k}-{stage}",
                tags={"mlflow.parentRunId": pid, "fold": str(k), "stage": stage, "kind": "stage"},
            ).info.run_id
            for stage in s.stages
        }
        for k in s.folds
    }
    runs = {"parent": pid, "children": children}
    s.run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(runs, indent=2))
    return runs


def cross_validated_scores(s: CVSettings) -> tuple[ScoreReport, dict[int, ScoreReport]]:
    """Score every fold's test predictions and all folds together; write the submissions and
    a prediction-versus-reference figure of each fold's first test recording."""

    result = evaluate_split(s, "test", submissions=s.layout.submissions)
    for k, pairs in result.pairs.items():
        stem = sorted(pairs)[0]
        ref, rows, frames = pairs[stem]
        plot_recording(ref, rows, frames, f"{stem} (fold {k} test)", s.layout.plots / f"{stem}.png")
    return result.overall, result.per_fold


def run_cv(
    settings: CVSettings,
    *,
    address: str | None = None,
    experiment_name: str | None = None,
    on_status: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
    suites: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run (or continue) a cross-validation and return its summary.

    ``suites``: metric suites (:mod:`seld.metrics.suites`) to score the test splits with
    besides DCASE 2019's, in the summary (``suites``, with jackknife intervals and per-class
    scores) and in MLflow (``cv_<suite>_<metric>``).

    The run folder is locked for the whole run; continuing a run made with other settings is
    refused unless ``overwrite`` (which starts it again from scratch). SIGTERM or Ctrl-C marks
    its MLflow runs KILLED. ``tags`` go on its MLflow run (a sweep's cell: its parent run,
    variant and seed)."""
    chosen = [get_suite(name) for name in suites]  # an unknown suite fails before any work
    check_suites(settings, chosen)  # so does one that cannot score this run
    with claimed_run(settings, overwrite):
        return _run_cv(settings, address, experiment_name, on_status, tags, chosen)


def _run_cv(
    settings: CVSettings,
    address: str | None,
    experiment_name: str | None,
    on_status: Callable[[dict[str, dict[str, Any]]], None] | None,
    tags: dict[str, str] | None = None,
    suites: list[MetricSuite] | None = None,
) -> dict[str, Any]:
    started = time.time()
    # with Ray already up (the CLI starts it), the imports overlap the MLflow set-up too
    warmed = ray.is_initialized() and bool(warm_fold_workers(settings))
    client = tracking_client(settings.tracking_uri)
    experiment = get_experiment(
        client,
        experiment_name or f"seld-{Path(settings.dataset).resolve().name}",
        Path(settings.workspace),
    )
    runs = create_cv_runs(client, settings, experiment, tags=tags)
    with killed_on_interrupt(client, runs), ray_session(address):
        if not warmed:
            warm_fold_workers(settings)  # imports overlap the sink's start
        sink = start_sink(settings.tracking_uri)
        fold_results = run_fold_jobs(
            settings, {k: runs["children"][str(k)] for k in settings.folds}, sink, on_status
        )
    pid = runs["parent"]
    dataset_format = dataset_format_of(settings.dataset)
    if dataset_format.name == "dcase2019":
        overall, per_fold = cross_validated_scores(settings)
        scores = overall.overall.as_dict()
        fold_scores = {str(k): r.overall.as_dict() for k, r in per_fold.items()}
        groups = {g: {str(k): v.as_dict() for k, v in d.items()} for g, d in overall.groups.items()}
        with atomic_path(settings.layout.test_counts) as tmp:
            tmp.write_text(json.dumps({name: asdict(c) for name, c in overall.counts.items()}))
    else:  # scored with the format's own suite, its CSVs in the format's output form
        default = get_suite(dataset_format.default_suite)
        result = evaluate_split_suite(
            settings, "test", default, submissions=settings.layout.submissions
        )
        scores = result.overall.overall
        fold_scores = {str(k): r.overall for k, r in result.per_fold.items()}
        groups = {}
        suites = [s for s in suites or [] if s.name != default.name]
        ceiling = asdict(split_ceiling(settings, "test", default))
        with atomic_path(settings.layout.test_counts) as tmp:
            tmp.write_text(json.dumps(result.overall.recording_counts()))
    log_scores(client, pid, "cv_", scores)
    for k, fold in fold_scores.items():
        log_scores(client, pid, f"fold{k}_", fold)
    for group, per_key in groups.items():
        for key, values in per_key.items():
            log_scores(client, pid, f"{group}{key}_", values)
    extra = suite_reports(settings, "test", suites) if suites else {}
    for name, report in extra.items():  # the other suites' counts, for paired comparisons
        with atomic_path(settings.layout.suite_counts(name)) as tmp:
            tmp.write_text(json.dumps(report.recording_counts()))
    if dataset_format.name != "dcase2019":
        extra = {default.name: result.overall, **extra}
    for name, report in extra.items():
        log_scores(client, pid, f"cv_{name.replace('-', '_')}_", report.overall)
    summary = {
        "run": settings.run,
        "mlflow_parent_run": pid,
        "experiment_id": experiment,
        "tracking_uri": settings.tracking_uri,
        "dataset_format": dataset_format.name,
        "suite": dataset_format.default_suite,
        "overall": scores,
        "groups": groups,
        "folds": fold_scores,
        "suites": {
            name: {k: v for k, v in r.as_dict().items() if k != "per_file"}
            for name, r in extra.items()
        },
        "stages": {str(r["fold"]): r["stages"] for r in fold_results},
        "elapsed_s": time.time() - started,
    }
    if dataset_format.name != "dcase2019":  # what one direction per class can reach at best
        summary["ceiling"] = ceiling
    metrics_path = settings.layout.metrics_json  # last: a run with metrics.json is complete
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(to_json(summary))
    client.log_artifact(pid, str(metrics_path))
    client.log_artifact(pid, str(settings.layout.config_json))
    client.log_artifact(pid, str(settings.layout.config_yaml))
    client.log_artifacts(pid, str(settings.layout.submissions), "submissions")
    if settings.layout.plots.is_dir():  # DCASE 2019 runs draw a figure per fold
        client.log_artifacts(pid, str(settings.layout.plots), "plots")
    for k in settings.folds:
        for stage in settings.stages:
            best = settings.layout.checkpoint(k, stage)
            client.log_artifact(pid, str(best), f"checkpoints/fold{k}/{stage}")
    for stages in runs["children"].values():  # stages read back from an earlier run
        for run_id in stages.values():
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return summary
