"""Sweep commands: ``sweep`` (many cross-validations at once) and ``compare`` (side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import (
    RESULTS,
    TUNING,
    AddressOpt,
    DatasetOpt,
    EpochsOpt,
    GpuOpt,
    GpusPerJobOpt,
    JsonOpt,
    SetOpt,
    StorageOpt,
    TrackingUriOpt,
    WorkspaceOpt,
    app,
    dataset_overrides,
    fold_numbers,
    gpu_share,
    new_cv_settings,
)
from orchestrator.cli.render import console, err_console, print_comparison
from orchestrator.jsonout import to_json


@app.command(rich_help_panel=TUNING)
def sweep(
    spec: Annotated[
        str, typer.Argument(help="A shipped sweep (tiny-table, paper-table) or a sweep YAML file.")
    ],
    dataset: DatasetOpt,
    workspace: WorkspaceOpt = Path("workspace"),
    sets: SetOpt = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds (replace the sweep's).")
    ] = None,
    folds: Annotated[
        str | None, typer.Option("--folds", help="Comma-separated folds of every cell (cv.folds).")
    ] = None,
    epochs: EpochsOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Run folder under runs/ (default: the sweep's).")
    ] = None,
    address: AddressOpt = None,
    gpu: GpuOpt = False,
    gpus_per_job: GpusPerJobOpt = None,
    cpus_per_worker: Annotated[
        float, typer.Option("--cpus-per-worker", min=0.01, help="CPUs of each fold job's worker.")
    ] = 1.0,
    in_flight: Annotated[
        int | None,
        typer.Option("--in-flight", min=1, help="Cells at once (default: what the cluster holds)."),
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    storage: StorageOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Every variant x seed of a sweep as a full cross-validation, all sharing the Ray cluster.

    Then the comparison table (mean ± sd over seeds, paired bootstrap) in the terminal, in the
    sweep's folder and in MLflow.

    Every cell's config is checked before anything starts. Rerunning the same command continues
    the sweep: finished cells are kept, unfinished ones resume from their checkpoints. Exit 1 if
    a cell failed (the others still finish)."""
    from orchestrator.ray_utils import ray_session
    from orchestrator.sweep import extract_sweep_features, run_sweep
    from orchestrator.sweep_spec import load_sweep

    overrides = [*dataset_overrides(dataset, sets, folds, None), *(sets or [])]
    if folds is not None:
        overrides.append(f"cv.folds={list(fold_numbers(folds))}")
    if epochs is not None:
        overrides += [f"train.epochs={epochs}", "train.steps=null"]
    seed_list = None if seeds is None else list(fold_numbers(seeds))
    spec_ = load_sweep(spec, overrides, seeds=seed_list, name=name)
    base = new_cv_settings(
        dataset,
        workspace,
        spec_.cells[0].experiment,
        tracking_uri,
        run=spec_.name,
        gpus_per_job=gpu_share(gpu, gpus_per_job),
        cpus_per_worker=cpus_per_worker,
        storage=storage,
    )
    say = (lambda _m: None) if json_out else (lambda m: err_console.print(m, highlight=False))
    with ray_session(address):
        failed = extract_sweep_features(spec_, base)
        if failed:
            for reason in failed.values():
                err_console.print(f"[red]failed:[/red] {reason}", soft_wrap=True)
            err_console.print("[red]error:[/red] fix or remove the recordings above first")
            raise typer.Exit(1)
        result = run_sweep(spec_, base, cells_in_flight=in_flight, on_progress=say)
    if json_out:
        console.print_json(to_json(result))
    else:
        print_comparison(console, result["comparison"], f"sweep {spec_.name}")
        console.print(f"comparison: {result['files']['md']}", highlight=False)
    if any(c["status"] == "failed" for c in result["cells"]):
        raise typer.Exit(1)


@app.command(rich_help_panel=RESULTS)
def compare(
    targets: Annotated[list[str], typer.Argument(help="Sweeps or cv runs (names under runs/).")],
    workspace: WorkspaceOpt = Path("workspace"),
    by: Annotated[
        str | None, typer.Option("--by", help="Also per ov or per ir (one table per value).")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Compare every variant with this one (default: best)."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=100, help="Bootstrap resamples.")] = 2000,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write the table as CSV to this file.")
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(
            "--suite",
            help="Compare the scores of another metric suite the runs were also scored with "
            "(cv --suite, or a sweep's suites); default: their own.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Cv runs and sweeps side by side, as mean ± sd over seeds, with a paired bootstrap.

    ER, F, DOA error, frame recall and SELD as mean ± sd over seeds, published numbers beside a
    paper sweep, and a paired bootstrap of SELD over the recordings (a difference whose interval
    holds 0 is shown as within noise)."""
    from orchestrator.compare import GROUPS, compare_runs, resolve
    from orchestrator.compare_report import to_csv
    from seld.errors import ConfigError

    if by is not None and by not in GROUPS:
        raise ConfigError(f"--by {by!r}: one of {', '.join(GROUPS)}")
    entries, missing, published = resolve(workspace, targets)
    comparison = compare_runs(
        entries,
        published=published,
        failed=missing,
        baseline=baseline,
        samples=samples,
        suite=suite,
    )
    if csv_out is not None:
        from seld.fsutil import atomic_path

        with atomic_path(csv_out) as tmp:
            tmp.write_text(to_csv(comparison))
    if json_out:
        console.print_json(to_json(comparison.to_dict()))
        return
    print_comparison(console, comparison.to_dict(), " vs ".join(targets), by=by)
