"""A finished Ray Tune search as files: one row per trial (``trials.csv``) and a chart of which
parameters mattered (``importance.png``).

Importances come from an in-memory Optuna study rebuilt from the finished trials, with the
distributions of the search space, and ``optuna.importance.get_param_importances`` with fANOVA
(PED-ANOVA if fANOVA cannot run). Conditional parameters are assessed only if every completed
trial has them (Optuna's rule); the others still appear in ``trials.csv``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from orchestrator.search_space import Param, SearchSpace
from seld.fsutil import atomic_path

logger = logging.getLogger(__name__)

CONFIG_PREFIX = "config/"
#: Columns of a Tune result frame that describe a trial rather than score it.
_BOOKKEEPING = {
    "trial_id",
    "status",
    "timestamp",
    "checkpoint_dir_name",
    "done",
    "training_iteration",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "experiment_tag",
    "logdir",
    "should_checkpoint",
    "error",
}
#: Fixed seed of the fANOVA forest, so that the same trials give the same chart.
FANOVA_SEED = 0


def results_frame(results: Any) -> pd.DataFrame:
    """The frame ``ResultGrid.get_dataframe()`` gives (last result of each trial, config as
    ``config/<name>`` columns), built from the results in memory, so that it also works when
    Tune wrote no per-trial result files; with a ``status`` column (COMPLETE or FAILED)."""
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        config = metrics.pop("config", None) or dict(result.config or {})
        row = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        row.update({f"{CONFIG_PREFIX}{k}": v for k, v in _flatten(config).items()})
        row["status"] = "FAILED" if result.error is not None else "COMPLETE"
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distribution of every parameter name the space can sample (per-class expanded)."""
    return {name: _distribution(p) for p in space.params for name in p.names(space.classes)}


def _distribution(p: Param) -> BaseDistribution:
    if p.type == "categorical":
        return CategoricalDistribution(list(p.choices))
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), step=p.step or 1)
    return FloatDistribution(p.low, p.high, log=p.type == "logfloat")


def _param_value(value: Any, distribution: BaseDistribution) -> Any:
    """A frame cell as the value Optuna recorded (None where the trial did not sample it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:  # CSV / pandas may have changed the type
            if choice == value or str(choice) == str(value):
                return choice
        raise ValueError(f"{value!r} is not one of {distribution.choices}")
    if isinstance(distribution, IntDistribution):
        return round(float(value))
    return float(value)


def _statuses(frame: pd.DataFrame, metric: str) -> pd.Series:
    if "status" in frame:
        return frame["status"].astype(str)
    if metric not in frame:
        return pd.Series("FAILED", index=frame.index)
    ok = pd.to_numeric(frame[metric], errors="coerce").notna()
    return ok.map({True: "COMPLETE", False: "FAILED"})


def build_study(
    frame: pd.DataFrame, space: SearchSpace, metric: str, mode: str
) -> tuple[optuna.Study, list[str]]:
    """An in-memory Optuna study holding the completed trials of ``frame`` (skipped trials are
    named in the returned notes)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    dists = distributions(space)
    notes = []
    statuses = _statuses(frame, metric)
    for index, row in frame.iterrows():
        value = pd.to_numeric(pd.Series([row.get(metric)]), errors="coerce").iloc[0]
        if statuses[index] != "COMPLETE" or not np.isfinite(value):
            continue
        params, used = {}, {}
        try:
            for name, dist in dists.items():
                v = _param_value(row.get(f"{CONFIG_PREFIX}{name}"), dist)
                if v is not None:
                    params[name], used[name] = v, dist
            trial = optuna.trial.create_trial(
                params=params, distributions=used, value=float(value), state=TrialState.COMPLETE
            )
        except ValueError as exc:
            notes.append(f"trial {row.get('trial_id', index)} left out: {exc}")
            continue
        study.add_trial(trial)
    return study, notes


def importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """Normalised parameter importances (fANOVA, else PED-ANOVA), or {} and the reason."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, f"{len(done)} completed trial(s): importances need at least 2"
    common = set.intersection(*(set(t.params) for t in done))
    varying = sorted(n for n in common if len({repr(t.params[n]) for t in done}) > 1)
    if not varying:
        return {}, "no parameter present in every completed trial varies"
    evaluators = [
        optuna.importance.FanovaImportanceEvaluator(seed=FANOVA_SEED),
        optuna.importance.PedAnovaImportanceEvaluator(),
    ]
    errors = []
    for evaluator in evaluators:
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=varying
            )
        except (ImportError, RuntimeError, ValueError) as exc:  # e.g. no scikit-learn
            errors.append(f"{type(evaluator).__name__}: {exc}")
            continue
        note = None if not errors else f"fANOVA failed ({errors[0]}); PED-ANOVA used"
        return {k: float(v) for k, v in found.items()}, note
    return {}, "importances failed: " + "; ".join(errors)


def _plot(path: Path, found: dict[str, float], title: str, trials: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(found, key=found.get)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.35 * len(names)))
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(found[name], y, f" {found[name]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(found.values()) * 1.15))
    ax.set_xlabel("importance (fANOVA, normalised)")
    ax.set_title(f"{title}: {trials} completed trials", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def export_study(
    frame: pd.DataFrame, space: SearchSpace, metric: str, mode: str, out_dir: Path, title: str
) -> dict[str, Any]:
    """Write ``trials.csv`` and ``importance.png`` of a finished search into ``out_dir``.

    ``frame``: one row per trial as ``ResultGrid.get_dataframe()`` (or :func:`results_frame`)
    gives it, parameters in ``config/<name>`` columns (missing where a conditional parameter was
    not sampled). ``metric`` and ``mode`` (``min`` or ``max``) are the search's. The CSV holds the
    trial id, the space's parameters, every reported metric and the status. The chart is
    skipped, with a note, when fewer than 2 trials completed or no parameter varies.

    Returns ``{"trials_csv": path, "importance_png": path or None, "importances": {name:
    share}, "note": str or None}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _trials_table(frame, space, metric)
    trials_csv = out_dir / "trials.csv"
    with atomic_path(trials_csv) as tmp:
        table.to_csv(tmp, index=False)
    study, notes = build_study(frame, space, metric, mode)
    found, note = importances(study)
    png = None
    if found:
        png = out_dir / "importance.png"
        completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        _plot(png, found, title, completed)
    notes += [note] if note else []
    for n in notes:
        logger.info("%s: %s", title, n)
    return {
        "trials_csv": trials_csv,
        "importance_png": png,
        "importances": found,
        "note": "; ".join(notes) or None,
    }


def _trials_table(frame: pd.DataFrame, space: SearchSpace, metric: str) -> pd.DataFrame:
    """trial_id, config/<param> (space order, then any other config column), the metric, the
    other reported metrics, status."""
    params = [f"{CONFIG_PREFIX}{n}" for n in distributions(space)]
    extra = [c for c in frame.columns if c.startswith(CONFIG_PREFIX) and c not in params]
    metrics = [
        c
        for c in frame.columns
        if not c.startswith(CONFIG_PREFIX) and c not in _BOOKKEEPING and c != metric
    ]
    table = pd.DataFrame(index=frame.index)
    table["trial_id"] = frame["trial_id"] if "trial_id" in frame else range(len(frame))
    for column in params + extra:
        table[column] = frame[column] if column in frame else np.nan
    table[metric] = frame[metric] if metric in frame else np.nan
    for column in metrics:
        table[column] = frame[column]
    table["status"] = _statuses(frame, metric).to_numpy()
    return table.reset_index(drop=True)
