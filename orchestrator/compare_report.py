"""A comparison as files and text: CSV, a markdown table, a figure and JSON (what ``sweep``
writes beside its cells and logs to MLflow, and what ``compare --csv`` writes)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from orchestrator.compare import GROUPS, Comparison, Pair
from orchestrator.jsonout import to_json
from seld.fsutil import atomic_path
from seld.serving.plots import plot_comparison

#: the compared scores that are angles in degrees (DCASE 2019's DOA error, the suites' LE, DOAE)
DEGREES = ("doa_error", "le", "doae")


def fmt(metric: str, mean: float, sd: float) -> str:
    """``0.312 ± 0.021`` (errors in degrees with one decimal); ``-`` when not computable."""
    if not math.isfinite(mean):
        return "-"
    digits = 1 if metric in DEGREES else 3
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def to_csv(c: Comparison) -> str:
    metrics = tuple(c.metrics)
    out = io.StringIO()
    fields = ["variant", "method", "format", "seeds", "failed"]
    fields += [f"{m}_{k}" for m in metrics for k in ("mean", "sd")]
    fields += [f"{g}{key}_{m}_mean" for g in GROUPS for key in _group_keys(c, g) for m in metrics]
    fields += [f"published_{m}" for m in metrics]
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for r in c.rows:
        row: dict[str, Any] = {
            "variant": r.variant, "method": r.method, "format": r.format,
            "seeds": " ".join(map(str, r.seeds)), "failed": r.failed,
        }  # fmt: skip
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_sd"] = r.mean[m], r.sd[m]
            if r.published:
                row[f"published_{m}"] = r.published[m]
        for g in GROUPS:
            for key, stats in r.groups.get(g, {}).items():
                for m in metrics:
                    row[f"{g}{key}_{m}_mean"] = stats[m][0]
        writer.writerow(row)
    return out.getvalue()


def _group_keys(c: Comparison, group: str) -> list[str]:
    return sorted({k for r in c.rows for k in r.groups.get(group, {})})


def to_markdown(c: Comparison, title: str) -> str:
    metrics = tuple(c.metrics)
    head = "| variant | method | format | seeds | " + " | ".join(c.metrics.values()) + " |"
    scored = "" if c.suite == "dcase2019" else f", scored with the {c.suite} suite"
    lines = [f"# {title}", "", f"Test splits of every fold together{scored}; mean ± sd over seeds."]
    lines += ["", head, "|" + "---|" * (4 + len(metrics))]
    for r in c.rows:
        cells = [fmt(m, r.mean[m], r.sd[m]) for m in metrics]
        seeds = f"{len(r.seeds)}" + (f" ({r.failed} failed)" if r.failed else "")
        lines.append(f"| {r.variant} | {r.method} | {r.format} | {seeds} | {' | '.join(cells)} |")
        if r.published:
            paper = [fmt(m, r.published[m], math.nan) for m in metrics]
            lines.append(f"| ↳ published | | | | {' | '.join(paper)} |")
    if c.published_source:
        lines += ["", f"Published: {c.published_source}."]
    if c.pairs:
        lines += ["", "Paired bootstrap over recordings (and seeds) of the SELD difference:", ""]
        lines += ["| variant | against | ΔSELD | 95% interval | verdict |", "|---|---|---|---|---|"]
        for p in c.pairs:
            d = p.difference
            interval = f"[{d.low:+.3f}, {d.high:+.3f}]"
            lines.append(f"| {p.a} | {p.b} | {d.difference:+.3f} | {interval} | {verdict(p)} |")
    lines += [f"\nNote: {note}." for note in c.notes]
    for variant, seed, error in c.failed:
        lines.append(f"\nFAILED: {variant} seed {seed}: {error}")
    return "\n".join(lines) + "\n"


def verdict(p: Pair) -> str:
    return verdict_text({"a": p.a, "difference": p.difference.difference,
                         "within_noise": p.difference.within_noise})  # fmt: skip


def verdict_text(pair: dict[str, Any]) -> str:
    """What a paired difference says (lower SELD is better): within noise, better or worse."""
    if pair["within_noise"]:
        return "within noise"
    return f"{pair['a']} worse" if pair["difference"] > 0 else f"{pair['a']} better"


def write_comparison(
    c: Comparison, folder: Path, title: str, stem: str = "comparison"
) -> dict[str, Path]:
    """``<stem>.csv``, ``.md``, ``.png`` and ``.json`` (``comparison.*`` by default)."""
    paths = {k: Path(folder) / f"{stem}.{k}" for k in ("csv", "md", "png", "json")}
    for key, text in (
        ("csv", to_csv(c)),
        ("md", to_markdown(c, title)),
        ("json", to_json(c.to_dict())),
    ):
        with atomic_path(paths[key]) as tmp:
            tmp.write_text(text)
    published = {r.variant: r.published for r in c.rows if r.published}
    plot_comparison(
        {r.variant: r.per_seed for r in c.rows}, title, paths["png"], published or None, c.metrics
    )
    return paths
