"""The memory-mapped window source against today's DataLoader over the lazy HDF5 WindowDataset:
the same batches, bit for bit and in the same order, and the same generator state after."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from seld.data.dcase import parse_recording_name
from seld.data.metadata import Event, events_to_targets
from seld.features.spectral import FeatureConfig
from seld.features.store import fit_scaler, write_feature_file
from seld.features.window_cache import DEFAULT_CACHE_FOLDER
from seld.features.window_source import WindowBatches, WindowSource
from seld.features.windows import WindowDataset

CONFIG = FeatureConfig(n_mels=64)  # 100 frames per second, 64 bins
WINDOW, HOP = 50, 20
EVENTS = [
    Event("speech", 0.05, 0.9, 10, -40, 1),
    Event("knock", 0.6, 1.5, -20, 170, 2),
    Event("phone", 1.2, 2.4, 30, 90, 1),
]
# frames per recording: one shorter than a window (padded), others ending off the hop grid
FRAMES = (137, 30, 250, 96, 181)


def write(path: Path, frames: int, seed: int, dtype=np.float32) -> np.ndarray:
    """A real feature file of random features and real frame targets; returns the features."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((10, frames, 64)) * (1 + np.arange(10))[:, None, None] + seed
    write_feature_file(
        path,
        feats.astype(dtype),
        events_to_targets(EVENTS, frames, 0.01),
        EVENTS,
        name=parse_recording_name(f"split1_ir0_ov1_{seed}"),
        fmt="mic",
        subset="dev",
        config=CONFIG,
        duration_s=frames / 100,
    )
    return feats.astype(dtype)


@pytest.fixture(scope="module", params=["float32", "float16"])
def paths(request, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp(f"windows_{request.param}") / "mic_dev"
    dtype = np.dtype(request.param)
    return [_write_at(root, i, n, dtype) for i, n in enumerate(FRAMES)]


def _write_at(root: Path, i: int, frames: int, dtype) -> Path:
    path = root / f"split1_ir0_ov1_{i}.h5"
    write(path, frames, seed=i, dtype=dtype)
    return path


def assert_same_batches(old, new) -> None:
    """Compared batch by batch as they come (so the source reuses its buffers), and once more
    at the end through views kept of every other batch (reuse must not overwrite them)."""
    kept = []
    for k, (a, b) in enumerate(zip(old, new, strict=True)):
        assert list(a) == list(b)  # same keys in the same order
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert b[key].is_contiguous(), key
            assert torch.equal(a[key], b[key]), key
        if k % 2:
            kept += [(a[key][-1], b[key][-1]) for key in a]
    for a, b in kept:
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch_size", [7, 10])  # 30 windows: a partial last batch, and none
@pytest.mark.parametrize("scaled", [False, True])
def test_same_batches_order_and_generator_state_as_the_dataloader(paths, batch_size, scaled):
    scaler = fit_scaler(paths) if scaled else None
    dataset = WindowDataset(paths, WINDOW, HOP, scaler=scaler)
    source = WindowSource(paths, WINDOW, HOP, scaler=scaler)
    assert source.items == dataset.items and len(source) == 30
    g_old, g_new = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g_old)
    batches = WindowBatches(source, batch_size, generator=g_new)
    assert len(batches) == len(loader)
    for _ in range(2):
        assert_same_batches(loader, batches)
        assert torch.equal(g_old.get_state(), g_new.get_state())
    dataset.close()


def test_padding_is_zero_after_scaling_and_masked(paths):
    source = WindowSource(paths, WINDOW, HOP, scaler=fit_scaler(paths))
    short = [k for k, (f, _) in enumerate(source.items) if source.num_frames[f] < WINDOW]
    batch = source.batch(short)
    valid = source.num_frames[source.items[short[0]][0]]
    assert batch["mask"][0].sum() == valid
    assert batch["features"][0, :, valid:].abs().sum() == 0
    assert batch["features"][0, :, :valid].abs().sum() > 0


def test_an_epoch_cut_short_leaves_the_generator_as_the_dataloader_does(paths):
    dataset, source = WindowDataset(paths, WINDOW, HOP), WindowSource(paths, WINDOW, HOP)
    for stop in (1, 4, 5):  # 30 windows in batches of 7: stop after 1, 4 and all 5 batches
        g_old, g_new = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        loader = DataLoader(dataset, batch_size=7, shuffle=True, generator=g_old)
        batches = WindowBatches(source, 7, generator=g_new)
        for _ in range(2):
            old = [b for _, b in zip(range(stop), loader, strict=False)]
            new = [b for _, b in zip(range(stop), batches, strict=False)]
            assert_same_batches(old, new)
            assert torch.equal(g_old.get_state(), g_new.get_state()), stop


def test_threads_persistent_workers_and_drop_last(paths):
    dataset, source = WindowDataset(paths, WINDOW, HOP), WindowSource(paths, WINDOW, HOP)
    g_old, g_new = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loader = DataLoader(
        dataset, batch_size=5, shuffle=True, generator=g_old, num_workers=2, persistent_workers=True
    )
    batches = WindowBatches(source, 5, generator=g_new, persistent_workers=True, threads=2)
    for _ in range(3):
        assert_same_batches(loader, batches)
        assert torch.equal(g_old.get_state(), g_new.get_state())
    batches.close()
    for size in (5, 8):
        g_old, g_new = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        loader = DataLoader(dataset, batch_size=size, shuffle=True, generator=g_old, drop_last=True)
        batches = WindowBatches(source, size, generator=g_new, drop_last=True)
        for _ in range(2):
            assert_same_batches(loader, batches)
            assert torch.equal(g_old.get_state(), g_new.get_state())


def test_without_a_generator_the_global_rng_is_drawn_the_same_way(paths):
    dataset, source = WindowDataset(paths, WINDOW, HOP), WindowSource(paths, WINDOW, HOP)
    torch.manual_seed(21)
    old = [list(DataLoader(dataset, batch_size=7, shuffle=True)) for _ in range(2)]
    state = torch.get_rng_state()
    torch.manual_seed(21)
    new = [list(WindowBatches(source, 7)) for _ in range(2)]
    for a, b in zip(old, new, strict=True):
        assert_same_batches(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_distributed_and_sequential_orders(paths):
    dataset, source = WindowDataset(paths, WINDOW, HOP), WindowSource(paths, WINDOW, HOP)
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=9)
        g_old, g_new = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        loader = DataLoader(dataset, batch_size=5, sampler=sampler, generator=g_old)
        batches = WindowBatches(source, 5, generator=g_new, world_size=2, rank=rank, seed=9)
        assert len(batches) == len(loader)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches.set_epoch(epoch)
            assert_same_batches(loader, batches)
            assert torch.equal(g_old.get_state(), g_new.get_state())
    loader = DataLoader(dataset, batch_size=6, shuffle=False)
    assert_same_batches(loader, WindowBatches(source, 6, shuffle=False))


def test_raw_windows_need_no_targets(paths):
    dataset = WindowDataset(paths, WINDOW, HOP, with_targets=False)
    source = WindowSource(paths, WINDOW, HOP, with_targets=False)
    assert_same_batches(DataLoader(dataset, batch_size=9), WindowBatches(source, 9, shuffle=False))


def test_cpu_device_and_released_pages_give_the_same_batches(paths):
    source = WindowSource(paths, WINDOW, HOP)
    plain = list(WindowBatches(source, 4, generator=torch.Generator().manual_seed(1)))
    moved = WindowBatches(
        source,
        4,
        generator=torch.Generator().manual_seed(1),
        device="cpu",
        release_every=2,
        pin_memory=True,
    )
    assert_same_batches(plain, moved)


def _caches(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / DEFAULT_CACHE_FOLDER).glob("*.npy"))


def test_a_rewritten_feature_file_gets_a_new_cache(tmp_path: Path):
    folder = tmp_path / "mic_dev"
    paths = [_write_at(folder, i, n, np.float32) for i, n in enumerate(FRAMES[:2])]
    WindowSource(paths, WINDOW, HOP)
    before = _caches(folder)
    assert len(before) == 8  # features, targets, track targets and distances of two recordings
    WindowSource(paths, WINDOW, HOP)
    assert _caches(folder) == before  # built once, then reused
    write(paths[0], FRAMES[0], seed=7)  # new content under the same name
    source = WindowSource(paths, WINDOW, HOP)
    after = _caches(folder)
    assert len(after) == 8 and after != before  # the stale caches are replaced, not kept
    expected = WindowDataset(paths, WINDOW, HOP)
    assert_same_batches(DataLoader(expected, batch_size=4), WindowBatches(source, 4, shuffle=False))


def test_a_mismatched_cache_is_rebuilt_not_used(tmp_path: Path):
    folder = tmp_path / "mic_dev"
    paths = [_write_at(folder, i, 137, np.float32) for i in range(2)]  # same shapes
    WindowSource(paths, WINDOW, HOP)
    names = _caches(folder)
    first, second = (n for n in names if n.endswith(".features.npy"))
    stat = os.stat(folder / DEFAULT_CACHE_FOLDER / first)
    # the other recording's features under this recording's cache name
    shutil.copyfile(folder / DEFAULT_CACHE_FOLDER / second, folder / DEFAULT_CACHE_FOLDER / first)
    source = WindowSource(paths, WINDOW, HOP)
    assert os.stat(folder / DEFAULT_CACHE_FOLDER / first).st_ino != stat.st_ino  # rebuilt
    expected = WindowDataset(paths, WINDOW, HOP)
    assert_same_batches(DataLoader(expected, batch_size=5), WindowBatches(source, 5, shuffle=False))


def test_bad_arguments(paths):
    with pytest.raises(ValueError, match="positive"):
        WindowSource(paths, 0, HOP)
    with pytest.raises(ValueError, match="at least one"):
        WindowSource([], WINDOW, HOP)
    with pytest.raises(ValueError, match="positive"):
        WindowBatches(WindowSource(paths, WINDOW, HOP), 0)


def test_batch_memory_is_reused_only_once_nothing_holds_it(paths):
    source = WindowSource(paths, WINDOW, HOP)
    first = source.batch([0, 1, 2])
    kept = first["features"][1]  # a view keeps the whole batch's memory
    expected, address = kept.clone(), first["features"].data_ptr()
    del first
    second = source.batch([3, 4, 5])
    assert second["features"].data_ptr() != address and torch.equal(kept, expected)
    del second, kept
    assert source.batch([6, 7, 8])["features"].data_ptr() == address  # free again: reused


def test_concurrent_readers_build_each_cache_once(tmp_path: Path):
    folder = tmp_path / "mic_dev"
    paths = [_write_at(folder, i, n, np.float32) for i, n in enumerate(FRAMES[:3])]
    with ThreadPoolExecutor(4) as pool:  # each opens the lock file itself, as processes do
        sources = list(pool.map(lambda _: WindowSource(paths, WINDOW, HOP), range(4)))
    assert len(_caches(folder)) == 12  # features, targets, tracks, distances of 3 recordings
    assert not list((folder / DEFAULT_CACHE_FOLDER).glob("*.tmp"))
    # had one reader rebuilt a cache another had mapped, that one would map a deleted file
    cache = str(folder / DEFAULT_CACHE_FOLDER)
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if cache in line]
    assert mapped and not [line for line in mapped if line.endswith("(deleted)")]
    assert len({line.split()[-1] for line in mapped}) == 12
    expected = WindowDataset(paths, WINDOW, HOP)
    for source in sources:
        old = DataLoader(expected, batch_size=4)
        assert_same_batches(old, WindowBatches(source, 4, shuffle=False))


def test_batches_carry_each_instances_direction_and_distance(paths):
    batch = WindowSource(paths, WINDOW, HOP).batch([0])  # the first window of the first file
    with h5py.File(paths[0]) as h5:
        tracks, distances = h5["tracks"][:WINDOW], h5["distances"][:WINDOW]
    assert batch["distances"].shape == (1, WINDOW, 3, 11) and distances.max() == 1  # speech
    assert np.array_equal(batch["distances"][0].numpy(), distances)
    assert np.array_equal(batch["tracks"][0].numpy(), tracks)
