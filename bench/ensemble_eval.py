"""The evaluation-set table: the fold ensemble against each single fold, over seeds.

Per seed: a synthetic development set (``--per-split`` recordings of ``--seconds`` per split,
data seed = the seed), a four-fold cv of the tiny preset (``--epochs`` per stage, config seed =
the seed), and a second synthetic set (data seed 1000 + the seed, ``--eval-per-split`` per
split) laid out as an evaluation set: ``mic_eval`` with its metadata held back. Then
``seld-orch predict``'s function predicts the evaluation set with the ensemble of the four
folds and with each fold alone (default post-processing), and scores each against the
held-back metadata, all recordings together, as ``seld-orch score`` does. The table gives
mean ± sd over the seeds of ER, F, DOA error, frame recall and SELD score.

    python bench/ensemble_eval.py --workspace /tmp/ens [--seeds 0,1,2] [--per-split 4]
        [--seconds 20] [--epochs 4] [--eval-per-split 4] [--json out.json]

Reruns skip what is done (synthesis, features, trained stages).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from orchestrator.cv import CVSettings
from orchestrator.cv_run import run_cv
from orchestrator.extract import extract_dataset
from orchestrator.predict import PredictRequest, predict_recordings
from orchestrator.ray_utils import ray_session
from orchestrator.tracking import default_tracking_uri
from seld.config import load_config
from seld.synth import SynthConfig, synthesize_dataset

METRICS = (("ER", "er", 3), ("F", "f", 3), ("DOA error (°)", "doa_error", 1),
           ("frame recall", "frame_recall", 3), ("SELD", "seld", 3))  # fmt: skip


def evaluation_set(root: Path, seconds: float, per_split: int, seed: int) -> tuple[Path, Path]:
    """A synthetic set as the DCASE evaluation set comes: ``mic_eval`` without metadata."""
    layout, heldback = root / "eval", root / "eval-metadata"
    if not (layout / "mic_eval").is_dir():
        source = root / "eval-source"
        config = SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",), seed=seed)
        synthesize_dataset(source, config, workers=2)
        layout.mkdir(parents=True, exist_ok=True)
        shutil.move(source / "mic_dev", layout / "mic_eval")
        shutil.move(source / "metadata_dev", heldback)
        shutil.rmtree(source)
    return layout, heldback


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    root = args.workspace / f"seed{seed}"
    dev = root / "dev"
    config = SynthConfig(
        seconds=args.seconds, per_split=args.per_split, formats=("mic",), seed=seed
    )
    synthesize_dataset(dev, config, workers=2)
    eval_layout, heldback = evaluation_set(root, args.seconds, args.eval_per_split, 1000 + seed)
    ws = root / "ws"
    experiment = load_config(
        "tiny", [f"seed={seed}", f"train.epochs={args.epochs}", "train.steps=null"]
    )
    settings = CVSettings(
        dataset=str(dev),
        workspace=str(ws),
        config=experiment.to_dict(),
        cpus_per_worker=0.5,
        tracking_uri=default_tracking_uri(ws),
        run="cv",
    )
    started = time.perf_counter()
    assert extract_dataset(dev, ws, experiment.features, "mic").ok
    cv = run_cv(settings)
    rows = {}
    for folds in (None, (1,), (2,), (3,), (4,)):
        name = "ensemble of 4 folds" if folds is None else f"fold {folds[0]} alone"
        request = PredictRequest(
            inputs=(eval_layout,),
            out=root / "predictions" / ("ensemble" if folds is None else f"fold{folds[0]}"),
            run="cv",
            workspace=ws,
            folds=folds,
            post="default",
            ref=heldback,
            plots=False,
        )
        summary = predict_recordings(request)
        assert summary.ok, summary.failed
        rows[name] = summary.scores.overall.as_dict()
    print(f"seed {seed}: {time.perf_counter() - started:.0f} s; cv test SELD "
          f"{cv['overall']['seld']:.3f}", flush=True)  # fmt: skip
    for name, scores in rows.items():
        print(f"  {name:<22}" + "".join(f"  {k} {scores[k]:.3f}" for _, k, _ in METRICS))
    return {"seed": seed, "rows": rows, "cv_test": cv["overall"]}


def table(results: list[dict]) -> str:
    names = list(results[0]["rows"])
    mean_fold = "mean of the single folds"
    lines = [
        "| evaluation set, all recordings | " + " | ".join(m[0] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name in [*names, mean_fold]:
        cells = []
        for _, key, digits in METRICS:
            if name == mean_fold:
                values = [np.mean([r["rows"][n][key] for n in names[1:]]) for r in results]
            else:
                values = [r["rows"][name][key] for r in results]
            mean, sd = (
                float(np.mean(values)),
                float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            )
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-split", type=int, default=4)
    parser.add_argument("--eval-per-split", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    results = []
    with ray_session(num_cpus=args.num_cpus):
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(one_seed(args, seed))
    print(f"\nmean ± sd over seeds {args.seeds}:\n")
    print(table(results))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
