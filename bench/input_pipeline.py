"""Training-window throughput and reader memory: lazy HDF5 DataLoader against the mapped source.

Writes paper-preset-shaped feature files with the store's own writer (random features of 10
channels x 96 bins at 100 frames/s, real frame targets of a few events; no audio is extracted)
and measures windows/s of batch 32 x 2 s windows every 0.5 s, page cache warm, as the best of
3 runs of at least 0.7 s over a stream of epochs, after a warm-up of one epoch (or 1 s), for:

* ``old``: ``DataLoader(WindowDataset(...), shuffle=True)`` with 0, 1 and 2 workers (persistent),
  raw, and with the fold's scaler applied as training applies it (``_BatchScaler`` on the
  collated batch); and once with the scaler inside the dataset (``Scaler.apply`` per window);
* ``new``: :class:`seld.features.window_source.WindowBatches` over a
  :class:`seld.features.window_source.WindowSource` with 0, 1 and 2 prefetch threads, raw and
  with the scaler applied by the source; and with the mapped pages dropped every 16 batches;
* ``bound``: the same windows sliced from in-memory arrays into one reused buffer, stacked or
  standardised with the same arithmetic: the upper bound of any reader; ``new/bound`` is the
  best new rate's share of it.

The machine's load average is printed before and after: on a shared machine, numbers taken
under load measure the neighbours too.

Then 4 concurrent fold readers (separate processes, started together behind a barrier), each
iterating one epoch over the same feature files with the scaler, at 2 dataset sizes, for the
new source (pages kept mapped, and dropped every 16 batches with ``release_every``) and the old
lazy reader. Per process: peak RSS (VmHWM), and at the end of the epoch, while all 4 still map
the files, RSS split into anonymous and file-backed pages, and PSS (``/proc/self/smaps_rollup``:
shared pages count 1/N in each of the N processes mapping them).

    python bench/input_pipeline.py [--recordings 8] [--seconds 60] [--sizes 8,32]
                                   [--out /tmp/seld-input-pipeline] [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seld.data.dcase import parse_recording_name
from seld.data.metadata import Event, events_to_targets
from seld.features.spectral import FeatureConfig
from seld.features.store import Scaler, fit_scaler, write_feature_file
from seld.features.window_source import WindowBatches, WindowSource
from seld.features.windows import WindowDataset

CONFIG = FeatureConfig()  # the paper's: 96 mel bins, 100 frames per second, 10 channels (mic)
BATCH, WINDOW, HOP = 32, 200, 50  # 2 s windows every 0.5 s at 100 frames/s
RELEASE = {"release_every": 16}  # what the "new+release" reader passes to WindowBatches
EVENTS = [Event("speech", 1.0, 3.5, 10, -40, 1), Event("knock", 20.0, 21.0, -20, 170, 2)]


def write_dataset(folder: Path, count: int, seconds: float, seed: int = 0) -> list[Path]:
    """``count`` feature files of ``seconds`` each (float32 (10, frames, 96) features)."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * CONFIG.frames_per_second)
    paths = []
    for i in range(count):
        path = folder / f"split{1 + i % 4}_ir0_ov1_{i}.h5"
        if not path.exists():
            features = rng.standard_normal((10, frames, CONFIG.n_mels), dtype=np.float32)
            write_feature_file(
                path,
                features * 4 - 30,
                events_to_targets(EVENTS, frames, 1 / CONFIG.frames_per_second),
                EVENTS,
                name=parse_recording_name(path.stem),
                fmt="mic",
                subset="dev",
                config=CONFIG,
                duration_s=seconds,
            )
        paths.append(path)
    return paths


class BatchScaler:
    """What training does to a collated batch (``seld.methods.training._BatchScaler``, on the
    CPU)."""

    def __init__(self, scaler: Scaler):
        self.mean = torch.as_tensor(scaler.mean, dtype=torch.float32)[:, None]
        self.std = torch.as_tensor(scaler.std, dtype=torch.float32)[:, None]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def windows_per_second(
    batches, per_epoch: int, after=None, min_seconds: float = 0.7, repeats: int = 3
) -> float:
    """Windows per second over a stream of epochs (of ``per_epoch`` windows): the best of
    ``repeats`` runs of at least ``min_seconds`` each, after a warm-up of one epoch or one
    second, whichever ends first (the best run: on a shared machine the slower runs measure
    the neighbours). ``after`` is applied to each batch's features (the training-side scaler)."""

    def stream():
        while True:
            yield from batches

    def run(seconds: float, most: int | None = None) -> float:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds and (most is None or count < most):
            features = next(epochs)["features"]
            if after is not None:
                after(features)
            count += features.shape[0]
        return count / (time.perf_counter() - started)

    epochs = stream()
    run(1.0, most=per_epoch)
    return max(run(min_seconds) for _ in range(repeats))


def in_memory_bound(paths: list[Path], scaler: Scaler | None, seed: int) -> float:
    """Windows sliced from in-memory arrays (read whole beforehand) into one reused batch
    buffer, stacked (raw) or standardised window by window with the same float32 arithmetic as
    the source (scaled), targets likewise: what is left of a reader without its own costs."""
    source = WindowSource(paths, WINDOW, HOP)  # for its index only
    arrays = [rec.features.copy() for rec in source.recordings]
    targets = [rec.targets.copy() for rec in source.recordings]
    items = source.items
    generator = torch.Generator().manual_seed(seed)
    features = np.empty((BATCH, 10, WINDOW, CONFIG.n_mels), np.float32)
    frames = np.empty((BATCH, *targets[0].shape[:1], WINDOW, targets[0].shape[2]), np.float32)

    class Epochs:
        def __iter__(self):
            order = torch.randperm(len(items), generator=generator).tolist()
            for i in range(0, len(order), BATCH):
                chosen = [items[k] for k in order[i : i + BATCH]]
                n = len(chosen)
                if scaler is None:
                    np.stack([arrays[f][:, s : s + WINDOW] for f, s in chosen], out=features[:n])
                else:
                    mean, std = scaler.mean[:, None, :], scaler.std[:, None, :]
                    for b, (f, s) in enumerate(chosen):
                        np.subtract(arrays[f][:, s : s + WINDOW], mean, out=features[b])
                        np.divide(features[b], std, out=features[b])
                np.stack([targets[f][:, s : s + WINDOW] for f, s in chosen], out=frames[:n])
                yield {"features": torch.from_numpy(features[:n]), "targets": frames[:n]}

    return windows_per_second(Epochs(), len(items))


def throughput(paths: list[Path], scaler: Scaler, seed: int) -> list[dict]:
    rows = []

    def row(path: str, workers: int, scaling: str, rate: float) -> None:
        rows.append({"path": path, "workers": workers, "scaler": scaling, "windows_s": rate})
        unit = "threads" if path == "new" else "workers"
        print(f"  {path:5s} {unit}={workers} {rate:7.0f} windows/s  scaler: {scaling}", flush=True)

    raw_dataset = WindowDataset(paths, WINDOW, HOP)
    for workers in (0, 1, 2):
        for scaling in ("none", "training"):
            loader = DataLoader(
                raw_dataset,
                batch_size=BATCH,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            after = BatchScaler(scaler) if scaling == "training" else None
            row("old", workers, scaling, windows_per_second(loader, len(raw_dataset), after))
            del loader
    scaled_dataset = WindowDataset(paths, WINDOW, HOP, scaler=scaler)
    loader = DataLoader(
        scaled_dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    row("old", 0, "dataset", windows_per_second(loader, len(raw_dataset)))
    for threads in (0, 1, 2):
        for scaling in ("none", "source"):
            source = WindowSource(
                paths, WINDOW, HOP, scaler=scaler if scaling == "source" else None
            )
            batches = WindowBatches(
                source, BATCH, generator=torch.Generator().manual_seed(seed), threads=threads
            )
            row("new", threads, scaling, windows_per_second(batches, len(source)))
            batches.close()
    source = WindowSource(paths, WINDOW, HOP, scaler=scaler)
    batches = WindowBatches(source, BATCH, generator=torch.Generator().manual_seed(seed), **RELEASE)
    row(
        "new", 0, "source, pages dropped every 16 batches", windows_per_second(batches, len(source))
    )
    for scaling in ("none", "source"):
        row(
            "bound",
            0,
            scaling,
            in_memory_bound(paths, scaler if scaling == "source" else None, seed),
        )
    return rows


def _memory() -> dict[str, float]:
    """This process's memory in MiB: peak and current RSS, anonymous/file RSS, PSS."""
    out: dict[str, float] = {}
    fields = {"VmHWM": "peak_rss", "VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[fields[key]] = int(value.split()[0]) / 1024
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_File"):
                out[key.lower()] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _reader(mode: str, paths: list[Path], scaler: Scaler, barrier, queue) -> None:
    torch.set_num_threads(1)  # 4 readers on the node: one intra-op thread each
    barrier.wait()
    before = _memory()
    started = time.perf_counter()
    if mode == "old":
        dataset = WindowDataset(paths, WINDOW, HOP, scaler=scaler)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
        count = sum(b["features"].shape[0] for b in loader)
    else:
        source = WindowSource(paths, WINDOW, HOP, scaler=scaler)
        batches = WindowBatches(source, BATCH, **(RELEASE if mode == "new+release" else {}))
        count = sum(b["features"].shape[0] for b in batches)
    elapsed = time.perf_counter() - started
    barrier.wait()  # every reader has finished its epoch and still maps the files
    after = _memory()
    grown = {f"{k}_growth": after[k] - before[k] for k in ("rss", "rss_anon", "pss") if k in after}
    queue.put({"windows": count, "seconds": elapsed, **after, **grown})
    barrier.wait()


def concurrent_readers(paths: list[Path], scaler: Scaler, readers: int = 4) -> list[dict]:
    rows = []
    size_mib = sum(p.stat().st_size for p in paths) / 2**20
    WindowSource(paths, WINDOW, HOP)  # caches built once, before the readers start
    ctx = mp.get_context("spawn")
    for mode in ("new", "new+release", "old"):
        barrier, queue = ctx.Barrier(readers), ctx.Queue()
        procs = [
            ctx.Process(target=_reader, args=(mode, paths, scaler, barrier, queue))
            for _ in range(readers)
        ]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        worst = {k: max(r.get(k, float("nan")) for r in results) for k in results[0]}
        rate = sum(r["windows"] for r in results) / max(r["seconds"] for r in results)
        row = {"recordings": len(paths), "features_mib": size_mib, "mode": mode, **worst}
        rows.append(row | {"windows_s_all": rate})
        print(
            f"  {len(paths):3d} recordings ({size_mib:6.0f} MiB)  {mode:11s} per process (max of "
            f"{readers}): peak RSS {worst['peak_rss']:6.0f}  RSS {worst['rss']:6.0f} = anon "
            f"{worst['rss_anon']:5.0f} + file {worst['rss_file']:6.0f}  PSS "
            f"{worst.get('pss', float('nan')):6.0f} MiB; over the epoch RSS +"
            f"{worst['rss_growth']:5.0f} (anon +{worst['rss_anon_growth']:4.0f}) PSS +"
            f"{worst.get('pss_growth', float('nan')):5.0f} MiB; {rate:6.0f} windows/s all",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sizes", default="8,32", help="dataset sizes of the reader-memory part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/seld-input-pipeline"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the feature files and caches")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.perf_counter()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    folder = args.out / "mic_dev"
    paths = write_dataset(folder, max([args.recordings, *sizes]), args.seconds, args.seed)
    took = time.perf_counter() - started
    print(f"{len(paths)} feature files of {args.seconds:.0f} s written in {took:.0f} s")
    scaler = fit_scaler(paths[: args.recordings])
    n = len(WindowDataset(paths[: args.recordings], WINDOW, HOP))
    print(
        f"throughput: {args.recordings} recordings, {n} windows of (10, {WINDOW}, 96) per epoch, "
        f"batch {BATCH}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    rows = throughput(paths[: args.recordings], scaler, args.seed)
    rates = {(r["path"], r["workers"], r["scaler"]): r["windows_s"] for r in rows}
    for scaling in ("none", "source"):
        bound = rates["bound", 0, scaling]
        best = max(rates["new", t, scaling] for t in (0, 1, 2))
        print(f"  new/bound ({'scaled' if scaling == 'source' else 'raw'}): {best / bound:.2f}")
    print("4 concurrent fold readers, one epoch each, scaler applied:")
    memory = []
    for size in sizes:
        memory += concurrent_readers(paths[:size], fit_scaler(paths[:size]))
    took = time.perf_counter() - started
    print(f"total {took:.0f} s; load average after: {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"throughput": rows, "memory": memory}, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
