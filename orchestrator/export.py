"""A finished run's trained models as one :class:`seld.serving.predict.Predictor`, and its export.

The predictor of a run takes, per fold, the models each stage handed on (``best.pt``) and the
fold's feature scaler (fitted on that fold's training recordings, found through the run's own
dataset and features, exactly as its evaluation finds it), plus two post-processings: the run
config's (``default``) and, when ``seld-orch tune thresholds`` ran on it, the best one of its
search (``tuned``: ``<run>/thresholds/summary.json``; a ``--per-fold`` search gives one per fold,
used when a single fold predicts). ``export_run`` writes all of it to one model file
(:mod:`seld.serving.model_archive`), which then predicts without the workspace or the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.cv import CVSettings, settings_fold_data
from orchestrator.evaluation import Postprocessing, run_labels
from orchestrator.layout import RunLayout
from orchestrator.runs import validate_run_name
from seld.data.metadata import DatasetError
from seld.errors import ConfigError, MissingArtifactError
from seld.methods.training import load_checkpoint
from seld.serving.model_archive import write_archive
from seld.serving.predict import FoldModels, Predictor

#: Where ``tune thresholds`` leaves its results in a run folder (joint and per-fold searches).
THRESHOLD_SEARCHES = ("thresholds", "thresholds-per-fold")


def run_settings(workspace: str | Path, run: str) -> CVSettings:
    """The settings of a finished cv run of the workspace."""
    layout = RunLayout.named(workspace, validate_run_name(run))
    if not layout.config_json.exists():
        raise MissingArtifactError(f"{layout.config_json} missing: is {run!r} a finished cv run?")
    return CVSettings.from_run(layout.root)


def tuned_postprocessing(
    s: CVSettings, folds: tuple[int, ...]
) -> tuple[Postprocessing, str] | None:
    """The best post-processing of the run's threshold search and the file it comes from, or
    ``None`` when the run has none that applies to ``folds`` (a per-fold search applies to a
    single fold only; the joint search to any)."""
    classes = run_labels(s).classes
    joint = s.run_dir / THRESHOLD_SEARCHES[0] / "summary.json"
    if joint.exists():
        best = json.loads(joint.read_text())["best_config"]
        return Postprocessing.from_params(best, s.threshold, classes), str(joint)
    per_fold = s.run_dir / THRESHOLD_SEARCHES[1] / "summary.json"
    if per_fold.exists() and len(folds) == 1:
        best = json.loads(per_fold.read_text())["best_config"].get(f"fold{folds[0]}")
        if best is not None:
            return Postprocessing.from_params(best, s.threshold, classes), str(per_fold)
    return None


def _fold_models(s: CVSettings, k: int, device: str) -> FoldModels:
    states = {}
    for stage in s.stages:
        best = s.layout.checkpoint(k, stage)
        if not best.exists():
            raise MissingArtifactError(
                f"{best} missing: run {s.run!r} has not finished the {stage} stage of fold {k}"
            )
        states[stage] = load_checkpoint(best)
    try:
        scaler = settings_fold_data(s, k).scaler
    except (DatasetError, MissingArtifactError) as exc:
        raise MissingArtifactError(
            f"the feature scaler of fold {k} of run {s.run!r} comes from its dataset "
            f"{s.dataset} and its features, which are not usable here ({exc}); predict with a "
            "model exported while they were (`seld-orch export`)"
        ) from None
    return FoldModels.from_states(k, scaler, states, device)


def run_predictor(
    workspace: str | Path,
    run: str,
    *,
    folds: tuple[int, ...] | None = None,
    choice: str = "auto",
    device: str = "cpu",
) -> Predictor:
    """Load a finished cv run's models once: every fold of the run as an ensemble, or only
    ``folds``; ``choice`` of post-processing: ``auto`` (tuned when the run has a search),
    ``default`` or ``tuned``."""
    s = run_settings(workspace, run)
    chosen = folds or s.folds
    missing = [k for k in chosen if k not in s.folds]
    if missing:
        raise ConfigError(
            f"run {run!r} has no fold {missing[0]} (folds: {', '.join(map(str, s.folds))})"
        )
    members = [_fold_models(s, k, device) for k in chosen]
    post: dict[str, Postprocessing] = {"default": Postprocessing.of(s)}
    tuned = tuned_postprocessing(s, tuple(chosen))
    if tuned is not None:
        post["tuned"] = tuned[0]
    return Predictor(
        s.experiment, members, post, choice=choice, source=f"run {run}", labels=run_labels(s)
    )


def export_run(
    workspace: str | Path, run: str, out: str | Path, *, device: str = "cpu"
) -> dict[str, Any]:
    """Write every fold and stage of a finished run, its scalers and post-processing (default,
    and tuned when it has a search) to one model file; returns the archive's manifest, with
    its ``path`` and size in ``bytes``."""
    predictor = run_predictor(workspace, run, device=device)
    s = run_settings(workspace, run)
    tuned = tuned_postprocessing(s, s.folds)
    source = {
        "run": run,
        "config": s.experiment.name,
        "config_hash": s.experiment.hash(),
        "tuned_from": tuned[1] if tuned else None,
    }
    manifest = write_archive(predictor, out, source)
    return {**manifest, "path": str(out), "bytes": Path(out).stat().st_size}
