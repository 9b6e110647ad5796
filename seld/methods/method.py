"""What a SELD method is to the rest of the tool: its stages, each a model trained on its own
with its loss, and how the stages' predictions make the method's.

The orchestrator (cross-validation, fold jobs, tuning budgets, prediction, export) asks a
:class:`Method` and its :class:`Stage` s, never a method's or a stage's name. A method is one
module defining one ``Method`` (:mod:`seld.methods.two_stage`, :mod:`seld.methods.joint`) and
one line in :data:`seld.methods.registry.METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seld.methods.inference import Prediction, tracked_rows

#: a stage's loss: (model outputs, batch, the stage's TrainConfig) -> scalar
Loss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], Any], torch.Tensor]
#: predictions to track-wise rows: (prediction, thresholds per class, median filter frames,
#: rounded to the 10-degree grid) -> (frame, class, track, azimuth, elevation[, distance]) rows
Decode = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Stage:
    """One trained model of a method.

    ``starts_from``: the stage whose selected model this one's is built from (its
    convolutional blocks, as the two-stage DOA model starts from the SED model's), or None for
    a model from scratch. ``oracle_activity``: validated on the reference's activity instead of
    its own detections, so that its scores judge the directions alone. ``selects_on_detection``:
    its epoch is selected by the detection error, (ER + 1 - F) / 2, instead of the suite's
    aggregate (a stage that only detects). ``decode``: how its predictions become track-wise
    rows, where they are not one direction per class (multi-ACCDOA); None: thresholded class
    by class (:func:`seld.methods.inference.tracked_rows`). ``model``: model arguments the stage
    needs whatever the config says (multi-ACCDOA: its output head). ``distances``: it trains
    on the labels' source distances and predicts a distance with each detection (its rows
    gain a distance column: multi-ACCDDOA), so it needs labels with distances and can be
    scored by a suite that scores distances (DCASE 2024)."""

    name: str
    description: str
    loss: Loss
    starts_from: str | None = None
    oracle_activity: bool = False
    selects_on_detection: bool = False
    decode: Decode | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    distances: bool = False


@dataclass(frozen=True)
class Method:
    """A method: its stages in training order, and which stage's outputs detect (the class
    probabilities) and which localize (the directions) in its predictions. ``tracks``: the
    prediction columns per class (1: one direction per class; multi-ACCDOA: its tracks,
    track-major)."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    detects: str
    localizes: str
    tracks: int = 1

    def __post_init__(self) -> None:
        names = self.stage_names
        for role, stage in (("detects", self.detects), ("localizes", self.localizes)):
            if stage not in names:
                raise ValueError(f"method {self.name}: {role} {stage!r} is not one of {names}")
        for i, stage in enumerate(self.stages):
            if stage.starts_from is not None and stage.starts_from not in names[:i]:
                raise ValueError(
                    f"method {self.name}: stage {stage.name} starts from {stage.starts_from!r}, "
                    "which is not an earlier stage"
                )

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"method {self.name} has no stage {name!r} ({self.stage_names})")

    @property
    def distances(self) -> bool:
        """Whether its predictions carry source distances (its localizing stage's), so its
        labels must have them (:attr:`Stage.distances`)."""
        return self.stage(self.localizes).distances

    @property
    def decode(self) -> Decode:
        """Its predictions to track-wise rows: its localizing stage's decoding, else class by
        class (:func:`seld.methods.inference.tracked_rows`)."""
        return self.stage(self.localizes).decode or tracked_rows

    def combine(self, predictions: Mapping[str, Prediction]) -> Prediction:
        """The method's prediction of a recording from its stages' (stage -> prediction):
        the detecting stage's probabilities with the localizing stage's directions (and
        distances, where it predicts them)."""
        sed, doa = predictions[self.detects], predictions[self.localizes]
        if sed.stem != doa.stem or sed.sed.shape != doa.azimuth.shape:
            raise ValueError(f"predictions of {sed.stem} and {doa.stem} do not match")
        return Prediction(sed.stem, sed.sed, doa.azimuth, doa.elevation, doa.distance)
