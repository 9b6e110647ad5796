"""``seld-orch demo``: the main job, end to end on a small synthesized dataset."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from orchestrator.report import print_problems, print_score_report, scores_table, to_json
from orchestrator.synthesize import synthesize_on_ray
from seld.baselines import BASELINES
from seld.dataset import DatasetLayout, load_events, recording_durations, validate_dataset
from seld.dcase import num_label_frames
from seld.folds import make_folds
from seld.metrics import score_directories, write_submission
from seld.synth import SynthConfig, missing_recordings


def run_demo(
    workspace: Path,
    *,
    per_split: int,
    seconds: float,
    seed: int,
    console: Console,
    json_out: bool = False,
) -> dict:
    """Synthesize, validate, write baseline submissions and score them; return the results."""
    from orchestrator.cli import progress_bar  # the CLI owns the look of progress bars

    started = time.perf_counter()
    dataset = workspace / "dataset"
    config = SynthConfig(seconds=seconds, per_split=per_split, seed=seed)
    todo = missing_recordings(dataset, config)

    with progress_bar() as progress:
        task = progress.add_task("1/3 synthesizing", total=len(todo), current="")
        synthesize_on_ray(
            dataset, config, progress=lambda n: progress.update(task, advance=1, current=n.stem)
        )
        task = progress.add_task("2/3 validating", total=None, current="")
        report = validate_dataset(
            dataset, progress=lambda p: progress.update(task, advance=1, current=p.name)
        )
    if not report.ok:
        print_problems(console, report.problems)
        raise SystemExit(1)

    layout = DatasetLayout.discover(dataset)
    recordings = layout.recordings("mic")
    folds = make_folds([r.name for r in recordings])
    durations = recording_durations(dataset)

    results = {}
    with progress_bar() as progress:
        task = progress.add_task("3/3 scoring baselines", total=len(BASELINES), current="")
        for name, baseline in BASELINES.items():
            out = workspace / "predictions" / name
            for rec in recordings:
                events = load_events(rec, durations[rec.stem])
                rows = baseline(events, num_label_frames(durations[rec.stem]))
                write_submission(out / f"{rec.stem}.csv", rows)
            results[name] = score_directories(layout.metadata_dir, out, durations=durations)
            progress.update(task, advance=1, current=name)

    elapsed = time.perf_counter() - started
    summary = {
        "workspace": str(workspace),
        "recordings": len(recordings),
        "folds": [
            {
                "fold": f.index,
                "train": len(f.train),
                "validation": len(f.validation),
                "test": len(f.test),
            }
            for f in folds
        ],
        "baselines": {name: rep.overall.as_dict() for name, rep in results.items()},
        "elapsed_s": round(elapsed, 1),
    }
    if json_out:
        console.print_json(to_json(summary))
        return summary
    console.print(
        f"Dataset: {len(recordings)} recordings of {seconds:g} s in {dataset} "
        f"({report.checked} audio files validated). Folds (DCASE 2019 protocol): "
        + ", ".join(f"{f.index}: {len(f.train)}/{len(f.validation)}/{len(f.test)}" for f in folds)
        + " train/validation/test recordings."
    )
    console.print(
        scores_table(
            "Trivial baselines, all test splits together (SELD score: lower is better)",
            {name: rep.overall for name, rep in results.items()},
            "baseline",
        )
    )
    print_score_report(
        console, results["constant-direction"], "constant-direction baseline per split, ov, ir"
    )
    console.print(
        f"Submissions in {workspace / 'predictions'}; rescore with "
        f"`seld-orch score --ref {layout.metadata_dir} "
        f"--pred {workspace / 'predictions' / 'oracle'}`. Done in {elapsed:.1f} s."
    )
    return summary
