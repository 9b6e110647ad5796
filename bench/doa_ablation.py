"""Ablation of the DOA stage on small synthetic data: add one change at a time, three seeds each.

Each run trains the DOA stage of fold 1 from scratch (random conv blocks, so the SED stage does
not blur the comparison) on the fold's training recordings, selects the epoch on its validation
split, and reports the DOA error of that model on the fold's test split with the reference
activity as the mask (oracle detection): the direction error alone. Results go to
``<out>/results.jsonl`` one run per line, so an interrupted ablation continues where it stopped;
``--table`` prints mean +- sd per step.

    python bench/doa_ablation.py --workspace /tmp/abl --seeds 0 1 2 [--steps 600]
    python bench/doa_ablation.py --workspace /tmp/abl --table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

#: Cumulative steps: each adds one change to the one before (feature overrides, train overrides).
STEPS: list[tuple[str, dict, dict]] = [
    (
        "tiny as before (step decay at absolute steps)",
        {"gcc_upsample": 1},
        {
            "lr_schedule": "step",
            "lr_decay_start": 200,
            "lr_decay_every": 50,
            "wrap_azimuth": False,
            "augment": False,
            "model_kwargs": {
                "channels": (16, 32, 64, 64),
                "rnn_hidden": 32,
                "doa_output": "angles",
            },
        },
    ),
    ("+ cosine schedule over the step budget", {}, {"lr_schedule": "cosine"}),
    ("+ wrap-aware azimuth loss", {}, {"wrap_azimuth": True}),
    ("+ channel-symmetry augmentation", {}, {"augment": True}),
    ("+ GCC-PHAT upsampled x8", {"gcc_upsample": 8}, {}),
    ("+ xyz output (instead of angles)", {}, {"model_kwargs": {"doa_output": "xyz"}}),
    ("+ 4 lag/frequency slots kept (no mean)", {}, {"model_kwargs": {"freq_slots": 4}}),
]


#: Leave-one-out checks of the preset (step 5): numbered after the cumulative steps.
LEAVE_ONE_OUT: list[tuple[str, dict, dict]] = [
    ("step 5 without the augmentation", {}, {"augment": False}),
    ("step 5 with the absolute step decay instead of cosine", {}, {"lr_schedule": "step"}),
]
PRESET_STEP = 5


def variant(step: int) -> tuple[str, dict, dict]:
    """Name, feature overrides and train overrides of a step (cumulative or leave-one-out)."""
    if step < len(STEPS):
        return (STEPS[step][0], *cumulative(step))
    name, f, t = LEAVE_ONE_OUT[step - len(STEPS)]
    features, train = cumulative(PRESET_STEP)
    return name, {**features, **f}, {**train, **t}


def cumulative(upto: int) -> tuple[dict, dict]:
    features: dict = {}
    train: dict = {}
    for _, f, t in STEPS[: upto + 1]:
        features.update(f)
        for key, value in t.items():
            if key == "model_kwargs":
                train["model_kwargs"] = {**train.get("model_kwargs", {}), **value}
            else:
                train[key] = value
    return features, train


def run(args: argparse.Namespace) -> None:
    import torch

    from orchestrator.extract import extract_dataset
    from orchestrator.fold import fold_data
    from orchestrator.ray_utils import ray_session
    from orchestrator.synthesize import synthesize_on_ray
    from seld.config import load_config
    from seld.methods.models import build_model
    from seld.methods.training import evaluate_files, load_model, train_stage
    from seld.synth.config import SynthConfig

    torch.set_num_threads(args.threads)
    ws = Path(args.workspace)
    data = ws / "dataset"
    out = ws / "results.jsonl"
    done = {(r["step"], r["seed"]) for r in _results(out)}
    synth = SynthConfig(
        seconds=args.seconds, per_split=args.per_split, formats=("mic",), seed=args.data_seed
    )
    steps = args.only if args.only is not None else range(len(STEPS) + len(LEAVE_ONE_OUT))
    with ray_session(num_cpus=args.threads):
        synthesize_on_ray(data, synth)
        for step in steps:
            _, feat_over, train_over = variant(step)
            features = replace(load_config("tiny").features, **feat_over)
            extract_dataset(data, ws, features, "mic")
    for step in steps:
        name, feat_over, train_over = variant(step)
        features = replace(load_config("tiny").features, **feat_over)
        fold = fold_data(data, ws, features, "mic", 1)
        for seed in args.seeds:
            if (step, seed) in done:
                continue
            kwargs = dict(train_over)
            model_kwargs = kwargs.pop("model_kwargs")
            config = replace(
                load_config("tiny").train_config("doa"),
                seed=seed,
                steps=args.steps,
                model_kwargs=model_kwargs,
                **kwargs,
            )
            torch.manual_seed(seed)
            scratch = build_model(config.model, in_channels=10, **model_kwargs).state_dict()
            run_dir = ws / "runs" / f"step{step}_seed{seed}"
            started = time.perf_counter()
            result = train_stage(
                config, fold.train, fold.validation, fold.scaler, run_dir, sed_state=scratch
            )
            model = load_model(result.best_checkpoint)
            test = evaluate_files(model, fold.test, fold.scaler, config, torch.device("cpu"))
            row = {
                "step": step,
                "name": name,
                "seed": seed,
                "steps": args.steps,
                "best_epoch": result.best_epoch,
                "val_doa_error": result.history[result.best_epoch - 1]["val_doa_error"],
                "test_doa_error": test["val_doa_error"],
                "train_loss_last": result.history[-1]["train_loss"],
                "wall_s": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(row), flush=True)
            with open(out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def _results(path: Path) -> list[dict]:
    """Finished runs, the first of each (step, seed) (two processes may both have run one)."""
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.setdefault((row["step"], row["seed"]), row)
    return list(rows.values())


def table(args: argparse.Namespace) -> None:
    rows = _results(Path(args.workspace) / "results.jsonl")
    print("| step | test DOA error (oracle activity) | validation DOA error | seeds | s/run |")
    print("|---|---|---|---|---|")
    for step in range(len(STEPS) + len(LEAVE_ONE_OUT)):
        name = variant(step)[0]
        mine = [r for r in rows if r["step"] == step]
        if not mine:
            continue
        test = np.array([r["test_doa_error"] for r in mine])
        val = np.array([r["val_doa_error"] for r in mine])
        wall = np.mean([r["wall_s"] for r in mine])
        print(
            f"| {name} | {test.mean():.1f}° ± {test.std(ddof=1) if len(test) > 1 else 0:.1f} "
            f"| {val.mean():.1f}° ± {val.std(ddof=1) if len(val) > 1 else 0:.1f} "
            f"| {len(mine)} | {wall:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", type=int, nargs="+", default=None, help="ablation steps to run")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--per-split", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data-seed", type=int, default=101, help="not the demo's data")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--table", action="store_true", help="print the table of finished runs")
    args = parser.parse_args()
    table(args) if args.table else run(args)


if __name__ == "__main__":
    main()
