"""Channel-symmetry augmentation: rotations and reflections that map the array onto itself.

A direction map ``T`` of the form ``azimuth -> a * azimuth + k * 90``, ``elevation -> e *
elevation`` (``a, e`` in {+1, -1}, ``k`` in 0..3) keeps the DCASE 2019 direction grid and its
elevation range. Each is a 3x3 signed permutation ``R`` of the array's (x, y, z) axes. Rendering a
source at ``R d`` gives the same signals as rendering it at ``d`` and then mixing the channels:

- ``mic``: capsule ``i`` hears a source at ``R d`` as capsule ``j`` hears one at ``d`` when
  ``c_j = R^T c_i`` (free-field delays depend on ``d . c``). The maps for which every capsule has
  such a partner are the array's symmetries; they are found here from the capsule directions in
  :data:`seld.data.dcase.MIC_CAPSULES_DEG`, not from a table. For the tetrahedral array 8 of the 16
  maps qualify.
- ``foa``: the first-order channels (W, Y, Z, X) are the responses (1, y, z, x), so a source at
  ``R d`` gives the new (x, y, z) channels ``R`` times the old ones: every one of the 16 maps is a
  sign flip and/or x/y swap of the channels.

On features (``channels, frames, bins``) a channel transform becomes a gather: log-mels move
with their audio channel; GCC-PHAT of a pair moves to the transformed pair, its lags reversed when
the pair's order flips (lag index ``f -> (n - f) mod n``; exact for every kept lag except the
outermost, ``-n/2``, whose mirror ``+n/2`` is not stored) and its sign flipped when exactly one of
the two channels changes sign; intensity vectors are multiplied by ``R``. Labels move by ``T``.
Room reflections are not symmetric, so a transformed reverberant recording is a new plausible
room, not the same one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from seld.data.dcase import FORMATS, MIC_CAPSULES_DEG
from seld.data.metadata import unit_vectors

#: FOA channel index of each Cartesian axis (ACN order W, Y, Z, X).
_FOA_AXIS_CHANNEL = (3, 1, 2)
_AUDIO_CHANNELS = 4


@dataclass(frozen=True)
class Symmetry:
    """One direction map and the channel mix that renders it.

    ``azimuth_sign``, ``azimuth_offset`` (degrees, a multiple of 90), ``elevation_sign`` define
    ``T``; ``rotation`` is its 3x3 matrix on (x, y, z). New audio channel ``i`` is
    ``signs[i] * old channel sources[i]``.
    """

    azimuth_sign: int
    azimuth_offset: int
    elevation_sign: int
    rotation: tuple[tuple[int, int, int], ...]
    sources: tuple[int, ...]
    signs: tuple[int, ...]

    @property
    def name(self) -> str:
        azi = f"{'' if self.azimuth_sign > 0 else '-'}az{self.azimuth_offset:+d}"
        return f"{azi},{'' if self.elevation_sign > 0 else '-'}el"

    @property
    def is_identity(self) -> bool:
        return (self.azimuth_sign, self.azimuth_offset, self.elevation_sign) == (1, 0, 1)

    def directions(
        self, azimuth_deg: np.ndarray, elevation_deg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``T`` on angles in degrees; azimuths come back in [-180, 180)."""
        azimuth = (
            np.mod(self.azimuth_sign * np.asarray(azimuth_deg) + self.azimuth_offset + 180, 360)
            - 180
        )
        return azimuth, self.elevation_sign * np.asarray(elevation_deg)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """The channel mix on ``(samples, 4)`` audio (or impulse responses)."""
        return audio[:, list(self.sources)] * np.asarray(self.signs, dtype=audio.dtype)


def _direction_map(a: int, k: int, e: int) -> np.ndarray:
    """3x3 matrix of ``azimuth -> a * azimuth + 90 k``, ``elevation -> e * elevation``."""
    c, s = round(np.cos(np.pi / 2 * k)), round(np.sin(np.pi / 2 * k))
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    reflect = np.diag([1, a, e])  # y -> -y negates the azimuth; z -> -z the elevation
    return rotate @ reflect


def _candidates():
    for a, k, e in itertools.product((1, -1), range(4), (1, -1)):
        yield a, 90 * k, e, _direction_map(a, k, e)


def _mic_channels(rotation: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    capsules = unit_vectors(*np.array(MIC_CAPSULES_DEG, dtype=float).T)  # (4, 3)
    sources = []
    for capsule in capsules:
        match = np.flatnonzero(np.linalg.norm(capsules - rotation.T @ capsule, axis=1) < 1e-9)
        if len(match) != 1:
            return None
        sources.append(int(match[0]))
    return tuple(sources), (1,) * len(sources)


def _foa_channels(rotation: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    sources, signs = [0, 0, 0, 0], [1, 1, 1, 1]
    for axis, channel in enumerate(_FOA_AXIS_CHANNEL):
        (other,) = np.flatnonzero(rotation[axis])
        sources[channel] = _FOA_AXIS_CHANNEL[other]
        signs[channel] = int(rotation[axis, other])
    return tuple(sources), tuple(signs)


@cache
def symmetries(fmt: str) -> tuple[Symmetry, ...]:
    """Every symmetry of a format, the identity first: 8 for ``mic``, 16 for ``foa``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = []
    for a, offset, e, rotation in _candidates():
        channels = _mic_channels(rotation) if fmt == "mic" else _foa_channels(rotation)
        if channels is not None:
            matrix = tuple(tuple(int(v) for v in row) for row in rotation)
            out.append(Symmetry(a, offset, e, matrix, *channels))
    return tuple(out)


def inverse(symmetry: Symmetry, fmt: str) -> Symmetry:
    """The symmetry that undoes ``symmetry`` (its rotation's transpose)."""
    target = np.array(symmetry.rotation).T
    return next(s for s in symmetries(fmt) if np.array_equal(np.array(s.rotation), target))


@dataclass(frozen=True)
class FeatureMap:
    """A symmetry on a feature tensor: new channel ``c`` is ``signs[c]`` times old channel
    ``sources[c]``, its bins reversed (GCC lags) where ``flips[c]``."""

    sources: tuple[int, ...]
    signs: tuple[float, ...]
    flips: tuple[bool, ...]

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``(channels, frames, bins)`` (or with a leading batch axis) -> the same shape."""
        out = features[..., list(self.sources), :, :]
        flip = np.asarray(self.flips)
        if flip.any():
            n = features.shape[-1]
            reverse = (n - np.arange(n)) % n
            out[..., flip, :, :] = out[..., flip, :, :][..., reverse]
        return out * np.asarray(self.signs, dtype=features.dtype)[:, None, None]


def feature_map(symmetry: Symmetry, kind: str) -> FeatureMap:
    """How ``symmetry`` acts on the features of ``kind`` (see :mod:`seld.features.spectral`)."""
    sources, signs = symmetry.sources, symmetry.signs
    out_src = list(sources)
    out_sign = [1.0] * _AUDIO_CHANNELS  # log power does not see a sign
    out_flip = [False] * _AUDIO_CHANNELS
    if kind == "logmel_gcc":
        pairs = list(itertools.combinations(range(_AUDIO_CHANNELS), 2))
        for i, j in pairs:
            a, b = sources[i], sources[j]
            out_src.append(_AUDIO_CHANNELS + pairs.index((min(a, b), max(a, b))))
            out_sign.append(float(signs[i] * signs[j]))
            out_flip.append(a > b)
    elif kind == "logmel_iv":
        rotation = np.array(symmetry.rotation)
        for axis in range(3):
            (other,) = np.flatnonzero(rotation[axis])
            out_src.append(_AUDIO_CHANNELS + int(other))
            out_sign.append(float(rotation[axis, other]))
            out_flip.append(False)
    else:
        raise ValueError(f"unknown feature kind {kind!r}")
    return FeatureMap(tuple(out_src), tuple(out_sign), tuple(out_flip))


class BatchAugmenter:
    """Random symmetries applied to training batches in torch, one per window.

    ``features`` (batch, channels, frames, bins) are the raw (unscaled) features; ``azimuth`` and
    ``elevation`` targets (batch, frames, classes) are in degrees; ``tracks`` targets (batch,
    frames, tracks, classes, 3), where present, are unit vectors, turned by the symmetry's
    rotation (zero vectors stay zero). The draw comes from
    ``generator``, so a seed gives the same augmentation, and resuming with the generator's state
    continues it. The identity is one of the draws.
    """

    def __init__(self, fmt: str, kind: str, generator: torch.Generator):
        self.symmetries = symmetries(fmt)
        self.generator = generator
        # per symmetry, built once: source channel index, lag-reversal mask, sign
        self._maps = []
        for sym in self.symmetries:
            fmap = feature_map(sym, kind)
            self._maps.append(
                (
                    torch.tensor(fmap.sources),
                    torch.tensor(fmap.flips)[None, :, None, None],
                    torch.tensor(fmap.signs, dtype=torch.float32)[None, :, None, None],
                )
            )

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = batch["features"]
        choice = torch.randint(len(self.symmetries), (features.shape[0],), generator=self.generator)
        out = dict(batch)
        new_features = features.clone()
        azimuth, elevation = batch["azimuth"].clone(), batch["elevation"].clone()
        tracks = batch["tracks"].clone() if "tracks" in batch else None
        bins = features.shape[-1]
        reverse = torch.remainder(bins - torch.arange(bins), bins)
        for g in torch.unique(choice).tolist():
            if self.symmetries[g].is_identity:
                continue
            rows = (choice == g).nonzero().squeeze(1).to(features.device)
            sym = self.symmetries[g]
            sources, flip, sign = (t.to(features.device) for t in self._maps[g])
            x = features.index_select(0, rows)[:, sources]
            x = torch.where(flip, x[..., reverse.to(x.device)], x)
            new_features[rows] = x * sign.to(x.dtype)
            azi = sym.azimuth_sign * azimuth[rows] + sym.azimuth_offset
            azimuth[rows] = torch.remainder(azi + 180.0, 360.0) - 180.0
            elevation[rows] = sym.elevation_sign * elevation[rows]
            if tracks is not None:  # v -> R v on the last axis
                turn = torch.tensor(sym.rotation, dtype=tracks.dtype, device=tracks.device)
                tracks[rows] = tracks[rows] @ turn.T
        out.update(features=new_features, azimuth=azimuth, elevation=elevation)
        if tracks is not None:
            out["tracks"] = tracks
        return out
