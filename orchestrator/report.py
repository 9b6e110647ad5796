"""Rich tables and JSON for the results the CLI prints."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from seld.metadata import DatasetError
from seld.metrics import ScoreReport, SeldScores

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


def print_problems(console: Console, problems: list[DatasetError]) -> None:
    """One line per problem, file first, never wrapped (so it can be grepped)."""
    for problem in problems:
        console.print(
            f"[red]problem[/red] {problem.path}: {problem.problem}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )


def to_json(data: Any) -> str:
    """JSON with NaN and infinities written as null (standard JSON has neither)."""
    return json.dumps(_nan_to_none(data), indent=2, sort_keys=True)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
