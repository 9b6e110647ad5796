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

Part 3, sharing the GPU: 1, 2 and 4 processes at once, each one fold's training loop (window
source -> AMP + channels-last step) held to its share of the GPU's memory
(:func:`seld.methods.training.gpu_share_device`, as ``cv --gpus-per-job`` does): total windows
per second and each process's peak memory.

Part 4, the card: its bf16 (or fp16) matrix-multiply rate, and the step's floating-point
operations counted by ``torch.utils.flop_counter``, so the step's achieved TFLOP/s is a
fraction of what the card does.

Part 5, one short ``paper-mic`` fold on synthetic data, through the library alone (Ray and
MLflow are not needed): synthesize, extract, SED then DOA for ``--fold-steps`` steps each;
seconds per stage and the validation scores of the last epoch.

    python bench/gpu_check.py [--device cuda] [--steps 30] [--json results.json]

``--device cpu --steps 2`` runs the same code on a CPU (a plumbing check; its numbers mean
nothing for a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seld.config import load_config
from seld.features.window_source import WindowBatches, WindowSource
from seld.features.windows import WindowDataset
from seld.methods.models import build_model
from seld.methods.registry import stage_loss
from seld.methods.training import gpu_share_device

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


def share_worker(args: argparse.Namespace) -> None:
    """One of part 3's processes: its share of the GPU, the store's windows into the step,
    steps counted for ``--seconds`` from the moment the parent writes; prints one JSON line."""
    device = gpu_share_device(args.share) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    paths = sorted(Path(args.store).glob("*.h5"))
    step = make_step(device, True, True, False)
    source = WindowSource(paths, window=WINDOW, hop=HOP)
    batches = WindowBatches(
        source, BATCH, generator=torch.Generator().manual_seed(args.rank), device=device
    )
    it = loader_batches(batches, device)
    # warm: one epoch on a GPU, so that cuDNN has tuned the epoch's ragged last batch
    for _ in range(len(batches) + 3 if device.type == "cuda" else 1):
        step(next(it))
    sync(device)
    sync_dir = Path(args.sync)
    (sync_dir / f"ready{args.rank}").touch()
    while not (sync_dir / "go").exists():  # the parent says go once every process is warm
        time.sleep(0.05)
    time.sleep(max(0.0, float((sync_dir / "go").read_text()) - time.time()))
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < args.seconds:
        step(next(it))
        steps += 1
    sync(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    batches.close()
    source.close()
    print(json.dumps({"windows_per_s": BATCH * steps / elapsed, "peak_bytes": peak}))


def shared_gpu(store: Path, counts: list[int], seconds: float, device: str) -> dict[str, object]:
    """Part 3: ``n`` processes at once for each ``n`` of ``counts``, each with 1/n of the GPU;
    each warms up, then all run together from the same wall-clock moment for ``seconds``."""
    results: dict[str, object] = {}
    single = None
    for n in counts:
        sync = Path(tempfile.mkdtemp())
        command = [sys.executable, __file__, "--worker", "--device", device, "--store",
                   str(store), "--share", str(1 / n), "--seconds", str(seconds), "--sync",
                   str(sync)]  # fmt: skip
        procs = [
            subprocess.Popen([*command, "--rank", str(rank)], stdout=subprocess.PIPE, text=True)
            for rank in range(n)
        ]
        while len(list(sync.glob("ready*"))) < n and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        (sync / "go.tmp").write_text(str(time.time() + 1.0))
        (sync / "go.tmp").rename(sync / "go")  # every process starts its clock together
        lines = [p.communicate()[0].strip().splitlines() for p in procs]
        if any(p.returncode for p in procs) or not all(lines):
            print(f"{n} processes: failed (exit codes {[p.returncode for p in procs]})")
            continue
        rows = [json.loads(out[-1]) for out in lines]
        total = sum(r["windows_per_s"] for r in rows)
        single = single or total
        peak = max(r["peak_bytes"] for r in rows) / 2**30
        results[f"shared_{n}_processes_windows_per_s"] = round(total, 1)
        results[f"shared_{n}_processes_peak_gib_each"] = round(peak, 2)
        print(f"{n} processes on one GPU: {total:9.1f} windows/s in all ({total / single:.2f}x "
              f"one), peak {peak:.2f} GiB each")  # fmt: skip
    return results


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """The card's dense half-precision matrix rate (bf16 where supported), TFLOP/s."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def step_flops(device: torch.device) -> float:
    """Floating-point operations of one paper step (forward and backward), as counted by
    torch's FLOP counter (convolutions, matrix products, the GRU's)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = make_step(device, False, False, False)
    batch = synthetic_batch(device)
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return float(counter.get_total_flops())


def short_fold(folder: Path, steps: int, seconds: float, per_split: int) -> dict[str, object]:
    """Part 5: fold 1 of ``paper-mic`` (splits 3-4 train, 2 validates) on a synthesized set,
    SED then DOA from SED's blocks, ``steps`` optimizer steps each, on the default device."""
    from seld.data.dataset import DatasetLayout
    from seld.data.folds import make_folds
    from seld.features.extraction import extract_recording
    from seld.features.store import feature_path, feature_root, fold_scaler
    from seld.methods.training import load_checkpoint, train_stage
    from seld.synth import SynthConfig, synthesize_dataset

    results: dict[str, object] = {}
    started = time.perf_counter()
    data = folder / "data"
    synthesize_dataset(data, SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",)))
    features = CONFIG.features
    root = feature_root(folder / "ws", features)
    recordings = DatasetLayout.discover(data).recordings("mic")
    for rec in recordings:
        extract_recording(rec, features, root)
    (fold,) = make_folds([r.name for r in recordings], folds=[1])
    results["fold_data_s"] = round(time.perf_counter() - started, 1)

    def paths(members) -> list[Path]:
        return [feature_path(root, "mic", "dev", n.stem) for n in members]

    scaler = fold_scaler(root, "mic", fold)
    sed_state = None
    for stage in ("sed", "doa"):
        config = replace(CONFIG.train_config(stage), steps=steps, cudnn_benchmark=True)
        out = folder / "run" / stage
        started = time.perf_counter()
        train_stage(
            config, paths(fold.train), paths(fold.validation), scaler, out, sed_state=sed_state
        )
        results[f"fold_{stage}_s"] = round(time.perf_counter() - started, 1)
        last = load_checkpoint(out / "last.pt")
        scores = {k: round(v, 4) for k, v in last["history"][-1].items() if k.startswith("val_")}
        results[f"fold_{stage}_validation"] = scores
        print(f"fold 1 {stage}: {steps} steps in {results[f'fold_{stage}_s']} s; {scores}")
        sed_state = load_checkpoint(out / "best.pt")["model"] if stage == "sed" else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--share-counts", default="1,2,4", help="part 3's process counts")
    parser.add_argument("--share-seconds", type=float, default=20.0)
    parser.add_argument("--fold-steps", type=int, default=2000, help="part 5 (0: skip)")
    parser.add_argument("--fold-seconds", type=float, default=60.0)
    parser.add_argument("--fold-per-split", type=int, default=2)
    # one of part 3's processes (started by part 3 itself)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        share_worker(args)
        return
    device = torch.device(args.device)
    results: dict[str, object] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True

    def save() -> None:  # after each part, so a run cut short keeps what it measured
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

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

    save()
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
        save()
        counts = [int(n) for n in args.share_counts.split(",") if n]
        results |= shared_gpu(Path(tmp), counts, args.share_seconds, args.device)
        save()

    flops = step_flops(device)
    results["step_gflop"] = round(flops / 1e9, 1)
    print(f"one paper step (forward + backward): {flops / 1e9:.1f} GFLOP")
    if device.type == "cuda":
        peak = matmul_tflops(device)
        results["card_matmul_tflops"] = round(peak, 1)
        for name in ("fp32", "amp+channels_last", "amp+channels_last+compile"):
            achieved = flops / (results[f"step_{name}_ms"] / 1000) / 1e12
            results[f"step_{name}_tflops"] = round(achieved, 2)
            results[f"step_{name}_fraction_of_card"] = round(achieved / peak, 4)
            print(f"step {name:28s} {achieved:6.2f} TFLOP/s = {achieved / peak:.1%} of the "
                  f"card's {peak:.0f} TFLOP/s matrix rate")  # fmt: skip
    save()
    if args.fold_steps:
        with tempfile.TemporaryDirectory() as tmp:
            results |= short_fold(
                Path(tmp), args.fold_steps, args.fold_seconds, args.fold_per_split
            )
        save()


if __name__ == "__main__":
    main()
