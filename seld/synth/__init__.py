"""Synthetic SELD scenes in the DCASE 2019 Task 3 development layout.

Procedural sounds for the 11 classes (:mod:`~seld.synth.sounds`), five simulated shoebox rooms
heard by the tetrahedral array and in first-order ambisonics (:mod:`~seld.synth.rooms`), ov1 / ov2
scenes on the DCASE direction grid (:mod:`~seld.synth.scene`), and resumable parallel writing
(:mod:`~seld.synth.writer`). ``SynthConfig(layout="starss23", sample_rate=24000)`` writes the
STARSS23 development layout instead: 13 classes, 100 ms label frames, moving sources, same-class
overlaps, source indices and distances (:mod:`~seld.synth.starss`)::

    config = SynthConfig(seconds=10.0, per_split=2)
    synthesize_dataset(Path("data/synth"), config, workers=4)
"""

from seld.synth.config import SceneStyle, SynthConfig
from seld.synth.rooms import ROOM_SPECS, RoomSpec, room_responses
from seld.synth.scene import plan_recordings, synthesize_recording
from seld.synth.sounds import SOUNDS, make_sound
from seld.synth.writer import (
    SynthesisError,
    audio_path,
    metadata_path,
    missing_recordings,
    synthesize_dataset,
    write_recording,
)

__all__ = [
    "ROOM_SPECS",
    "SOUNDS",
    "RoomSpec",
    "SceneStyle",
    "SynthConfig",
    "SynthesisError",
    "audio_path",
    "make_sound",
    "metadata_path",
    "missing_recordings",
    "plan_recordings",
    "room_responses",
    "synthesize_dataset",
    "synthesize_recording",
    "write_recording",
]
