"""Test-time augmentation (``inference.tta``): what predicting each recording in every symmetric
view of the array changes, on cross-validation runs already trained.

For each run folder given, every fold's best SED and DOA models (the run's own checkpoints)
predict the fold's test recordings twice: as they are, and through the 8 (mic) or 16 (foa)
symmetry views (:func:`seld.methods.inference.run_views`). Both are scored on all test recordings at
the run's default threshold (no tuning), the same models and the same references, so the
difference is the views' alone. Prints each run's two rows, the mean +- sd over the runs (give
runs of different seeds), and the time of the predictions with and without views (one torch
thread per process; the ratio is the cost of the views).

    python bench/tta.py WORKSPACE/runs/RUN [WORKSPACE/runs/RUN ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from orchestrator.cv import CVSettings, settings_fold_data
from orchestrator.fold import references
from seld.features.augment import symmetries
from seld.methods.inference import ThresholdScorer, predict_file, symmetry_views
from seld.methods.models import inference_model
from seld.methods.training import load_model
from seld.methods.two_stage import TWO_STAGE

METRICS = ("er", "f", "doa_error", "frame_recall", "seld")


def run_scores(run_dir: Path) -> dict[str, dict[str, float]]:
    """The run's test scores without and with views, and the seconds each prediction took."""
    s = CVSettings.from_run(run_dir)
    experiment = s.experiment
    all_views = symmetry_views(experiment.format, experiment.features.kind)
    out: dict[str, dict[str, float]] = {}
    for name, views in (("as recorded", ()), (f"{len(all_views)} views", all_views)):
        preds, refs, seconds = {}, {}, 0.0
        for fold in s.folds:
            data = settings_fold_data(s, fold)
            # as the cross-validation predicts (orchestrator.fold.predict_split)
            sed_model = inference_model(load_model(s.layout.checkpoint(fold, "sed"), "cpu"))
            doa_model = inference_model(load_model(s.layout.checkpoint(fold, "doa"), "cpu"))
            start = time.perf_counter()
            for path in data.test:
                sed = predict_file(sed_model, path, data.scaler, views=views)
                doa = predict_file(doa_model, path, data.scaler, views=views)
                preds[sed.stem] = TWO_STAGE.combine({"sed": sed, "doa": doa})
            seconds += time.perf_counter() - start
            refs.update(references(data, "test"))
        scores = ThresholdScorer(preds, refs).overall(experiment.inference.threshold)
        out[name] = {m: float(getattr(scores, m)) for m in METRICS} | {"predict_s": seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {str(run): run_scores(run) for run in args.runs}
    print(f"{'run':<40}{'views':<14}" + "".join(f"{m:>14}" for m in METRICS) + f"{'predict s':>11}")
    for run, rows in results.items():
        for name, row in rows.items():
            cells = "".join(f"{row[m]:14.3f}" for m in METRICS)
            print(f"{run[-40:]:<40}{name:<14}{cells}{row['predict_s']:11.1f}")
    names = list(next(iter(results.values())))
    print(f"\nmean +- sd over {len(results)} run(s):")
    for name in names:
        cells = []
        for m in (*METRICS, "predict_s"):
            xs = [rows[name][m] for rows in results.values()]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{m} {statistics.mean(xs):.3f} +- {sd:.3f}")
        print(f"  {name:<14}" + "; ".join(cells))
    fmt = CVSettings.from_run(args.runs[0]).experiment.format
    print(f"({len(symmetries(fmt))} symmetries of the {fmt} array)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
