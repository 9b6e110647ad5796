"""GPU numbers for bench/gpu_check.sh: the paper-preset training step and the input pipeline
feeding it, on one device.

Part 1, the step: CRNN10 of the ``paper-mic`` preset, batch 32 of 2 s windows (10 x 200 x 96),
one optimizer step (forward, backward, Adam with AMSGrad) on tensors already on the device, in
fp32, with AMP (bf16 where supported, else fp16 with loss scaling), AMP + channels-last, and
AMP + channels-last + ``torch.compile``; ms per step and windows per second, after warm-up.

Part 2, the pipeline: paper-shaped feature files (random content, real HDF5 through the store
writer), windows from :class:`seld.features.window_source.WindowBatches` (pinned buffers,
non-blocking copies) into the same AMP + channels-last step; windows per second against part 1's
step alone, and against the lazy HDF5 reader through a DataLoader.

    python bench/gpu_check.py [--device cuda] [--steps 30] [--json results.json]

``--device cpu --steps 2`` runs the same code on a CPU (a plumbing check; its numbers mean
nothing for a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seld.config import load_config
from seld.features.window_source import WindowBatches, WindowSource
from seld.features.windows import WindowDataset
from seld.methods.losses import stage_loss
from seld.methods.models import build_model

CONFIG = load_config("paper-mic")
WINDOW, HOP, BATCH = 200, 50, 32


def synthetic_batch(device: torch.device, batch: int = BATCH) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "features": torch.randn(batch, 10, WINDOW, 96, generator=g).to(device),
        "activity": (torch.rand(batch, WINDOW, 11, generator=g) > 0.8).float().to(device),
        "azimuth": (torch.randint(-18, 18, (batch, WINDOW, 11), generator=g) * 10.0).to(device),
        "elevation": (torch.randint(-4, 5, (batch, WINDOW, 11), generator=g) * 10.0).to(device),
        "mask": torch.ones(batch, WINDOW, device=device),
    }


def make_step(device: torch.device, amp: bool, channels_last: bool, compiled: bool):
    """One optimizer step of the paper's SED stage, as seld.methods.training takes it."""
    torch.manual_seed(0)
    train = CONFIG.train_config("sed")
    model = build_model(train.model, in_channels=10, **train.model_kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, amsgrad=True)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp and dtype == torch.float16)

    def step(batch: dict[str, torch.Tensor]) -> None:
        x = batch["features"]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=cuda and amp):
            out = net(x)
        loss = stage_loss("sed", out, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, batches, device: torch.device, steps: int, warmup: int = 3) -> float:
    """Seconds per step over ``steps`` after ``warmup`` (the first compiled steps compile)."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    sync(device)
    return (time.perf_counter() - started) / steps


def repeat(batch):
    while True:
        yield batch


def make_store(folder: Path, recordings: int) -> list[Path]:
    """Paper-shaped feature files (one minute each) written by the real store writer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from input_pipeline import write_dataset

    return write_dataset(folder, recordings, 60.0, seed=0)


def loader_batches(loader, device: torch.device):
    while True:
        for batch in loader:
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict[str, object] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True

    batch = synthetic_batch(device)
    modes = {
        "fp32": (False, False, False),
        "amp": (True, False, False),
        "amp+channels_last": (True, True, False),
        "amp+channels_last+compile": (True, True, True),
    }
    for name, (amp, cl, compiled) in modes.items():
        if compiled and device.type != "cuda":
            continue
        seconds = time_steps(
            make_step(device, amp, cl, compiled), repeat(batch), device, args.steps
        )
        results[f"step_{name}_ms"] = round(1000 * seconds, 2)
        results[f"step_{name}_windows_per_s"] = round(BATCH / seconds, 1)
        print(f"step {name:28s} {1000 * seconds:8.2f} ms  {BATCH / seconds:9.1f} windows/s")

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_store(Path(tmp), args.recordings)
        step = make_step(device, True, True, False)
        source = WindowSource(paths, window=WINDOW, hop=HOP)
        fast = WindowBatches(
            source, BATCH, generator=torch.Generator().manual_seed(0), device=device
        )
        lazy = DataLoader(
            WindowDataset(paths, window=WINDOW, hop=HOP),
            batch_size=BATCH,
            shuffle=True,
            num_workers=2,
            pin_memory=device.type == "cuda",
            persistent_workers=True,
        )
        # warm-up: one epoch and more, so that the side caches are built and cuDNN has tuned
        # the epoch's ragged last batch (936 windows = 29 x 32 + 8) before the clock; measured
        # over 4 epochs. A first H100 run timed 30 steps after 3, and cuDNN's autotuning of the
        # batch of 8 made the source look 10x slower than the step (306 windows/s).
        per_epoch = len(fast)  # batches per epoch
        steps, warmup = (max(args.steps, 4 * per_epoch), per_epoch + 3)
        if device.type != "cuda":  # the CPU plumbing check: a few steps are enough
            steps, warmup = args.steps, 1
        for name, batches in (
            ("bare step", repeat(batch)),
            ("window source -> step", loader_batches(fast, device)),
            ("lazy HDF5 DataLoader (2 workers) -> step", loader_batches(lazy, device)),
        ):
            seconds = time_steps(step, batches, device, steps, warmup=warmup)
            results[f"pipeline {name} windows_per_s"] = round(BATCH / seconds, 1)
            print(f"{name:42s} {BATCH / seconds:9.1f} windows/s")
        fast.close()
        source.close()
    bare = results["pipeline bare step windows_per_s"]
    ratio = results["pipeline window source -> step windows_per_s"] / bare
    results["pipeline_ratio_to_bare_step"] = round(float(np.round(ratio, 3)), 3)
    print(f"window source -> step / bare step: {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
