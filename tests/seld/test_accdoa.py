"""The ADPIT loss of multi-ACCDOA outputs, and with distances (multi-ACCDDOA): against a literal
per-assignment reference written from its definition, invariant to permuting tracks, zero for
a perfect prediction; decoding into rows, with a distance column where distances are given."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seld.methods.accdoa import DISTANCE_WEIGHT, adpit_loss, candidate_patterns, decode_rows

TRACKS, CLASSES = 3, 4


def literal_adpit(
    output: np.ndarray,
    instances: np.ndarray,
    mask: np.ndarray,
    distance: np.ndarray | None = None,
    instance_distances: np.ndarray | None = None,
) -> float:
    """Per (batch, frame, class): the instances present, every assignment of the output tracks
    to them that uses each one (none: zero vectors), the smallest mean squared error; the mean
    of those over the valid frames and all classes. With distances, each instance's distance
    goes where its vector goes (none: 0) and an assignment's error adds DISTANCE_WEIGHT times
    its mean squared distance error over the tracks."""
    total, count = 0.0, 0
    batch, frames, tracks, classes, _ = output.shape
    for b, f, c in itertools.product(range(batch), range(frames), range(classes)):
        if not mask[b, f]:
            continue
        slots = [t for t in range(tracks) if np.linalg.norm(instances[b, f, t, c]) > 0.5]
        if not slots:
            targets = [[None] * tracks]
        else:
            targets = [
                [slots[i] for i in assignment]
                for assignment in itertools.product(range(len(slots)), repeat=tracks)
                if len(set(assignment)) == len(slots)
            ]
        errors = []
        for target in targets:
            vectors = np.array(
                [np.zeros(3) if s is None else instances[b, f, s, c] for s in target]
            )
            error = float(np.mean((output[b, f, :, c] - vectors) ** 2))
            if distance is not None:
                far = np.array(
                    [0.0 if s is None else instance_distances[b, f, s, c] for s in target]
                )
                error += DISTANCE_WEIGHT * float(np.mean((distance[b, f, :, c] - far) ** 2))
            errors.append(error)
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


def random_distances(rng: np.random.Generator, instances: np.ndarray) -> np.ndarray:
    """A distance of 0.5 to 5 m for each instance present, 0 in the empty slots."""
    present = np.linalg.norm(instances, axis=-1) > 0.5
    return np.where(present, rng.uniform(0.5, 5.0, size=present.shape), 0.0)


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


@pytest.mark.parametrize("seed", range(4))
def test_the_loss_with_distances_equals_the_literal_reference(seed):
    rng = np.random.default_rng(10 + seed)
    instances = random_instances(rng, 2, 5)
    distances = random_distances(rng, instances)
    output = rng.uniform(-1, 1, size=instances.shape)
    predicted = rng.uniform(0, 5, size=distances.shape)
    mask = np.ones((2, 5))
    mask[0, 4:] = 0
    got = adpit_loss(
        torch.tensor(output),
        torch.tensor(instances),
        torch.tensor(mask),
        distance=torch.tensor(predicted),
        instance_distances=torch.tensor(distances),
    ).item()
    expected = literal_adpit(output, instances, mask, predicted, distances)
    assert got == pytest.approx(expected, rel=1e-6)
    assert got > adpit_loss(torch.tensor(output), torch.tensor(instances), torch.tensor(mask))


def test_the_loss_with_distances_is_invariant_to_permuting_tracks():
    rng = np.random.default_rng(15)
    instances = random_instances(rng, 2, 6)
    distances = torch.tensor(random_distances(rng, instances))
    instances = torch.tensor(instances)
    output = torch.tensor(rng.uniform(-1, 1, size=tuple(instances.shape)))
    predicted = torch.tensor(rng.uniform(0, 5, size=tuple(distances.shape)))

    def loss(order):
        return adpit_loss(
            output[:, :, order],
            instances,
            distance=predicted[:, :, order],
            instance_distances=distances,
        ).item()

    reference = loss(list(range(TRACKS)))
    for order in itertools.permutations(range(TRACKS)):
        assert loss(list(order)) == pytest.approx(reference)


def test_the_loss_with_distances_is_zero_for_a_perfect_prediction():
    rng = np.random.default_rng(16)
    instances = random_instances(rng, 2, 4)
    distances = random_distances(rng, instances)
    perfect, far = np.zeros_like(instances), np.zeros_like(distances)
    for b, f, c in itertools.product(range(2), range(4), range(CLASSES)):
        slots = [t for t in range(TRACKS) if np.linalg.norm(instances[b, f, t, c]) > 0.5]
        if slots:  # one instance on every track, or each once and the last again, reversed
            chosen = [slots[min(t, len(slots) - 1)] for t in range(TRACKS)][::-1]
            perfect[b, f, :, c] = instances[b, f, chosen, c]
            far[b, f, :, c] = distances[b, f, chosen, c]
    predicted = torch.tensor(far, requires_grad=True)
    loss = adpit_loss(
        torch.tensor(perfect),
        torch.tensor(instances),
        distance=predicted,
        instance_distances=torch.tensor(distances),
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    wrong = adpit_loss(
        torch.tensor(perfect),
        torch.tensor(instances),
        distance=predicted + 1.0,  # every distance a metre off: the weight times 1 m²
        instance_distances=torch.tensor(distances),
    )
    assert wrong.item() == pytest.approx(DISTANCE_WEIGHT)
    wrong.backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="or neither"):
        adpit_loss(torch.tensor(perfect), torch.tensor(instances), distance=predicted)


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


def test_distances_become_a_sixth_column_averaged_over_unified_tracks():
    vectors = np.zeros((1, TRACKS, CLASSES, 3))
    for t, a in enumerate((10.0, 20.0, 100.0)):  # tracks 0 and 1 unify, track 2 apart
        vectors[0, t, 0] = [np.cos(np.radians(a)), np.sin(np.radians(a)), 0]
    distance = np.zeros((1, TRACKS * CLASSES))
    distance[0, [0, CLASSES, 2 * CLASSES]] = [1.0, 2.0, 4.5]  # class 0 on each track
    rows = decode_rows(*_columns(vectors), TRACKS, 0.5, 15.0, distance)
    assert rows.shape == (2, 6) and rows[:, :3].tolist() == [[0, 0, 0], [0, 0, 2]]
    np.testing.assert_allclose(rows[:, 5], [1.5, 4.5])
    np.testing.assert_array_equal(rows[:, :5], decode_rows(*_columns(vectors), TRACKS, 0.5, 15.0))
    assert decode_rows(*_columns(vectors), TRACKS, 2.0, 15.0, distance).shape == (0, 6)
