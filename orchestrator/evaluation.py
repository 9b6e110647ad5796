"""One evaluation path: a split (validation or test) of a cv run under given post-processing.

A fold's cached predictions of the run's method (:func:`orchestrator.fold.method_predictions`)
are thresholded and median-filtered into submission rows, exactly as the submission CSVs are
written, and scored with the official-equal scorer per fold and all folds together. ``cv``
(its test splits), ``tune hparams`` (a trial's validation splits), ``tune thresholds`` (the
predictions its searches start from) and the demo (before and after tuning) all go through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.cv import CVSettings, settings_fold_data
from orchestrator.fold import method_predictions, references, submission_pairs
from orchestrator.fold import references as references_of
from seld.data.formats import dataset_format_of
from seld.data.submission import write_tracked_submission
from seld.errors import ConfigError
from seld.features.store import LabelFacts
from seld.methods import inference
from seld.methods.inference import Prediction, views_of
from seld.methods.registry import get_method
from seld.methods.training import selection_suite
from seld.metrics.reference import score_files
from seld.metrics.scores import ScoreReport
from seld.metrics.suites import (
    Ceiling,
    MetricSuite,
    SuiteReport,
    label_problem,
    one_direction_ceiling,
    suite_report,
)

#: (predictions, references) of some recordings: ``references`` maps a name to (rows, frames)
Split = tuple[dict[str, Prediction], dict[str, tuple[np.ndarray, int]]]
#: a recording's (reference rows, submission rows, label frames), as ``score_files`` takes them
Pair = tuple[np.ndarray, np.ndarray, int]


class Postprocessing(inference.Postprocessing):
    """:class:`seld.methods.inference.Postprocessing`, which can also be read from a cv run."""

    @classmethod
    def of(cls, s: CVSettings) -> Postprocessing:
        """The run's own: its experiment config's ``inference`` section, for the classes of
        its dataset's format."""
        params = {"threshold": s.threshold, "median_frames": s.median_frames}
        return cls.from_params(params, classes=run_labels(s).classes)


def run_labels(s: CVSettings) -> LabelFacts:
    """The labels of a run's dataset: its format, label frame rate and classes."""
    return dataset_labels(s.dataset)


def run_decode(s: CVSettings) -> Any:
    """The run's method's predictions to track-wise rows
    (:attr:`seld.methods.method.Method.decode`)."""
    return get_method(s.experiment.method).decode


def check_suites(s: CVSettings, suites: Sequence[MetricSuite] = ()) -> None:
    """Refuse, before any work, what cannot score the run's labels or its method's
    predictions: ``suites`` (to score its test splits with) and the config's
    ``selection.suite``; and a method that trains on source distances on a dataset whose
    labels have none (:func:`check_distances`). Raises :class:`ConfigError`."""
    labels = run_labels(s)
    distances = get_method(s.experiment.method).distances
    for suite in suites:
        problem = label_problem(
            suite, labels.label_frames_per_second, labels.num_classes, distances
        )
        if problem:
            raise ConfigError(problem)
    check_distances(s)
    try:
        selection_suite(s.experiment.train_config(s.stages[0]), labels)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_distances(s: CVSettings) -> None:
    """:class:`ConfigError` when the run's method trains on source distances
    (:attr:`seld.methods.method.Method.distances`) and its dataset's labels have none,
    naming a metadata file without them."""
    method = get_method(s.experiment.method)
    if not method.distances:
        return
    fmt = dataset_format_of(s.dataset)
    missing = fmt.without_distances(Path(s.dataset))
    if missing:
        raise ConfigError(
            f"the {method.name} method trains on source distances, and {len(missing)} "
            f"metadata file(s) of {s.dataset} ({fmt.name}) have no distance column, e.g. "
            f"{missing[0]}; it needs labels with distances (STARSS23 as released for DCASE 2024)"
        )


def dataset_labels(dataset: str | Path) -> LabelFacts:
    """The labels of a dataset: its format, label frame rate and classes."""
    fmt = dataset_format_of(dataset)
    return LabelFacts(fmt.name, fmt.label_frames_per_second, fmt.classes)


@dataclass
class SplitEvaluation:
    """The scores of one split of a run: all folds together, each fold, and the scored rows
    (fold -> recording -> :data:`Pair`)."""

    split: str
    overall: ScoreReport
    per_fold: dict[int, ScoreReport]
    pairs: dict[int, dict[str, Pair]]


def fold_split(s: CVSettings, k: int, split: str) -> Split:
    """Fold ``k``'s cached predictions of the run's method on its ``split`` recordings, and
    their references."""
    data = settings_fold_data(s, k)
    predictions = method_predictions(
        data, s.run_dir, split, s.experiment.method, views=views_of(s.experiment)
    )
    return predictions, references(data, split)


def load_split(s: CVSettings, split: str, folds: tuple[int, ...] | None = None) -> Split:
    """Predictions and references of the ``split`` recordings of the given folds (all of the
    run's by default), together."""
    predictions, refs = {}, {}
    for k in folds or s.folds:
        preds, fold_refs = fold_split(s, k, split)
        predictions.update(preds)
        refs.update(fold_refs)
    return predictions, refs


def evaluate_split(
    s: CVSettings,
    split: str,
    post: Postprocessing | None = None,
    *,
    folds: tuple[int, ...] | None = None,
    submissions: Path | None = None,
) -> SplitEvaluation:
    """Score the ``split`` of the given folds (all of the run's by default) under ``post``
    (the run's own by default); with ``submissions``, write each recording's CSV there."""
    post = post or Postprocessing.of(s)
    per_fold, pairs, everything = {}, {}, {}
    for k in folds or s.folds:
        predictions, refs = fold_split(s, k, split)
        pairs[k] = submission_pairs(
            predictions, refs, post.thresholds, submissions, post.median_frames, run_decode(s)
        )
        per_fold[k] = score_files(pairs[k])
        everything.update(pairs[k])
    return SplitEvaluation(split, score_files(everything), per_fold, pairs)


def suite_reports(
    s: CVSettings,
    split: str,
    suites: list[MetricSuite],
    post: Postprocessing | None = None,
    *,
    folds: tuple[int, ...] | None = None,
) -> dict[str, SuiteReport]:
    """The ``split`` of the given folds (all of the run's by default) under ``post`` (the run's
    own by default), all recordings together, scored with each metric suite, with jackknife
    intervals. A suite that scores continuous directions gets them as predicted; the others
    the submission rows as written."""
    post = post or Postprocessing.of(s)
    predictions, refs = load_split(s, split, folds)
    labels = run_labels(s)
    return {
        suite.name: suite_report(
            suite,
            inference.SuiteScorer(
                suite, predictions, refs, labels=labels, decode=run_decode(s)
            ).counts(post.thresholds, post.median_frames),
            with_jackknife=True,
        )
        for suite in suites
    }


@dataclass
class SuiteSplitEvaluation:
    """:class:`SplitEvaluation` under a metric suite: all folds together (with jackknife
    intervals), each fold."""

    split: str
    overall: SuiteReport
    per_fold: dict[int, SuiteReport]
    #: each recording's counts (for paired comparisons)
    counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def evaluate_split_suite(
    s: CVSettings,
    split: str,
    suite: MetricSuite,
    post: Postprocessing | None = None,
    *,
    folds: tuple[int, ...] | None = None,
    submissions: Path | None = None,
) -> SuiteSplitEvaluation:
    """:func:`evaluate_split` for a dataset format other than DCASE 2019: scored with
    ``suite`` (the format's default), per fold and all folds together; with ``submissions``,
    each recording's CSV in the format's track-wise form
    (:func:`seld.data.submission.write_tracked_submission`)."""
    post = post or Postprocessing.of(s)
    labels, decode = run_labels(s), run_decode(s)
    per_fold, everything = {}, {}
    for k in folds or s.folds:
        predictions, refs = fold_split(s, k, split)
        scorer = inference.SuiteScorer(suite, predictions, refs, labels=labels, decode=decode)
        counts = scorer.counts(post.thresholds, post.median_frames)
        per_fold[k] = suite_report(suite, counts)
        everything.update(counts)
        if submissions is not None:
            write_tracked_submissions(predictions, post, submissions, decode)
    overall = suite_report(suite, everything, with_jackknife=True)
    return SuiteSplitEvaluation(split, overall, per_fold, everything)


def write_tracked_submissions(
    predictions: dict[str, Prediction],
    post: inference.Postprocessing,
    folder: Path,
    decode: Any = None,
) -> None:
    """Each prediction's detections under ``post`` as ``<folder>/<stem>.csv`` in the track-wise
    output form (:func:`seld.data.submission.write_tracked_submission`), with the directions as
    predicted."""
    for stem, prediction in predictions.items():
        write_tracked_submission(folder / f"{stem}.csv", post.tracked_rows(prediction, decode))


def split_ceiling(s: CVSettings, split: str, suite: MetricSuite) -> Ceiling:
    """What a method with one direction per class and frame could at best score on the
    ``split`` references of the run's folds under ``suite`` (:func:`one_direction_ceiling`)."""
    labels = run_labels(s)
    references = []
    for k in s.folds:
        references += references_of(settings_fold_data(s, k), split).values()
    return one_direction_ceiling(
        suite, references, labels.label_frames_per_second, labels.num_classes
    )
