"""``seld-orch compare``: cv runs and sweeps side by side, as mean ± sd over seeds, with paired
bootstrap intervals so that a difference within noise reads as such.

A target is a sweep (``runs/<sweep>/sweep.json``: every variant x seed cell) or a single cv run
(its own variant, its config's seed). Each cv run contributes its cross-validated test scores
(``metrics.json``, per ov and ir too) and, for the paired comparison, each test recording's
metric counts (``test_counts.json``). Published numbers (``orchestrator/sweeps/published.yaml``)
stand beside the variants a sweep maps to them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.layout import RunLayout
from seld.errors import ConfigError, MissingArtifactError
from seld.metrics.bootstrap import PairedDifference, paired_bootstrap
from seld.metrics.scores import SeldCounts
from seld.metrics.suites import get_suite
from seld.serving.plots import COMPARED_METRICS

#: the DCASE 2019 scores compared (another suite's runs compare that suite's scores)
METRICS = tuple(COMPARED_METRICS)
GROUPS = ("ov", "ir")


@dataclass(frozen=True)
class Entry:
    """One cv run of a comparison: which variant and seed it is, and its folder."""

    variant: str
    seed: int
    layout: RunLayout


@dataclass
class VariantRow:
    variant: str
    method: str
    format: str
    seeds: list[int]
    per_seed: dict[str, list[float]]
    mean: dict[str, float]
    sd: dict[str, float]
    #: "ov" -> "1" -> metric -> (mean, sd)
    groups: dict[str, dict[str, dict[str, tuple[float, float]]]] = field(default_factory=dict)
    failed: int = 0
    published: dict[str, float] | None = None


@dataclass
class Pair:
    a: str
    b: str
    difference: PairedDifference


@dataclass
class Comparison:
    rows: list[VariantRow]
    pairs: list[Pair]
    failed: list[tuple[str, int, str]]
    published_source: str = ""
    #: why a pair of variants has no paired comparison
    notes: list[str] = field(default_factory=list)
    #: the metric suite the runs were scored with, and its compared scores (key -> label)
    suite: str = "dcase2019"
    metrics: dict[str, str] = field(default_factory=lambda: dict(COMPARED_METRICS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "metrics": self.metrics,
            "rows": [asdict(r) for r in self.rows],
            "pairs": [
                {
                    "a": p.a,
                    "b": p.b,
                    **asdict(p.difference),
                    "within_noise": p.difference.within_noise,
                }
                for p in self.pairs
            ],
            "failed": [{"variant": v, "seed": s, "error": e} for v, s, e in self.failed],
            "published_source": self.published_source,
            "notes": self.notes,
        }


def published_table() -> tuple[str, dict[str, dict[str, float]]]:
    """(source, key -> er/f/doa_error/frame_recall/seld) of the shipped published numbers."""
    data = yaml.safe_load(
        resources.files("orchestrator.sweeps").joinpath("published.yaml").read_text()
    )
    rows = {}
    for key, row in data["rows"].items():
        seld = (row["er"] + 1 - row["f"] + row["doa_error"] / 180 + 1 - row["frame_recall"]) / 4
        rows[key] = {**row, "seld": seld}
    return str(data["source"]), rows


def sweep_entries(
    layout: RunLayout,
) -> tuple[list[Entry], list[tuple[str, int, str]], dict[str, str]]:
    """A sweep's finished cells, its unfinished or failed ones (variant, seed, why), and its
    variants' published keys."""
    spec = json.loads(layout.sweep_json.read_text())["sweep"]
    entries, missing = [], []
    for variant in spec["variants"]:
        for seed in spec["seeds"]:
            cell = layout.child(f"{variant['name']}-seed{seed}")
            if cell.metrics_json.exists():
                entries.append(Entry(variant["name"], int(seed), cell))
            else:
                missing.append((variant["name"], int(seed), "no scores (failed or unfinished)"))
    published = {v["name"]: v["published"] for v in spec["variants"] if v.get("published")}
    return entries, missing, published


def resolve(
    workspace: Path, names: list[str]
) -> tuple[list[Entry], list[tuple[str, int, str]], dict[str, str]]:
    """Sweeps and cv runs of a workspace, by name, as comparison entries."""
    entries, missing, published = [], [], {}
    for name in names:
        layout = RunLayout.named(workspace, name)
        if layout.sweep_json.exists():
            e, m, p = sweep_entries(layout)
            entries += e
            missing += m
            published |= p
        elif layout.metrics_json.exists():
            seed = int(json.loads(layout.config_json.read_text())["config"].get("seed", 0))
            entries.append(Entry(name, seed, layout))
        else:
            raise MissingArtifactError(
                f"{layout.root}: neither a sweep (sweep.json) nor a finished cv run "
                "(metrics.json); `seld-orch sweep` or `seld-orch cv` makes them"
            )
    return entries, missing, published


def _mean_sd(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def _counts(
    layout: RunLayout, metrics: dict[str, Any], suite: str | None = None
) -> dict[str, Any] | None:
    """Each test recording's counts: DCASE 2019 :class:`SeldCounts`, or a metric suite's
    (``{"suite": ..., "recordings": ...}`` in the file) as arrays; ``suite``: under another
    suite than the run's own (its ``metrics``' suite; ``test_counts.<suite>.json``)."""
    path = layout.test_counts
    if suite is not None and suite != _own_suite(metrics):
        path = layout.suite_counts(suite)
    if not path.exists():
        return None
    counts = json.loads(path.read_text())
    if "suite" in counts:
        return {
            name: {k: np.asarray(v, dtype=np.float64) for k, v in c.items()}
            for name, c in counts["recordings"].items()
        }
    return {name: SeldCounts.from_dict(c) for name, c in counts.items()}


def _own_suite(metrics: dict[str, Any]) -> str:
    """The suite a run was scored with (its ``metrics.json``; DCASE 2019's for runs made
    before suites)."""
    return metrics.get("suite", "dcase2019")


def _scores_under(entry: Entry, metrics: dict[str, Any], suite: str) -> dict[str, Any]:
    """A run's cross-validated test scores under ``suite``: its own, or those of another suite
    it was scored with (``cv --suite``); :class:`ConfigError` where it has none."""
    if _own_suite(metrics) == suite:
        return metrics["overall"]
    other = metrics.get("suites", {}).get(suite)
    if other is None:
        raise ConfigError(
            f"{entry.layout.root}: not scored with the {suite} suite (score it with `cv --suite "
            f"{suite}`, or list it under a sweep's suites)"
        )
    return other["overall"]


def _suite_of(runs: list[tuple[Entry, dict[str, Any]]]) -> str:
    """The one metric suite every run was scored with (``metrics.json``'s ``suite``; DCASE
    2019's for runs made before suites); :class:`ConfigError` when they differ."""
    suites = {_own_suite(metrics) for _, metrics in runs}
    if len(suites) > 1:
        raise ConfigError(
            "the runs were scored with different metric suites ("
            + ", ".join(sorted(suites))
            + "): compare runs of one dataset format"
        )
    return suites.pop() if suites else "dcase2019"


def compare_runs(
    entries: list[Entry],
    *,
    published: dict[str, str] | None = None,
    failed: list[tuple[str, int, str]] | None = None,
    baseline: str | None = None,
    samples: int = 2000,
    seed: int = 0,
    suite: str | None = None,
) -> Comparison:
    """Group ``entries`` by variant (in order of appearance), average over seeds, and compare
    each variant with ``baseline`` (default: the lowest mean SELD) by a paired bootstrap over
    the recordings and seeds both have. ``suite``: compare the scores of another suite the
    runs were scored with (default: their own)."""
    failed = list(failed or [])
    source, table = published_table() if published else ("", {})
    by_variant: dict[str, list[tuple[Entry, dict[str, Any]]]] = {}
    for entry in entries:
        metrics = json.loads(entry.layout.metrics_json.read_text())
        by_variant.setdefault(entry.variant, []).append((entry, metrics))
    own = _suite_of([run for runs in by_variant.values() for run in runs])
    if suite is not None:
        get_suite(suite)  # an unknown name fails here
    suite = suite or own
    scored = {
        id(entry): _scores_under(entry, m, suite)
        for runs in by_variant.values()
        for entry, m in runs
    }
    metrics = (
        dict(COMPARED_METRICS)
        if suite == "dcase2019"
        else {m.key: m.label for m in get_suite(suite).metrics}
    )
    compared = tuple(metrics)
    if suite != "dcase2019":  # the published numbers are DCASE 2019 scores
        published, source, table = None, "", {}
    rows = []
    for variant, runs in by_variant.items():
        config = json.loads(runs[0][0].layout.config_json.read_text())["config"]
        per_seed = {m: [_value(scored[id(e)].get(m)) for e, _ in runs] for m in compared}
        stats = {m: _mean_sd(v) for m, v in per_seed.items()}
        groups: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
        for group in GROUPS if suite == own else ():  # the groups are the own suite's
            keys = sorted({k for _, r in runs for k in r.get("groups", {}).get(group, {})})
            groups[group] = {
                key: {
                    m: _mean_sd([r["groups"][group].get(key, {}).get(m, math.nan) for _, r in runs])
                    for m in compared
                }
                for key in keys
            }
        key = (published or {}).get(variant)
        rows.append(
            VariantRow(
                variant,
                str(config.get("method", "")),
                str(config.get("data", {}).get("format", "")),
                [e.seed for e, _ in runs],
                per_seed,
                {m: s[0] for m, s in stats.items()},
                {m: s[1] for m, s in stats.items()},
                groups,
                sum(1 for v, _, _ in failed if v == variant),
                table.get(key) if key else None,
            )
        )
    notes: list[str] = []
    pairs = _pairs(by_variant, rows, baseline, samples, seed, notes, suite)
    return Comparison(rows, pairs, failed, source, notes, suite, metrics)


def _value(value: Any) -> float:
    """A score from ``metrics.json`` (null where it was NaN) as a float."""
    return math.nan if value is None else float(value)


def _pairs(
    by_variant, rows, baseline, samples, seed, notes: list[str], suite: str = "dcase2019"
) -> list[Pair]:
    finite = [r for r in rows if math.isfinite(r.mean["seld"])]
    if len(rows) < 2 or not finite:
        return []
    if baseline is not None and baseline not in by_variant:
        raise MissingArtifactError(f"--baseline {baseline!r}: not a compared variant")
    base = baseline or min(finite, key=lambda r: r.mean["seld"]).variant
    base_runs = {e.seed: _counts(e.layout, m, suite) for e, m in by_variant[base]}
    pairs = []
    for row in rows:
        if row.variant == base:
            continue
        other = {e.seed: _counts(e.layout, m, suite) for e, m in by_variant[row.variant]}
        shared = sorted(s for s in set(base_runs) & set(other) if base_runs[s] and other[s])
        if not shared:
            notes.append(
                f"no paired comparison of {row.variant} and {base}: no shared seed with "
                "per-recording counts"
            )
            continue
        try:
            diff = paired_bootstrap(
                [other[s] for s in shared],
                [base_runs[s] for s in shared],
                samples=samples,
                seed=seed,
                suite=None if suite == "dcase2019" else get_suite(suite),
            )
        except ValueError as exc:  # fewer than two recordings in common
            notes.append(f"no paired comparison of {row.variant} and {base}: {exc}")
            continue
        pairs.append(Pair(row.variant, base, diff))
    return pairs
