"""Shoebox rooms ir0..ir4 and their impulse responses to the tetrahedral array and to FOA.

Coordinates: room axes x, y, z in metres; the array looks along +x (azimuth 0), +y is its left
(azimuth 90 degrees) and +z is up. Both formats of a scene come from one image-source model
(pyroomacoustics ``ShoeBox``): the ``mic`` impulse responses are those pyroomacoustics computes
for four omnidirectional capsules; the ``foa`` ones take each image source with the same delay and
gain at the array centre and encode its direction in first-order ambisonics (ACN order W, Y, Z,
X, SN3D). The capsules are free-field omnis: the Eigenmike's rigid-sphere scattering is not
modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyroomacoustics as pra
from scipy import signal

from seld.data.dcase import MIC_CAPSULES_DEG, MIC_RADIUS_M
from seld.synth.dsp import pink_noise

#: How many (room, direction) impulse-response sets one process keeps (0.5-1.5 MB each; one
#: takes ~40 ms to compute, and a dataset draws from 5 rooms x 504 positions).
RIR_CACHE_SIZE = 64


@dataclass(frozen=True)
class RoomSpec:
    """A shoebox room: size (m), target RT60 (s), default image-source order cap, array position.

    ``max_order`` caps the image-source model so one impulse response takes a few milliseconds;
    it keeps the reflections up to roughly ``rt60`` seconds after the direct sound.
    """

    name: str
    size: tuple[float, float, float]
    rt60: float
    max_order: int
    array_offset: tuple[float, float] = (0.17, -0.11)
    array_height: float = 1.5

    @property
    def array_center(self) -> np.ndarray:
        """Array centre ``(3,)`` in room coordinates: near the middle of the floor plan."""
        x, y, _ = self.size
        return np.array(
            [x / 2 + self.array_offset[0], y / 2 + self.array_offset[1], self.array_height]
        )

    @property
    def absorption(self) -> float:
        """Wall energy absorption that gives ``rt60`` by Sabine's formula."""
        absorption, _ = pra.inverse_sabine(self.rt60, self.size)
        return float(absorption)


#: The five rooms, ``ir0`` .. ``ir4``: different sizes, shapes and reverberation.
ROOM_SPECS: tuple[RoomSpec, ...] = (
    RoomSpec("ir0: small office", (5.6, 5.0, 2.8), 0.25, 18),
    RoomSpec("ir1: meeting room", (7.5, 6.0, 3.0), 0.40, 22),
    RoomSpec("ir2: tiled corridor room", (6.0, 5.0, 3.2), 0.65, 30),
    RoomSpec("ir3: classroom", (10.0, 8.0, 3.5), 0.55, 24),
    RoomSpec("ir4: lecture hall", (13.0, 9.5, 4.2), 0.80, 26),
)


def room_spec(ir: int) -> RoomSpec:
    """The room of ``ir{ir}``; ``ValueError`` naming the valid indices otherwise."""
    if not 0 <= ir < len(ROOM_SPECS):
        raise ValueError(f"no room ir{ir}; rooms are ir0..ir{len(ROOM_SPECS) - 1}")
    return ROOM_SPECS[ir]


def unit_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Direction ``(3,)`` of (azimuth, elevation) in degrees, in array coordinates."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])


def capsule_positions(center: np.ndarray) -> np.ndarray:
    """Positions ``(3, 4)`` of the tetrahedral array's capsules around ``center`` (m)."""
    return center[:, None] + MIC_RADIUS_M * np.stack(
        [unit_vector(az, el) for az, el in MIC_CAPSULES_DEG], axis=1
    )


def foa_response(directions: np.ndarray) -> np.ndarray:
    """SN3D first-order responses ``(4, n)`` (W, Y, Z, X) of unit vectors ``(3, n)``."""
    x, y, z = directions
    return np.stack([np.ones_like(x), y, z, x])


def source_position(spec: RoomSpec, azimuth: float, elevation: float, distance: float):
    """Room coordinates ``(3,)`` of a source at (azimuth, elevation) degrees, ``distance`` m.

    Raises ``ValueError`` when that point is not inside the room.
    """
    position = spec.array_center + distance * unit_vector(azimuth, elevation)
    if np.any(position <= 0) or np.any(position >= np.asarray(spec.size)):
        raise ValueError(
            f"source at azimuth {azimuth}, elevation {elevation}, {distance} m lies outside "
            f"room {spec.name} {spec.size}"
        )
    return position


@dataclass(frozen=True)
class RoomResponses:
    """Impulse responses ``(taps, 4)`` float32 of one source position to both formats.

    Sample 0 is the emission time (no modelling delay), so a source that starts at sample n is
    heard at sample n + distance / c * sample_rate.
    """

    mic: np.ndarray
    foa: np.ndarray

    def __getitem__(self, fmt: str) -> np.ndarray:
        if fmt == "mic":
            return self.mic
        if fmt == "foa":
            return self.foa
        raise KeyError(f"unknown format {fmt!r}; formats: mic, foa")


@lru_cache(maxsize=RIR_CACHE_SIZE)
def room_responses(
    ir: int,
    azimuth: float,
    elevation: float,
    distance: float,
    sample_rate: int,
    max_order: int | None = None,
) -> RoomResponses:
    """Impulse responses of a source in room ``ir`` at (azimuth, elevation) degrees and
    ``distance`` m; cached per process.

    ``max_order`` overrides the room's image-source order cap; 0 gives the anechoic (direct path
    only) responses.
    """
    spec = room_spec(ir)
    order = spec.max_order if max_order is None else max_order
    if order < 0:
        raise ValueError(f"max_order must be >= 0, got {order}")
    room = pra.ShoeBox(
        list(spec.size),
        fs=sample_rate,
        materials=pra.Material(spec.absorption),
        max_order=order,
        air_absorption=False,
    )
    room.add_source(source_position(spec, azimuth, elevation, distance))
    capsules = capsule_positions(spec.array_center)
    room.add_microphone_array(capsules)
    room.image_source_model()
    source = room.sources[0]
    visible = np.all(room.visibility[0], axis=0)  # every image of a shoebox is visible
    images, damping = source.images[:, visible], source.damping[0, visible]  # (3, n), (n,)

    mic = []
    for m in range(capsules.shape[1]):
        dist = np.linalg.norm(images - capsules[:, m : m + 1], axis=0)
        mic.append(_build(dist, damping / dist, room.c, sample_rate))
    offsets = images - spec.array_center[:, None]
    dist = np.linalg.norm(offsets, axis=0)
    foa = [
        _build(dist, g * damping / dist, room.c, sample_rate) for g in foa_response(offsets / dist)
    ]
    taps = max(len(h) for h in mic + foa)
    out = {fmt: np.zeros((taps, 4), dtype=np.float32) for fmt in ("mic", "foa")}
    for ch in range(4):
        out["mic"][: len(mic[ch]), ch] = mic[ch]
        out["foa"][: len(foa[ch]), ch] = foa[ch]
    for array in out.values():
        array.flags.writeable = False
    return RoomResponses(**out)


def _build(dist: np.ndarray, gains: np.ndarray, c: float, fs: int) -> np.ndarray:
    """One impulse response ``(taps,)`` from image sources at ``dist`` m with ``gains``.

    This is what pyroomacoustics' ``compute_rir`` does for one band (the same windowed-sinc
    fractional-delay builder and high-pass filter), with two differences: the builder runs on one
    thread, so that the result does not depend on the machine's core count (float32 sums in
    another order), and the half-filter modelling delay is removed, so that sample 0 is the
    emission time. Gains are damping / distance: pyroomacoustics 0.10 leaves out the 1 / (4 pi)
    of free-field spreading, and so do we.
    """
    fdl = pra.constants.get("frac_delay_length")
    times = dist / c + (fdl // 2) / fs
    rir = np.zeros(int(np.ceil(times.max() * fs + fdl // 2 + 1)) + 1, dtype=np.float32)
    pra.libroom.rir_builder(
        rir,
        times.astype(np.float32),
        gains.astype(np.float32),
        fs,
        fdl,
        pra.constants.get("sinc_lut_granularity"),
        1,
    )
    if pra.constants.get("rir_hpf_enable"):
        sos = pra.utilities.design_highpass_filter_sos(
            fs, pra.constants.get("rir_hpf_fc"), **pra.constants.get("rir_hpf_kwargs")
        )
        rir = signal.sosfiltfilt(sos, rir)
    return rir[fdl // 2 :]


def spatialize(dry: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """Convolve a mono signal ``(n,)`` with impulse responses ``(taps, 4)``.

    Returns ``(n + taps - 1, 4)`` float64.
    """
    return signal.oaconvolve(dry[:, None], responses.astype(np.float64), axes=0)


def diffuse_noise(fmt: str, samples: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Ambient noise ``(samples, 4)`` of a diffuse field: unit power on the omni channels.

    Pink noise, independent per channel. In FOA a diffuse field has a third of the W power on
    each of X, Y and Z (SN3D), so those channels are scaled by 1 / sqrt(3).
    """
    noise = pink_noise((samples, 4), rng, sr)
    if fmt == "foa":
        noise[:, 1:] /= np.sqrt(3.0)
    return noise
