"""Prediction commands: new recordings and evaluation sets with a run's fold ensemble (or an
exported model), and the export of a run's models to one file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import (
    RESULTS,
    AddressOpt,
    JsonOpt,
    NumCpusOpt,
    WorkspaceOpt,
    _writable_workspace,
    app,
    run_name,
)
from orchestrator.cli.render import (
    console,
    err_console,
    print_score_report,
    print_suite_reports,
    progress_bar,
)
from orchestrator.jsonout import to_json

if TYPE_CHECKING:
    from orchestrator.predict import PredictSummary


def _optional_workspace(workspace: Path | None) -> Path | None:
    return None if workspace is None else _writable_workspace(workspace)


def _optional_run(name: str | None) -> str | None:
    return None if name is None else run_name(name)


@app.command(rich_help_panel=RESULTS)
def predict(
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--input",
            help="A DCASE 2019 layout root (its <format>_eval, else <format>_dev recordings), "
            "a STARSS23 or TAU-NIGENS 2020/2021 root (every <format>_dev recording), a folder "
            "of WAV files, or a file (repeatable).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the CSVs and plots.")],
    run: Annotated[
        str | None,
        typer.Option("--run", help="A finished cv run of the workspace.", callback=_optional_run),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="An exported model file (seld-orch export).")
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            help="The run's workspace (default: workspace), where features are cached; with "
            "--model, caches features there when given.",
            callback=_optional_workspace,
        ),
    ] = None,
    fold: Annotated[
        int | None,
        typer.Option("--fold", min=1, help="One fold's models instead of the ensemble."),
    ] = None,
    post: Annotated[
        str,
        typer.Option(
            "--post",
            help="Post-processing: auto (tuned when the run has a threshold search), default "
            "(the config's) or tuned.",
        ),
    ] = "auto",
    ref: Annotated[
        Path | None,
        typer.Option(
            "--ref",
            help="Reference metadata folder (<name>.csv there or one sub-folder down): score "
            "like seld-orch score, with the default suite of the model's dataset format.",
        ),
    ] = None,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="One PNG per recording.")
    ] = True,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict recordings with a run's fold ensemble (or one fold, or an exported model).

    One submission CSV and one plot per recording. The CSV has the form of the model's
    dataset format: DCASE 2019's frame, class, azimuth, elevation on the 10-degree grid, or the
    2020-2024 track-wise frame, class, track, azimuth, elevation as predicted.

    A recording that cannot be read, has not 4 channels or is shorter than 1 s is named with
    its reason and the others are predicted; the exit code is then 1.
    """
    from orchestrator.predict import PredictRequest, predict_recordings

    request = PredictRequest(
        inputs=tuple(inputs),
        out=out,
        run=run,
        model=model,
        workspace=workspace,
        folds=None if fold is None else (fold,),
        post=post,
        ref=ref,
        plots=plots,
        device=device,
        address=address,
        num_cpus=num_cpus,
    )
    with progress_bar(transient=json_out) as bar:
        tasks = {
            "features": bar.add_task("features", total=None, current=""),
            "predicted": bar.add_task("predicting", total=None, current=""),
        }

        def show(step: str, name: str, ok: bool) -> None:
            bar.update(tasks[step], advance=1, current=name if ok else f"[red]failed {name}")

        def total(count: int) -> None:
            for task in tasks.values():
                bar.update(task, total=count)

        summary = predict_recordings(request, progress=show, on_inputs=total)
    if json_out:
        console.print_json(to_json(summary.as_dict()))
    else:
        print_prediction(summary)
    if summary.failed:
        raise typer.Exit(1)


def print_prediction(summary: PredictSummary) -> None:
    """Failures (one line each, file first), scores with a reference, then what was written."""
    for reason in summary.failed.values():
        err_console.print(f"[red]failed:[/red] {reason}", soft_wrap=True, highlight=False)
    from seld.data.formats import get_format
    from seld.metrics.suites import SuiteReport, get_suite

    m = summary.model
    if isinstance(summary.scores, SuiteReport):
        suite, classes = get_suite(summary.scores.suite), get_format(m["dataset_format"]).classes
        print_suite_reports(console, [suite], [summary.scores], str(summary.out), classes)
    elif summary.scores is not None:
        print_score_report(console, summary.scores, f"scores of {summary.out}")
    t = summary.timings
    steps = ", ".join(
        f"{k} {t[k]:.1f} s" for k in ("features", "model", "postprocessing", "csv", "plots")
    )
    params = ", ".join(f"{k} {v:g}" for k, v in m.items() if k.startswith(("threshold", "median")))
    console.print(
        f"{m['source']}: {m['method']} on {m['dataset_format']}, folds {m['folds']}, "
        f"{m['postprocessing']} "
        f"post-processing ({params})",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"{len(summary.written)} recording(s) predicted, {len(summary.failed)} failed, "
        f"{summary.cached} feature file(s) from the cache; {len(summary.written)} CSV(s) and "
        f"{len(summary.plots)} plot(s) in {summary.out} in {t['total']:.1f} s ({steps})",
        soft_wrap=True,
        highlight=False,
    )


@app.command(rich_help_panel=RESULTS)
def export(
    run: Annotated[
        str, typer.Option("--run", help="A finished cv run of the workspace.", callback=run_name)
    ],
    out: Annotated[Path, typer.Option("--out", help="The model file to write (a zip).")],
    workspace: WorkspaceOpt = Path("workspace"),
    json_out: JsonOpt = False,
) -> None:
    """Export a run's trained models to one file, which predicts without the workspace.

    Config, every fold's and stage's weights, scalers, post-processing (default and tuned),
    classes and versions; `seld-orch predict --model FILE` uses it."""
    from orchestrator.export import export_run

    manifest = export_run(workspace, run, out)
    if json_out:
        console.print_json(to_json(manifest))
        return
    console.print(
        f"wrote {manifest['path']} ({manifest['bytes'] / 1e6:.1f} MB): {manifest['method']}, "
        f"folds {manifest['folds']}, stages {manifest['stages']}, post-processing "
        f"{manifest['postprocessing']}",
        soft_wrap=True,
        highlight=False,
    )
