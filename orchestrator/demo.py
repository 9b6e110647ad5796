"""``seld-orch demo``: the main job, end to end on a small synthesized dataset.

1. synthesize a DCASE 2019 Task 3 development set (mic format) with Ray tasks;
2. validate it (layout, audio, metadata);
3. extract log-mel + GCC-PHAT features into HDF5 with Ray tasks;
4. four-fold cross-validation of the two-stage method (tiny preset): per fold SED then DOA on
   Ray Train, every run in the local MLflow store;
5. tune the SED threshold and median filter on the validation predictions (Ray Tune + Optuna)
   and apply the best to the test splits;
then print the cross-validated table (before and after tuning, per ov and ir, next to trivial
baselines) and how to open the MLflow UI. Every step skips what an earlier run finished, so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cv import CVSettings
from orchestrator.cv_run import run_cv
from orchestrator.evaluation import Postprocessing, evaluate_split, suite_reports
from orchestrator.extract import extract_dataset
from orchestrator.ray_utils import ray_session
from orchestrator.search_space import load_search_space, shipped_space
from orchestrator.synthesize import synthesize_on_ray
from orchestrator.tracking import default_tracking_uri, provenance_tags
from orchestrator.tune import tune_thresholds
from seld.config import ExperimentConfig, load_config
from seld.data.dataset import DatasetLayout, load_events, recording_durations, validate_dataset
from seld.data.dcase import num_label_frames
from seld.data.submission import events_to_rows
from seld.metrics.baselines import BASELINES
from seld.metrics.reference import score_files
from seld.metrics.scores import ScoreReport
from seld.metrics.suites import SuiteReport, get_suite
from seld.synth import SynthConfig, missing_recordings

STEPS = 5


def _cpu_model() -> str:
    """The processor's model name (results move between CPU models)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class DemoReporter:
    """What the demo tells whoever shows its progress (the CLI draws it); this one says
    nothing."""

    def step(self, n: int, total: int, what: str) -> None:
        """Step ``n`` of ``total`` begins."""

    @contextmanager
    def items(self, label: str, total: int | None) -> Iterator[Callable[[str], None]]:
        """A stretch of per-recording work; call the yielded function with each one done."""
        yield lambda name: None

    @contextmanager
    def fold_jobs(self) -> Iterator[Callable[[dict[str, dict[str, Any]]], None]]:
        """The cross-validation; call the yielded function with each new fold-job status."""
        yield lambda status: None

    def failed(self, lines: list[str]) -> None:
        """Inputs failed (named, one per line); the demo then exits with code 1."""


@dataclass
class DemoResult:
    summary: dict[str, Any]
    before: ScoreReport
    after: ScoreReport
    baselines: dict[str, ScoreReport]
    #: the tuned test predictions scored with other metric suites (``--suite``)
    suites: dict[str, SuiteReport] = field(default_factory=dict)


def run_demo(
    workspace: Path,
    *,
    per_split: int,
    seconds: float,
    seed: int,
    trials: int,
    experiment: ExperimentConfig | None = None,
    reporter: DemoReporter | None = None,
    suites: tuple[str, ...] = (),
) -> DemoResult:
    """Run (or continue) the whole pipeline with ``experiment`` (the ``tiny`` preset by
    default; its format decides what is synthesized) and return its results; ``reporter``
    hears of its progress. ``suites``: metric suites that score the tuned test predictions
    as well (:mod:`seld.metrics.suites`)."""
    chosen = [get_suite(name) for name in suites]  # an unknown suite fails before any work
    say = reporter or DemoReporter()
    started = time.perf_counter()
    workspace = workspace.resolve()
    dataset = workspace / "dataset"
    experiment = experiment or load_config("tiny")
    fmt = experiment.format
    config = SynthConfig(seconds=seconds, per_split=per_split, formats=(fmt,), seed=seed)
    timings: dict[str, float] = {}

    def step(n: int, what: str) -> None:
        timings[what] = time.perf_counter()
        say.step(n, STEPS, what)

    with ray_session():
        step(1, "synthesizing")
        todo = missing_recordings(dataset, config)
        with say.items("recordings", len(todo)) as done:
            synthesize_on_ray(dataset, config, progress=lambda name: done(name.stem))
        step(2, "validating")
        report = validate_dataset(dataset, formats=(fmt,))
        if not report.ok:
            say.failed([f"problem {p.path}: {p.problem}" for p in report.problems])
            raise SystemExit(1)
        step(3, "extracting features")
        features = experiment.features
        with say.items("recordings", None) as done:
            extracted = extract_dataset(
                dataset, workspace, features, fmt, progress=lambda rec, ok: done(rec.name.stem)
            )
        if not extracted.ok:
            say.failed([f"failed: {reason}" for reason in extracted.failed.values()])
            raise SystemExit(1)
        folds = len(experiment.cv.folds)
        step(4, f"cross-validation ({folds} folds, {' then '.join(experiment.stages)} per fold)")
        settings = CVSettings(
            dataset=str(dataset),
            workspace=str(workspace),
            config=experiment.to_dict(),
            run="demo",
            tracking_uri=default_tracking_uri(workspace),
        )
        with say.fold_jobs() as on_status:
            cv = run_cv(settings, experiment_name="seld-demo", on_status=on_status)
        step(5, f"tuning thresholds ({trials} trials on the validation predictions)")
        space = load_search_space(shipped_space("thresholds.yaml"))
        tuned = tune_thresholds(settings, space, trials=trials, seed=seed)

    best = Postprocessing.from_params(tuned["best_config"])
    after = evaluate_split(settings, "test", best)
    before = evaluate_split(settings, "test")  # the run's own post-processing
    extra = suite_reports(settings, "test", chosen, best) if chosen else {}
    stems = {stem for pairs in before.pairs.values() for stem in pairs}
    baselines = _baselines(dataset, stems, fmt)
    elapsed = time.perf_counter() - started
    summary = {
        "seed": seed,
        "config": {
            "name": experiment.name,
            "hash": experiment.hash(),
            "method": experiment.method,
            "threshold": experiment.inference.threshold,
            "median_frames": experiment.inference.median_frames,
        },
        "provenance": provenance_tags(),
        "cpu": _cpu_model(),
        "workspace": str(workspace),
        "dataset": {"recordings": report.checked, "per_split": per_split, "seconds": seconds},
        "mlflow": {
            "tracking_uri": settings.tracking_uri,
            "experiment": "seld-demo",
            "cv_run": cv["mlflow_parent_run"],
        },
        "folds": cv["folds"],
        "cv_before_tuning": before.overall.overall.as_dict(),
        "cv_after_tuning": after.overall.overall.as_dict(),
        "best_postprocessing": tuned["best_config"],
        "threshold_search": {
            "trials": tuned["trials"],
            "trials_per_s": tuned["trials_per_s"],
            "validation_default": tuned["scores"]["validation_default"],
            "validation_tuned": tuned["scores"]["validation_tuned"],
        },
        "groups_after_tuning": _groups(after.overall),
        "baselines": {name: rep.overall.as_dict() for name, rep in baselines.items()},
        "plots": str(settings.layout.plots),
        "suites_after_tuning": {
            name: {k: v for k, v in r.as_dict().items() if k != "per_file"}
            for name, r in extra.items()
        },
        "elapsed_s": round(elapsed, 1),
        "step_started_s": {k: round(v - started, 1) for k, v in timings.items()},
    }
    return DemoResult(summary, before.overall, after.overall, baselines, extra)


def _baselines(dataset: Path, stems: set[str], fmt: str = "mic") -> dict[str, ScoreReport]:
    """Trivial baselines on the same test recordings, for scale."""
    layout = DatasetLayout.discover(dataset)
    durations = recording_durations(dataset)
    out = {}
    for name in ("silence", "constant-direction"):
        pairs = {}
        for rec in layout.recordings(fmt):
            if rec.stem not in stems:
                continue
            events = load_events(rec, durations[rec.stem])
            frames = num_label_frames(durations[rec.stem])
            pairs[rec.stem] = _pair(events, BASELINES[name](events, frames), frames)
        out[name] = score_files(pairs)
    return out


def _pair(events, rows, frames):
    return events_to_rows(events, frames), rows, frames


def _groups(report: ScoreReport) -> dict[str, dict[str, float]]:
    return {
        f"{group}{key}": scores.as_dict()
        for group, per_key in report.groups.items()
        if group in ("ov", "ir")
        for key, scores in per_key.items()
    }
