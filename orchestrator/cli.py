"""``seld-orch``: one entry point whose subcommands share option names.

The commands only wire library calls together; the work lives in ``seld`` and the
orchestrator modules.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.report import print_problems, print_score_report, scores_table, to_json
from orchestrator.synthesize import synthesize_on_ray
from seld.dataset import DatasetLayout, recording_durations, validate_dataset
from seld.dcase import FORMATS
from seld.folds import PROTOCOLS, make_folds
from seld.metadata import DatasetError
from seld.metrics import SeldScores, score_directories
from seld.synth import SynthConfig, SynthesisError, missing_recordings, plan_recordings

app = typer.Typer(
    name="seld-orch",
    help="Cross-validation and tuning of two-stage SELD (DCASE 2019 Task 3) on Ray, in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
StorageOpt = Annotated[
    str,
    typer.Option(
        "--storage",
        help="Ray Train/Tune checkpoints: a path or URI all nodes reach (s3://..., NFS); "
        "default <workspace>/ray_results.",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


def _writable_workspace(workspace: Path) -> Path:
    """The workspace, created if needed; a one-line error naming it when it cannot be
    written (read-only file system, no permission, a file in the way)."""
    import tempfile

    try:
        workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workspace):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        err_console.print(
            f"[red]error:[/red] cannot write to workspace {workspace}: {reason}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    return workspace


WorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace",
        help="Everything a run writes: features, models, MLflow.",
        callback=_writable_workspace,
    ),
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address; a local Ray when absent.")
]
DatasetOpt = Annotated[Path, typer.Option("--dataset", help="Dataset root (DCASE 2019 layout).")]
FormatOpt = Annotated[str, typer.Option("--format", help="mic or foa.")]
ConfigOpt = Annotated[
    str,
    typer.Option(
        "--config",
        help="Experiment config: a preset (paper-mic, paper-foa, paper-foa-iv, paper-joint-mic, "
        "paper-cnn-mic, tiny) or a YAML file.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config key, section.key=value (repeatable), e.g. --set train.lr=5e-4.",
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", help="Epochs per stage (train.epochs, replacing a step budget)."),
]
ConfigFormatOpt = Annotated[
    str | None, typer.Option("--format", help="mic or foa (data.format; default: the config's).")
]
ConfigSeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (seed).")]
NumCpusOpt = Annotated[
    int | None, typer.Option("--num-cpus", help="CPUs of the local Ray (default: all).")
]
GpuOpt = Annotated[bool, typer.Option("--gpu/--no-gpu", help="One GPU per fold job.")]
TrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow store (default: in workspace).")
]


@contextmanager
def _exit_on(*errors: type[Exception], hint: str = "") -> Iterator[None]:
    """Bad input ends the command with its message (which names the file and the problem)
    and exit code 2, without a traceback."""
    try:
        yield
    except errors as exc:
        err_console.print(f"[red]error:[/red] {exc}{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        console=err_console,
        transient=transient,
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _interrupt_on_sigterm()


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a command the way Ctrl-C does: every ``with`` block unwinds, so the local
    Ray is shut down, MLflow runs are marked KILLED and temporary files are removed (SIGTERM's
    default would end the process on the spot)."""
    import signal

    from orchestrator.runs import interrupt

    signal.signal(signal.SIGTERM, interrupt)


def _experiment(
    config: str,
    sets: list[str] | None,
    *,
    fmt: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    threshold: float | None = None,
    folds: str | None = None,
    protocol: str | None = None,
):
    """The command's experiment config: ``--config``, then ``--set``, then the shortcut options
    that were given. A bad config ends the command (exit 2) naming the key."""
    from seld.config import ConfigError, load_config

    shortcuts = {
        "data.format": fmt,
        "seed": seed,
        "inference.threshold": threshold,
        "cv.protocol": protocol,
        "cv.folds": None if folds is None else list(_fold_numbers(folds)),
    }
    overrides = [*(sets or [])]
    overrides += [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]
    if epochs is not None:  # an epoch count replaces a step budget
        overrides += [f"train.epochs={epochs}", "train.steps=null"]
    with _exit_on(ConfigError):
        return load_config(config, overrides)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Dataset root to write.")],
    per_split: Annotated[int, typer.Option("--per-split", min=1, help="Recordings per split.")] = 2,
    seconds: Annotated[float, typer.Option("--seconds", min=1.0, help="Recording length.")] = 10.0,
    seed: SeedOpt = 0,
    formats: Annotated[
        str, typer.Option("--formats", help="Comma-separated: mic,foa.")
    ] = "mic,foa",
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated split numbers.")
    ] = "1,2,3,4",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Synthesize a dataset in the DCASE 2019 development layout (rooms by image sources)."""
    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise typer.BadParameter(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    config = SynthConfig(
        seconds=seconds,
        per_split=per_split,
        splits=tuple(int(s) for s in splits.split(",")),
        formats=fmts,
        seed=seed,
    )
    todo = missing_recordings(out, config)
    started = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("synthesizing", total=len(todo), current="")
        try:
            synthesize_on_ray(
                out,
                config,
                address=address,
                num_cpus=num_cpus,
                progress=lambda name: progress.update(task, advance=1, current=name.stem),
            )
        except SynthesisError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    elapsed = time.perf_counter() - started
    names = plan_recordings(config)
    summary = {
        "out": str(out),
        "recordings": len(names),
        "written": len(todo),
        "formats": list(fmts),
        "seconds_per_recording": seconds,
        "elapsed_s": round(elapsed, 2),
    }
    if json_out:
        console.print_json(to_json(summary))
    else:
        console.print(
            f"Wrote {len(todo)} of {len(names)} recordings ({len(names) - len(todo)} already "
            f"complete) x {len(fmts)} format(s) of {seconds:g} s to {out} in {elapsed:.1f} s"
        )


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="Dataset root (DCASE 2019 layout).")],
    fmt: Annotated[str | None, typer.Option("--format", help="Check one format only.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check every file of a dataset; name every problem; exit 1 if there is any."""
    with _exit_on(DatasetError), progress_bar(transient=True) as progress:
        task = progress.add_task("checking", total=None, current="")
        report = validate_dataset(
            dataset,
            formats=None if fmt is None else (fmt,),
            progress=lambda path: progress.update(task, advance=1, current=path.name),
        )
    if json_out:
        console.print_json(
            to_json(
                {
                    "root": str(report.root),
                    "checked": report.checked,
                    "accepted": [str(p) for p in report.accepted],
                    "problems": [
                        {"file": str(p.path), "problem": p.problem} for p in report.problems
                    ],
                    "warnings": [
                        {"file": str(p.path), "warning": p.problem} for p in report.warnings
                    ],
                }
            )
        )
    else:
        if report.problems:
            print_problems(console, report.problems)
        for warning in report.warnings:
            err_console.print(
                f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True
            )
        console.print(
            f"{report.checked} audio file(s) checked, {len(report.accepted)} accepted, "
            f"{len(report.problems)} problem(s), {len(report.warnings)} warning(s)"
        )
    if report.problems:
        raise typer.Exit(1)


@app.command()
def score(
    ref: Annotated[Path, typer.Option("--ref", help="Reference metadata folder (metadata_dev).")],
    pred: Annotated[Path, typer.Option("--pred", help="Folder of submission CSVs.")],
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Recording length in seconds; default: read from the dataset's audio next to "
            "--ref, else 60.",
        ),
    ] = None,
    corrected_blocks: Annotated[
        bool,
        typer.Option(
            "--corrected-blocks",
            help="Use whole one-second blocks "
            "(the official code ignores the last frame of each second).",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Reject impossible directions and frames past the end instead of warning.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Score DCASE 2019 submission CSVs like the official script: all, per split, ov and ir."""
    durations = None
    if duration is None:
        try:
            durations = recording_durations(ref.parent)
        except DatasetError:
            durations = None  # a bare metadata folder: one-minute recordings, as in DCASE 2019
    warnings: list[DatasetError] = []
    with _exit_on(DatasetError):
        report = score_directories(
            ref,
            pred,
            durations=durations,
            default_duration_s=duration if duration is not None else 60.0,
            official_blocks=not corrected_blocks,
            strict=strict,
            warnings=warnings,
        )
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if json_out:
        console.print_json(to_json(report.as_dict()))
    else:
        print_score_report(console, report, f"DCASE 2019 scores of {pred}")


@app.command()
def folds(
    dataset: DatasetOpt,
    fmt: FormatOpt = "mic",
    protocol: Annotated[
        str, typer.Option("--protocol", help=f"One of {', '.join(PROTOCOLS)} (seed is leaky).")
    ] = "dcase2019",
    json_out: JsonOpt = False,
) -> None:
    """Show each fold's training, validation and test recordings."""
    with _exit_on(DatasetError, ValueError):
        layout = DatasetLayout.discover(dataset)
        fold_list = make_folds([r.name for r in layout.recordings(fmt)], protocol=protocol)
    rows = [
        {
            "fold": f.index,
            "protocol": f.protocol,
            "leaky": f.leaky,
            "train_splits": list(f.train_splits),
            "validation_splits": list(f.validation_splits),
            "test_splits": list(f.test_splits),
            "train": [n.stem for n in f.train],
            "validation": [n.stem for n in f.validation],
            "test": [n.stem for n in f.test],
        }
        for f in fold_list
    ]
    if json_out:
        console.print_json(to_json(rows))
        return
    for row in rows:
        warn = " [red](leaky: validation = test)[/red]" if row["leaky"] else ""
        console.print(
            f"fold {row['fold']}{warn}: train splits {row['train_splits']} "
            f"({len(row['train'])} rec.), validation {row['validation_splits']} "
            f"({len(row['validation'])}), test {row['test_splits']} ({len(row['test'])})"
        )


@app.command()
def extract(
    dataset: DatasetOpt,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Extract features of every recording into HDF5, one Ray task per recording.

    Complete files are skipped, so a rerun after a crash only does what is missing. A bad
    recording is reported with its reason, the rest finish, and the exit code is 1.
    """
    from orchestrator.extract import extract_dataset, plan_extraction

    experiment = _experiment(config, sets, fmt=fmt)
    features, fmt = experiment.features, experiment.format
    with _exit_on(DatasetError, ValueError):
        _, todo, _ = plan_extraction(dataset, workspace, features, fmt)
    with progress_bar() as progress:
        task = progress.add_task(f"extracting {fmt}", total=len(todo), current="")
        summary = extract_dataset(
            dataset,
            workspace,
            features,
            fmt,
            address=address,
            num_cpus=num_cpus,
            progress=lambda rec, ok: progress.update(
                task, advance=1, current=rec.stem if ok else f"[red]failed {rec.stem}"
            ),
        )
    result = {
        "features": str(summary.root),
        "config_hash": features.hash(),
        "written": len(summary.written),
        "skipped": len(summary.skipped),
        "redone": summary.redone,
        "failed": summary.failed,
        "elapsed_s": round(summary.elapsed_s, 2),
    }
    if json_out:
        console.print_json(to_json(result))
    else:
        for reason in summary.failed.values():
            err_console.print(f"[red]failed:[/red] {reason}")
        _print_redone(summary.redone)
        console.print(
            f"{len(summary.written)} written, {len(summary.skipped)} already complete, "
            f"{len(summary.failed)} failed, in {summary.elapsed_s:.1f} s -> {summary.root}"
        )
    if summary.failed:
        raise typer.Exit(1)


FoldOpt = Annotated[int, typer.Option("--fold", min=1, help="Fold number (tests on that split).")]


def _run_name(name: str) -> str:
    from orchestrator.runs import RunError, validate_run_name

    try:
        return validate_run_name(name)
    except RunError as exc:
        raise typer.BadParameter(str(exc)) from None


RunOpt = Annotated[
    str, typer.Option("--run", help="Run name under <workspace>/runs.", callback=_run_name)
]
ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", help=f"One of {', '.join(PROTOCOLS)} (cv.protocol; seed is leaky)."),
]


def _fold_data(dataset: Path, workspace: Path, experiment, fold: int):
    from orchestrator.fold import fold_data

    with _exit_on(DatasetError, ValueError, FileNotFoundError):
        return fold_data(
            dataset,
            workspace,
            experiment.features,
            experiment.format,
            fold,
            experiment.cv.protocol,
        )


@app.command()
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

    experiment = _experiment(config, sets, fmt=fmt, epochs=epochs, seed=seed, protocol=protocol)
    stage = stage or experiment.stages[0]
    data = _fold_data(dataset, workspace, experiment, fold)
    try:
        train_config = experiment.train_config(stage)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def show(metrics: dict[str, float], _: Path) -> None:
        if not json_out:
            console.print(
                f"{stage} fold {fold} epoch {metrics['epoch']:>3}/{train_config.epochs}  "
                f"loss {metrics['train_loss']:.4f}  val ER {metrics['val_er']:.3f}  "
                f"F {metrics['val_f']:.3f}  DOA {metrics['val_doa_error']:.1f}°  "
                f"FR {metrics['val_frame_recall']:.3f}  SELD {metrics['val_seld']:.4f}",
                highlight=False,
                soft_wrap=True,
            )

    with _exit_on(FileNotFoundError):
        result = train_fold_stage(
            data, train_config, workspace / "runs" / run, report=show, device=device
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


@app.command()
def evaluate(
    dataset: DatasetOpt,
    fold: FoldOpt,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    fmt: ConfigFormatOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    run: RunOpt = "default",
    protocol: ProtocolOpt = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="SED threshold (inference.threshold).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """Two-stage inference of one fold: SED detections, DOA directions, scored on its test
    split, next to the same detections with a constant direction."""
    from orchestrator.fold import (
        constant_direction_report,
        method_predictions,
        references,
        score_predictions,
    )

    experiment = _experiment(config, sets, fmt=fmt, threshold=threshold, protocol=protocol)
    threshold = experiment.inference.threshold
    data = _fold_data(dataset, workspace, experiment, fold)
    run_dir = workspace / "runs" / run
    with _exit_on(FileNotFoundError, hint=" (train the method's stages first)"):
        preds = method_predictions(data, run_dir, "test", experiment.stages, device)
    refs = references(data, "test")
    submissions = run_dir / f"fold{fold}" / "submissions"
    report = score_predictions(preds, refs, threshold, submissions)
    constant = constant_direction_report(preds, refs, threshold)
    if json_out:
        console.print_json(
            to_json(
                {
                    "two_stage": report.as_dict(),
                    "constant_direction": constant.overall.as_dict(),
                    "submissions": str(submissions),
                }
            )
        )
        return
    console.print(
        scores_table(
            f"fold {fold} test split {list(data.fold.test_splits)} (threshold {threshold})",
            {"two-stage": report.overall, "same SED, constant direction": constant.overall},
            "system",
        )
    )
    print_score_report(console, report, "two-stage, per split / ov / ir")
    console.print(f"submissions: {submissions}")


def _status_table(status: dict[str, dict]) -> Table:
    table = Table(title="fold jobs", title_justify="left")
    for column in ("job", "state", "epoch", "train loss", "val SELD", "val selection"):
        table.add_column(column, justify="left" if column in ("job", "state") else "right")
    for job in sorted(status):
        row = status[job]

        def num(key: str, fmt: str = "{:.4f}", row=row) -> str:
            return fmt.format(row[key]) if isinstance(row.get(key), int | float) else ""

        table.add_row(
            job,
            str(row.get("state", "")),
            num("epoch", "{:.0f}"),
            num("train_loss"),
            num("val_seld"),
            num("val_selection"),
        )
    return table


def _fold_numbers(text: str) -> tuple[int, ...]:
    return tuple(int(k) for k in text.split(","))


def _new_cv_settings(
    dataset: Path, workspace: Path, experiment, tracking_uri: str | None, **fields
):
    """A new cv run's (or search's) settings from the command line's options."""
    from orchestrator.cv import CVSettings
    from orchestrator.tracking import resolve_tracking_uri

    return CVSettings(
        dataset=str(dataset.resolve()),
        workspace=str(workspace.resolve()),
        config=experiment.to_dict(),
        tracking_uri=resolve_tracking_uri(workspace, tracking_uri),
        **fields,
    )


def _print_redone(redone: dict[str, str]) -> None:
    """Say which cached feature files were out of date, and why."""
    if redone:
        shown = ", ".join(f"{stem} ({why})" for stem, why in list(redone.items())[:5])
        more = f" and {len(redone) - 5} more" if len(redone) > 5 else ""
        err_console.print(
            f"[yellow]redone:[/yellow] {len(redone)} feature file(s) out of date: {shown}{more}",
            soft_wrap=True,
        )


def _extract_missing(dataset: Path, workspace: Path, experiment) -> None:
    """Extract the features a training command needs; exit 1 naming every failed recording."""
    from orchestrator.extract import extract_dataset

    with _exit_on(DatasetError):
        summary = extract_dataset(dataset, workspace, experiment.features, experiment.format)
    _print_redone(summary.redone)
    if summary.failed:
        for reason in summary.failed.values():
            err_console.print(f"[red]failed:[/red] {reason}")
        err_console.print("[red]error:[/red] fix or remove the recordings above first")
        raise typer.Exit(1)


@app.command()
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
    workers_per_fold: Annotated[
        int, typer.Option("--workers-per-fold", min=1, help="Data-parallel workers per fold job.")
    ] = 1,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="SED threshold (inference.threshold).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    storage: StorageOpt = "",
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start an existing run of other settings from scratch."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Four-fold cross-validation: per fold SED then DOA on Ray Train, tracked in MLflow.

    Features are extracted first where missing. Rerunning the same command after a crash skips
    finished stages and resumes unfinished ones. A run folder has one writer at a time, and a
    run name already used with other settings is refused (unless --overwrite).
    """
    from rich.live import Live

    from orchestrator.cv_run import run_cv
    from orchestrator.ray_utils import ray_session
    from orchestrator.runs import RunError

    experiment = _experiment(
        config,
        sets,
        fmt=fmt,
        epochs=epochs,
        seed=seed,
        threshold=threshold,
        folds=folds,
        protocol=protocol,
    )
    settings = _new_cv_settings(
        dataset,
        workspace,
        experiment,
        tracking_uri,
        run=run,
        use_gpu=gpu,
        workers_per_fold=workers_per_fold,
        storage=storage,
    )
    with ray_session(address):
        _extract_missing(dataset, workspace, experiment)
        with Live(
            _status_table({}), console=err_console, refresh_per_second=2, transient=json_out
        ) as live:
            with _exit_on(RunError):
                result = run_cv(
                    settings,
                    on_status=lambda st: live.update(_status_table(st)),
                    overwrite=overwrite,
                )
    if json_out:
        console.print_json(to_json(result))
        return
    rows = {f"fold {k}": SeldScores(**v) for k, v in result["folds"].items()}
    rows["all test splits"] = SeldScores(**result["overall"])
    title = f"cross-validation {run} ({experiment.name or config}, {experiment.format})"
    console.print(scores_table(title, rows, ""))
    grouped = {
        f"{g} {k}": SeldScores(**v)
        for g, d in result["groups"].items()
        for k, v in d.items()
        if g != "split"
    }
    console.print(scores_table("per ov and ir, all folds", grouped, ""))
    console.print(
        f"MLflow: run {result['mlflow_parent_run']} in {result['tracking_uri']} "
        f"({result['elapsed_s']:.0f} s); `seld-orch ui --workspace {workspace}`"
    )


@app.command()
def ui(
    workspace: WorkspaceOpt = Path("workspace"),
    port: Annotated[int, typer.Option("--port")] = 5000,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri")] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the workspace's store.

    A port already in use is an error (exit 2). SIGINT and SIGTERM stop the server and all its
    processes, and the command waits for them."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from orchestrator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(workspace, tracking_uri)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            err_console.print(
                f"[red]error:[/red] port {port} on 127.0.0.1 is already in use ({exc.strerror}); "
                "stop what uses it or pass --port",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C stops it)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # its own process group, so that a signal reaches the server's workers too
    server = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum, frame):
        os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = server.wait()
    finally:
        try:  # whatever is left of the group (workers that outlived the server)
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(1)


config_app = typer.Typer(
    help="Experiment configs: presets and resolved configs.", no_args_is_help=True
)
app.add_typer(config_app, name="config")


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
    """Print a config resolved (extends merged, --set applied, defaults filled) and checked: the
    YAML a run writes as config.yaml, and that --config FILE accepts."""
    experiment = _experiment(config, sets)
    if json_out:
        console.print_json(to_json(experiment.to_dict()))
        return
    print(f"# {experiment.name or config}: hash {experiment.hash()}")
    print(experiment.to_yaml(), end="")


tune_app = typer.Typer(help="Searches on Ray Tune with an Optuna searcher.", no_args_is_help=True)
app.add_typer(tune_app, name="tune")
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
DEMO_PER_SPLIT, DEMO_SECONDS = 8, 20.0


def _cv_settings(workspace: Path, run: str):
    from orchestrator.cv import CVSettings

    path = workspace / "runs" / run / "config.json"
    if not path.exists():
        err_console.print(f"[red]error:[/red] {path} missing: is {run!r} a finished cv run?")
        raise typer.Exit(2)
    return CVSettings.from_run(path.parent)


@tune_app.command("thresholds")
def tune_thresholds_command(
    run: RunOpt = "cv",
    workspace: WorkspaceOpt = Path("workspace"),
    space: Annotated[Path, typer.Option("--space", help="Search-space YAML.")] = SPACES
    / "thresholds.yaml",
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
    json_out: JsonOpt = False,
) -> None:
    """Tune SED thresholds and post-processing on a finished cv run's validation predictions,
    then apply the best to its test splits (no retraining)."""
    from orchestrator.ray_utils import ray_session
    from orchestrator.search_space import SearchSpaceError, load_search_space
    from orchestrator.tune import tune_thresholds

    settings = _cv_settings(workspace, run)
    with _exit_on(SearchSpaceError):
        search_space = load_search_space(space)
    with ray_session(address):
        summary = tune_thresholds(
            settings,
            search_space,
            trials=trials,
            seed=seed,
            concurrency=concurrency,
            per_fold=per_fold,
        )
    if json_out:
        console.print_json(to_json(summary))
        return
    rows = {
        name.replace("_", ", "): SeldScores(**v)
        for name, v in summary["scores"].items()
        if not name.startswith("fold")  # per-fold rows stay in the JSON and MLflow
    }
    console.print(scores_table(f"thresholds of run {run}: before and after tuning", rows, ""))
    console.print(
        f"best: {summary['best_config']}; {summary['trials']} trials in "
        f"{summary['search_s']:.1f} s ({summary['trials_per_s']:.1f} trials/s)"
    )


@tune_app.command("hparams")
def tune_hparams_command(
    dataset: DatasetOpt,
    space: Annotated[Path, typer.Option("--space", help="Search-space YAML.")] = SPACES
    / "hparams.yaml",
    trials: Annotated[int, typer.Option("--trials", min=1)] = 20,
    name: Annotated[
        str,
        typer.Option("--name", help="The search's name; rerun it to resume.", callback=_run_name),
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
    tracking_uri: TrackingUriOpt = None,
    storage: StorageOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Search training hyperparameters: each trial a cross-validation of the two-stage method,
    early-stopped by ASHA on validation SELD; then a cv of the best config on the test splits."""
    from orchestrator.hparams import check_space, tune_hparams
    from orchestrator.ray_utils import ray_session
    from orchestrator.search_space import SearchSpaceError, load_search_space

    experiment = _experiment(
        config, sets, fmt=fmt, epochs=epochs, seed=seed, folds=folds, protocol=protocol
    )
    with _exit_on(SearchSpaceError):
        search_space = load_search_space(space)
        check_space(search_space, experiment, space)
    settings = _new_cv_settings(
        dataset, workspace, experiment, tracking_uri, run=name, use_gpu=gpu, storage=storage
    )
    # the dashboard's state API lets Ray Train free the CPUs of trials that ASHA stops
    with ray_session(address, dashboard=True) as dashboard_url:
        if dashboard_url:
            err_console.print(f"Ray dashboard: http://{dashboard_url}")
        _extract_missing(dataset, workspace, experiment)
        summary = tune_hparams(
            settings,
            search_space,
            name=name,
            trials=trials,
            seed=seed,
            concurrency=concurrency,
            grace_period=grace_period,
            final_folds=_fold_numbers(final_folds) if final_folds else None,
            on_progress=lambda msg: err_console.print(f"[bold]{msg}[/bold]"),
        )
    if json_out:
        console.print_json(to_json(summary))
        return
    table = Table(title=f"search {name}: {len(summary['trials'])} trials (ASHA)")
    for column in ("trial", "iterations", "val SELD", *search_space_names(summary)):
        table.add_column(column)
    for row in sorted(summary["trials"], key=lambda r: r["val_seld"]):
        mark = " *" if row["trial_id"] == summary["best"]["trial_id"] else ""
        state = "" if row["completed"] else " (stopped)"
        table.add_row(
            row["trial_id"] + mark,
            f"{row['iterations']}{state}",
            f"{row['val_seld']:.4f}",
            *(_short(row["config"].get(k)) for k in search_space_names(summary)),
        )
    console.print(table)
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


def search_space_names(summary: dict) -> list[str]:
    return sorted({k for row in summary["trials"] for k in row["config"]})


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def demo(
    workspace: Annotated[
        Path, typer.Option("--workspace", help="Everything the demo writes.")
    ] = Path("workspace"),
    per_split: Annotated[int, typer.Option("--per-split", min=1)] = DEMO_PER_SPLIT,
    seconds: Annotated[float, typer.Option("--seconds", min=1.0)] = DEMO_SECONDS,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs per stage.")] = 5,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Threshold-search trials.")] = 300,
    seed: SeedOpt = 0,
    config: ConfigOpt = "tiny",
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The main job: synthesize a small dataset, extract features, four-fold two-stage cv,
    threshold tuning, the final table, plots, all tracked in a local MLflow store."""
    from orchestrator.demo import run_demo

    run_demo(
        workspace,
        per_split=per_split,
        seconds=seconds,
        seed=seed,
        trials=trials,
        console=console,
        experiment=_experiment(config, sets, epochs=epochs, seed=seed),
        json_out=json_out,
    )


@app.command("cluster-check")
def cluster_check(
    path: Annotated[Path, typer.Argument(help="A `ray up` cluster definition.")] = Path(
        "cluster.yaml"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Check a `ray up` cluster definition offline: Ray's schema and config checks, no cloud
    credentials needed. Exit 1 and name every broken field; list placeholders still to change."""
    from orchestrator.cluster import ClusterConfigError, check_cluster_config

    try:
        warnings = check_cluster_config(path)
    except ClusterConfigError as exc:
        if json_out:
            console.print_json(to_json({"file": str(path), "ok": False, "error": str(exc)}))
        else:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if json_out:
        console.print_json(to_json({"file": str(path), "ok": True, "warnings": warnings}))
        return
    for warning in warnings:
        console.print(f"[yellow]to change:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"{path}: valid for `ray up` ({len(warnings)} placeholder(s) to change)")


submit_app = typer.Typer(
    help="Run cv or tune as a Ray job on a cluster (through its dashboard's Jobs API).",
    no_args_is_help=True,
)
app.add_typer(submit_app, name="submit")
JobAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The cluster's dashboard (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, "
        "else http://127.0.0.1:8265).",
    ),
]
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _submit(command: str, ctx: typer.Context, address: str | None, follow: bool) -> None:
    from orchestrator.submit import SubmitError, follow_logs, job_info, submit

    with _exit_on(SubmitError):
        job_id = submit(command, list(ctx.args), address=address)
    console.print(job_id, highlight=False)
    err_console.print(f"`seld-orch status {job_id}`, `seld-orch logs {job_id} --follow`")
    if follow:
        with _exit_on(SubmitError):
            follow_logs(job_id, lambda text: print(text, end="", flush=True), address)
            status = job_info(job_id, address)["status"]
        err_console.print(f"job {job_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


FollowOpt = Annotated[bool, typer.Option("--follow", help="Print the job's output until it ends.")]


@submit_app.command("cv", context_settings=PASS_THROUGH)
def submit_cv(ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False) -> None:
    """Submit `seld-orch cv ARGS` as a Ray job and print its id. Paths (--dataset, --workspace)
    must be absolute and on storage every node shares."""
    _submit("cv", ctx, address, follow)


@submit_app.command("tune", context_settings=PASS_THROUGH)
def submit_tune(
    ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False
) -> None:
    """Submit `seld-orch tune ARGS` (thresholds or hparams) as a Ray job and print its id."""
    _submit("tune", ctx, address, follow)


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job id; all jobs when absent.")] = None,
    address: JobAddressOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to end; exit 1 unless it succeeded.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """The state of a submitted job (or of every job on the cluster)."""
    from orchestrator.submit import SubmitError, job_info, list_jobs
    from orchestrator.submit import wait as wait_job

    with _exit_on(SubmitError):
        if job is None:
            rows = list_jobs(address)
        elif wait:
            rows = [wait_job(job, address)]
        else:
            rows = [job_info(job, address)]
    if json_out:
        console.print_json(to_json(rows if job is None else rows[0]))
    else:
        table = Table(title="Ray jobs", title_justify="left")
        for column in ("job", "status", "elapsed", "entrypoint", "message"):
            table.add_column(column, overflow="fold")
        for row in sorted(rows, key=lambda r: r["start_time"] or 0):
            elapsed = "" if row["elapsed_s"] is None else f"{row['elapsed_s']:.0f} s"
            table.add_row(
                row["job_id"], row["status"], elapsed, row["entrypoint"], row["message"] or ""
            )
        console.print(table)
    if job is not None and wait and rows[0]["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="A job id.")],
    address: JobAddressOpt = None,
    follow: FollowOpt = False,
) -> None:
    """A submitted job's output (stdout and stderr of its driver)."""
    from orchestrator.submit import SubmitError, follow_logs
    from orchestrator.submit import logs as job_logs

    with _exit_on(SubmitError):
        if follow:
            follow_logs(job, lambda text: print(text, end="", flush=True), address)
        else:
            print(job_logs(job, address), end="", flush=True)


if __name__ == "__main__":
    app()
