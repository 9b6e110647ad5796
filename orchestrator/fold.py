"""One fold on one machine: its feature files and scaler, stage training, two-stage evaluation.

Paths of a run (``run_dir`` = ``<workspace>/runs/<name>``)::

    run_dir/fold<k>/<stage>/{last,best}.pt    stage checkpoints (sed and doa, or joint);
                                              best.pt is the selected model (best or last)
    run_dir/fold<k>/predictions/<split>_<stage>.npz   cached per-frame outputs (label rate)
    run_dir/fold<k>/submissions/<recording>.csv       the fold's test submissions
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.extract import current_inputs
from orchestrator.layout import RunLayout
from seld.data.folds import Fold, make_folds
from seld.data.formats import dataset_format_of, dataset_recordings
from seld.data.submission import write_submission
from seld.errors import ConfigError, MissingArtifactError
from seld.features.spectral import FeatureConfig
from seld.features.store import (
    Scaler,
    feature_path,
    feature_root,
    fold_scaler,
    reference_rows,
    stale_reason,
)
from seld.methods.inference import (
    Prediction,
    View,
    grid_rows,
    load_predictions,
    predict_file,
    save_predictions,
)
from seld.methods.models import inference_model
from seld.methods.registry import get_method, get_stage
from seld.methods.training import StageResult, TrainConfig, load_checkpoint, load_model, train_stage
from seld.metrics.reference import score_files
from seld.metrics.scores import ScoreReport


@dataclass(frozen=True)
class FoldData:
    """A fold's feature files (train / validation / test) and its training-only scaler."""

    fold: Fold
    fmt: str
    features: Path
    scaler: Scaler
    train: tuple[Path, ...]
    validation: tuple[Path, ...]
    test: tuple[Path, ...]


def fold_data(
    dataset: Path,
    workspace: Path,
    config: FeatureConfig,
    fmt: str,
    fold: int,
    protocol: str = "dcase2019",
) -> FoldData:
    """Resolve a fold's feature files; they must have been extracted (``seld-orch extract``)."""
    layout = dataset_format_of(dataset)
    allowed = {layout.protocol} | ({"seed"} if layout.name == "dcase2019" else set())
    if protocol not in allowed:
        raise ConfigError(
            f"{dataset} is a {layout.name} dataset: its protocol is {layout.protocol} "
            f"(folds {', '.join(map(str, layout.folds))}), not {protocol}; set "
            f"--protocol {layout.protocol} --folds {','.join(map(str, layout.folds))}"
        )
    recordings = {r.name: r for r in dataset_recordings(dataset, fmt, required=True)}
    (chosen,) = make_folds(list(recordings), protocol=protocol, folds=[fold])
    root = feature_root(workspace, config)

    def paths(members) -> tuple[Path, ...]:
        out = tuple(feature_path(root, fmt, "dev", n.stem) for n in members)
        stale = {
            p: stale_reason(p, config, current_inputs(recordings[n]))
            for p, n in zip(out, members, strict=True)
        }
        stale = {p: why for p, why in stale.items() if why is not None}
        if stale:
            path, why = next(iter(stale.items()))
            raise MissingArtifactError(
                f"{len(stale)} feature file(s) missing or out of date, e.g. {path} ({why}); "
                f"run `seld-orch extract --dataset {dataset} --format {fmt}` first"
            )
        return out

    train, val, test = paths(chosen.train), paths(chosen.validation), paths(chosen.test)
    return FoldData(chosen, fmt, root, fold_scaler(root, fmt, chosen), train, val, test)


def train_fold_stage(
    data: FoldData,
    config: TrainConfig,
    run_dir: Path,
    *,
    report: Callable[[dict[str, float], Path], None] | None = None,
    device: str = "auto",
) -> StageResult:
    """Train one stage of a fold; a stage that starts from another's model (the two-stage
    DOA stage) starts from this fold's selected model of that stage."""
    sed_state = None
    starts_from = get_stage(config.stage).starts_from
    if starts_from is not None:
        best = RunLayout(run_dir).checkpoint(data.fold.index, starts_from)
        if not best.exists():
            raise MissingArtifactError(
                f"{best} missing: train the {starts_from} stage of this fold first"
            )
        sed_state = load_checkpoint(best)["model"]
    return train_stage(
        config,
        data.train,
        data.validation,
        data.scaler,
        RunLayout(run_dir).stage(data.fold.index, config.stage),
        sed_state=sed_state,
        report=report,
        device=device,
    )


def predict_split(
    data: FoldData,
    run_dir: Path,
    split: str,
    stage: str,
    device: str = "cpu",
    views: Sequence[View] = (),
) -> dict[str, Prediction]:
    """Cached per-frame predictions of one stage's best model on the fold's ``validation`` or
    ``test`` recordings (computed once, then read from the cache), through ``views`` when given
    (test-time augmentation, :func:`seld.methods.inference.run_views`)."""
    cache = RunLayout(run_dir).predictions(data.fold.index, split, stage)
    if cache.exists():
        return load_predictions(cache)
    best = RunLayout(run_dir).checkpoint(data.fold.index, stage)
    if not best.exists():
        raise MissingArtifactError(f"{best} missing: train the {stage} stage of this fold first")
    model = inference_model(load_model(best, device))  # batch norm folded: faster, same outputs
    paths = data.validation if split == "validation" else data.test
    preds = [predict_file(model, p, data.scaler, device=device, views=views) for p in paths]
    save_predictions(cache, preds)
    return {p.stem: p for p in preds}


def method_predictions(
    data: FoldData,
    run_dir: Path,
    split: str,
    method: str = "two-stage",
    device: str = "cpu",
    views: Sequence[View] = (),
) -> dict[str, Prediction]:
    """The method's predictions of a split (:meth:`seld.methods.method.Method.combine`): the
    detecting stage's probabilities with the localizing stage's directions (two-stage: the SED
    and DOA models; joint: its one model)."""
    m = get_method(method)
    by_stage = {
        stage: predict_split(data, run_dir, split, stage, device, views)
        for stage in dict.fromkeys((m.detects, m.localizes))
    }
    return {
        stem: m.combine({stage: predictions[stem] for stage, predictions in by_stage.items()})
        for stem in by_stage[m.detects]
    }


def references(data: FoldData, split: str) -> dict[str, tuple[np.ndarray, int]]:
    """Reference rows and label frame counts of a split's recordings, from the feature files."""
    paths = data.validation if split == "validation" else data.test
    return {path.stem: reference_rows(path) for path in paths}


def submission_pairs(
    predictions: dict[str, Prediction],
    refs: dict[str, tuple[np.ndarray, int]],
    thresholds: float | np.ndarray = 0.3,
    submissions: Path | None = None,
    median_frames: int = 1,
    decode: Any = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Threshold (and median-filter) each prediction into submission rows, paired with its
    reference (``score_files`` input); optionally write the submission CSVs."""
    pairs = {}
    for stem, pred in predictions.items():
        rows = grid_rows(pred, thresholds, median_frames, decode)
        if submissions is not None:
            write_submission(submissions / f"{stem}.csv", rows)
        ref, frames = refs[stem]
        pairs[stem] = (ref, rows, frames)
    return pairs


def score_predictions(
    predictions: dict[str, Prediction],
    refs: dict[str, tuple[np.ndarray, int]],
    thresholds: float | np.ndarray = 0.3,
    submissions: Path | None = None,
    decode: Any = None,
) -> ScoreReport:
    """Threshold, mask and score; optionally write the submission CSVs. ``decode``: the
    method's decoding where it predicts several tracks per class
    (:func:`seld.methods.inference.grid_rows`)."""
    pairs = submission_pairs(predictions, refs, thresholds, submissions, decode=decode)
    return score_files(pairs)


def constant_direction_report(
    predictions: dict[str, Prediction],
    refs: dict[str, tuple[np.ndarray, int]],
    thresholds: float | np.ndarray = 0.3,
    decode: Any = None,
) -> ScoreReport:
    """The same detections with every direction replaced by (0, 0): the DOA model must beat it."""
    return score_predictions(constant_direction(predictions), refs, thresholds, decode=decode)


def constant_direction(predictions: dict[str, Prediction]) -> dict[str, Prediction]:
    """The predictions with every direction replaced by (0, 0) (distances kept)."""
    return {
        stem: replace(p, azimuth=np.zeros_like(p.azimuth), elevation=np.zeros_like(p.elevation))
        for stem, p in predictions.items()
    }
