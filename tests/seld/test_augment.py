"""Channel-symmetry augmentation, checked against the synthesizer's own geometry."""

import itertools

import numpy as np
import pytest
import torch

from seld.features.augment import BatchAugmenter, feature_map, inverse, symmetries, unit_vectors
from seld.features.spectral import FeatureConfig, extract_features
from seld.methods.inference import run_model, run_views, symmetry_views
from seld.methods.models import build_model
from seld.synth.rooms import room_responses, spatialize

SR = 16_000
#: Directions on the DCASE grid at 1 m, front and back, up and down.
DIRECTIONS = [(20, 30), (-130, -10), (170, 40), (-90, 0)]
KINDS = {"mic": ["logmel_gcc"], "foa": ["logmel_iv", "logmel_gcc"]}
ROWS = [(fmt, i) for fmt, n in (("mic", 8), ("foa", 16)) for i in range(n)]


def _rendered(fmt: str, azimuth: float, elevation: float) -> np.ndarray:
    """Anechoic (direct path only) impulse responses (taps, 4) of a source at 1 m."""
    return room_responses(4, float(azimuth), float(elevation), 1.0, SR, max_order=0)[fmt]


def test_the_symmetry_groups_have_the_expected_sizes():
    assert len(symmetries("mic")) == 8
    assert len(symmetries("foa")) == 16
    assert symmetries("mic")[0].is_identity and symmetries("foa")[0].is_identity
    # every mic symmetry permutes the capsules (no sign), every FOA one keeps W
    assert all(sorted(s.sources) == [0, 1, 2, 3] for s in symmetries("mic"))
    assert all(s.sources[0] == 0 and s.signs[0] == 1 for s in symmetries("foa"))


@pytest.mark.parametrize(("fmt", "row"), ROWS)
def test_every_row_renders_the_transformed_direction(fmt, row):
    """Rendered at d, then channel-mixed == rendered at T(d), for each row of the table."""
    sym = symmetries(fmt)[row]
    for azimuth, elevation in DIRECTIONS:
        new_az, new_el = sym.directions(azimuth, elevation)
        expected = _rendered(fmt, new_az, new_el)
        got = sym.audio(_rendered(fmt, azimuth, elevation))
        n = min(len(expected), len(got))
        peak = np.abs(expected).max()
        assert np.abs(got[:n] - expected[:n]).max() < 1e-4 * peak, (sym.name, azimuth, elevation)


def test_the_other_direction_maps_are_not_mic_symmetries():
    """A map outside the table (azimuth +90 keeping the elevation) has no capsule permutation
    that renders it: the derivation is a real filter, not a list of everything."""
    wanted = _rendered("mic", 110, 30)
    source = _rendered("mic", 20, 30)
    errors = [
        np.abs(source[:, list(p)] - wanted[: len(source)]).max()
        for p in itertools.permutations(range(4))
    ]
    assert min(errors) > 0.05 * np.abs(wanted).max()


@pytest.mark.parametrize(("fmt", "row"), ROWS)
def test_feature_maps_match_features_of_transformed_audio(fmt, row):
    sym = symmetries(fmt)[row]
    rng = np.random.default_rng(row)
    dry = rng.standard_normal(SR // 2)
    audio = spatialize(dry, _rendered(fmt, 20, 30)) + 1e-3 * rng.standard_normal((1, 4))
    for kind in KINDS[fmt]:
        config = FeatureConfig(kind=kind, sample_rate=SR, n_fft=512, hop_length=160, n_mels=64)
        expected = extract_features(sym.audio(audio), config).astype(np.float64)
        got = feature_map(sym, kind).apply(extract_features(audio, config).astype(np.float64))
        # log-mels and intensity vectors exactly; GCC-PHAT at every lag but the outermost
        np.testing.assert_allclose(got[:4], expected[:4], atol=1e-3)
        np.testing.assert_allclose(got[4:, :, 1:], expected[4:, :, 1:], atol=1e-4)
        if kind == "logmel_iv":
            np.testing.assert_allclose(got[4:], expected[4:], atol=1e-5)


@pytest.mark.parametrize(("fmt", "row"), ROWS)
def test_transform_then_inverse_is_the_identity(fmt, row):
    sym = symmetries(fmt)[row]
    back = inverse(sym, fmt)
    azimuth = np.arange(-180, 180, 10, dtype=float)
    elevation = np.resize(np.arange(-40, 50, 10, dtype=float), azimuth.shape)
    np.testing.assert_allclose(
        back.directions(*sym.directions(azimuth, elevation)), (azimuth, elevation)
    )
    rng = np.random.default_rng(0)
    for kind in KINDS[fmt]:
        channels = 10 if kind == "logmel_gcc" else 7
        features = rng.standard_normal((channels, 5, 64))
        there = feature_map(sym, kind).apply(features)
        np.testing.assert_array_equal(feature_map(back, kind).apply(there), features)


@pytest.mark.parametrize("fmt", ["mic", "foa"])
def test_batch_augmenter_matches_the_numpy_maps_and_is_seeded(fmt):
    kind = KINDS[fmt][0]
    channels = 10 if kind == "logmel_gcc" else 7
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(64, channels, 6, 16, generator=gen)
    azimuth = torch.randint(-18, 18, (64, 6, 11), generator=gen).float() * 10
    elevation = torch.randint(-4, 5, (64, 6, 11), generator=gen).float() * 10
    batch = {"features": features, "azimuth": azimuth, "elevation": elevation}
    out = BatchAugmenter(fmt, kind, torch.Generator().manual_seed(3))(batch)
    again = BatchAugmenter(fmt, kind, torch.Generator().manual_seed(3))(batch)
    assert torch.equal(out["features"], again["features"])
    choice = torch.randint(len(symmetries(fmt)), (64,), generator=torch.Generator().manual_seed(3))
    assert len(set(choice.tolist())) > 4
    for i, g in enumerate(choice.tolist()):
        sym = symmetries(fmt)[g]
        expected = feature_map(sym, kind).apply(features[i].numpy())
        np.testing.assert_allclose(out["features"][i].numpy(), expected, atol=1e-6)
        az, el = sym.directions(azimuth[i].numpy(), elevation[i].numpy())
        np.testing.assert_allclose(out["azimuth"][i].numpy(), az)
        np.testing.assert_allclose(out["elevation"][i].numpy(), el)
    assert torch.equal(batch["features"], features)  # the input batch is left as it was


@pytest.mark.parametrize("fmt", ["mic", "foa"])
def test_track_targets_turn_with_the_directions(fmt):
    """A track target's unit vector turns exactly as the one-direction targets' angles do; a
    zero vector (no instance) stays zero; the instances' distances stay as they were."""
    kind = KINDS[fmt][0]
    gen = torch.Generator().manual_seed(1)
    azimuth = torch.randint(-18, 18, (32, 4, 11), generator=gen).float() * 10
    elevation = torch.randint(-4, 5, (32, 4, 11), generator=gen).float() * 10
    tracks = torch.zeros(32, 4, 3, 11, 3)
    tracks[:, :, 0] = torch.from_numpy(unit_vectors(azimuth.numpy(), elevation.numpy())).float()
    distances = torch.zeros(32, 4, 3, 11)
    distances[:, :, 0] = torch.rand(32, 4, 11, generator=gen) * 4 + 0.5
    batch = {"features": torch.zeros(32, 10 if kind == "logmel_gcc" else 7, 4, 16)}
    batch |= {"azimuth": azimuth, "elevation": elevation, "tracks": tracks}
    batch["distances"] = distances
    out = BatchAugmenter(fmt, kind, torch.Generator().manual_seed(2))(batch)
    turned = unit_vectors(out["azimuth"].numpy(), out["elevation"].numpy())
    np.testing.assert_allclose(out["tracks"][:, :, 0].numpy(), turned, atol=1e-5)
    assert not out["tracks"][:, :, 1:].any()
    assert not torch.equal(out["tracks"], tracks)  # some windows were turned
    assert torch.equal(out["distances"], distances)  # a rotation keeps every distance


def _untrained(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    channels = 10 if kind == "logmel_gcc" else 7
    model = build_model(
        "CRNN10", in_channels=channels, channels=[8, 8, 8, 8], rnn_hidden=8, doa_output="xyz"
    )
    return model.eval()


@pytest.mark.parametrize(("fmt", "kind"), [("mic", "logmel_gcc"), ("foa", "logmel_iv")])
def test_a_batch_of_views_gives_what_each_view_gives_alone(fmt, kind):
    model = _untrained(kind)
    rng = np.random.default_rng(1)
    features = rng.standard_normal((10 if kind == "logmel_gcc" else 7, 40, 64)).astype(np.float32)
    views = symmetry_views(fmt, kind)[:3]
    batch = np.stack([v.features.apply(features) for v in views])
    together = run_model(model, batch, window=16)
    for i, view in enumerate(views):
        alone = run_model(model, view.features.apply(features), window=16)
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_allclose(a[i], b, atol=1e-5)


@pytest.mark.parametrize(("fmt", "kind"), [("mic", "logmel_gcc"), ("foa", "logmel_iv")])
def test_test_time_views_are_equivariant(fmt, kind):
    """With every symmetry as a view, predicting a transformed recording gives the same
    probabilities and the transformed directions. That holds only if each view's directions
    are brought back by its inverse (with the symmetry itself, or none, it fails: the
    untrained model is not equivariant on its own, as the last check shows)."""
    model = _untrained(kind)
    rng = np.random.default_rng(2)
    features = rng.standard_normal((10 if kind == "logmel_gcc" else 7, 30, 64)).astype(np.float32)
    views = symmetry_views(fmt, kind)
    sed, azimuth, elevation = run_views(model, features, None, views)
    moved_any = False
    for sym in symmetries(fmt)[1:]:
        there = feature_map(sym, kind).apply(features)
        sed2, azimuth2, elevation2 = run_views(model, there, None, views)
        np.testing.assert_allclose(sed2, sed, atol=1e-5)
        expected = unit_vectors(*sym.directions(np.degrees(azimuth), np.degrees(elevation)))
        got = unit_vectors(np.degrees(azimuth2), np.degrees(elevation2))
        np.testing.assert_allclose(got, expected, atol=1e-4)
        plain_az, plain_el = run_model(model, there)[1:]
        plain = unit_vectors(np.degrees(plain_az), np.degrees(plain_el))
        moved_any |= np.abs(plain - expected).max() > 1e-2
    assert moved_any
