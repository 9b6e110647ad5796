"""Data commands: synthesize, validate, score, show folds, extract features."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import (
    DATA,
    RESULTS,
    AddressOpt,
    ConfigFormatOpt,
    ConfigOpt,
    DatasetFormatOpt,
    DatasetOpt,
    FormatOpt,
    JsonOpt,
    NumCpusOpt,
    SeedOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    experiment_config,
)
from orchestrator.cli.render import (
    console,
    err_console,
    print_problems,
    print_redone,
    print_score_report,
    print_suite_reports,
    print_warnings,
    progress_bar,
)
from orchestrator.jsonout import to_json
from orchestrator.synthesize import synthesize_on_ray
from seld.data.dataset import DatasetLayout, recording_durations, validate_dataset
from seld.data.dcase import FORMATS
from seld.data.folds import PROTOCOLS, make_folds
from seld.data.formats import TRACKWISE, DatasetFormat, detect_format, get_format, scoring_pairs
from seld.data.metadata import DatasetError
from seld.metrics.reference import read_directories, score_directories
from seld.metrics.suites import SUITES, MetricSuite, get_suite, score_recordings, tracked
from seld.synth import SynthConfig, SynthesisError, missing_recordings
from seld.synth.writer import planned


@app.command(rich_help_panel=DATA)
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
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="dcase2019, or a track-wise format's layout: "
            + "; ".join(f"{f.name} ({f.description})" for f in TRACKWISE.values())
            + ". Track-wise: 24 kHz, --per-split recordings in each of its folds, --splits "
            "ignored.",
        ),
    ] = "dcase2019",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Synthesize a dataset in a DCASE development layout (rooms by image sources).

    The DCASE 2019 layout, or with --layout a track-wise one: STARSS23, TAU-NIGENS 2021 or
    2020."""
    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise typer.BadParameter(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    from seld.synth.config import LAYOUTS, STARSS_SAMPLE_RATE

    if layout not in LAYOUTS:
        raise typer.BadParameter(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    config = SynthConfig(
        seconds=seconds,
        per_split=per_split,
        splits=tuple(int(s) for s in splits.split(",")),
        formats=fmts,
        seed=seed,
        layout=layout,
        **({"sample_rate": STARSS_SAMPLE_RATE} if layout != "dcase2019" else {}),
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
    names = planned(config)
    summary = {
        "out": str(out),
        "recordings": len(names),
        "written": len(todo),
        "formats": list(fmts),
        "layout": layout,
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


@app.command(rich_help_panel=DATA)
def validate(
    dataset: Annotated[Path, typer.Argument(help="Dataset root (any registered layout).")],
    fmt: Annotated[str | None, typer.Option("--format", help="Check one format only.")] = None,
    dataset_format: DatasetFormatOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check every file of a dataset; name every problem; exit 1 if there is any."""
    layout = get_format(dataset_format) if dataset_format else None
    if layout is None and dataset.is_dir() and any(f.detect(dataset) for f in TRACKWISE.values()):
        layout = detect_format(dataset)  # otherwise the DCASE 2019 checks name what is wrong
    with progress_bar(transient=True) as progress:
        task = progress.add_task("checking", total=None, current="")

        def step(path: Path) -> None:
            progress.update(task, advance=1, current=path.name)

        if layout is None or layout.name == "dcase2019":
            report = validate_dataset(
                dataset, formats=None if fmt is None else (fmt,), progress=step
            )
        else:
            report = layout.validate(dataset, progress=step)
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


@app.command(rich_help_panel=RESULTS)
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
    suites: Annotated[
        list[str] | None,
        typer.Option(
            "--suite",
            help=f"Metric suite, repeatable: {', '.join(SUITES)}; default: the dataset format's.",
        ),
    ] = None,
    dataset_format: DatasetFormatOpt = None,
    with_jackknife: Annotated[
        bool,
        typer.Option(
            "--jackknife", help="95% leave-one-recording-out intervals, as DCASE 2022 reports."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Score submission CSVs like the official DCASE 2019 script: all, per split, ov and ir.

    Or with other metric suites, side by side, per class, with jackknife intervals."""
    durations = None
    if duration is None:
        try:
            durations = recording_durations(ref.parent)
        except DatasetError:
            durations = None  # a bare metadata folder: one-minute recordings, as in DCASE 2019
    warnings: list[DatasetError] = []
    layout = get_format(dataset_format) if dataset_format else None
    if layout is None and any(f.detect(ref.parent) for f in TRACKWISE.values()):
        layout = detect_format(ref.parent)
    if layout is not None and layout.name != "dcase2019":
        _score_format(layout, ref, pred, suites, with_jackknife, json_out)
        return
    names = suites or ["dcase2019"]
    chosen = [get_suite(name) for name in names]  # an unknown name fails before any reading
    if names == ["dcase2019"] and not with_jackknife:  # the official script's view
        report = score_directories(
            ref,
            pred,
            durations=durations,
            default_duration_s=duration if duration is not None else 60.0,
            official_blocks=not corrected_blocks,
            strict=strict,
            warnings=warnings,
        )
        print_warnings(warnings)
        if json_out:
            console.print_json(to_json(report.as_dict()))
        else:
            print_score_report(console, report, f"DCASE 2019 scores of {pred}")
        return
    pairs = read_directories(
        ref,
        pred,
        durations=durations,
        default_duration_s=duration if duration is not None else 60.0,
        strict=strict,
        warnings=warnings,
    )
    print_warnings(warnings)
    recordings = {stem: (tracked(r), tracked(p), n) for stem, (r, p, n) in pairs.items()}
    if corrected_blocks:
        chosen = [replace(s, official_blocks=False) if s.name == "dcase2019" else s for s in chosen]
    _score_suites(
        get_format("dcase2019"), chosen, lambda _suite: recordings, ref, pred, with_jackknife,
        json_out,
    )  # fmt: skip


def _score_format(
    layout: DatasetFormat,
    ref: Path,
    pred: Path,
    suites: list[str] | None,
    with_jackknife: bool,
    json_out: bool,
) -> None:
    """``score`` for a dataset format other than DCASE 2019: its CSVs, its label rate and
    classes, its default suite unless others are named."""
    chosen = [get_suite(name) for name in suites or [layout.default_suite]]
    read: dict[bool, dict] = {}

    def recordings_for(suite: MetricSuite) -> dict:
        distances = getattr(suite, "needs_distance", False)
        if distances not in read:  # the 2024 scorer reads prediction columns its own way
            read[distances] = scoring_pairs(layout, ref, pred, distances)
        return read[distances]

    _score_suites(layout, chosen, recordings_for, ref, pred, with_jackknife, json_out)


def _score_suites(
    layout: DatasetFormat,
    chosen: list[MetricSuite],
    recordings_for: Callable[[MetricSuite], dict],
    ref: Path,
    pred: Path,
    with_jackknife: bool,
    json_out: bool,
) -> None:
    """Score with each suite (the recordings as that suite reads them, at the format's label
    rate and classes); a suite that cannot score them names the reference folder."""
    reports = []
    for suite in chosen:
        recordings = recordings_for(suite)
        try:
            reports.append(
                score_recordings(
                    suite,
                    recordings,
                    frames_per_second=layout.label_frames_per_second,
                    num_classes=len(layout.classes),
                    with_jackknife=with_jackknife,
                )
            )
        except ValueError as exc:
            raise DatasetError(ref, str(exc)) from None
    if json_out:
        console.print_json(to_json({r.suite: r.as_dict() for r in reports}))
        return
    title = f"{layout.name} scores of {pred} ({len(recordings)} recordings)"
    print_suite_reports(console, chosen, reports, title, classes=layout.classes)


@app.command(rich_help_panel=DATA)
def folds(
    dataset: DatasetOpt,
    fmt: FormatOpt = "mic",
    protocol: Annotated[
        str, typer.Option("--protocol", help=f"One of {', '.join(PROTOCOLS)} (seed is leaky).")
    ] = "dcase2019",
    json_out: JsonOpt = False,
) -> None:
    """Show each fold's training, validation and test recordings."""
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


@app.command(rich_help_panel=DATA)
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

    experiment = experiment_config(config, sets, fmt=fmt)
    features, fmt = experiment.features, experiment.format
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
        print_redone(summary.redone)
        console.print(
            f"{len(summary.written)} written, {len(summary.skipped)} already complete, "
            f"{len(summary.failed)} failed, in {summary.elapsed_s:.1f} s -> {summary.root}"
        )
    if summary.failed:
        raise typer.Exit(1)
