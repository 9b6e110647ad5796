"""Multi-ACCDOA outputs and the ADPIT loss (Shimada et al., ICASSP 2022), the output format of
the DCASE 2022-2025 baselines.

A multi-ACCDOA output holds, per frame, ``tracks`` x ``classes`` Cartesian vectors: a vector's
length is the activity of that class on that track, its direction the direction of arrival.
Two instances of one class at once sit on two tracks, which one direction per class cannot
hold.

Which track an instance lands on is arbitrary, so the loss is permutation-invariant: ADPIT
(auxiliary duplicating permutation-invariant training). Per (frame, class) with ``n`` reference
instances (their unit vectors in ``tracks``, up to :data:`seld.data.metadata.MAX_TRACKS`), the
candidate targets are every assignment of the output tracks to the instances that uses each
instance at least once (one instance: duplicated onto every track; two on three tracks: the 6
surjective assignments; three: the 6 permutations); no instance: every track's target is the
zero vector. The loss of a (frame, class) is the smallest mean squared error over its
candidates (mean over tracks and x, y, z), and the batch's loss their mean over valid frames
and classes.

Multi-ACCDDOA (the output format of the DCASE 2024 baseline) adds, per track and class, a
distance in metres. Its ADPIT takes the same candidates, each instance's distance going where
its vector goes (0 where a candidate holds the zero vector); a candidate's error is the one
above plus :data:`DISTANCE_WEIGHT` times the mean squared distance error over the tracks
(square metres), and the smallest total picks the candidate.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch

from seld.data.metadata import unit_vectors

#: an instance slot counts as present where its target vector's length exceeds this
PRESENT = 0.5
#: the weight of a candidate's mean squared distance error (m²) beside its mean squared vector
#: error in ADPIT with distances: a 1 m error on every track costs what a vector error of
#: about 0.3 per component does, so directions lead the choice of a candidate and distances
#: (0.5-5 m in STARSS23) do not swamp the loss
DISTANCE_WEIGHT = 0.1


@lru_cache(maxsize=8)
def candidate_patterns(tracks: int) -> tuple[np.ndarray, np.ndarray]:
    """``(patterns, counts)``: ``patterns[k]`` (tracks,) the instance slot each output track
    is compared with in candidate ``k`` (``tracks`` stands for the zero vector), ``counts[k]``
    the instance count the candidate is for. Candidates for ``n`` instances are the
    assignments of the tracks onto ``range(n)`` that use every instance."""
    patterns, counts = [[tracks] * tracks], [0]
    for n in range(1, tracks + 1):
        for assignment in itertools.product(range(n), repeat=tracks):
            if len(set(assignment)) == n:
                patterns.append(list(assignment))
                counts.append(n)
    return np.array(patterns, dtype=np.int64), np.array(counts, dtype=np.int64)


def adpit_loss(
    output: torch.Tensor,
    instances: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    distance: torch.Tensor | None = None,
    instance_distances: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ADPIT loss of multi-ACCDOA ``output`` (batch, frames, tracks, classes, 3) against
    reference ``instances`` (batch, frames, tracks, classes, 3): each (frame, class)'s unit
    vectors in its first slots, zeros after (the feature store's ``tracks``). ``mask``
    (batch, frames): 0 on padding. Computed in float32.

    Multi-ACCDDOA: ``distance`` (batch, frames, tracks, classes), the predicted distances in
    metres, against ``instance_distances`` of the same shape, each instance's distance in the
    slot of its vector (the feature store's ``distances``); each candidate's error gains
    :data:`DISTANCE_WEIGHT` times its mean squared distance error (see the module doc). Give
    both or neither; without them the loss is multi-ACCDOA's."""
    output, instances = output.float(), instances.float()
    tracks = output.shape[2]
    if instances.shape != output.shape:
        raise ValueError(
            f"targets of shape {tuple(instances.shape)}, outputs {tuple(output.shape)}"
        )
    if (distance is None) != (instance_distances is None):
        raise ValueError("give both the predicted and the reference distances, or neither")
    patterns, counts = candidate_patterns(tracks)
    present = instances.norm(dim=-1) > PRESENT  # (batch, frames, tracks, classes)
    n = present.sum(dim=2)  # (batch, frames, classes)
    slots = torch.cat([instances, torch.zeros_like(instances[:, :, :1])], dim=2)
    index = torch.as_tensor(patterns, device=output.device)
    candidates = slots[:, :, index]  # (batch, frames, K, tracks, classes, 3)
    errors = (output[:, :, None] - candidates).square().mean(dim=(3, 5))  # (batch, frames, K, C)
    if distance is not None:
        distance, instance_distances = distance.float(), instance_distances.float()
        if distance.shape != output.shape[:-1] or instance_distances.shape != distance.shape:
            raise ValueError(
                f"distances of shapes {tuple(distance.shape)} and "
                f"{tuple(instance_distances.shape)}, outputs {tuple(output.shape)}"
            )
        far = torch.cat([instance_distances, torch.zeros_like(instance_distances[:, :, :1])], 2)
        far = far[:, :, index]  # (batch, frames, K, tracks, classes)
        misses = (distance[:, :, None] - far).square().mean(dim=3)  # (batch, frames, K, C)
        errors = errors + DISTANCE_WEIGHT * misses
    valid = n[:, :, None, :] == torch.as_tensor(counts, device=output.device)[:, None]
    best = errors.masked_fill(~valid, float("inf")).amin(dim=2)  # (batch, frames, classes)
    weight = torch.ones_like(best) if mask is None else mask.float()[..., None].expand_as(best)
    total = weight.sum()
    value = (best * weight).sum() / total.clamp_min(1.0)
    return torch.where(total > 0, value, (output * 0).sum())


def unify_tracks(active: np.ndarray, xyz: np.ndarray, unify_deg: float) -> np.ndarray:
    """Which track each (frame, track, class) detection merges into: ``active`` (frames,
    tracks, classes) bool, ``xyz`` (frames, tracks, classes, 3) unit vectors. Active tracks of
    one class in one frame whose directions lie within ``unify_deg`` of each other (directly or
    through another) are one detection, labelled with their lowest track; returns the labels
    (frames, tracks, classes), each track its own where it merges with none."""
    tracks = active.shape[1]
    label = np.broadcast_to(np.arange(tracks)[None, :, None], active.shape).copy()
    cos_limit = np.cos(np.radians(unify_deg))
    pairs = [(i, j) for i in range(tracks) for j in range(i + 1, tracks)]
    close = {
        (i, j): active[:, i] & active[:, j] & ((xyz[:, i] * xyz[:, j]).sum(-1) >= cos_limit)
        for i, j in pairs
    }
    for _ in range(tracks):  # enough passes to join any chain of close tracks
        for i, j in pairs:
            low = np.minimum(label[:, i], label[:, j])
            label[:, i] = np.where(close[(i, j)], low, label[:, i])
            label[:, j] = np.where(close[(i, j)], low, label[:, j])
    return label


def decode_rows(
    activity: np.ndarray,
    azimuth_deg: np.ndarray,
    elevation_deg: np.ndarray,
    tracks: int,
    thresholds: float | np.ndarray,
    unify_deg: float = 15.0,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """Track-wise rows ``(frame, class, track, azimuth, elevation)`` of multi-ACCDOA outputs at
    the label rate: ``activity`` (frames, tracks * classes, track-major) the vectors' lengths
    (after any median filter: a bool array is taken as the detections), directions in degrees.
    A (frame, track, class) is active where its length exceeds the class's threshold; the active
    tracks of a class that point within ``unify_deg`` of each other are one detection at their
    mean direction (:func:`unify_tracks`), on their lowest track. With ``distance`` (metres,
    the shape of ``activity``: multi-ACCDDOA), the rows gain a sixth column, the mean distance
    of the tracks unified into the detection."""
    frames, columns = activity.shape
    classes = columns // tracks
    shape = (frames, tracks, classes)
    if activity.dtype == bool:
        active = activity.reshape(shape)
    else:
        limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (classes,))
        active = activity.reshape(shape) > limits[None, None, :]
    xyz = unit_vectors(azimuth_deg.reshape(shape), elevation_deg.reshape(shape))
    label = unify_tracks(active, xyz, unify_deg)
    summed = np.zeros((frames, tracks, classes, 3))
    f, t, c = np.nonzero(active)
    np.add.at(summed, (f, label[f, t, c], c), xyz[f, t, c])
    if distance is not None:
        far, joined = np.zeros(shape), np.zeros(shape)
        np.add.at(far, (f, label[f, t, c], c), distance.reshape(shape)[f, t, c])
        np.add.at(joined, (f, label[f, t, c], c), 1.0)
    f, t, c = np.nonzero(active & (label == np.arange(tracks)[None, :, None]))
    order = np.lexsort((t, c, f))  # by frame, then class, then track
    f, t, c = f[order], t[order], c[order]
    x, y, z = summed[f, t, c].T
    columns = [f, c, t, np.degrees(np.arctan2(y, x)), np.degrees(np.arctan2(z, np.hypot(x, y)))]
    if distance is not None:
        columns.append(far[f, t, c] / joined[f, t, c])
    return np.stack(columns, axis=1).astype(np.float64)
