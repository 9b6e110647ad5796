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
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from orchestrator.cv import CVSettings
from orchestrator.cv_run import run_cv
from orchestrator.extract import extract_dataset
from orchestrator.ray_utils import ray_session
from orchestrator.report import print_problems, scores_table, to_json
from orchestrator.search_space import load_search_space
from orchestrator.synthesize import synthesize_on_ray
from orchestrator.tracking import default_tracking_uri, provenance_tags
from orchestrator.tune import load_split, postprocessing, tune_thresholds
from seld.baselines import BASELINES
from seld.config import ExperimentConfig, load_config
from seld.dataset import DatasetLayout, load_events, recording_durations, validate_dataset
from seld.dcase import num_label_frames
from seld.inference import submission_rows
from seld.metrics import ScoreReport, SeldScores, score_files
from seld.submission import events_to_rows
from seld.synth import SynthConfig, missing_recordings

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
STEPS = 5
ORACLE_CONSTANT = "baseline: oracle detection + constant direction (0°, 0°)"


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


def run_demo(
    workspace: Path,
    *,
    per_split: int,
    seconds: float,
    seed: int,
    trials: int,
    console: Console,
    experiment: ExperimentConfig | None = None,
    json_out: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the whole pipeline with ``experiment`` (the ``tiny`` preset by
    default; its format decides what is synthesized); print and return its results."""
    from orchestrator.cli import _status_table, progress_bar  # the CLI owns the look

    started = time.perf_counter()
    workspace = workspace.resolve()
    dataset = workspace / "dataset"
    experiment = experiment or load_config("tiny")
    fmt = experiment.format
    config = SynthConfig(seconds=seconds, per_split=per_split, formats=(fmt,), seed=seed)
    timings: dict[str, float] = {}
    err = Console(stderr=True, quiet=json_out)

    def step(n: int, what: str) -> None:
        timings[what] = time.perf_counter()
        err.rule(f"[bold]{n}/{STEPS} {what}")

    with ray_session():
        step(1, "synthesizing")
        todo = missing_recordings(dataset, config)
        with progress_bar(transient=json_out) as progress:
            task = progress.add_task("recordings", total=len(todo), current="")
            synthesize_on_ray(
                dataset, config, progress=lambda n: progress.update(task, advance=1, current=n.stem)
            )
        step(2, "validating")
        report = validate_dataset(dataset, formats=(fmt,))
        if not report.ok:
            print_problems(err, report.problems)
            raise SystemExit(1)
        step(3, "extracting features")
        features = experiment.features
        with progress_bar(transient=json_out) as progress:
            task = progress.add_task("recordings", total=None, current="")
            extracted = extract_dataset(
                dataset,
                workspace,
                features,
                fmt,
                progress=lambda rec, ok: progress.update(task, advance=1, current=rec.name.stem),
            )
        if not extracted.ok:
            for reason in extracted.failed.values():
                err.print(f"[red]failed:[/red] {reason}")
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
        with Live(_status_table({}), console=err, refresh_per_second=2, transient=json_out) as live:
            cv = run_cv(
                settings,
                experiment_name="seld-demo",
                on_status=lambda st: live.update(_status_table(st)),
            )
        step(5, f"tuning thresholds ({trials} trials on the validation predictions)")
        space = load_search_space(SPACES / "thresholds.yaml")
        tuned = tune_thresholds(settings, space, trials=trials, seed=seed)

    test_preds, test_refs = load_split(settings, "test")
    after = _score(test_preds, test_refs, tuned["best_config"])
    default = {"threshold": settings.threshold, "median_frames": settings.median_frames}
    before = _score(test_preds, test_refs, default)
    baselines = _baselines(dataset, set(test_preds), fmt)
    elapsed = time.perf_counter() - started
    summary = {
        "seed": seed,
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
        "cv_before_tuning": before.overall.as_dict(),
        "cv_after_tuning": after.overall.as_dict(),
        "best_postprocessing": tuned["best_config"],
        "threshold_search": {
            "trials": tuned["trials"],
            "trials_per_s": tuned["trials_per_s"],
            "validation_default": tuned["scores"]["validation_default"],
            "validation_tuned": tuned["scores"]["validation_tuned"],
        },
        "groups_after_tuning": _groups(after),
        "baselines": {name: rep.overall.as_dict() for name, rep in baselines.items()},
        "plots": str(settings.run_dir / "plots"),
        "elapsed_s": round(elapsed, 1),
        "step_started_s": {k: round(v - started, 1) for k, v in timings.items()},
    }
    if json_out:
        console.print_json(to_json(summary))
        return summary
    _print(console, summary, before, after, baselines, workspace)
    return summary


def _score(predictions: dict, refs: dict, config: dict[str, Any]) -> ScoreReport:
    """Per-ov/ir scores of the test splits under one post-processing setting, through the
    submission rows (the path every submission CSV takes)."""
    thresholds, median = postprocessing(config)
    pairs = {}
    for stem, prediction in predictions.items():
        rows = submission_rows(prediction, thresholds, median_frames=median)
        pairs[stem] = (refs[stem][0], rows, refs[stem][1])
    return score_files(pairs)


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


def _print(
    console: Console,
    summary: dict[str, Any],
    before: ScoreReport,
    after: ScoreReport,
    baselines: dict[str, ScoreReport],
    workspace: Path,
) -> None:
    folds = {f"fold {k} (test split {k})": SeldScores(**v) for k, v in summary["folds"].items()}
    console.print(scores_table("Two-stage SED + DOA, per fold (threshold 0.3)", folds, ""))
    best = ", ".join(f"{k} {v:.3g}" for k, v in summary["best_postprocessing"].items())
    rows: dict[str, SeldScores] = {
        "baseline: silence": baselines["silence"].overall,
        ORACLE_CONSTANT: baselines["constant-direction"].overall,
        "two-stage, default": before.overall,
        "two-stage, tuned": after.overall,
    }
    console.print(
        scores_table("Cross-validated, all four test splits (SELD: lower is better)", rows, "")
    )
    console.print(
        "default: SED threshold 0.3, no median filter; tuned: the best post-processing on the "
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
