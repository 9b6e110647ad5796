from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from seld.data.dcase import RecordingName, parse_recording_name
from seld.data.folds import make_folds
from seld.data.metadata import Event, events_to_targets
from seld.features.store import (
    fit_scaler,
    fold_scaler,
    is_complete,
    read_events,
    stale_reason,
    write_feature_file,
)
from seld.features.windows import MAX_OPEN_FILES, WindowDataset, window_starts
from seld.fsutil import remove_stale_temporaries

from conftest import tiny_features

CONFIG = tiny_features()
EVENTS = [Event("speech", 0.1, 0.9, 10, -40, 1), Event("knock", 1.0, 1.5, -20, 170, 2)]


def write(path: Path, frames: int, seed: int = 0, name="split1_ir0_ov1_0", config=CONFIG):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((10, frames, 64)) * (1 + np.arange(10))[:, None, None] + seed
    targets = events_to_targets(EVENTS, frames, 0.01)
    write_feature_file(
        path,
        feats.astype(np.float32),
        targets,
        EVENTS,
        name=parse_recording_name(name),
        fmt="mic",
        subset="dev",
        config=config,
        duration_s=frames / 100,
    )
    return feats.astype(np.float32), targets


def test_feature_file_round_trip_and_completeness(tmp_path: Path):
    path = tmp_path / "mic_dev" / "split1_ir0_ov1_0.h5"
    feats, targets = write(path, 250)
    with h5py.File(path) as h5:
        assert np.array_equal(h5["features"][()], feats)
        assert h5["features"].chunks == (10, 100, 64)  # one second per chunk
        assert np.array_equal(h5["activity"][()], targets.activity)
        assert h5.attrs["split"] == 1 and h5.attrs["ov"] == 1 and h5.attrs["format"] == "mic"
    assert read_events(path) == EVENTS
    assert is_complete(path, CONFIG)
    assert not is_complete(path, replace(CONFIG, n_mels=32))  # another config's file
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_feature_file_that_is_cut_or_short_is_stale_and_says_why(tmp_path: Path):
    path = tmp_path / "a.h5"
    write(path, 250)
    assert stale_reason(path, CONFIG) is None
    with h5py.File(path, "a") as h5:  # a target dataset that lost its last frames
        activity = h5["activity"][:200]
        del h5["activity"]
        h5["activity"] = activity
    assert stale_reason(path, CONFIG) == "short: activity holds 200 frames, the features 250"
    with h5py.File(path, "a") as h5:  # a recording longer than its features
        h5.attrs["duration_s"] = 3.0
    assert stale_reason(path, CONFIG) == "short: 250 feature frames of the recording's 300"
    write(path, 250)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut in half
    assert stale_reason(path, CONFIG) == "unreadable"


def test_failed_write_leaves_nothing(tmp_path: Path):
    path = tmp_path / "x.h5"
    with pytest.raises(IndexError):  # features must be (channels, frames, bins)
        write_feature_file(
            path,
            np.zeros((10, 5), np.float32),
            None,
            None,
            name=RecordingName(1, 0, 1, 0),
            fmt="mic",
            subset="dev",
            config=CONFIG,
            duration_s=1.0,
        )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".y.h5.abc.tmp").write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == 1 and list(tmp_path.iterdir()) == []


def test_streaming_scaler_equals_the_whole_data_statistics(tmp_path: Path):
    paths = [tmp_path / f"{i}.h5" for i in range(3)]
    data = [write(p, 130 + 40 * i, seed=i)[0] for i, p in enumerate(paths)]
    scaler = fit_scaler(paths, block_frames=37)
    whole = np.concatenate(data, axis=1).astype(np.float64)
    assert scaler.frames == whole.shape[1]
    np.testing.assert_allclose(scaler.mean, whole.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.std, whole.std(axis=1), rtol=1e-5)
    normed = scaler.apply(data[0])
    assert normed.dtype == np.float32 and abs(float(normed.mean())) < 0.5
    scaler.save(tmp_path / "s.npz")
    loaded = type(scaler).load(tmp_path / "s.npz")
    assert np.array_equal(loaded.mean, scaler.mean) and loaded.frames == scaler.frames


def test_fold_scaler_uses_training_recordings_only(tmp_path: Path):
    root = tmp_path
    names = [f"split{s}_ir0_ov1_{s}" for s in (1, 2, 3, 4)]
    for s, name in enumerate(names, start=1):
        write(root / "mic_dev" / f"{name}.h5", 100, seed=10 * s, name=name)
    fold1 = make_folds(names)[0]  # trains on splits 3 and 4
    scaler = fold_scaler(root, "mic", fold1)
    expected = fit_scaler([root / "mic_dev" / f"{n}.h5" for n in names[2:]])
    np.testing.assert_allclose(scaler.mean, expected.mean)
    assert (root / "scalers" / "mic_dcase2019_fold1.npz").exists()


def test_window_starts_cover_every_frame():
    assert window_starts(250, 200, 50) == [0, 50]
    assert window_starts(260, 200, 50) == [0, 50, 60]
    assert window_starts(120, 200, 50) == [0]


def test_window_dataset_reads_lazily_and_pads(tmp_path: Path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    feats_a, targets_a = write(a, 260, seed=1)
    write(b, 120, seed=2)
    ds = WindowDataset([a, b], window=200, hop=50)
    assert len(ds) == 4 and ds._handles == {}
    item = ds[2]  # the window flush with the end of a
    assert item["features"].shape == (10, 200, 64) and item["features"].dtype == torch.float32
    assert torch.equal(item["features"], torch.from_numpy(feats_a[:, 60:260]))
    assert torch.equal(item["activity"], torch.from_numpy(targets_a.activity[60:260]))
    padded = ds[3]
    assert padded["mask"].sum() == 120 and padded["features"][:, 120:].abs().sum() == 0
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive: no open handles
    assert clone._handles == {} and torch.equal(clone[0]["features"], ds[0]["features"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [b["features"].shape[0] for b in batches] == [2, 2]
    ds.close()


def test_window_dataset_keeps_few_files_open(tmp_path: Path):
    paths, features = [], []
    for i in range(MAX_OPEN_FILES + 4):
        paths.append(tmp_path / f"r{i}.h5")
        features.append(write(paths[-1], 60, seed=i)[0])
    ds = WindowDataset(paths, window=50, hop=50)
    for _ in range(2):  # a second pass reopens files closed in the first
        for item in range(len(ds)):
            index, start = ds.items[item]
            expected = _window(features[index], start, 50)
            assert torch.equal(ds[item]["features"], torch.from_numpy(expected))
            assert len(ds._handles) <= MAX_OPEN_FILES
    assert len(ds._handles) == MAX_OPEN_FILES
    closed = [h for h in ds._handles.values() if not h.id.valid]
    assert closed == []
    ds.close()


def _window(features: np.ndarray, start: int, length: int) -> np.ndarray:
    out = np.zeros((features.shape[0], length, features.shape[2]), np.float32)
    part = features[:, start : start + length]
    out[:, : part.shape[1]] = part
    return out
