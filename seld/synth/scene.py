"""Scenes: which recordings to make, where their events go, and how they are rendered.

A recording is fully determined by the config and its name: its random generator is seeded from
``(config.seed, name.stem)``, so results do not depend on which worker makes it, or when.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from seld.data.dcase import (
    AZIMUTH_GRID,
    CLASSES,
    ELEVATION_GRID,
    FORMATS,
    MAX_ELEVATION_AT_DISTANCE,
    OVERLAPS,
    RecordingName,
)
from seld.data.metadata import Event
from seld.synth.config import SynthConfig
from seld.synth.rooms import ROOM_SPECS, diffuse_noise, room_responses, room_spec, spatialize
from seld.synth.sounds import make_sound

logger = logging.getLogger(__name__)

#: Events of the two tracks of an ov2 scene closer than this (seconds) count as simultaneous, so
#: that they also differ in class and direction on the 20 ms label frames.
_OVERLAP_GUARD_S = 0.1


def plan_recordings(config: SynthConfig) -> list[RecordingName]:
    """The recordings of a dataset: ``per_split`` in each split, rooms and overlaps cycled.

    Recording ``k = (split - 1) * per_split + j`` is in room ``k mod 5`` with overlap
    ``1 + k mod 2``: ten consecutive recordings cover all (room, overlap) pairs, and a split with
    fewer still alternates ov1 / ov2 and spreads over rooms. ``k`` is the index in the name, unique
    across splits and independent of which splits are requested.
    """
    names = []
    for split in dict.fromkeys(config.splits):
        for j in range(config.per_split):
            k = (split - 1) * config.per_split + j
            names.append(RecordingName(split, k % len(ROOM_SPECS), OVERLAPS[k % len(OVERLAPS)], k))
    return names


def recording_seed(config: SynthConfig, name: RecordingName, stream: int) -> np.random.SeedSequence:
    """Seed of random ``stream`` (0: scene; 1, 2: noise of each format) of one recording."""
    digest = hashlib.sha256(name.stem.encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.SeedSequence([config.seed, *words, stream])


@dataclass(frozen=True)
class PlacedSound:
    """One event of a scene: its label row and its dry mono signal ``(samples,)`` from ``start``."""

    event: Event
    start: int
    sound: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + self.sound.size


def _draw_direction(rng: np.random.Generator, taken: set[tuple[int, int]]) -> tuple[int, int, int]:
    """(azimuth, elevation, distance) on the DCASE grid, avoiding the (azimuth, elevation)
    pairs in ``taken``."""
    while True:
        distance = int(rng.choice(sorted(MAX_ELEVATION_AT_DISTANCE)))
        limit = MAX_ELEVATION_AT_DISTANCE[distance]
        elevations = [e for e in ELEVATION_GRID if abs(e) <= limit]
        elevation = int(elevations[rng.integers(len(elevations))])
        azimuth = int(AZIMUTH_GRID[rng.integers(len(AZIMUTH_GRID))])
        if (azimuth, elevation) not in taken:
            return azimuth, elevation, distance


def _track(
    rng: np.random.Generator,
    config: SynthConfig,
    gap_s: tuple[float, float],
    others: list[PlacedSound],
) -> list[PlacedSound]:
    """One track of non-overlapping events from the start to the end of the recording.

    Events that overlap one of ``others`` (the other track) get another class and direction.
    """
    sr, total, style = config.sample_rate, config.num_samples, config.style
    guard = round(_OVERLAP_GUARD_S * sr)
    placed: list[PlacedSound] = []
    start = round(rng.uniform(*style.first_onset_s) * sr)
    while start < total:
        for _ in range(style.max_attempts):
            label = CLASSES[rng.integers(len(CLASSES))]
            sound = make_sound(label, rng, sr)
            if start + sound.size >= total:  # every event ends before the audio does
                continue
            near = [
                p for p in others if p.start < start + sound.size + guard and start < p.stop + guard
            ]
            if any(p.event.label == label for p in near):
                continue
            azimuth, elevation, distance = _draw_direction(
                rng, {(p.event.azimuth, p.event.elevation) for p in near}
            )
            gain = 10 ** (rng.uniform(*style.level_db) / 20)
            event = Event(
                label, start / sr, (start + sound.size) / sr, elevation, azimuth, distance
            )
            placed.append(PlacedSound(event, start, gain * sound))
            break
        else:
            break
        start = placed[-1].stop + round(rng.uniform(*gap_s) * sr)
    return placed


def plan_scene(name: RecordingName, config: SynthConfig) -> list[PlacedSound]:
    """The events of one recording, sorted by start time."""
    if name.ov not in OVERLAPS:
        raise ValueError(f"{name}: overlap must be one of {OVERLAPS}, got ov{name.ov}")
    room_spec(name.ir)  # fail early on a room that does not exist
    rng = np.random.default_rng(recording_seed(config, name, 0))
    placed = _track(rng, config, config.style.gap_s, [])
    if name.ov == 2:
        placed += _track(rng, config, config.style.second_track_gap_s, placed)
    return sorted(placed, key=lambda p: (p.start, p.event.label))


def render(
    placed: list[PlacedSound], fmt: str, ir: int, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """The 4-channel audio ``(samples, 4)`` float32 of one format of a scene.

    Events are convolved with their room responses, diffuse noise is added ``snr_db`` below the
    mean event power (over the samples where an event is active; W for FOA, all capsules for
    mic), and the whole recording is scaled to the style's peak level with one gain.
    """
    sr, total = config.sample_rate, config.num_samples
    out = np.zeros((total, 4))
    active = np.zeros(total, dtype=bool)
    for p in placed:
        e = p.event
        responses = room_responses(
            ir, e.azimuth, e.elevation, e.distance, sr, config.max_image_order
        )[fmt]
        wet = spatialize(p.sound, responses)
        stop = min(total, p.start + wet.shape[0])
        out[p.start : stop] += wet[: stop - p.start]
        active[p.start : p.stop] = True
    return finish_mix(out, active, fmt, config, rng)


def finish_mix(
    out: np.ndarray, active: np.ndarray, fmt: str, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """The events' mix ``out`` ``(samples, 4)`` made a recording: diffuse noise ``snr_db`` below
    the mean event power over the ``active`` samples (W for FOA, all capsules for mic), then
    one gain to the style's peak level; float32."""
    reference = out[active][:, 0] if fmt == "foa" else out[active]
    power = float(np.mean(reference**2)) if active.any() else 1.0
    out += diffuse_noise(fmt, out.shape[0], rng, config.sample_rate) * np.sqrt(
        power / 10 ** (config.snr_db / 10)
    )
    out *= config.style.peak / max(float(np.max(np.abs(out))), 1e-12)
    return out.astype(np.float32)


def synthesize_recording(
    name: RecordingName, config: SynthConfig
) -> tuple[list[Event], dict[str, np.ndarray]]:
    """Events and audio of one recording: ``{format: (samples, 4) float32}`` for each of
    ``config.formats``, at ``config.sample_rate``.

    Deterministic in ``(config, name)``; each format's noise has its own random stream, so the mic
    audio is the same whether or not FOA is made too.
    """
    placed = plan_scene(name, config)
    audio = {}
    for fmt in config.formats:
        rng = np.random.default_rng(recording_seed(config, name, 1 + FORMATS.index(fmt)))
        audio[fmt] = render(placed, fmt, name.ir, config, rng)
    logger.debug("%s: %d events", name, len(placed))
    return [p.event for p in placed], audio
