"""DCASE 2019 Task 3 constants and naming: classes, direction grid, frame rates, file names.

Everything here is a fact of the dataset or of the official metric code, in one place, so that the
data layer, the synthesizer and the scorer cannot disagree about them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Class label -> index, in the order used by the official DCASE 2019 metric code.
CLASS_INDEX: dict[str, int] = {
    "knock": 0,
    "drawer": 1,
    "clearthroat": 2,
    "phone": 3,
    "keysDrop": 4,
    "speech": 5,
    "keyboard": 6,
    "pageturn": 7,
    "cough": 8,
    "doorslam": 9,
    "laughter": 10,
}
#: Class labels ordered by index.
CLASSES: tuple[str, ...] = tuple(sorted(CLASS_INDEX, key=CLASS_INDEX.__getitem__))
NUM_CLASSES = len(CLASSES)

#: Direction grid of the dataset and of the official scorer (degrees).
AZIMUTH_GRID: tuple[int, ...] = tuple(range(-180, 180, 10))  # -180 .. 170
ELEVATION_GRID: tuple[int, ...] = tuple(range(-40, 50, 10))  # -40 .. 40
GRID_STEP_DEG = 10
#: Largest |elevation| allowed at each source distance (metres).
MAX_ELEVATION_AT_DISTANCE: dict[int, int] = {1: 40, 2: 20}

#: Native audio format.
SAMPLE_RATE = 48_000
NUM_CHANNELS = 4
FORMATS: tuple[str, ...] = ("mic", "foa")
SUBSETS: tuple[str, ...] = ("dev", "eval")
SPLITS: tuple[int, ...] = (1, 2, 3, 4)
ROOMS: tuple[int, ...] = (0, 1, 2, 3, 4)
OVERLAPS: tuple[int, ...] = (1, 2)

#: Label / submission frame rate: 20 ms hop, 50 frames per second.
LABEL_HOP_S = 0.02
LABEL_FRAMES_PER_SECOND = 50

#: Metadata CSV header, exactly as in the development set.
METADATA_HEADER: tuple[str, ...] = (
    "sound_event_recording",
    "start_time",
    "end_time",
    "ele",
    "azi",
    "dist",
)

#: Tetrahedral array (Eigenmike capsules 6, 10, 26, 22): (azimuth, elevation) in degrees, radius m.
MIC_CAPSULES_DEG: tuple[tuple[float, float], ...] = ((45, 35), (-45, -35), (135, -35), (-135, 35))
MIC_RADIUS_M = 0.042

_NAME_RE = re.compile(r"^split(?P<split>\d+)_ir(?P<ir>\d+)_ov(?P<ov>\d+)_(?P<index>\d+)$")


@dataclass(frozen=True, order=True)
class RecordingName:
    """The parts of a DCASE 2019 recording name such as ``split1_ir0_ov1_7``."""

    split: int
    ir: int
    ov: int
    index: int

    @property
    def stem(self) -> str:
        return f"split{self.split}_ir{self.ir}_ov{self.ov}_{self.index}"

    def __str__(self) -> str:
        return self.stem


def parse_recording_name(name: str) -> RecordingName:
    """Parse ``split{S}_ir{I}_ov{O}_{K}`` (with or without ``.wav`` / ``.csv``).

    Raises ``ValueError`` naming the offending string when it does not follow the pattern.
    """
    stem = name.rsplit("/", 1)[-1]
    for suffix in (".wav", ".csv"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    match = _NAME_RE.match(stem)
    if match is None:
        raise ValueError(
            f"{name!r} is not a DCASE 2019 recording name (expected split<S>_ir<I>_ov<O>_<K>)"
        )
    return RecordingName(**{key: int(value) for key, value in match.groupdict().items()})


def num_label_frames(duration_s: float) -> int:
    """Number of 20 ms label frames covering ``duration_s`` seconds (3000 for one minute)."""
    # round first so that 60.000000001 s of samples does not produce 3001 frames
    return int(-(-round(duration_s * LABEL_FRAMES_PER_SECOND, 6) // 1))
