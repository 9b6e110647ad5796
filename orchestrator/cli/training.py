"""Training commands: one stage, one fold's evaluation, the cross-validation, the demo, and
the experiment configs they take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import (
    TRAINING,
    AddressOpt,
    ConfigFormatOpt,
    ConfigOpt,
    ConfigSeedOpt,
    DatasetOpt,
    EpochsOpt,
    FoldOpt,
    GpuOpt,
    GpusPerJobOpt,
    JsonOpt,
    ProtocolOpt,
    RunOpt,
    SeedOpt,
    SetOpt,
    StorageOpt,
    SuiteOpt,
    ThresholdOpt,
    TrackingUriOpt,
    WorkspaceOpt,
    app,
    config_app,
    experiment_config,
    extract_missing,
    fold_data,
    gpu_share,
    new_cv_settings,
)
from orchestrator.cli.render import (
    DemoConsole,
    console,
    err_console,
    print_demo,
    print_score_report,
    print_suite_reports,
    scores_table,
    status_table,
    suite_scores_table,
)
from orchestrator.jsonout import to_json
from orchestrator.layout import RunLayout
from orchestrator.runs import Trainer
from seld.metrics.scores import SeldScores


@app.command(rich_help_panel=TRAINING)
def train(
    dataset: DatasetOpt,
    fold: FoldOpt,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="sed, doa (after sed) or joint; default: the method's first."),
    ] = None,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    run: RunOpt = "default",
    protocol: ProtocolOpt = None,
    epochs: EpochsOpt = None,
    seed: ConfigSeedOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train one stage of one fold on this machine (resumes an interrupted run)."""
    from orchestrator.fold import train_fold_stage

    experiment = experiment_config(
        config, sets, fmt=fmt, epochs=epochs, seed=seed, protocol=protocol, dataset=dataset
    )
    stage = stage or experiment.stages[0]
    data = fold_data(dataset, workspace, experiment, fold)
    try:
        train_config = experiment.train_config(stage)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def show(metrics: dict[str, float], _: Path) -> None:
        if not json_out:
            scores = "  ".join(  # the selection suite's validation scores
                f"{key.removeprefix('val_')} {value:.4g}"
                for key, value in metrics.items()
                if key.startswith("val_") and key != "val_selection"
            )
            console.print(
                f"{stage} fold {fold} epoch {metrics['epoch']:>3}/{train_config.epochs}  "
                f"loss {metrics['train_loss']:.4f}  val {scores}",
                highlight=False,
                soft_wrap=True,
            )

    result = train_fold_stage(
        data, train_config, RunLayout.named(workspace, run).root, report=show, device=device
    )
    summary = {
        "best_checkpoint": str(result.best_checkpoint),
        "best_epoch": result.best_epoch,
        "best_selection": result.best_score,
        "history": result.history,
        "elapsed_s": round(result.elapsed_s, 1),
    }
    if json_out:
        console.print_json(to_json(summary))
    else:
        console.print(
            f"best epoch {result.best_epoch} ({result.best_checkpoint}), {result.elapsed_s:.1f} s"
        )


@app.command(rich_help_panel=TRAINING)
def evaluate(
    dataset: DatasetOpt,
    fold: FoldOpt,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    run: RunOpt = "default",
    protocol: ProtocolOpt = None,
    threshold: ThresholdOpt = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    suites: SuiteOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Inference of one fold with the config's method, scored on its test split.

    Two-stage: SED detections, DOA directions. Next to the same detections with a constant
    direction (and with other metric suites on request)."""
    from orchestrator.evaluation import dataset_labels
    from orchestrator.fold import (
        constant_direction_report,
        method_predictions,
        references,
        score_predictions,
    )
    from seld.methods.inference import SuiteScorer, views_of
    from seld.methods.registry import get_method
    from seld.metrics.suites import get_suite, suite_report

    experiment = experiment_config(
        config, sets, fmt=fmt, threshold=threshold, protocol=protocol, dataset=dataset
    )
    threshold = experiment.inference.threshold
    data = fold_data(dataset, workspace, experiment, fold)
    layout = RunLayout.named(workspace, run)
    run_dir = layout.root
    views = views_of(experiment)
    preds = method_predictions(data, run_dir, "test", experiment.method, device, views)
    refs = references(data, "test")
    submissions = layout.fold_submissions(fold)
    labels = dataset_labels(dataset)
    if labels.dataset_format != "dcase2019":
        _evaluate_with_suites(
            preds, refs, labels, threshold, suites, submissions, fold, json_out, experiment.method
        )
        return
    decode = get_method(experiment.method).decode
    report = score_predictions(preds, refs, threshold, submissions, decode)
    constant = constant_direction_report(preds, refs, threshold, decode)
    chosen = [get_suite(name) for name in suites or ()]
    extra = {
        suite.name: suite_report(
            suite,
            SuiteScorer(suite, preds, refs, decode=decode).counts(threshold),
            with_jackknife=True,
        )
        for suite in chosen
    }
    if json_out:
        console.print_json(
            to_json(
                {
                    "method": experiment.method,
                    # the method's scores, under the key of the first method
                    "two_stage": report.as_dict(),
                    "constant_direction": constant.overall.as_dict(),
                    "suites": {n: r.as_dict() for n, r in extra.items()},
                    "submissions": str(submissions),
                }
            )
        )
        return
    console.print(
        scores_table(
            f"fold {fold} test split {list(data.fold.test_splits)} (threshold {threshold})",
            {experiment.method: report.overall, "same SED, constant direction": constant.overall},
            "system",
        )
    )
    print_score_report(console, report, f"{experiment.method}, per split / ov / ir")
    if extra:
        print_suite_reports(console, chosen, list(extra.values()), f"fold {fold} test split")
    console.print(f"submissions: {submissions}")


def _evaluate_with_suites(
    preds,
    refs,
    labels,
    threshold: float,
    suites,
    submissions: Path,
    fold: int,
    json_out: bool,
    method: str,
) -> None:
    """:func:`evaluate` on a dataset format other than DCASE 2019: its default suite (and the
    others asked for), the same detections with a constant direction beside, the submissions
    in the format's track-wise output form."""
    from orchestrator.evaluation import write_tracked_submissions
    from orchestrator.fold import constant_direction
    from seld.data.formats import get_format
    from seld.methods.inference import Postprocessing, SuiteScorer
    from seld.methods.registry import get_method
    from seld.metrics.suites import get_suite, label_problem, suite_report

    decode, distances = get_method(method).decode, get_method(method).distances

    default = get_suite(get_format(labels.dataset_format).default_suite)
    chosen = [default] + [get_suite(n) for n in suites or () if n != default.name]
    for suite in chosen:
        rate, classes = labels.label_frames_per_second, labels.num_classes
        problem = label_problem(suite, rate, classes, distances)
        if problem:
            raise typer.BadParameter(problem, param_hint="--suite")
    post = Postprocessing.from_params({"threshold": threshold}, classes=labels.classes)

    def report(suite, predictions):
        scorer = SuiteScorer(suite, predictions, refs, labels=labels, decode=decode)
        counts = scorer.counts(post.thresholds)
        return suite_report(suite, counts, with_jackknife=True)

    reports = {suite.name: report(suite, preds) for suite in chosen}
    constant = report(default, constant_direction(preds))
    write_tracked_submissions(preds, post, submissions, decode)
    if json_out:
        console.print_json(
            to_json(
                {
                    "dataset_format": labels.dataset_format,
                    "suite": default.name,
                    "method": method,
                    "two_stage": reports[default.name].overall,
                    "constant_direction": constant.overall,
                    "suites": {n: r.as_dict() for n, r in reports.items()},
                    "submissions": str(submissions),
                }
            )
        )
        return
    rows = {
        method: reports[default.name].overall,
        "same SED, constant direction": constant.overall,
    }
    title = f"fold {fold} test split (threshold {threshold}), {default.name}"
    console.print(suite_scores_table(default, rows, title))
    print_suite_reports(
        console, chosen, list(reports.values()), f"fold {fold} test split", labels.classes
    )
    console.print(f"submissions: {submissions}")


@app.command(rich_help_panel=TRAINING)
def cv(
    dataset: DatasetOpt,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    folds: Annotated[
        str | None, typer.Option("--folds", help="Comma-separated folds (cv.folds).")
    ] = None,
    workspace: WorkspaceOpt = Path("workspace"),
    run: RunOpt = "cv",
    protocol: ProtocolOpt = None,
    epochs: EpochsOpt = None,
    seed: ConfigSeedOpt = None,
    address: AddressOpt = None,
    gpu: GpuOpt = False,
    gpus_per_job: GpusPerJobOpt = None,
    workers_per_fold: Annotated[
        int, typer.Option("--workers-per-fold", min=1, help="Data-parallel workers per fold job.")
    ] = 1,
    trainer: Annotated[
        Trainer,
        typer.Option(
            "--trainer",
            help="How a fold trains: one Ray task per fold (task), Ray Train per stage "
            "(ray-train), or Ray Train only when data parallel (auto).",
        ),
    ] = "auto",
    threshold: ThresholdOpt = None,
    tracking_uri: TrackingUriOpt = None,
    storage: StorageOpt = "",
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start an existing run of other settings from scratch."),
    ] = False,
    suites: SuiteOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Four-fold cross-validation: per fold SED then DOA on Ray, tracked in MLflow.

    Features are extracted first where missing. Rerunning the same command after a crash skips
    finished stages and resumes unfinished ones. A run folder has one writer at a time, and a
    run name already used with other settings is refused (unless --overwrite).
    """
    from rich.live import Live

    from orchestrator.cv_run import run_cv
    from orchestrator.ray_utils import ray_session

    experiment = experiment_config(
        config,
        sets,
        fmt=fmt,
        epochs=epochs,
        seed=seed,
        threshold=threshold,
        folds=folds,
        protocol=protocol,
        dataset=dataset,
    )
    settings = new_cv_settings(
        dataset,
        workspace,
        experiment,
        tracking_uri,
        run=run,
        gpus_per_job=gpu_share(gpu, gpus_per_job),
        workers_per_fold=workers_per_fold,
        trainer=trainer,
        storage=storage,
    )
    with ray_session(address):
        extract_missing(dataset, workspace, experiment)
        with Live(
            status_table({}), console=err_console, refresh_per_second=2, transient=json_out
        ) as live:
            result = run_cv(
                settings,
                on_status=lambda st: live.update(status_table(st)),
                overwrite=overwrite,
                suites=tuple(suites or ()),
            )
    if not err_console.is_terminal:  # the live table's last line ends without a newline
        err_console.print()
    for fold, stages in result["stages"].items():
        for stage, record in stages.items():
            for note in record.get("notes", []):
                err_console.print(f"note: fold{fold}/{stage}: {note}", highlight=False)
    if json_out:
        console.print_json(to_json(result))
        return
    from seld.data.formats import get_format
    from seld.metrics.suites import SuiteReport, get_suite

    title = f"cross-validation {run} ({experiment.name or config}, {experiment.format})"
    if result["dataset_format"] == "dcase2019":
        rows = {f"fold {k}": SeldScores(**v) for k, v in result["folds"].items()}
        rows["all test splits"] = SeldScores(**result["overall"])
        console.print(scores_table(title, rows, ""))
        grouped = {
            f"{g} {k}": SeldScores(**v)
            for g, d in result["groups"].items()
            for k, v in d.items()
            if g != "split"
        }
        console.print(scores_table("per ov and ir, all folds", grouped, ""))
    else:  # the format's own suite per fold; all folds with intervals and classes below
        rows = {f"fold {k}": v for k, v in result["folds"].items()}
        rows["all test splits"] = result["overall"]
        title += f", {result['dataset_format']} scored with {result['suite']}"
        console.print(suite_scores_table(get_suite(result["suite"]), rows, title))
        ceiling = result["ceiling"]
        best = ceiling["overall"]
        console.print(
            f"{ceiling['overlapping_cells']:.1%} of the test references' active (frame, class) "
            "cells hold several instances of the class; a method with one direction per class "
            f"scores at best {ceiling['suite']} SELD {best['seld']:.3f} (ER {best['er']:.3f}, "
            f"F {best['f']:.3f}, LE {best['le']:.1f}°, LR {best['lr']:.3f}) on them",
            highlight=False,
        )
    if result["suites"]:
        names = list(result["suites"])
        print_suite_reports(
            console,
            [get_suite(n) for n in names],
            [SuiteReport(**result["suites"][n]) for n in names],
            "all test splits",
            get_format(result["dataset_format"]).classes,
        )
    console.print(
        f"MLflow: run {result['mlflow_parent_run']} in {result['tracking_uri']} "
        f"({result['elapsed_s']:.0f} s); `seld-orch ui --workspace {workspace}`"
    )


#: the demo's data and budget: 7 epochs of 37 steps per stage (3 seeds, test SELD at threshold
#: 0.3: 5 epochs 0.200 +- 0.012, 7 epochs 0.154 +- 0.005, 16 recordings per split for 3 epochs
#: 0.172 +- 0.002; bench/RESULTS.md "Demo ablation")
DEMO_PER_SPLIT, DEMO_SECONDS, DEMO_EPOCHS = 8, 20.0, 7


@app.command(rich_help_panel=TRAINING)
def demo(
    workspace: Annotated[
        Path, typer.Option("--workspace", help="Everything the demo writes.")
    ] = Path("workspace"),
    per_split: Annotated[int, typer.Option("--per-split", min=1)] = DEMO_PER_SPLIT,
    seconds: Annotated[float, typer.Option("--seconds", min=1.0)] = DEMO_SECONDS,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs per stage.")] = DEMO_EPOCHS,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Threshold-search trials.")] = 300,
    seed: SeedOpt = 0,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    suites: SuiteOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The main job: the whole method on a small synthetic dataset, tracked in a local MLflow.

    Synthesize a small dataset, extract features, four-fold two-stage cv, threshold tuning, the
    final table, plots, all tracked in a local MLflow store."""
    from orchestrator.demo import run_demo

    result = run_demo(
        workspace,
        per_split=per_split,
        seconds=seconds,
        seed=seed,
        trials=trials,
        experiment=experiment_config(config, sets, epochs=epochs, seed=seed),
        reporter=DemoConsole(quiet=json_out),
        suites=tuple(suites or ()),
    )
    if json_out:
        console.print_json(to_json(result.summary))
        return
    print_demo(console, result.summary, result.before, result.after, result.baselines, workspace)
    if result.suites:
        from seld.metrics.suites import get_suite

        print_suite_reports(
            console,
            [get_suite(name) for name in result.suites],
            list(result.suites.values()),
            "all test splits, tuned post-processing",
        )


@config_app.command("list")
def config_list(json_out: JsonOpt = False) -> None:
    """The shipped presets, with what each one is."""
    from seld.config import load_config, preset_names

    rows = {name: load_config(name) for name in preset_names()}
    if json_out:
        console.print_json(
            to_json({n: {"description": c.description, "hash": c.hash()} for n, c in rows.items()})
        )
        return
    table = Table(title="config presets (--config NAME)", title_justify="left")
    for column in ("name", "method", "format", "model", "description"):
        table.add_column(column)
    for name, c in rows.items():
        table.add_row(name, c.method, c.format, c.model.name, c.description)
    console.print(table)


@config_app.command("show")
def config_show(
    config: Annotated[str, typer.Argument(help="A preset name or a YAML file.")] = "tiny",
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a config resolved (extends merged, --set applied, defaults filled) and checked.

    The YAML a run writes as config.yaml, and that --config FILE accepts."""
    experiment = experiment_config(config, sets)
    if json_out:
        console.print_json(to_json(experiment.to_dict()))
        return
    print(f"# {experiment.name or config}: hash {experiment.hash()}")
    print(experiment.to_yaml(), end="")
