"""Memory-mappable side caches of feature files, one pair of ``.npy`` files per recording.

Why a side cache and not the HDF5 files themselves: :func:`seld.features.store.write_feature_file`
stores ``features`` in one-second chunks (channels, frames per second, bins), so a recording's
frames are not one contiguous (channels, frames, bins) block in the file and cannot be mapped as an
array. Changing the store layout would leave every existing store unreadable by the fast path,
so the fast path copies each feature file once into

    <cache_dir>/<stem>.<path hash>.<key>.features.npy   (channels, frames, bins), stored dtype
    <cache_dir>/<stem>.<path hash>.<key>.targets.npy    (3, frames, classes) float32:
                                                         activity, azimuth, elevation (degrees)
    <cache_dir>/<stem>.<path hash>.<key>.tracks.npy     (frames, tracks, classes, 3) float32:
                                                         every instance's unit vector, where the
                                                         feature file has ``tracks``
    <cache_dir>/<stem>.<path hash>.<key>.distances.npy  (frames, tracks, classes) float32: every
                                                         instance's distance (metres), where the
                                                         feature file has ``distances``

(``cache_dir`` defaults to ``.window_cache`` beside the feature file). The cache is per
recording, not per fold: the fold jobs of one cross-validation train on overlapping recordings
and map the same files, so the kernel holds each page once however many folds read it.

A cache is valid only for the file it came from: ``key`` hashes the feature file's size,
modification time, inode, feature config hash, store version and input fingerprints (a
rewritten feature file is a new inode with a new mtime, see :func:`seld.fsutil.atomic_path`).
On opening, the cached shape and dtype must equal the feature file's, and its first and last
frames must equal the file's; any mismatch rebuilds the cache. Files are written under a
temporary name and renamed (:func:`seld.fsutil.atomic_path`), under an ``flock`` on
``cache_dir/.build.lock`` so that concurrent fold jobs build each recording once; a rebuild
deletes that recording's caches of other keys.

Pages are mapped read-only and shared (``MAP_SHARED``), so they count in every reader's RSS but
in its PSS only as a share; :meth:`CachedRecording.release` drops them from this process's page
tables (``MADV_DONTNEED``; the page cache keeps them), which bounds a reader's RSS.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from seld.fsutil import atomic_path

#: 3: the track targets' ``distances``
CACHE_VERSION = 3
TARGET_KEYS = ("activity", "azimuth", "elevation")
#: the per-instance targets a feature file may hold, frames first, each cached as it is stored
TRACK_KEYS = ("tracks", "distances")
DEFAULT_CACHE_FOLDER = ".window_cache"
#: frames copied per block while building a cache (bounds the builder's memory)
BUILD_BLOCK_FRAMES = 6000


def cache_key(path: Path) -> str:
    """What a cache of ``path`` is valid for: the file's identity and its recorded provenance."""
    st = Path(path).stat()
    with h5py.File(path, "r") as h5:
        attrs = {k: str(h5.attrs.get(k, "")) for k in sorted(h5.attrs) if _provenance(k)}
    blob = {"v": CACHE_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    blob |= {"ino": st.st_ino, "dev": st.st_dev, "attrs": attrs}
    return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _provenance(attr: str) -> bool:
    return attr in ("config_hash", "store_version") or attr.startswith("input_")


def _map(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """A read-only shared mapping of an ``.npy`` file and the array viewing it."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path}: .npy format {version} is not one the cache writes")
        offset = fh.tell()
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if fortran:
        raise ValueError(f"{path}: Fortran-ordered cache")
    count = int(np.prod(shape))
    array = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape)
    return mapping, array


@dataclass
class CachedRecording:
    """One recording's memory-mapped cache. ``features``: (channels, frames, bins) in the
    stored dtype (float32 or float16); ``targets``: (3, frames, classes) float32 or ``None``;
    ``tracks``: (frames, tracks, classes, 3) float32 or ``None``; ``distances``: (frames,
    tracks, classes) float32 or ``None``."""

    features: np.ndarray
    targets: np.ndarray | None
    mappings: list[mmap.mmap]
    tracks: np.ndarray | None = None
    distances: np.ndarray | None = None

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the page cache)."""
        for mapping in self.mappings:
            mapping.madvise(mmap.MADV_DONTNEED)


def open_cached(
    path: Path, with_targets: bool, cache_dir: Path | None = None, verify: bool = True
) -> CachedRecording:
    """The cache of feature file ``path``, built first when missing, stale or mismatched."""
    path = Path(path)
    folder = Path(cache_dir) if cache_dir is not None else path.parent / DEFAULT_CACHE_FOLDER
    stem = f"{path.stem}.{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    base = folder / f"{stem}.{cache_key(path)}"
    feats, targs = Path(f"{base}.features.npy"), Path(f"{base}.targets.npy")
    with h5py.File(path, "r") as h5:
        if with_targets and "activity" not in h5:
            raise ValueError(f"{path}: no targets (evaluation recording?)")
        has_targets = "activity" in h5
        extras = {k: Path(f"{base}.{k}.npy") for k in TRACK_KEYS if k in h5}
    wanted = ([targs] if has_targets else []) + list(extras.values())
    for attempt in range(2):
        if not feats.exists() or any(not f.exists() for f in wanted) or attempt:
            _build(
                path,
                folder,
                stem,
                feats,
                targs if has_targets else None,
                extras,
                force=attempt > 0,
            )
        recording = _open(feats, targs if with_targets else None, extras if with_targets else {})
        if not verify or _matches(path, recording):
            return recording
    raise RuntimeError(f"{path}: its cache {feats} does not match it after a rebuild")


def _open(feats: Path, targs: Path | None, extras: dict[str, Path]) -> CachedRecording:
    mappings, arrays = [], {}
    for key, file in (("features", feats), ("targets", targs), *extras.items()):
        if file is None:
            continue
        mapping, arrays[key] = _map(file)
        mappings.append(mapping)
    return CachedRecording(
        arrays["features"], arrays.get("targets"), mappings, *(arrays.get(k) for k in TRACK_KEYS)
    )


def _matches(path: Path, recording: CachedRecording) -> bool:
    """Shapes, dtypes, first and last frames against the feature file."""
    with h5py.File(path, "r") as h5:
        data = h5["features"]
        if recording.features.shape != data.shape or recording.features.dtype != data.dtype:
            return False
        for frame in {0, data.shape[1] - 1}:
            if not np.array_equal(recording.features[:, frame], data[:, frame]):
                return False
        if recording.targets is not None:
            if recording.targets.shape != (len(TARGET_KEYS), *h5["activity"].shape):
                return False
            for frame in {0, data.shape[1] - 1}:
                expected = [h5[k][frame].astype(np.float32) for k in TARGET_KEYS]
                if not np.array_equal(recording.targets[:, frame], expected):
                    return False
        for key in TRACK_KEYS:
            cached = getattr(recording, key)
            if cached is None:
                continue
            if cached.shape != h5[key].shape:
                return False
            for frame in {0, data.shape[1] - 1}:
                if not np.array_equal(cached[frame], h5[key][frame]):
                    return False
    return True


@contextlib.contextmanager
def _build_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(
    path: Path,
    folder: Path,
    stem: str,
    feats: Path,
    targs: Path | None,
    extras: dict[str, Path],
    force: bool,
) -> None:
    with _build_lock(folder):
        wanted = [f for f in (feats, targs, *extras.values()) if f is not None]
        if not force and all(f.exists() for f in wanted):
            return  # another process built it while this one waited
        keep = {f.name for f in wanted}
        for old in folder.glob(f"{stem}.*.npy"):
            if old.name not in keep:
                old.unlink(missing_ok=True)  # readers that mapped it keep their pages
        with h5py.File(path, "r") as h5:
            data = h5["features"]
            _write_blocks(feats, data.shape, data.dtype, lambda a, b: data[:, a:b], axis=1)
            if targs is not None:
                shape = (len(TARGET_KEYS), *h5["activity"].shape)

                def block(a: int, b: int) -> np.ndarray:
                    return np.stack([h5[k][a:b].astype(np.float32) for k in TARGET_KEYS])

                _write_blocks(targs, shape, np.dtype(np.float32), block, axis=1)
            for key, file in extras.items():
                held = h5[key]
                _write_blocks(
                    file, held.shape, np.dtype(np.float32), lambda a, b, h=held: h[a:b], axis=0
                )


def _write_blocks(file: Path, shape, dtype, read, axis: int) -> None:
    """Write an ``.npy`` of ``shape`` block by block along ``axis``, atomically."""
    with atomic_path(file) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        for start in range(0, shape[axis], BUILD_BLOCK_FRAMES):
            stop = min(start + BUILD_BLOCK_FRAMES, shape[axis])
            index = [slice(None)] * len(shape)
            index[axis] = slice(start, stop)
            out[tuple(index)] = read(start, stop)
        out.flush()
        del out
