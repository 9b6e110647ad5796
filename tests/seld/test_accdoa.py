"""The ADPIT loss of multi-ACCDOA outputs: against a literal per-assignment reference written
from its definition, invariant to permuting tracks, zero for a perfect prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seld.methods.accdoa import adpit_loss, candidate_patterns, decode_rows

TRACKS, CLASSES = 3, 4


def literal_adpit(output: np.ndarray, instances: np.ndarray, mask: np.ndarray) -> float:
    """Per (batch, frame, class): the instances present, every assignment of the output tracks
    to them that uses each one (none: zero vectors), the smallest mean squared error; the mean
    of those over the valid frames and all classes."""
    total, count = 0.0, 0
    batch, frames, tracks, classes, _ = output.shape
    for b, f, c in itertools.product(range(batch), range(frames), range(classes)):
        if not mask[b, f]:
            continue
        present = [instances[b, f, t, c] for t in range(tracks)]
        present = [v for v in present if np.linalg.norm(v) > 0.5]
        if not present:
            targets = [np.zeros((tracks, 3))]
        else:
            targets = [
                np.array([present[i] for i in assignment])
                for assignment in itertools.product(range(len(present)), repeat=tracks)
                if len(set(assignment)) == len(present)
            ]
        errors = [float(np.mean((output[b, f, :, c] - t) ** 2)) for t in targets]
        total += min(errors)
        count += 1
    return total / max(count, 1)


def random_instances(rng: np.random.Generator, batch: int, frames: int) -> np.ndarray:
    out = np.zeros((batch, frames, TRACKS, CLASSES, 3))
    for b, f, c in itertools.product(range(batch), range(frames), range(CLASSES)):
        n = int(rng.integers(0, TRACKS + 1))
        v = rng.normal(size=(n, 3))
        out[b, f, :n, c] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_the_candidates_are_every_assignment_using_each_instance():
    patterns, counts = candidate_patterns(3)
    assert list(np.bincount(counts)) == [1, 1, 6, 6]  # none, one, two, three instances
    assert patterns[0].tolist() == [3, 3, 3]  # the zero vector on every track
    for pattern, n in zip(patterns[1:], counts[1:], strict=True):
        assert set(pattern.tolist()) == set(range(n))


@pytest.mark.parametrize("seed", range(4))
def test_the_loss_equals_the_literal_reference(seed):
    rng = np.random.default_rng(seed)
    instances = random_instances(rng, 2, 5)
    output = rng.uniform(-1, 1, size=instances.shape)
    mask = np.ones((2, 5))
    mask[1, 3:] = 0  # padding
    got = adpit_loss(torch.tensor(output), torch.tensor(instances), torch.tensor(mask)).item()
    assert got == pytest.approx(literal_adpit(output, instances, mask), rel=1e-6)


def test_the_loss_is_invariant_to_permuting_tracks():
    rng = np.random.default_rng(5)
    instances = torch.tensor(random_instances(rng, 2, 6))
    output = torch.tensor(rng.uniform(-1, 1, size=tuple(instances.shape)))
    reference = adpit_loss(output, instances).item()
    for order in itertools.permutations(range(TRACKS)):
        assert adpit_loss(output[:, :, list(order)], instances).item() == pytest.approx(reference)


def test_the_loss_is_zero_for_a_perfect_prediction_and_has_gradients():
    rng = np.random.default_rng(6)
    instances = random_instances(rng, 2, 4)
    perfect = np.zeros_like(instances)
    for b, f, c in itertools.product(range(2), range(4), range(CLASSES)):
        present = [v for v in instances[b, f, :, c] if np.linalg.norm(v) > 0.5]
        if present:  # one instance on every track, or each once and the first again
            chosen = [present[min(t, len(present) - 1)] for t in range(TRACKS)][::-1]
            perfect[b, f, :, c] = chosen
    output = torch.tensor(perfect, requires_grad=True)
    loss = adpit_loss(output, torch.tensor(instances))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    noisy = torch.tensor(perfect + 0.1, requires_grad=True)
    adpit_loss(noisy, torch.tensor(instances)).backward()
    assert noisy.grad is not None and noisy.grad.abs().sum() > 0


def test_padding_and_shapes():
    instances = torch.zeros(1, 2, TRACKS, CLASSES, 3)
    output = torch.ones(1, 2, TRACKS, CLASSES, 3)
    assert adpit_loss(output, instances).item() == pytest.approx(1.0)  # zero targets
    assert adpit_loss(output, instances, torch.zeros(1, 2)).item() == 0.0
    with pytest.raises(ValueError, match="targets of shape"):
        adpit_loss(output, instances[:, :, :2])


def _columns(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, tracks, classes, 3) multi-ACCDOA vectors as the predictor's columns."""
    frames = vectors.shape[0]
    flat = vectors.reshape(frames, -1, 3)
    length = np.linalg.norm(flat, axis=-1)
    azimuth = np.degrees(np.arctan2(flat[..., 1], flat[..., 0]))
    elevation = np.degrees(np.arctan2(flat[..., 2], np.hypot(flat[..., 0], flat[..., 1])))
    return length, azimuth, elevation


def test_two_same_class_sources_come_out_as_two_detections():
    vectors = np.zeros((2, TRACKS, CLASSES, 3))
    vectors[0, 0, 2] = [0.9, 0, 0]  # class 2 ahead
    vectors[0, 1, 2] = [0, 0.8, 0]  # and to the left, on another track
    vectors[0, 2, 2] = [0.1, 0, 0]  # below the threshold
    vectors[1, 0, 1] = [0, 0, 0.7]  # class 1 above
    rows = decode_rows(*_columns(vectors), TRACKS, 0.5)
    assert rows[:, :3].tolist() == [[0, 2, 0], [0, 2, 1], [1, 1, 0]]
    np.testing.assert_allclose(rows[:, 3:], [[0, 0], [90, 0], [0, 90]], atol=1e-9)


def test_duplicates_within_the_unify_angle_are_one_detection_at_their_mean():
    vectors = np.zeros((1, TRACKS, CLASSES, 3))
    azimuths = (10.0, 20.0, 100.0)  # tracks 0 and 1 are 10 degrees apart, track 2 far off
    for t, a in enumerate(azimuths):
        vectors[0, t, 0] = [np.cos(np.radians(a)), np.sin(np.radians(a)), 0]
    rows = decode_rows(*_columns(vectors), TRACKS, 0.5, unify_deg=15.0)
    assert rows[:, :3].tolist() == [[0, 0, 0], [0, 0, 2]]
    np.testing.assert_allclose(rows[:, 3], [15.0, 100.0], atol=1e-9)
    chained = decode_rows(*_columns(vectors), TRACKS, 0.5, unify_deg=85.0)  # all three join
    assert chained[:, :3].tolist() == [[0, 0, 0]]
    per_class = decode_rows(*_columns(vectors), TRACKS, np.array([0.5, 2, 2, 2]), 0.0)
    assert len(per_class) == 3  # unify at 0 degrees keeps every track
