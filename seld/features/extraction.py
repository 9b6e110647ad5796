"""Feature extraction of one recording, from its audio and metadata to a feature file."""

from __future__ import annotations

from pathlib import Path

from seld.data.audio import read_audio
from seld.data.dataset import Recording
from seld.data.fingerprint import input_fingerprints
from seld.data.formats import get_format
from seld.data.metadata import DatasetError, events_to_targets, read_metadata, rows_to_targets
from seld.features.spectral import FeatureConfig, extract_features
from seld.features.store import LabelFacts, feature_path, write_feature_file


def extract_recording(recording: Recording, config: FeatureConfig, root: Path) -> Path:
    """Read, resample once, extract, attach frame-level targets, write atomically.

    The metadata is read by the recording's dataset format: DCASE 2019 events, or another
    format's track-wise label rows (:mod:`seld.data.formats`), which the file keeps as its
    reference and turns into targets at the feature rate
    (:func:`seld.data.metadata.rows_to_targets`).

    Raises ``DatasetError`` (naming the file) for bad audio or metadata; nothing is written then.
    """
    try:
        inputs = input_fingerprints(recording.audio_path, recording.metadata_path)
    except OSError as exc:
        raise DatasetError(Path(exc.filename or recording.audio_path), exc.strerror) from None
    audio, sample_rate = read_audio(recording.audio_path, sample_rate=config.sample_rate)
    duration_s = audio.shape[0] / sample_rate
    hop_s = 1.0 / config.frames_per_second
    path = feature_path(root, recording.fmt, recording.subset, recording.stem)
    common = dict(
        name=recording.name,
        fmt=recording.fmt,
        subset=recording.subset,
        config=config,
        duration_s=duration_s,
        inputs=inputs,
    )
    if recording.dataset_format != "dcase2019":
        fmt = get_format(recording.dataset_format)
        labels = LabelFacts(fmt.name, fmt.label_frames_per_second, fmt.classes)
        rows = None
        if recording.metadata_path is not None:
            rows = fmt.read_reference(recording.metadata_path, labels.num_frames(duration_s))
        features = extract_features(audio, config)
        targets = None
        if rows is not None:
            targets = rows_to_targets(
                rows, labels.label_frames_per_second, features.shape[1], hop_s, labels.num_classes
            )
        write_feature_file(path, features, targets, None, reference=rows, labels=labels, **common)
        return path
    events = (
        read_metadata(recording.metadata_path, duration_s)
        if recording.metadata_path is not None
        else None
    )
    features = extract_features(audio, config)
    targets = events_to_targets(events, features.shape[1], hop_s) if events is not None else None
    write_feature_file(path, features, targets, events, **common)
    return path
