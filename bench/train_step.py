"""Training-step benchmark: CRNN10, paper preset, batch 32, 2 s windows.

Times one optimizer step (forward, backward, Adam) of
  * the bare model on tensors already in memory (the reference), and
  * our loop's step with the batch read from the HDF5 feature store by ``WindowDataset`` through
    a ``DataLoader`` (standardised by a scaler),
in the same run, and prints the data pipeline's overhead. On a GPU it also runs the step with
mixed precision (bf16 where supported) and channels-last, and prints windows per second.

    python bench/train_step.py [--steps 10] [--batch 32] [--workers 2] [--model CRNN10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seld.config import load_config
from seld.data.dcase import RecordingName
from seld.data.metadata import Event, events_to_targets
from seld.features.store import fit_scaler, write_feature_file
from seld.features.windows import WindowDataset
from seld.methods.losses import stage_loss
from seld.methods.models import build_model

CONFIG = load_config("paper-mic").features


def make_store(folder: Path, recordings: int, seconds: float) -> list[Path]:
    """Feature files of the paper preset's shape (10 x 100 fps x 96) with random content."""
    rng = np.random.default_rng(0)
    frames = int(seconds * CONFIG.frames_per_second) + 1
    events = [Event("speech", 1.0, 3.0, 10, 40, 1), Event("knock", 5.0, 5.5, -20, -90, 2)]
    paths = []
    for i in range(recordings):
        path = folder / f"split1_ir0_ov1_{i}.h5"
        feats = rng.standard_normal((10, frames, 96)).astype(np.float32)
        write_feature_file(
            path,
            feats,
            events_to_targets(events, frames, 0.01),
            events,
            name=RecordingName(1, 0, 1, i),
            fmt="mic",
            subset="dev",
            config=CONFIG,
            duration_s=seconds,
        )
        paths.append(path)
    return paths


def step_fn(model, optimizer, device, amp: bool, channels_last: bool):
    dtype = (
        torch.bfloat16
        if device.type == "cuda" and torch.cuda.is_bf16_supported()
        else (torch.float16)
    )

    def step(batch: dict[str, torch.Tensor]) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        x = batch["features"]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = model(x)
        loss = stage_loss("sed", out, batch, "mae")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, batches, device) -> float:
    """Median seconds per step over ``batches`` (an iterable that is consumed inside the timer)."""
    times = []
    iterator = iter(batches)
    while True:
        sync(device)
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="CRNN10")
    parser.add_argument(
        "--compile", action="store_true", help="also time a torch.compile'd AMP step (CUDA)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_store(Path(tmp), recordings=8, seconds=60.0)
        scaler = fit_scaler(paths)
        dataset = WindowDataset(paths, window=200, hop=50, scaler=scaler)
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            pin_memory=device.type == "cuda",
            drop_last=True,
        )
        memory = [dataset[i] for i in range(args.batch)]
        batch = {k: torch.stack([m[k] for m in memory]) for k in memory[0]}
        if device.type == "cuda":
            batch = {k: v.to(device) for k, v in batch.items()}
        step = step_fn(model, optimizer, device, amp=False, channels_last=False)
        for _ in range(2):  # warm-up
            step(batch)
        bare = timed(step, [batch] * args.steps, device)
        limited = (b for i, b in zip(range(args.steps + 2), loader, strict=False))
        next(limited), next(limited)  # worker start-up is not a step
        piped = timed(step, limited, device)
        print(f"{args.model}: {params:,} parameters, batch {args.batch} x 2 s windows, {device}")
        print(f"  bare model step, in-memory tensors  {1000 * bare:8.1f} ms")
        print(f"  our step, HDF5 -> DataLoader({args.workers} workers)  {1000 * piped:8.1f} ms")
        print(f"  data pipeline overhead              {100 * (piped / bare - 1):8.1f} %")
        print(f"  bare step throughput                {args.batch / bare:8.1f} windows/s")
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            fast = step_fn(model, optimizer, device, amp=True, channels_last=True)
            for _ in range(3):
                fast(batch)
            amp = timed(fast, [batch] * args.steps, device)
            print(
                f"  AMP + channels-last step            {1000 * amp:8.1f} ms "
                f"({args.batch / amp:.0f} windows/s)"
            )
            if args.compile:
                compiled = step_fn(
                    torch.compile(model), optimizer, device, amp=True, channels_last=True
                )
                for _ in range(3):  # the first calls compile
                    compiled(batch)
                fastest = timed(compiled, [batch] * args.steps, device)
                print(
                    f"  AMP + channels-last + compile step  {1000 * fastest:8.1f} ms "
                    f"({args.batch / fastest:.0f} windows/s)"
                )


if __name__ == "__main__":
    main()
