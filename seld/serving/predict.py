"""Predicting recordings with a trained method: the models of one or more folds as an ensemble.

A :class:`Predictor` holds what a trained cross-validation hands on (the experiment config, each
fold's feature scaler and stage models, and its post-processing) and turns audio of any length
and sample rate into submission rows of its dataset format and a list of events. It is loaded
once, from a run folder (:func:`orchestrator.export.run_predictor`) or from an exported model file
(:func:`seld.serving.model_archive.read_archive`), and then used for any number of recordings::

    predictor = read_archive("model.zip")
    result = predictor.predict_file("meeting.wav")
    result.events    # [DetectedEvent(label='speech', onset_s=1.2, offset_s=3.4, ...), ...]
    result.rows      # the submission frame table: (frame, class, azimuth, elevation) for a
                     # DCASE 2019 model, (frame, class, track, azimuth, elevation) otherwise,
                     # and a distance (metres) for a method that predicts them

Ensemble: each fold's models predict the recording from its own standardised features; the
SED probabilities are averaged and the directions averaged as unit vectors
(:func:`seld.methods.inference.ensemble`), then thresholded as one model's would be. With one fold
the result is what that fold's models give in the cross-validation, to float rounding (the
models run as prediction copies, :func:`seld.methods.models.inference_model`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seld.config import ExperimentConfig
from seld.data.audio import read_audio, resample
from seld.data.dcase import LABEL_FRAMES_PER_SECOND, NUM_CHANNELS
from seld.data.metadata import DatasetError
from seld.data.submission import write_submission, write_tracked_submission
from seld.errors import ConfigError
from seld.features.spectral import FeatureConfig, extract_features
from seld.features.store import LabelFacts, Scaler
from seld.methods.inference import (
    Postprocessing,
    Prediction,
    View,
    ensemble,
    grid_rows,
    label_rate_prediction,
    run_views,
    views_of,
)
from seld.methods.models import build_model, inference_model
from seld.methods.registry import get_method

#: Shortest recording predicted. The scorer works in one-second blocks and the models were
#: trained on windows of seconds; a shorter clip is most likely a mistake (a header, a click).
MIN_DURATION_S = 1.0
#: Longest stretch a model sees at once. Up to this length a recording is predicted in one pass,
#: as the cross-validation does with its one-minute recordings; a longer one in windows of this
#: length overlapping by half, so memory stays bounded for an hour of audio.
WINDOW_S = 60.0
#: The post-processing choices: the run's own, the one its threshold search found, or the
#: tuned one when there is one.
POSTPROCESSING_CHOICES = ("auto", "default", "tuned")


@dataclass(frozen=True)
class FoldModels:
    """One fold's trained models and the scaler they were trained with.

    ``states``: stage -> ``{"model": state dict, "model_config": build_model arguments with
    ``name``}``, as a ``best.pt`` holds them and an exported model stores them; ``models``:
    stage -> the same model made ready to predict (:func:`seld.methods.models.inference_model`)."""

    fold: int
    scaler: Scaler
    states: Mapping[str, Mapping[str, Any]]
    models: Mapping[str, torch.nn.Module]

    @classmethod
    def from_states(
        cls,
        fold: int,
        scaler: Scaler,
        states: Mapping[str, Mapping[str, Any]],
        device: str | torch.device = "cpu",
    ) -> FoldModels:
        """From checkpoints' contents, stage -> ``{"model": ..., "model_config": ...}``.
        Raises ``ValueError`` when a state does not fit its architecture."""
        models, kept = {}, {}
        for stage, state in states.items():
            kwargs = dict(state["model_config"])
            model = build_model(kwargs.pop("name"), **kwargs)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise ValueError(
                    f"fold {fold} {stage}: weights do not fit the model ({first})"
                ) from None
            models[stage] = inference_model(model.eval()).to(device)
            kept[stage] = {"model": model.state_dict(), "model_config": dict(model.config)}
        return cls(fold, scaler, kept, models)

    def predict(
        self,
        features: np.ndarray,
        fps: float,
        frames: int,
        name: str,
        views: Sequence[View] = (),
        label_rate: float = LABEL_FRAMES_PER_SECOND,
        method: str = "two-stage",
    ) -> Prediction:
        """This fold's prediction from unscaled features (channels, frames, bins), at the label
        rate (``frames`` label frames of ``label_rate`` per second): detection from the SED (or
        joint) model, directions from the DOA (or joint) model, as the cross-validation
        combines them; through each of ``views`` when given (test-time augmentation,
        :func:`seld.methods.inference.run_views`), as ``method`` combines its stages."""
        # up to WINDOW_S in one pass: a centred STFT gives a 60 s recording 6001 frames
        window = round(WINDOW_S * fps) + 1
        by_stage = {}
        for stage, model in self.models.items():
            device = next(model.parameters()).device
            outputs = run_views(model, features, self.scaler, views, window=window, device=device)
            by_stage[stage] = label_rate_prediction(name, outputs, fps, frames, label_rate)
        return get_method(method).combine(by_stage)


@dataclass(frozen=True)
class DetectedEvent:
    """One detected sound event: a class active over consecutive label frames (after the
    threshold and median filter), from ``onset_s`` to ``offset_s`` (seconds), at the mean
    direction of its frames (degrees to 0.1, not snapped to the 10-degree grid; azimuth
    counter-clockwise from the front)."""

    label: str
    class_index: int
    onset_s: float
    offset_s: float
    azimuth: float
    elevation: float


@dataclass
class RecordingPrediction:
    """A predicted recording: its per-frame ``prediction`` (probabilities and directions at the
    label rate) and ``rows``, the submission frame table of its detections: for DCASE 2019
    ``(frame, class, azimuth, elevation)`` (int, n x 4, directions rounded to 10 degrees), for
    the track-wise formats ``(frame, class, track, azimuth, elevation)`` (n x 5, directions as
    predicted), with a distance in metres (n x 6) for a method that predicts distances."""

    name: str
    duration_s: float
    prediction: Prediction
    rows: np.ndarray
    events: list[DetectedEvent] = field(default_factory=list)

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the submission CSV in its format's form (atomically: a reader never sees
        half of it)."""
        write_rows(path, self.rows)
        return Path(path)


def write_rows(path: str | os.PathLike[str], rows: np.ndarray) -> None:
    """A submission CSV of DCASE 2019 rows (4 columns) or track-wise rows (5, or 6 with a
    distance), atomically."""
    if rows.shape[1] == 4:
        write_submission(path, rows)
    else:
        write_tracked_submission(path, rows)


def detected_events(
    rows: np.ndarray, prediction: Prediction, labels: LabelFacts | None = None
) -> list[DetectedEvent]:
    """The events of a submission's rows (frame and class first): per class, each run of
    consecutive active frames, at the mean unit vector of the prediction's (unrounded)
    directions over those frames; sorted by onset, then class. ``labels``: the format's
    classes and label rate (DCASE 2019's by default)."""
    labels = labels or LabelFacts()
    hop = 1.0 / labels.label_frames_per_second
    events = []
    for cls in np.unique(rows[:, 1]).astype(int) if len(rows) else []:
        frames = np.unique(rows[rows[:, 1] == cls, 0]).astype(int)
        breaks = np.flatnonzero(np.diff(frames) > 1) + 1
        for run in np.split(frames, breaks):
            azimuth = np.radians(prediction.azimuth[run, cls].astype(np.float64))
            elevation = np.radians(prediction.elevation[run, cls].astype(np.float64))
            x = np.mean(np.cos(elevation) * np.cos(azimuth))
            y = np.mean(np.cos(elevation) * np.sin(azimuth))
            z = np.mean(np.sin(elevation))
            events.append(
                DetectedEvent(
                    labels.classes[int(cls)],
                    int(cls),
                    round(float(run[0]) * hop, 2),
                    round(float(run[-1] + 1) * hop, 2),
                    round(float(np.degrees(np.arctan2(y, x))), 1),
                    round(float(np.degrees(np.arctan2(z, np.hypot(x, y)))), 1),
                )
            )
    return sorted(events, key=lambda e: (e.onset_s, e.class_index))


def check_audio(audio: np.ndarray, sample_rate: int, source: str | os.PathLike[str]) -> float:
    """The length in seconds of (samples, 4) audio that can be predicted; :class:`DatasetError`
    naming ``source`` for another shape or a recording shorter than :data:`MIN_DURATION_S`."""
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.shape[1] != NUM_CHANNELS:
        hint = " (transpose it?)" if audio.ndim == 2 and audio.shape[0] == NUM_CHANNELS else ""
        raise DatasetError(
            source,
            f"wrong channel count: audio of shape {audio.shape}, expected (samples, 4){hint}",
        )
    duration_s = audio.shape[0] / sample_rate
    if duration_s < MIN_DURATION_S:
        raise DatasetError(
            source, f"too short: {duration_s:.3f} s, at least {MIN_DURATION_S:g} s is predicted"
        )
    if not np.isfinite(audio).all():
        raise DatasetError(source, "NaN or infinite samples")
    return duration_s


def recording_features(
    path: str | os.PathLike[str], config: FeatureConfig
) -> tuple[np.ndarray, float]:
    """Read a 4-channel recording of any length and sample rate, resample it once to the
    features' rate, and extract; returns (features (channels, frames, bins), seconds).
    :class:`DatasetError` names the file and the problem (unreadable, truncated, not 4
    channels, too short, NaN samples)."""
    audio, rate = read_audio(path, sample_rate=config.sample_rate, channels=NUM_CHANNELS)
    duration_s = check_audio(audio, rate, path)
    return extract_features(audio, config), duration_s


class Predictor:
    """A trained method ready to predict: the experiment config, one :class:`FoldModels` per
    fold (one fold alone, or several as an ensemble) and its post-processing, for the ``labels``
    of a dataset format (classes, label rate: DCASE 2019's by default).

    ``postprocessing`` maps ``"default"`` (the config's threshold and median filter) and, when
    the run's thresholds were tuned, ``"tuned"`` to a :class:`Postprocessing`; ``choice`` picks
    one (``"auto"``: the tuned one when there is one). ``source`` says where it came from."""

    def __init__(
        self,
        experiment: ExperimentConfig,
        folds: Sequence[FoldModels],
        postprocessing: Mapping[str, Postprocessing],
        *,
        choice: str = "auto",
        source: str = "",
        labels: LabelFacts | None = None,
    ):
        if not folds:
            raise ValueError("a predictor needs at least one fold's models")
        stages = set(experiment.stages)
        for member in folds:
            if set(member.models) != stages:
                raise ValueError(
                    f"fold {member.fold} has stages {sorted(member.models)}, the method "
                    f"{experiment.method} needs {sorted(stages)}"
                )
        self.experiment = experiment
        self.labels = labels or LabelFacts()
        for name, post in postprocessing.items():
            if tuple(post.classes) != self.labels.classes:
                raise ValueError(
                    f"the {name} post-processing is for {len(post.classes)} classes, the "
                    f"models' {self.labels.dataset_format} labels have {self.labels.num_classes}"
                )
        self.folds = tuple(folds)
        self.postprocessing = dict(postprocessing)
        self.source = source
        self.choice = self._resolve(choice)

    def _resolve(self, choice: str) -> str:
        if choice not in POSTPROCESSING_CHOICES:
            raise ConfigError(
                f"post-processing {choice!r}: choose one of {', '.join(POSTPROCESSING_CHOICES)}"
            )
        if choice == "auto":
            return "tuned" if "tuned" in self.postprocessing else "default"
        if choice not in self.postprocessing:
            raise ConfigError(
                f"{self.source or 'this model'} has no tuned post-processing (run `seld-orch "
                "tune thresholds` on its run, or choose the default)"
            )
        return choice

    @property
    def post(self) -> Postprocessing:
        """The post-processing in use."""
        return self.postprocessing[self.choice]

    @property
    def features_config(self) -> FeatureConfig:
        return self.experiment.features

    @property
    def fold_numbers(self) -> tuple[int, ...]:
        return tuple(member.fold for member in self.folds)

    def select(self, folds: Sequence[int] | None = None, choice: str | None = None) -> Predictor:
        """The same models restricted to some folds (``--fold K``), and/or with another
        post-processing choice; nothing is reloaded."""
        chosen = self.folds
        if folds is not None:
            missing = sorted(set(folds) - set(self.fold_numbers))
            if missing:
                raise ConfigError(
                    f"{self.source or 'this model'} has no fold {missing[0]} "
                    f"(folds: {', '.join(map(str, self.fold_numbers))})"
                )
            chosen = tuple(m for m in self.folds if m.fold in set(folds))
        predictor = copy.copy(self)  # shares the loaded models
        predictor.folds = chosen
        predictor.choice = self._resolve(choice or self.choice)
        return predictor

    def to(self, device: str | torch.device) -> Predictor:
        """Move every model to ``device`` (``"cuda"``); returns self."""
        for member in self.folds:
            for model in member.models.values():
                model.to(device)
        return self

    def predict_features(self, features: np.ndarray, duration_s: float, name: str) -> Prediction:
        """The ensemble's per-frame prediction from unscaled features (channels, frames, bins)
        of a recording of ``duration_s`` seconds."""
        fps = self.features_config.frames_per_second
        frames = self.labels.num_frames(duration_s)
        views = views_of(self.experiment)
        rate = self.labels.label_frames_per_second
        method = self.experiment.method
        return ensemble(
            [m.predict(features, fps, frames, name, views, rate, method) for m in self.folds]
        )

    def finish(self, prediction: Prediction, duration_s: float) -> RecordingPrediction:
        """Post-process a per-frame prediction into submission rows (DCASE 2019's, or the
        track-wise rows of the other formats) and events."""
        decode = get_method(self.experiment.method).decode  # several tracks per class, or one
        if self.labels.dataset_format == "dcase2019":
            rows = grid_rows(prediction, self.post.thresholds, self.post.median_frames, decode)
        else:
            rows = self.post.tracked_rows(prediction, decode)
        events = detected_events(rows, prediction, self.labels)
        return RecordingPrediction(prediction.stem, duration_s, prediction, rows, events)

    def predict(
        self, audio: np.ndarray, sample_rate: int, name: str = "recording"
    ) -> RecordingPrediction:
        """Predict (samples, 4) audio at any sample rate (resampled to the features' rate)."""
        duration_s = check_audio(audio, sample_rate, name)
        audio = resample(np.asarray(audio, dtype=np.float32), sample_rate, self._rate)
        features = extract_features(audio, self.features_config)
        return self.finish(self.predict_features(features, duration_s, name), duration_s)

    def predict_file(self, path: str | os.PathLike[str]) -> RecordingPrediction:
        """Predict a 4-channel audio file (any length and sample rate soundfile reads)."""
        features, duration_s = recording_features(path, self.features_config)
        prediction = self.predict_features(features, duration_s, Path(path).stem)
        return self.finish(prediction, duration_s)

    @property
    def _rate(self) -> int:
        return self.features_config.sample_rate

    def describe(self) -> dict[str, Any]:
        """What this predictor is, in plain values (for JSON and the CLI)."""
        return {
            "source": self.source,
            "config": self.experiment.name,
            "method": self.experiment.method,
            "format": self.experiment.format,
            "dataset_format": self.labels.dataset_format,
            "folds": list(self.fold_numbers),
            "postprocessing": self.choice,
            **self.post.to_params(),
        }

    def __repr__(self) -> str:
        folds = ", ".join(map(str, self.fold_numbers))
        return (
            f"Predictor({self.source or self.experiment.name}: {self.experiment.method}, "
            f"folds {folds}, {self.choice} post-processing {self.post.to_params()})"
        )
