"""Searches: post-processing of a finished run, and hyperparameters with cross-validations as
trials, on Ray Tune with an Optuna searcher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import (
    AddressOpt,
    ConfigFormatOpt,
    ConfigOpt,
    DatasetOpt,
    EpochsOpt,
    GpuOpt,
    GpusPerJobOpt,
    JsonOpt,
    ProtocolOpt,
    RunOpt,
    SeedOpt,
    SetOpt,
    StorageOpt,
    TrackingUriOpt,
    WorkspaceOpt,
    cv_settings,
    experiment_config,
    extract_missing,
    fold_numbers,
    gpu_share,
    new_cv_settings,
    run_name,
    tune_app,
)
from orchestrator.cli.render import (
    console,
    err_console,
    hparams_table,
    scores_table,
    suite_scores_table,
)
from orchestrator.jsonout import to_json
from orchestrator.search_space import shipped_space
from seld.metrics.scores import SeldScores
from seld.metrics.suites import SUITES, get_suite

THRESHOLDS_SPACE = shipped_space("thresholds.yaml")
HPARAMS_SPACE = shipped_space("hparams.yaml")


@tune_app.command("thresholds")
def tune_thresholds_command(
    run: RunOpt = "cv",
    workspace: WorkspaceOpt = Path("workspace"),
    space: Annotated[Path, typer.Option("--space", help="Search-space YAML.")] = THRESHOLDS_SPACE,
    trials: Annotated[int, typer.Option("--trials", min=1)] = 1000,
    seed: SeedOpt = 0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Trials at once (1 = reproducible).")
    ] = 1,
    per_fold: Annotated[
        bool,
        typer.Option(
            "--per-fold",
            help="Search each fold's validation split alone (--trials each) and apply each "
            "fold's best to its own test split; default: one search over all folds.",
        ),
    ] = False,
    address: AddressOpt = None,
    suite: Annotated[
        str | None,
        typer.Option(
            "--suite",
            help=f"Optimise and report this metric suite's scores ({', '.join(SUITES)}) "
            "instead of the dataset format's default; the space's metric in that score's "
            "direction.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Tune SED thresholds and post-processing on a finished cv run's validation predictions,
    then apply the best to its test splits (no retraining)."""
    from orchestrator.ray_utils import ray_session
    from orchestrator.search_space import load_search_space
    from orchestrator.tune import tune_thresholds

    settings = cv_settings(workspace, run)
    search_space = load_search_space(space)
    with ray_session(address):
        summary = tune_thresholds(
            settings,
            search_space,
            trials=trials,
            seed=seed,
            concurrency=concurrency,
            per_fold=per_fold,
            suite=suite,
        )
    if json_out:
        console.print_json(to_json(summary))
        return
    title = f"thresholds of run {run}: before and after tuning"
    shown = {
        name.replace("_", ", "): v
        for name, v in summary["scores"].items()
        if not name.startswith("fold")  # per-fold rows stay in the JSON and MLflow
    }
    scored = summary["suite"]  # a STARSS run's is its format's default suite
    if scored == "dcase2019":
        rows = {name: SeldScores(**v) for name, v in shown.items()}
        console.print(scores_table(title, rows, ""))
    else:
        console.print(suite_scores_table(get_suite(scored), shown, f"{scored}: {title}"))
    console.print(
        f"best: {summary['best_config']}; {summary['trials']} trials in "
        f"{summary['search_s']:.1f} s ({summary['trials_per_s']:.1f} trials/s)"
    )


@tune_app.command("hparams")
def tune_hparams_command(
    dataset: DatasetOpt,
    space: Annotated[Path, typer.Option("--space", help="Search-space YAML.")] = HPARAMS_SPACE,
    trials: Annotated[int, typer.Option("--trials", min=1)] = 20,
    name: Annotated[
        str,
        typer.Option("--name", help="The search's name; rerun it to resume.", callback=run_name),
    ] = "hparams",
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    folds: Annotated[
        str | None,
        typer.Option("--folds", help="Folds each trial cross-validates (comma-separated)."),
    ] = None,
    final_folds: Annotated[
        str,
        typer.Option("--final-folds", help="Folds of the final cv of the best config; '' = none."),
    ] = "1,2,3,4",
    workspace: WorkspaceOpt = Path("workspace"),
    protocol: ProtocolOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = 0,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", min=1, help="Trials at once (default: from the cluster)."),
    ] = None,
    grace_period: Annotated[
        int, typer.Option("--grace-period", min=1, help="ASHA: iterations before any stop.")
    ] = 1,
    address: AddressOpt = None,
    gpu: GpuOpt = False,
    gpus_per_job: GpusPerJobOpt = None,
    tracking_uri: TrackingUriOpt = None,
    storage: StorageOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Search training hyperparameters: each trial a cross-validation of the two-stage method,
    early-stopped by ASHA on validation SELD; then a cv of the best config on the test splits."""
    from orchestrator.hparams import tune_hparams
    from orchestrator.ray_utils import ray_session
    from orchestrator.search_space import load_search_space
    from orchestrator.trial import check_space

    experiment = experiment_config(
        config,
        sets,
        fmt=fmt,
        epochs=epochs,
        seed=seed,
        folds=folds,
        protocol=protocol,
        dataset=dataset,
    )
    search_space = load_search_space(space)
    check_space(search_space, experiment, space)
    settings = new_cv_settings(
        dataset,
        workspace,
        experiment,
        tracking_uri,
        run=name,
        gpus_per_job=gpu_share(gpu, gpus_per_job),
        storage=storage,
    )
    # the dashboard's state API lets Ray Train free the CPUs of trials that ASHA stops
    with ray_session(address, dashboard=True) as dashboard_url:
        if dashboard_url:
            err_console.print(f"Ray dashboard: http://{dashboard_url}")
        extract_missing(dataset, workspace, experiment)
        summary = tune_hparams(
            settings,
            search_space,
            name=name,
            trials=trials,
            seed=seed,
            concurrency=concurrency,
            grace_period=grace_period,
            final_folds=fold_numbers(final_folds) if final_folds else None,
            on_progress=lambda msg: err_console.print(f"[bold]{msg}[/bold]"),
        )
    if json_out:
        console.print_json(to_json(summary))
        return
    console.print(hparams_table(summary, name))
    if "final_cv" in summary:
        final = summary["final_cv"]
        rows = {f"fold {k}": SeldScores(**v) for k, v in final["folds"].items()}
        rows["all test splits"] = SeldScores(**final["overall"])
        console.print(scores_table(f"best config, cv run {final['run']}", rows, ""))
    console.print(
        f"best trial {summary['best']['trial_id']}: {summary['best']['config']}; MLflow run "
        f"{summary['mlflow_parent_run']} ({summary['search_s']:.0f} s); "
        f"`seld-orch ui --workspace {workspace}`"
    )
