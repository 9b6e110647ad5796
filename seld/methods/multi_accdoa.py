"""Multi-ACCDOA trained with ADPIT (Shimada et al., ICASSP 2022), the method of the DCASE
2022-2025 baselines: one model whose output per frame is, for each of three tracks and each
class, a Cartesian vector whose length is the activity and whose direction is the direction of
arrival (:mod:`seld.methods.accdoa`). It can predict two or three instances of one class at
once, which the two-stage and joint methods cannot.

Multi-ACCDDOA, the output format of the DCASE 2024 baseline: the same, and per track and class
a distance in metres, trained with the same ADPIT candidates on the vectors and distances
together; its rows carry a distance, which the DCASE 2024 suite scores. It needs labels with
source distances (STARSS23 as released for DCASE 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from seld.data.metadata import MAX_TRACKS
from seld.methods.accdoa import adpit_loss, decode_rows
from seld.methods.inference import Prediction, detections, round_rows_to_grid
from seld.methods.method import Method, Stage

#: detections of one class on two tracks closer than this are one detection (the DCASE 2022
#: baseline's unification angle)
UNIFY_DEG = 15.0


def _adpit(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], config: Any
) -> torch.Tensor:
    return adpit_loss(outputs["accdoa"], batch["tracks"], batch["mask"])


def _adpit_with_distances(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], config: Any
) -> torch.Tensor:
    if "distances" not in batch:
        raise ValueError(
            "multi-ACCDDOA trains on source distances, and these feature files hold none "
            "(labels without a distance column)"
        )
    vectors = outputs["accdoa"]
    return adpit_loss(
        vectors,
        batch["tracks"],
        batch["mask"],
        distance=outputs["distance"].unflatten(-1, vectors.shape[2:4]),
        instance_distances=batch["distances"],
    )


def decode(
    prediction: Prediction,
    thresholds: float | np.ndarray = 0.5,
    median_frames: int = 1,
    *,
    rounded: bool = False,
) -> np.ndarray:
    """Track-wise rows of a multi-ACCDOA prediction (columns ``tracks * classes``, the vectors'
    lengths as ``sed``): a class's threshold on each track's length, a median filter over
    ``median_frames`` of each track's detections, same-class tracks within :data:`UNIFY_DEG`
    unified (:func:`seld.methods.accdoa.decode_rows`); directions rounded to the 10 degree grid
    for a suite that scores the 2019 grid. A prediction with distances (multi-ACCDDOA) gives
    rows with a sixth column, the detection's distance in metres."""
    classes = prediction.sed.shape[1] // MAX_TRACKS
    limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (classes,))
    activity = prediction.sed
    if median_frames > 1:
        activity = detections(prediction, np.tile(limits, MAX_TRACKS), median_frames)
    rows = decode_rows(
        activity,
        prediction.azimuth,
        prediction.elevation,
        MAX_TRACKS,
        limits,
        UNIFY_DEG,
        prediction.distance,
    )
    return round_rows_to_grid(rows) if rounded else rows


MULTI_ACCDOA = Method(
    "multi-accdoa",
    "Multi-ACCDOA (ADPIT)",
    (
        Stage(
            "multi-accdoa",
            "detection and localization of up to three instances per class: the ADPIT loss "
            "of the multi-ACCDOA vectors",
            _adpit,
            decode=decode,
            model={"doa_output": "accdoa", "tracks": MAX_TRACKS},
        ),
    ),
    detects="multi-accdoa",
    localizes="multi-accdoa",
    tracks=MAX_TRACKS,
)


MULTI_ACCDDOA = Method(
    "multi-accddoa",
    "Multi-ACCDDOA (ADPIT with distances)",
    (
        Stage(
            "multi-accddoa",
            "detection, localization and distance of up to three instances per class: the "
            "ADPIT loss of the multi-ACCDOA vectors and their distances",
            _adpit_with_distances,
            decode=decode,
            model={"doa_output": "accddoa", "tracks": MAX_TRACKS},
            distances=True,
        ),
    ),
    detects="multi-accddoa",
    localizes="multi-accddoa",
    tracks=MAX_TRACKS,
)
