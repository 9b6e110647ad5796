"""Settings of the scene synthesizer: what to write, and how scenes are put together."""

from __future__ import annotations

from dataclasses import dataclass, field

from seld.data.dcase import FORMATS, SAMPLE_RATE, SPLITS
from seld.data.formats import TRACKWISE

#: the dataset layouts the synthesizer writes: DCASE 2019's and every track-wise format's (its
#: scenes' recipe in :data:`seld.synth.starss.LAYOUTS`)
LAYOUTS: tuple[str, ...] = ("dcase2019", *TRACKWISE)
STARSS_SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class SceneStyle:
    """How events are scattered over a scene (seconds and decibels).

    ov1 scenes are one track of events separated by ``gap_s`` silences. ov2 scenes add a second
    track with longer ``second_track_gap_s`` silences, so that some of the time two events sound
    at once and some of the time one or none does.
    """

    first_onset_s: tuple[float, float] = (0.1, 0.6)
    gap_s: tuple[float, float] = (0.1, 1.0)
    second_track_gap_s: tuple[float, float] = (0.5, 3.0)
    level_db: tuple[float, float] = (-8.0, 0.0)
    #: Attempts at drawing an event (class, length, direction) that fits before giving up.
    max_attempts: int = 20
    #: Peak level of each written recording (full scale = 1).
    peak: float = 0.9


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize.

    ``seconds`` per recording; ``per_split`` recordings in each of ``splits``; ``formats`` out of
    ``mic`` and ``foa``; ``seed`` for everything random; ``snr_db`` of events over the ambient
    noise; ``max_image_order`` overrides every room's image-source order cap (``None`` keeps the
    per-room defaults, ``0`` makes every room anechoic); ``subtype`` of the WAV files
    (soundfile names: ``PCM_16``, ``PCM_24``, ``FLOAT``).
    """

    seconds: float = 10.0
    per_split: int = 2
    splits: tuple[int, ...] = SPLITS
    formats: tuple[str, ...] = FORMATS
    seed: int = 0
    sample_rate: int = SAMPLE_RATE
    snr_db: float = 30.0
    max_image_order: int | None = None
    subtype: str = "PCM_16"
    style: SceneStyle = field(default_factory=SceneStyle)
    #: ``dcase2019`` (``splits`` of ``per_split`` recordings), or a track-wise layout
    #: (:mod:`seld.synth.starss`: ``per_split`` recordings in each of its folds): ``starss23``
    #: (folds 3, 4), ``tau2020`` or ``tau2021`` (folds 1-6)
    layout: str = "dcase2019"

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.per_split < 0:
            raise ValueError(f"per_split must be >= 0, got {self.per_split}")
        if any(s < 1 for s in self.splits):
            raise ValueError(f"splits are numbered from 1, got {self.splits}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(
                f"formats must be chosen from {', '.join(FORMATS)}, got {self.formats}"
            )
        if self.max_image_order is not None and self.max_image_order < 0:
            raise ValueError(f"max_image_order must be >= 0 or None, got {self.max_image_order}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.layout != "dcase2019" and self.sample_rate != STARSS_SAMPLE_RATE:
            raise ValueError(
                f"the {self.layout} layout is recorded at {STARSS_SAMPLE_RATE} Hz, as the "
                f"dataset is; got sample_rate {self.sample_rate}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def num_samples(self) -> int:
        """Samples per recording."""
        return round(self.seconds * self.sample_rate)
