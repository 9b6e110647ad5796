"""How the CLI looks: consoles, progress bars, the live fold-job table, score tables, and the
demo's and searches' result tables. Nothing below the CLI imports this module; long work reports
through callbacks, and the commands render here."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seld.data.metadata import DatasetError
from seld.metrics.scores import ScoreReport, SeldScores

console = Console()
err_console = Console(stderr=True)
ORACLE_CONSTANT = "baseline: oracle detection + constant direction (0°, 0°)"

METRIC_COLUMNS = (
    ("ER", "er", "{:.3f}"),
    ("F", "f", "{:.3f}"),
    ("DOA error (°)", "doa_error", "{:.2f}"),
    ("Frame recall", "frame_recall", "{:.3f}"),
    ("SELD score", "seld", "{:.4f}"),
)


def _fmt(value: float, pattern: str) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (pattern.format(value))
    )


def scores_table(title: str, rows: Mapping[str, SeldScores], first_column: str = "") -> Table:
    """One row per named score set; SELD score is lower-is-better, F and recall higher."""
    table = Table(title=title, title_justify="left")
    table.add_column(first_column, no_wrap=True)
    for header, _, _ in METRIC_COLUMNS:
        table.add_column(header, justify="right")
    for name, scores in rows.items():
        values = scores.as_dict()
        table.add_row(name, *(_fmt(values[key], fmt) for _, key, fmt in METRIC_COLUMNS))
    return table


def print_score_report(console: Console, report: ScoreReport, title: str = "Scores") -> None:
    """The official script's view: all files, then per split, per ov and per ir."""
    rows: dict[str, SeldScores] = {"all": report.overall}
    for group, per_key in report.groups.items():
        for key, scores in sorted(per_key.items()):
            rows[f"{group} {key}"] = scores
    console.print(scores_table(title, rows, "files"))


def _suite_cell(value: float, metric: Any, interval: tuple[float, float] | None = None) -> str:
    pattern = "{:.2f}" if metric.unit == "°" else "{:.3f}"
    text = _fmt(value, pattern)
    if interval is not None:
        text += f" [{_fmt(interval[0], pattern)}, {_fmt(interval[1], pattern)}]"
    return text


def suite_scores_table(
    suite: Any,
    rows: Mapping[str, Mapping[str, float]],
    title: str,
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> Table:
    """One row per named set of a metric suite's scores, a column per score with its
    direction (↑ higher is better, ↓ lower); ``intervals``: row -> score -> (low, high)."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for m in suite.metrics:
        unit = f" ({m.unit})" if m.unit else ""
        table.add_column(f"{m.label}{unit} {'↑' if m.higher_is_better else '↓'}", justify="right")
    for name, scores in rows.items():
        shown = (intervals or {}).get(name, {})
        table.add_row(
            name, *(_suite_cell(scores[m.key], m, shown.get(m.key)) for m in suite.metrics)
        )
    return table


def print_suite_reports(
    console: Console,
    suites: list[Any],
    reports: list[Any],
    title: str,
    classes: tuple[str, ...] | None = None,
) -> None:
    """Each metric suite's overall scores (with 95% jackknife intervals when computed), then
    its per-class rows where the suite keeps classes apart. Arrows say which way is better."""
    from seld.data.dcase import CLASSES

    classes = classes or CLASSES

    def class_name(i: int) -> str:
        return classes[i] if i < len(classes) else f"class {i}"

    for suite, report in zip(suites, reports, strict=True):
        rows = {"all": report.overall}
        intervals = {"all": report.intervals or {}}
        per_class, class_intervals = report.per_class or {}, report.class_intervals or {}
        for i in range(len(next(iter(per_class.values()), []))):
            rows[class_name(i)] = {k: v[i] for k, v in per_class.items()}
            intervals[class_name(i)] = {k: v[i] for k, v in class_intervals.items()}
        console.print(suite_scores_table(suite, rows, f"{suite.name}: {title}", intervals))
        console.print(f"  {suite.description}", highlight=False)
        note = getattr(suite, "absent_note", "")
        if report.absent_classes and note:
            names = ", ".join(class_name(i) for i in report.absent_classes)
            console.print(
                f"  [yellow]note:[/yellow] {len(report.absent_classes)} class(es) neither in the "
                f"references nor predicted ({names}) count in the macro average as {note}, as in "
                "the official code",
                highlight=False,
                soft_wrap=True,
            )


def print_warnings(warnings: list[DatasetError]) -> None:
    """Repairable problems of scored files, one line each, on stderr."""
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


def print_problems(console: Console, problems: list[DatasetError]) -> None:
    """One line per problem, file first, never wrapped (so it can be grepped)."""
    for problem in problems:
        console.print(
            f"[red]problem[/red] {problem.path}: {problem.problem}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )


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


def status_table(status: dict[str, dict]) -> Table:
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


def print_redone(redone: dict[str, str]) -> None:
    """Say which cached feature files were out of date, and why."""
    if redone:
        shown = ", ".join(f"{stem} ({why})" for stem, why in list(redone.items())[:5])
        more = f" and {len(redone) - 5} more" if len(redone) > 5 else ""
        err_console.print(
            f"[yellow]redone:[/yellow] {len(redone)} feature file(s) out of date: {shown}{more}",
            soft_wrap=True,
        )


def hparams_table(summary: dict[str, Any], name: str) -> Table:
    """The trials of a hyperparameter search, best first, with their sampled config paths."""
    table = Table(title=f"search {name}: {len(summary['trials'])} trials (ASHA)")
    names = _search_space_names(summary)
    for column in ("trial", "iterations", "val SELD", *names):
        table.add_column(column)
    for row in sorted(summary["trials"], key=lambda r: r["val_seld"]):
        mark = " *" if row["trial_id"] == summary["best"]["trial_id"] else ""
        state = "" if row["completed"] else " (stopped)"
        table.add_row(
            row["trial_id"] + mark,
            f"{row['iterations']}{state}",
            f"{row['val_seld']:.4f}",
            *(_short(row["config"].get(k)) for k in names),
        )
    return table


class DemoConsole:
    """The demo's progress on stderr (an :class:`orchestrator.demo.DemoReporter`): a rule per
    step, progress bars, the live fold jobs (transient under ``--json``, so that stdout holds
    only the JSON)."""

    def __init__(self, quiet: bool = False):
        self.transient = quiet
        self.err = Console(stderr=True, quiet=quiet)

    def step(self, n: int, total: int, what: str) -> None:
        self.err.rule(f"[bold]{n}/{total} {what}")

    @contextmanager
    def items(self, label: str, total: int | None) -> Iterator[Callable[[str], None]]:
        with progress_bar(transient=self.transient) as progress:
            task = progress.add_task(label, total=total, current="")
            yield lambda name: progress.update(task, advance=1, current=name)

    @contextmanager
    def fold_jobs(self) -> Iterator[Callable[[dict[str, dict[str, Any]]], None]]:
        with Live(
            status_table({}), console=self.err, refresh_per_second=2, transient=self.transient
        ) as live:
            yield lambda status: live.update(status_table(status))

    def failed(self, lines: list[str]) -> None:
        for line in lines:
            self.err.print(f"[red]{line}[/red]", soft_wrap=True, highlight=False)


def _search_space_names(summary: dict) -> list[str]:
    return sorted({k for row in summary["trials"] for k in row["config"]})


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_demo(
    console: Console,
    summary: dict[str, Any],
    before: ScoreReport,
    after: ScoreReport,
    baselines: dict[str, ScoreReport],
    workspace: Path,
) -> None:
    config = summary["config"]
    from seld.methods.registry import get_method

    method = get_method(config["method"]).description
    label = config["method"]
    median = config["median_frames"]
    default = f"SED threshold {config['threshold']:g}, " + (
        "no median filter" if median == 1 else f"median filter of {median} frames"
    )
    folds = {f"fold {k} (test split {k})": SeldScores(**v) for k, v in summary["folds"].items()}
    title = f"{method}, per fold (threshold {config['threshold']:g})"
    console.print(scores_table(title, folds, ""))
    best = ", ".join(f"{k} {v:.3g}" for k, v in summary["best_postprocessing"].items())
    rows: dict[str, SeldScores] = {
        "baseline: silence": baselines["silence"].overall,
        ORACLE_CONSTANT: baselines["constant-direction"].overall,
        f"{label}, default": before.overall,
        f"{label}, tuned": after.overall,
    }
    console.print(
        scores_table("Cross-validated, all four test splits (SELD: lower is better)", rows, "")
    )
    console.print(
        f"default: {default}; tuned: the best post-processing on the "
        f"validation splits ({best}). The baselines are for scale: the second one is handed the "
        "reference events (perfect ER, F and frame recall) and points every one at azimuth 0, "
        "elevation 0, so its DOA error is what a model that does not localize gets."
    )
    groups = {name.replace("ov", "ov ").replace("ir", "ir "): s for name, s in _group_rows(after)}
    console.print(scores_table("After tuning, per overlap (ov) and impulse response (ir)", groups))
    search = summary["threshold_search"]
    console.print(
        f"Threshold search: {search['trials']} trials, {search['trials_per_s']:.1f} trials/s; "
        f"validation SELD {search['validation_default']['seld']:.4f} -> "
        f"{search['validation_tuned']['seld']:.4f}."
    )
    console.print(f"Prediction plots: {summary['plots']}")
    console.print(
        f"Done in {summary['elapsed_s'] / 60:.1f} min. Everything is in MLflow (experiment "
        f"'seld-demo'); open it with\n  seld-orch ui --workspace {workspace}\n"
        "then browse http://127.0.0.1:5000"
    )


def _group_rows(report: ScoreReport):
    for group in ("ov", "ir"):
        for key, scores in sorted(report.groups.get(group, {}).items()):
            yield f"{group}{key}", scores


def comparison_tables(comparison: Mapping, title: str, by: str | None = None) -> list[Table]:
    """The comparison (``orchestrator.compare.Comparison.to_dict``) as tables: variants with
    mean ± sd over seeds (and the published row beneath), then per ``by`` value (ov or ir),
    then the paired bootstrap of SELD."""
    from orchestrator.compare_report import fmt, verdict_text
    from seld.serving.plots import COMPARED_METRICS

    compared = comparison.get("metrics") or COMPARED_METRICS
    metrics = tuple(compared)
    headers = tuple(compared.values())
    suite = comparison.get("suite", "dcase2019")
    scored = "" if suite == "dcase2019" else f" ({suite})"
    main = Table(title=f"{title}: test splits{scored}, mean ± sd over seeds", title_justify="left")
    main.add_column("variant", no_wrap=True)
    for column in ("method", "format", "seeds"):
        main.add_column(column)
    for header in headers:
        main.add_column(header, justify="right")
    for row in comparison["rows"]:
        seeds = str(len(row["seeds"])) + (f" ({row['failed']} failed)" if row["failed"] else "")
        values = [fmt(m, _num(row["mean"][m]), _num(row["sd"][m])) for m in metrics]
        main.add_row(row["variant"], row["method"], row["format"], seeds, *values)
        if row.get("published"):
            paper = [fmt(m, _num(row["published"][m]), float("nan")) for m in metrics]
            main.add_row("  published", "", "", "", *paper, style="dim")
    for failed in comparison["failed"]:
        main.add_row(failed["variant"], "", "", f"seed {failed['seed']}", "FAILED", style="red")
    tables = [main]
    if by is not None:
        per = Table(title=f"{title}: per {by}", title_justify="left")
        per.add_column("variant", no_wrap=True)
        per.add_column(by, no_wrap=True, min_width=2)
        for header in headers:
            per.add_column(header, justify="right")
        for row in comparison["rows"]:
            for key, stats in row["groups"].get(by, {}).items():
                values = [fmt(m, _num(stats[m][0]), _num(stats[m][1])) for m in metrics]
                per.add_row(row["variant"], key, *values)
        tables.append(per)
    if comparison["pairs"]:
        pairs = Table(
            title="paired bootstrap over recordings and seeds: SELD difference",
            title_justify="left",
        )
        for column in ("variant", "against", "ΔSELD", "95% interval", "verdict"):
            pairs.add_column(column)
        for p in comparison["pairs"]:
            interval = f"[{_num(p['low']):+.3f}, {_num(p['high']):+.3f}]"
            pairs.add_row(
                p["a"], p["b"], f"{_num(p['difference']):+.3f}", interval, verdict_text(p)
            )
        tables.append(pairs)
    return tables


def print_comparison(console: Console, comparison: Mapping, title: str, by: str | None = None):
    """The comparison's tables, then its notes (why a pair has no paired comparison)."""
    for table in comparison_tables(comparison, title, by):
        console.print(table)
    for note in comparison.get("notes", []):
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def _num(value) -> float:
    """A JSON number (null where it was NaN) as a float."""
    return float("nan") if value is None else float(value)
