"""Scenes in the STARSS22/23 development layout: 13 classes, 100 ms label frames, moving sources,
same-class overlaps, source indices and distances.

Layout (``M`` three digits)::

    root/{mic,foa}_dev/dev-train-synth/fold3_room{R}_mix{M}.wav    training recordings
    root/{mic,foa}_dev/dev-test-synth/fold4_room{R}_mix{M}.wav     test recordings
    root/metadata_dev/dev-{train,test}-synth/<stem>.csv

Each metadata row is one active (frame, class, source): ``frame, class, source, azimuth,
elevation, distance``, degrees, distance in centimetres, as the DCASE 2024 release of STARSS23
writes it. Frame ``f`` covers ``[0.1 f, 0.1 (f + 1))`` s; a source is listed in every frame it
sounds in, at the direction it is rendered from in that frame.

Up to three sources sound at once (``mix`` 1, 2, 3 cycle through one, two and three tracks of
events). A class may sound twice at once (different source indices: the lowest index not held
by another instance of the class at the time). Half the events move: their azimuth turns at
10, 20 or 40 degrees per second, kept on the 10 degree grid frame by frame, and the event is
rendered frame by frame from that direction with 10 ms cross-fades between directions.

The sounds are the synthesizer's procedural ones (:mod:`seld.synth.sounds`), standing in for
the STARSS classes: each class has its own signature (:data:`STARSS_SOUNDS`), not a recording
of that sound.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from seld.data.dcase import AZIMUTH_GRID, ELEVATION_GRID, FORMATS, MAX_ELEVATION_AT_DISTANCE
from seld.data.formats import TAU2021_CLASSES, StarssName
from seld.synth.config import SynthConfig
from seld.synth.rooms import ROOM_SPECS, room_responses, spatialize
from seld.synth.scene import finish_mix
from seld.synth.sounds import (
    SoundGenerator,
    alarm,
    clearthroat,
    cough,
    doorslam,
    drawer,
    female_speech,
    keyboard,
    keys_drop,
    knock,
    laughter,
    make_sound,
    male_speech,
    melody,
    pageturn,
    phone,
)

#: the stand-in sound of each STARSS22/23 class, in class-index order
STARSS_SOUNDS: dict[str, SoundGenerator] = {
    "femaleSpeech": female_speech,
    "maleSpeech": male_speech,
    "clapping": keyboard,
    "telephone": phone,
    "laughter": laughter,
    "domesticSounds": drawer,
    "footsteps": keys_drop,
    "doorCupboard": doorslam,
    "music": melody,
    "musicInstrument": clearthroat,
    "waterTap": pageturn,
    "bell": cough,
    "knock": knock,
}
#: the stand-in sound of each TAU-NIGENS 2020 class (2021's are the same less two)
TAU_SOUNDS: dict[str, SoundGenerator] = {
    "alarm": alarm,
    "crying baby": laughter,
    "crash": doorslam,
    "barking dog": cough,
    "running engine": drawer,
    "female scream": clearthroat,
    "female speech": female_speech,
    "burning fire": pageturn,
    "footsteps": keys_drop,
    "knocking on door": knock,
    "male scream": keyboard,
    "male speech": male_speech,
    "ringing phone": phone,
    "piano": melody,
}
#: label frames per second
LABEL_RATE = 10
#: STARSS23's folds: 3 is its development training set, 4 its development test set
TRAIN_FOLD, TEST_FOLD = 3, 4
#: angular speeds of a moving source, degrees per second (either sign)
SPEEDS_DEG_S: tuple[float, ...] = (10.0, 20.0, 40.0)
CROSSFADE_S = 0.01


@dataclass(frozen=True)
class TrackwiseLayout:
    """How the synthesizer writes one track-wise dataset layout: its classes and their sounds,
    its folds and the sub-folder of each (``""``: flat), how many sources sound at once, whether
    a class may sound twice at once, whether rows carry distances, whether names end in
    ``_ov<tracks>``."""

    name: str
    sounds: dict[str, SoundGenerator]
    folds: dict[int, str]
    max_tracks: int = 3
    same_class: bool = True
    distances: bool = False
    ov_in_name: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.sounds)


LAYOUTS: dict[str, TrackwiseLayout] = {
    layout.name: layout
    for layout in (
        TrackwiseLayout(
            "starss23",
            STARSS_SOUNDS,
            {TRAIN_FOLD: "dev-train-synth", TEST_FOLD: "dev-test-synth"},
            distances=True,
        ),
        TrackwiseLayout(
            "tau2021",
            {c: TAU_SOUNDS[c] for c in TAU2021_CLASSES},
            {**dict.fromkeys((1, 2, 3, 4), "dev-train"), 5: "dev-val", 6: "dev-test"},
        ),
        TrackwiseLayout(
            "tau2020",
            TAU_SOUNDS,
            dict.fromkeys((1, 2, 3, 4, 5, 6), ""),
            max_tracks=2,
            same_class=False,
            ov_in_name=True,
        ),
    )
}


def room_ir(name: StarssName) -> int:
    """The simulated room a recording is rendered in (:data:`seld.synth.rooms.ROOM_SPECS`)."""
    return (name.room - 1) % len(ROOM_SPECS)


def layout_of(name: str) -> TrackwiseLayout:
    """The synthesis recipe of a track-wise format; :class:`ValueError` where it has none."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(
            f"no synthesis recipe for the {name} layout (seld.synth.starss.LAYOUTS has "
            f"{', '.join(LAYOUTS)})"
        ) from None


def tracks(name: StarssName, layout: str = "starss23") -> int:
    """How many tracks of events a recording has: its ``_ov`` number where the name has one,
    else 1, 2, 3, 1, ... over its ``mix`` number."""
    if name.ov is not None:
        return name.ov
    return 1 + (name.mix - 1) % layout_of(layout).max_tracks


def group(name: StarssName, layout: str = "starss23") -> str:
    """Its sub-folder (``""`` in a flat layout): STARSS ``dev-train-synth`` (fold 3) or
    ``dev-test-synth``; TAU-NIGENS 2021 ``dev-train`` (folds 1-4), ``dev-val``, ``dev-test``."""
    return layout_of(layout).folds[name.fold]


def plan_starss(config: SynthConfig) -> list[StarssName]:
    """``per_split`` recordings in each fold of the config's layout; rooms cycle over the
    recordings (TAU-NIGENS 2020: ``_ov1`` and ``_ov2`` alternate)."""
    layout = layout_of(config.layout)
    names = []
    for i, fold in enumerate(layout.folds):
        for j in range(config.per_split):
            k = i * config.per_split + j
            ov = 1 + j % layout.max_tracks if layout.ov_in_name else None
            names.append(StarssName(fold, 1 + k % len(ROOM_SPECS), j + 1, ov=ov))
    return names


def _seed(config: SynthConfig, name: StarssName, stream: int) -> np.random.SeedSequence:
    digest = hashlib.sha256(f"{config.layout}/{name.stem}".encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.SeedSequence([config.seed, *words, stream])


@dataclass(frozen=True)
class Source:
    """One event of a scene: class, source index, dry signal from sample ``start``, and its
    path: azimuth at the onset turning at ``speed`` degrees per second (0: static)."""

    cls: int
    source: int
    start: int
    sound: np.ndarray
    azimuth: int
    elevation: int
    distance: int
    speed: float

    @property
    def stop(self) -> int:
        return self.start + self.sound.size

    def frames(self, sr: int) -> range:
        """The label frames it sounds in."""
        return range(self.start * LABEL_RATE // sr, -(-self.stop * LABEL_RATE // sr))

    def azimuth_in(self, frame: int, sr: int) -> int:
        """Its azimuth in a label frame: at the frame's start (or the onset), on the grid."""
        t = max(frame / LABEL_RATE, self.start / sr) - self.start / sr
        turned = 10 * round((self.azimuth + self.speed * t) / 10)
        return int((turned + 180) % 360 - 180)


def plan_starss_scene(name: StarssName, config: SynthConfig) -> list[Source]:
    """The sources of one recording, sorted by onset."""
    rng = np.random.default_rng(_seed(config, name, 0))
    sr, total, style = config.sample_rate, config.num_samples, config.style
    placed: list[Source] = []
    for track in range(tracks(name, config.layout)):
        gap = style.gap_s if track == 0 else style.second_track_gap_s
        start = round(rng.uniform(*style.first_onset_s) * sr)
        while start < total:
            source = _draw_source(rng, config, start, placed)
            if source is None:
                break
            placed.append(source)
            start = source.stop + round(rng.uniform(*gap) * sr)
    return sorted(placed, key=lambda s: (s.start, s.cls, s.source))


def _draw_source(
    rng: np.random.Generator, config: SynthConfig, start: int, placed: list[Source]
) -> Source | None:
    """An event starting at ``start`` that ends before the recording does, at a direction no
    overlapping event starts from; None after ``max_attempts`` tries."""
    sr, total = config.sample_rate, config.num_samples
    layout = layout_of(config.layout)
    for _ in range(config.style.max_attempts):
        cls = int(rng.integers(len(layout.classes)))
        sound = make_sound(layout.classes[cls], rng, sr, layout.sounds)
        stop = start + sound.size
        if stop >= total:
            continue
        near = [p for p in placed if p.start < stop and start < p.stop]
        if not layout.same_class and any(p.cls == cls for p in near):
            continue
        distance = int(rng.choice(sorted(MAX_ELEVATION_AT_DISTANCE)))
        limit = MAX_ELEVATION_AT_DISTANCE[distance]
        elevations = [e for e in ELEVATION_GRID if abs(e) <= limit]
        elevation = int(elevations[rng.integers(len(elevations))])
        azimuth = int(AZIMUTH_GRID[rng.integers(len(AZIMUTH_GRID))])
        if any((p.azimuth, p.elevation) == (azimuth, elevation) for p in near):
            continue
        moving = rng.random() < 0.5
        speed = float(rng.choice(SPEEDS_DEG_S) * rng.choice([-1, 1])) if moving else 0.0
        taken = {p.source for p in near if p.cls == cls}
        index = min(set(range(len(taken) + 1)) - taken)
        gain = 10 ** (rng.uniform(*config.style.level_db) / 20)
        return Source(cls, index, start, gain * sound, azimuth, elevation, distance, speed)
    return None


def _render_source(source: Source, fmt: str, ir: int, config: SynthConfig) -> np.ndarray:
    """A source heard by the array: its dry signal split into runs of one direction (label
    frame by label frame), each convolved with that direction's room responses, the runs
    cross-faded over ``CROSSFADE_S``."""
    sr = config.sample_rate
    frames = source.frames(sr)
    directions = [source.azimuth_in(f, sr) for f in frames]
    # sample boundaries (relative to the onset) where the direction changes
    cuts = [0]
    runs = [directions[0]]
    for f, azimuth in zip(frames[1:], directions[1:], strict=True):
        if azimuth != runs[-1]:
            cuts.append(f * sr // LABEL_RATE - source.start)
            runs.append(azimuth)
    cuts.append(source.sound.size)
    n = source.sound.size
    indicators = np.zeros((len(runs), n))
    for i in range(len(runs)):
        indicators[i, cuts[i] : cuts[i + 1]] = 1.0
    width = max(1, round(CROSSFADE_S * sr))
    if len(runs) > 1:
        box = np.ones(width) / width
        indicators = np.stack([np.convolve(w, box, mode="same") for w in indicators])
        indicators /= np.maximum(indicators.sum(axis=0), 1e-12)
    wet = None
    for azimuth, weights in zip(runs, indicators, strict=True):
        responses = room_responses(
            ir, azimuth, source.elevation, source.distance, sr, config.max_image_order
        )[fmt]
        part = spatialize(source.sound * weights, responses)
        if wet is None:
            wet = part
        else:
            size = max(wet.shape[0], part.shape[0])
            wet = np.pad(wet, ((0, size - wet.shape[0]), (0, 0)))
            wet[: part.shape[0]] += part
    assert wet is not None
    return wet


def render_starss(
    sources: list[Source], fmt: str, ir: int, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """The 4-channel audio ``(samples, 4)`` float32 of one format of a scene."""
    total = config.num_samples
    out = np.zeros((total, 4))
    active = np.zeros(total, dtype=bool)
    for source in sources:
        wet = _render_source(source, fmt, ir, config)
        stop = min(total, source.start + wet.shape[0])
        out[source.start : stop] += wet[: stop - source.start]
        active[source.start : source.stop] = True
    return finish_mix(out, active, fmt, config, rng)


def starss_rows(sources: list[Source], sr: int, distances: bool = True) -> np.ndarray:
    """The metadata rows ``(frame, class, source, azimuth, elevation[, distance cm])`` (int),
    sorted by frame, class and source index."""
    rows = [
        (f, s.cls, s.source, s.azimuth_in(f, sr), s.elevation, 100 * s.distance)[
            : 6 if distances else 5
        ]
        for s in sources
        for f in s.frames(sr)
    ]
    return np.array(sorted(rows), dtype=np.int64).reshape(-1, 6 if distances else 5)


def format_starss_metadata(rows: np.ndarray) -> str:
    return "".join(",".join(str(int(v)) for v in row) + "\n" for row in rows)


def synthesize_starss(
    name: StarssName, config: SynthConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Metadata rows and audio of one recording (``{format: (samples, 4) float32}``);
    deterministic in ``(config, name)``."""
    sources = plan_starss_scene(name, config)
    audio = {}
    for fmt in config.formats:
        rng = np.random.default_rng(_seed(config, name, 1 + FORMATS.index(fmt)))
        audio[fmt] = render_starss(sources, fmt, room_ir(name), config, rng)
    return starss_rows(sources, config.sample_rate, layout_of(config.layout).distances), audio
