"""A torch ``Dataset`` of fixed-length training windows read lazily from the feature store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from seld.features.store import Scaler
from seld.features.window_cache import TRACK_KEYS


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """Window starts covering a recording: every ``hop`` frames, plus one window flush with the
    end so that no frame is left out; a recording shorter than a window gets one padded window."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


MAX_OPEN_FILES = 8


class WindowDataset(Dataset):
    """Windows of ``window`` frames every ``hop`` frames over feature files.

    Nothing is loaded up front but the frame counts; each item reads one window from HDF5.
    Files are opened lazily in the process that reads them (each DataLoader worker opens its own
    handles). Items: ``features`` (channels, window, bins) float32, standardised when a scaler is
    given; with targets, ``activity`` (window, classes) float32 and ``azimuth`` / ``elevation``
    (window, classes) in degrees, and ``tracks`` (window, tracks, classes, 3), every instance's
    unit vector, and ``distances`` (window, tracks, classes), its distance in metres, each where
    every file has them (:class:`seld.data.metadata.FrameTargets`); ``mask`` (window,) is 0 on
    padding past the end of a recording.

    For training at speed, :class:`seld.features.window_source.WindowSource` with
    :class:`seld.features.window_source.WindowBatches` yields the same batches in the same order
    from memory-mapped caches of the same files.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        window: int,
        hop: int,
        scaler: Scaler | None = None,
        with_targets: bool = True,
    ):
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window} and {hop}")
        self.paths = [Path(p) for p in paths]
        self.window, self.hop = window, hop
        self.scaler = scaler
        self.with_targets = with_targets
        self.items: list[tuple[int, int]] = []
        self.num_frames: list[int] = []
        held = {key: True for key in TRACK_KEYS}
        for i, path in enumerate(self.paths):
            with h5py.File(path, "r") as h5:
                frames = h5["features"].shape[1]
                if with_targets and "activity" not in h5:
                    raise ValueError(f"{path}: no targets (evaluation recording?)")
                held = {key: on and key in h5 for key, on in held.items()}
            self.num_frames.append(frames)
            self.items.extend((i, s) for s in window_starts(frames, window, hop))
        #: the target keys of every item: the track targets only where every file has them
        kept = [key for key, on in held.items() if on and with_targets]
        self.target_keys = ("activity", "azimuth", "elevation", *kept)
        self._handles: dict[int, h5py.File] = {}
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _file(self, index: int) -> h5py.File:
        """The open file, most recently used last; at most ``MAX_OPEN_FILES`` stay open, so a
        reader's memory does not grow with the number of recordings (each open HDF5 file holds
        about half a megabyte of metadata and chunk cache)."""
        if self._pid != os.getpid():  # a forked worker must not share its parent's handles
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.pop(index, None)
        if handle is None:
            while len(self._handles) >= MAX_OPEN_FILES:
                self._handles.pop(next(iter(self._handles))).close()
            handle = h5py.File(self.paths[index], "r")
        self._handles[index] = handle  # dicts keep insertion order: this one is now newest
        return handle

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, None
        return state

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index, start = self.items[item]
        h5 = self._file(index)
        stop = min(start + self.window, self.num_frames[index])
        features = h5["features"][:, start:stop, :]
        if self.scaler is not None:
            features = self.scaler.apply(features)
        valid = stop - start
        out = {
            "features": torch.from_numpy(_pad(features.astype(np.float32), self.window, axis=1)),
            "mask": torch.from_numpy(_pad(np.ones(valid, np.float32), self.window, axis=0)),
        }
        if self.with_targets:
            for key in self.target_keys:
                data = h5[key][start:stop].astype(np.float32)
                out[key] = torch.from_numpy(_pad(data, self.window, axis=0))
        return out

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


def _pad(array: np.ndarray, length: int, axis: int) -> np.ndarray:
    missing = length - array.shape[axis]
    if missing <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths)
