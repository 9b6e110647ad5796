"""Training windows a batch at a time from memory-mapped feature caches, in DataLoader order.

The fast counterpart of :class:`seld.features.windows.WindowDataset` (which stays the lazy HDF5
reader for data that should not be cached). :class:`WindowSource` maps each feature file's side
cache (:mod:`seld.features.window_cache`: one ``.npy`` per recording, shared by all processes on
a node) and assembles a whole batch per call; :class:`WindowBatches` replaces
``DataLoader(WindowDataset(...), batch_size, shuffle=True, generator=g, drop_last=False)``,
drawing from ``g`` exactly what the DataLoader draws, so it yields the same windows in the same
order and leaves ``g`` in the same state (training checkpoints ``g``):

* per iteration (epoch), one int64 from ``g`` for the worker base seed, as the DataLoader's
  iterator does on creation (with ``persistent_workers`` only on the first iteration, as a
  DataLoader with persistent workers does);
* at the first batch, ``torch.randperm(n, generator=g)`` (``RandomSampler``; with
  ``generator=None`` it seeds a private generator from the global RNG, as ``RandomSampler`` does);
* one more ``torch.randperm(n, generator=g)``, whose slice ``[:0]`` ``RandomSampler`` yields
  after the permutation: drawn when the partial last batch is formed, or, when ``n`` is a
  multiple of the batch size (or with ``drop_last``), when the batch after the last is asked for.

An epoch cut short (``break``) thus leaves ``g`` as a ``num_workers=0`` DataLoader does; a
DataLoader with workers prefetches and may have drawn the trailing permutation earlier.
``world_size > 1`` reproduces ``DistributedSampler(shuffle, seed)`` with :meth:`set_epoch`.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from seld.features.store import Scaler
from seld.features.window_cache import TRACK_KEYS, CachedRecording, open_cached
from seld.features.windows import window_starts

Batch = dict[str, torch.Tensor]


class WindowSource:
    """Windows of ``window`` frames every ``hop`` frames over feature files, as
    :class:`~seld.features.windows.WindowDataset` indexes them (``items`` are the same (file, start)
    pairs in the same order), read from memory-mapped caches built on first use.

    :meth:`batch` returns what the default collate makes of the same items of a
    ``WindowDataset``: ``features`` (batch, channels, window, bins) float32, standardised when
    a ``scaler`` is given (``Scaler.apply``'s float32 arithmetic; padding stays zero); ``mask``
    (batch, window) float32, 0 on padding past a recording's end; with targets ``activity``,
    ``azimuth`` and ``elevation`` (batch, window, classes) float32, directions in degrees, and
    ``tracks`` (batch, window, tracks, classes, 3) and ``distances`` (batch, window, tracks,
    classes), each where every file has it.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        window: int,
        hop: int,
        scaler: Scaler | None = None,
        with_targets: bool = True,
        cache_dir: Path | None = None,
    ):
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window} and {hop}")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("a window source needs at least one feature file")
        self.window, self.hop = window, hop
        self.with_targets = with_targets
        self.recordings: list[CachedRecording] = [
            open_cached(p, with_targets, cache_dir) for p in self.paths
        ]
        self.num_frames = [r.features.shape[1] for r in self.recordings]
        #: the per-instance targets (:data:`TRACK_KEYS`) every recording has
        self.track_keys = tuple(
            key
            for key in TRACK_KEYS
            if with_targets and all(getattr(r, key) is not None for r in self.recordings)
        )
        shapes = {(r.features.shape[0], r.features.shape[2]) for r in self.recordings}
        if len(shapes) != 1:
            raise ValueError(f"feature files of different (channels, bins): {sorted(shapes)}")
        (self.channels, self.bins), *_ = shapes
        self.items: list[tuple[int, int]] = [
            (i, s) for i, n in enumerate(self.num_frames) for s in window_starts(n, window, hop)
        ]
        self._file = np.array([i for i, _ in self.items], dtype=np.int64)
        self._start = np.array([s for _, s in self.items], dtype=np.int64)
        frames = np.array(self.num_frames, dtype=np.int64)[self._file]
        self._valid = np.minimum(self._start + window, frames) - self._start
        self.scaler = scaler
        self._mean = self._std = None
        if scaler is not None:  # (channels, 1, bins), broadcast over a window's frames
            self._mean = np.asarray(scaler.mean, np.float32)[:, None, :]
            self._std = np.asarray(scaler.std, np.float32)[:, None, :]
        self._buffers = _BufferPool()

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices: Sequence[int] | np.ndarray, pin_memory: bool = False) -> Batch:
        """The windows ``indices`` (positions in ``items``) as one batch of tensors, pinned when
        ``pin_memory`` (for non-blocking copies to a GPU). Their memory is reused for a later
        batch only once no tensor of this batch (nor a view of one) is alive any more."""
        idx = np.asarray(indices, dtype=np.int64)
        size, w = len(idx), self.window
        files, starts, valid = self._file[idx], self._start[idx], self._valid[idx]
        features = self._buffers.get((size, self.channels, w, self.bins), pin_memory)
        out = features.numpy()
        targets = out_t = None
        if self.with_targets:
            classes = self.recordings[0].targets.shape[2]
            targets = self._buffers.get((3, size, w, classes), pin_memory)
            out_t = targets.numpy()
        extras = {
            key: self._buffers.get(
                (size, w, *getattr(self.recordings[0], key).shape[1:]), pin_memory
            )
            for key in self.track_keys
        }
        out_k = {key: tensor.numpy() for key, tensor in extras.items()}
        # one strided copy per window straight from the mapped pages into the batch (casting a
        # float16 cache to float32 on the way), standardised while it is still in the CPU's
        # cache: Scaler.apply's float32 arithmetic, single-threaded, so a busy node does not
        # stall it the way it stalls many small OpenMP regions. Windows come from different
        # files, so there is no one array to index (seld.features.window_cache: why caches are
        # per file).
        mean, std = self._mean, self._std
        rows = zip(files.tolist(), starts.tolist(), valid.tolist(), strict=True)
        for b, (f, s, v) in enumerate(rows):
            rec, window = self.recordings[f], out[b, :, :v]
            if mean is None:
                window[...] = rec.features[:, s : s + v]
            else:
                np.subtract(rec.features[:, s : s + v], mean, out=window)
                np.divide(window, std, out=window)
            if v < w:  # WindowDataset pads after scaling
                out[b, :, v:] = 0
            if out_t is not None:
                out_t[:, b, :v] = rec.targets[:, s : s + v]
                out_t[:, b, v:] = 0
            for key, array in out_k.items():
                array[b, :v] = getattr(rec, key)[s : s + v]
                array[b, v:] = 0
        mask = self._buffers.get((size, w), pin_memory)
        np.less(np.arange(w), valid[:, None], out=mask.numpy(), casting="unsafe")
        result = {"features": features, "mask": mask}
        if targets is not None:
            result |= {"activity": targets[0], "azimuth": targets[1], "elevation": targets[2]}
        return result | extras

    def release(self) -> None:
        """Drop mapped pages from this process's resident set (the page cache keeps them)."""
        for rec in self.recordings:
            rec.release()

    def close(self) -> None:
        self.recordings = []


class _BufferPool:
    """float32 batch buffers, reused once no tensor made from them is alive.

    A fresh 25 MB batch per step makes the C allocator hand memory back to the kernel and fault
    it in again, which costs as much as the copy itself. A buffer handed out as
    ``torch.from_numpy(array)`` is referenced by that tensor's storage (which every view and
    ``.numpy()`` of it shares) for as long as any of them lives, so ``array``'s reference count
    says when it is free again. Pinned buffers come from torch's caching host allocator, which
    already reuses them and waits for the non-blocking copies out of them.
    """

    def __init__(self, per_shape: int = 4):
        self.per_shape = per_shape
        self.pool: dict[tuple[int, ...], list[np.ndarray]] = {}
        self.lock = threading.Lock()
        # an array that only a list holds: its count, taken the same way, is that of a free one
        # (so the test does not depend on how the interpreter counts its own references)
        self._free = [np.empty(0, np.float32)]

    def get(self, shape: tuple[int, ...], pin_memory: bool = False) -> torch.Tensor:
        if pin_memory:
            return torch.empty(shape, dtype=torch.float32, pin_memory=True)
        with self.lock:
            arrays = self.pool.setdefault(shape, [])
            free = sys.getrefcount(self._free[0])
            for i in range(len(arrays)):
                if sys.getrefcount(arrays[i]) == free:
                    return torch.from_numpy(arrays[i])
            array = np.empty(shape, dtype=np.float32)
            if len(arrays) < self.per_shape:
                arrays.append(array)
            return torch.from_numpy(array)


class WindowBatches:
    """Epochs of batches of a :class:`WindowSource`, in the order a DataLoader yields them.

    Iterating once is one epoch, like iterating a DataLoader. ``threads`` > 0 assembles up to
    ``2 * threads`` batches ahead in a thread pool (numpy and torch copy without the GIL);
    the order and the draws from ``generator`` do not depend on it. ``device``: batches are
    moved there, from pinned memory with non-blocking copies when it is a CUDA device
    (``pin_memory`` overrides whether batches are assembled in pinned memory).
    ``release_every``: drop the mapped pages from this process every that many batches, which
    bounds its RSS whatever the dataset size (costs page faults on the next reads).
    """

    def __init__(
        self,
        source: WindowSource,
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        persistent_workers: bool = False,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        threads: int = 0,
        device: torch.device | str | None = None,
        pin_memory: bool | None = None,
        release_every: int | None = None,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.source, self.batch_size = source, batch_size
        self.shuffle, self.generator, self.drop_last = shuffle, generator, drop_last
        self.persistent_workers = persistent_workers
        self.sampler = None
        if world_size > 1:
            self.sampler = DistributedSampler(
                range(len(source)), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
            )
        self.threads = threads
        # batches in flight: the prefetched ones, the one being consumed and the one before it
        source._buffers.per_shape = max(source._buffers.per_shape, 2 * threads + 2)
        self.device = torch.device(device) if device is not None else None
        cuda = self.device is not None and self.device.type == "cuda"
        # as the DataLoader does, pin only where there is an accelerator to copy to
        self.pin_memory = (cuda if pin_memory is None else pin_memory) and torch.cuda.is_available()
        self.release_every = release_every
        self._iterated = False
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the distributed shuffle (``DistributedSampler.set_epoch``)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        if not (self.persistent_workers and self._iterated):  # the DataLoader iterator's seed
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self._iterated = True
        return self._epoch()

    def _order(self) -> tuple[list[int], torch.Generator | None]:
        """This epoch's window order, and the generator of the trailing draw (if any)."""
        n = len(self.source)
        if self.sampler is not None:
            return list(self.sampler), None
        if not self.shuffle:
            return list(range(n)), None
        generator = self.generator
        if generator is None:  # RandomSampler without a generator seeds one from the global RNG
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator().manual_seed(seed)
        return torch.randperm(n, generator=generator).tolist(), generator

    def _epoch(self) -> Iterator[Batch]:
        order, trailing = self._order()
        size = self.batch_size
        stop = len(order) - len(order) % size if self.drop_last else len(order)
        batches = [order[i : min(i + size, stop)] for i in range(0, stop, size)]

        def draw_trailing() -> None:
            if trailing is not None:
                torch.randperm(len(self.source), generator=trailing)

        pending: deque[Future] = deque()
        submitted = 0
        for k in range(len(batches)):
            if self.threads > 0:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="windows")
                while submitted < len(batches) and submitted < k + 2 * self.threads:
                    job = self._pool.submit(self.source.batch, batches[submitted], self.pin_memory)
                    pending.append(job)
                    submitted += 1
            if k == len(batches) - 1 and len(batches[k]) < size:
                draw_trailing()  # RandomSampler ran out while the partial batch was filled
            batch = (
                pending.popleft().result()
                if pending
                else self.source.batch(batches[k], self.pin_memory)
            )
            if self.device is not None:
                batch = {
                    key: v.to(self.device, non_blocking=self.pin_memory) for key, v in batch.items()
                }
            if self.release_every and (k + 1) % self.release_every == 0:
                self.source.release()
            yield batch
        if not batches or len(batches[-1]) == size:
            draw_trailing()  # asked for the batch after the last full one

    def close(self) -> None:
        """Stop the prefetch threads (the source stays open: it belongs to the caller)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
