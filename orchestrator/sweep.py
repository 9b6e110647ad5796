"""``seld-orch sweep``: every variant x seed of a sweep is a full cross-validation, all of them
sharing the Ray cluster, compared side by side when they end.

Each cell (variant x seed) is one Ray task that runs ``run_cv`` for its run folder
``runs/<sweep>/<variant>-seed<seed>``. The fold jobs of every running cell share the cluster: each
stage is a Ray Train job whose placement group Ray grants when its CPUs (or its GPU) are free, so
a larger sweep queues and never oversubscribes. The driver keeps as many cells in flight as the
cluster can train at once, plus one in line (Ray's pattern for bounding pending tasks), so that
hundreds of cells do not park hundreds of idle processes. A worker that crashes mid-stage is
restarted by Ray Train's failure config and resumes from its last epoch; a cell whose process
dies is retried by Ray (``max_retries``) and continues the same way; a cell that fails is marked
FAILED in MLflow and in the comparison, and the others go on.

A rerun of the same sweep continues it: finished cells are kept (their ``metrics.json``),
unfinished ones resume from their checkpoints, and the same MLflow runs are continued.

MLflow: a ``sweep`` run (its spec as params and artifact, the comparison as CSV, markdown and a
plot) with every cell's ``cv`` run as its child (tags ``variant``, ``seed``), and the fold/stage
runs below those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient

from orchestrator.compare import Entry, compare_runs
from orchestrator.compare_report import write_comparison
from orchestrator.cv import CVSettings
from orchestrator.cv_run import run_cv
from orchestrator.extract import extract_dataset
from orchestrator.jsonout import to_json
from orchestrator.layout import RunLayout
from orchestrator.ray_utils import HEAD_NODE
from orchestrator.runs import check_same_settings
from orchestrator.sweep_spec import Cell, Sweep
from orchestrator.tracking import (
    flatten,
    get_experiment,
    log_params,
    log_scores,
    tracking_client,
)
from seld.fsutil import atomic_path


@dataclass
class CellResult:
    variant: str
    seed: int
    run: str
    status: str  # finished | failed | kept (finished in an earlier run of the sweep)
    error: str = ""
    overall: dict[str, float] = field(default_factory=dict)


def cell_settings(base: CVSettings, sweep: Sweep, cell: Cell) -> CVSettings:
    return base.with_config(cell.experiment, run=f"{sweep.name}/{cell.run}")


def check_cells(base: CVSettings, sweep: Sweep) -> None:
    """A cell run folder made with another config (an edited sweep file) is refused before
    anything starts, naming the keys that differ."""
    for cell in sweep.cells:
        s = cell_settings(base, sweep, cell)
        if s.layout.config_json.exists():
            saved = json.loads(s.layout.config_json.read_text())["config"]
            check_same_settings(saved, cell.experiment.to_dict(), s.run, s.run_dir)


def extract_sweep_features(sweep: Sweep, base: CVSettings) -> dict[str, str]:
    """Extract every feature config the sweep's cells need (once each, cached); returns the
    failed recordings (name -> reason). Needs Ray initialised."""
    failed: dict[str, str] = {}
    seen = set()
    for cell in sweep.cells:
        key = (cell.experiment.features, cell.experiment.format)
        if key in seen:
            continue
        seen.add(key)
        summary = extract_dataset(
            Path(base.dataset), Path(base.workspace), cell.experiment.features, key[1]
        )
        failed.update(summary.failed)
    return failed


@ray.remote(num_cpus=0, max_retries=1)
def cv_cell(
    settings: dict[str, Any], experiment_name: str, tags: dict[str, str], suites: list[str]
) -> dict:
    """One cell: the cross-validation of a variant with a seed (continued if it was begun),
    also scored with ``suites``."""
    return run_cv(
        CVSettings.from_dict(settings), experiment_name=experiment_name, tags=tags, suites=suites
    )


def default_cells_in_flight(base: CVSettings, sweep: Sweep) -> int:
    """Cells the cluster trains at once (every fold of each on a GPU, or on its CPUs), plus
    one waiting so no resource idles while a cell finishes."""
    resources = ray.cluster_resources()
    folds = max(len(c.experiment.cv.folds) for c in sweep.cells)
    per_cell = folds * base.workers_per_fold
    if base.use_gpu:
        return max(1, int(resources.get("GPU", 0) / (per_cell * base.gpus_per_job) + 1e-9)) + 1
    return max(1, int(resources.get("CPU", 1) // (per_cell * base.cpus_per_worker))) + 1


def _sweep_run(client: MlflowClient, experiment: str, sweep: Sweep, layout: RunLayout) -> str:
    """The sweep's MLflow run, created once and found again when the sweep continues."""
    path = layout.sweep_json
    if path.exists():
        return json.loads(path.read_text())["mlflow_run"]
    run = client.create_run(
        experiment, run_name=sweep.name, tags={"kind": "sweep", "sweep": sweep.name}
    )
    params = {"source": sweep.source, "seeds": list(sweep.seeds)}
    params |= {f"variant.{v.name}": v.overrides or v.config for v in sweep.variants}
    log_params(client, run.info.run_id, flatten(params))
    layout.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"mlflow_run": run.info.run_id, "sweep": sweep.to_dict()}))
    client.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


def _mark_failed(
    client: MlflowClient, experiment: str, s: CVSettings, tags: dict[str, str], error: str
) -> None:
    """A failed cell's cv run and its unfinished stage runs end FAILED, with the reason; a cell
    that failed before its cv run existed (its data, say) gets one, so the tree shows it."""
    if s.layout.mlflow_runs.exists():
        runs = json.loads(s.layout.mlflow_runs.read_text())
        stage_runs = [r for stages in runs["children"].values() for r in stages.values()]
        run_ids = [runs["parent"], *stage_runs]
    else:
        run = client.create_run(experiment, run_name=s.run, tags={**tags, "kind": "cv"})
        log_params(client, run.info.run_id, flatten(dict(s.config)))
        run_ids = [run.info.run_id]
    client.set_tag(run_ids[0], "error", error[:5000])
    for run_id in run_ids:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")


def run_sweep(
    sweep: Sweep,
    base: CVSettings,
    *,
    experiment_name: str | None = None,
    cells_in_flight: int | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) every cell of ``sweep`` on the running Ray with ``base``'s dataset,
    workspace and resources; return the summary (cells, comparison, paths). Features must
    have been extracted (:func:`extract_sweep_features`)."""
    say = on_progress or (lambda _msg: None)
    started = time.time()
    check_cells(base, sweep)
    layout = RunLayout.named(base.workspace, sweep.name)
    client = tracking_client(base.tracking_uri)
    experiment = get_experiment(
        client, experiment_name or f"seld-{Path(base.dataset).resolve().name}", base.workspace
    )
    sweep_run = _sweep_run(client, experiment, sweep, layout)
    name = client.get_experiment(experiment).name
    gcs = ray.get_runtime_context().gcs_address
    task = cv_cell.options(
        resources=HEAD_NODE,  # next to the tracking store, as the cv driver would be
        runtime_env={"env_vars": {"RAY_ADDRESS": gcs}},
    )

    def cell_tags(cell: Cell) -> dict[str, str]:
        tags = {"mlflow.parentRunId": sweep_run, "sweep": sweep.name}
        return tags | {
            "variant": cell.variant,
            "seed": str(cell.seed),
            "method": cell.experiment.method,
        }

    results: dict[str, CellResult] = {}
    todo = []
    for cell in sweep.cells:
        s = cell_settings(base, sweep, cell)
        if s.layout.metrics_json.exists():
            overall = json.loads(s.layout.metrics_json.read_text())["overall"]
            results[cell.run] = CellResult(cell.variant, cell.seed, s.run, "kept", "", overall)
        else:
            todo.append((cell, s))
    limit = cells_in_flight or default_cells_in_flight(base, sweep)
    say(f"{len(sweep.cells)} cells ({len(results)} finished earlier), {limit} in flight at most")
    pending: dict[Any, tuple[Cell, CVSettings]] = {}
    try:
        while todo or pending:
            while todo and len(pending) < limit:
                cell, s = todo.pop(0)
                ref = task.remote(s.to_dict(), name, cell_tags(cell), list(sweep.suites))
                pending[ref] = (cell, s)
                say(f"{cell.run}: started")
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell, s = pending.pop(ready[0])
            try:
                summary = ray.get(ready[0])
                results[cell.run] = CellResult(
                    cell.variant, cell.seed, s.run, "finished", "", summary["overall"]
                )
                say(f"{cell.run}: finished, cv SELD {summary['overall']['seld']:.3f}")
            except (ray.exceptions.RayError, Exception) as exc:  # one cell fails, not the sweep
                error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                results[cell.run] = CellResult(cell.variant, cell.seed, s.run, "failed", error)
                _mark_failed(client, experiment, s, cell_tags(cell), str(exc))
                say(f"{cell.run}: FAILED: {error}")
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        client.set_terminated(sweep_run, "KILLED")
        raise
    ordered = [results[c.run] for c in sweep.cells]
    comparison = compare_runs(
        [
            Entry(r.variant, r.seed, RunLayout.named(base.workspace, r.run))
            for r in ordered
            if r.status != "failed"
        ],
        published=sweep.published(),
        failed=[(r.variant, r.seed, r.error) for r in ordered if r.status == "failed"],
    )
    files = write_comparison(comparison, layout.root, title=f"sweep {sweep.name}")
    for path in files.values():
        client.log_artifact(sweep_run, str(path))
    for suite in (s for s in sweep.suites if s != comparison.suite):  # one comparison a suite
        other = compare_runs(
            [Entry(r.variant, r.seed, RunLayout.named(base.workspace, r.run)) for r in ordered
             if r.status != "failed"],
            failed=[(r.variant, r.seed, r.error) for r in ordered if r.status == "failed"],
            suite=suite,
        )  # fmt: skip
        written = write_comparison(
            other, layout.root, title=f"sweep {sweep.name}, {suite}", stem=f"comparison-{suite}"
        )
        for kind, path in written.items():
            files[f"{kind}-{suite}"] = path
            client.log_artifact(sweep_run, str(path))
    for row in comparison.rows:
        log_scores(client, sweep_run, f"{row.variant}.mean_", row.mean)
    failed = [r for r in ordered if r.status == "failed"]
    client.set_tag(sweep_run, "failed_cells", str(len(failed)))
    summary = {
        "sweep": sweep.name,
        "mlflow_run": sweep_run,
        "experiment_id": experiment,
        "tracking_uri": base.tracking_uri,
        "cells": [vars(r) for r in ordered],
        "comparison": comparison.to_dict(),
        "files": {k: str(v) for k, v in files.items()},
        "elapsed_s": time.time() - started,
    }
    with atomic_path(layout.summary_json) as tmp:
        tmp.write_text(to_json(summary))
    client.log_artifact(sweep_run, str(layout.summary_json))
    client.set_terminated(sweep_run, "FAILED" if len(failed) == len(ordered) else "FINISHED")
    return summary
