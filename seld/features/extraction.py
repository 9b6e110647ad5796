"""Feature extraction of one recording, from its audio and metadata to a feature file."""

from __future__ import annotations

from pathlib import Path

from seld.data.audio import read_audio
from seld.data.dataset import Recording
from seld.data.fingerprint import input_fingerprints
from seld.data.metadata import DatasetError, events_to_targets, read_metadata
from seld.features.spectral import FeatureConfig, extract_features
from seld.features.store import feature_path, write_feature_file


def extract_recording(recording: Recording, config: FeatureConfig, root: Path) -> Path:
    """Read, resample once, extract, attach frame-level targets, write atomically.

    Raises ``DatasetError`` (naming the file) for bad audio or metadata; nothing is written then.
    """
    try:
        inputs = input_fingerprints(recording.audio_path, recording.metadata_path)
    except OSError as exc:
        raise DatasetError(Path(exc.filename or recording.audio_path), exc.strerror) from None
    audio, sample_rate = read_audio(recording.audio_path, sample_rate=config.sample_rate)
    duration_s = audio.shape[0] / sample_rate
    events = (
        read_metadata(recording.metadata_path, duration_s)
        if recording.metadata_path is not None
        else None
    )
    features = extract_features(audio, config)
    targets = (
        events_to_targets(events, features.shape[1], 1.0 / config.frames_per_second)
        if events is not None
        else None
    )
    path = feature_path(root, recording.fmt, recording.subset, recording.stem)
    write_feature_file(
        path,
        features,
        targets,
        events,
        name=recording.name,
        fmt=recording.fmt,
        subset=recording.subset,
        config=config,
        duration_s=duration_s,
        inputs=inputs,
    )
    return path
