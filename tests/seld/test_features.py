from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from seld.config import load_config
from seld.features.spectral import (
    FeatureConfig,
    _Frames,
    _gcc_direct,
    _gcc_irfft,
    _phat_cross_spectra,
    extract_features,
    gcc_phat,
)

from conftest import tiny_features
from reference_seed_features import seed_features

PAPER = load_config("paper-mic").features
TINY = tiny_features("mic")


def test_paper_preset_matches_the_seed_algorithm():
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((32_000 * 2, 4))).astype(np.float32)
    audio[:, 1] = np.roll(audio[:, 0], 5) + 0.01 * audio[:, 1]  # a correlated pair
    ours = extract_features(audio, PAPER)
    ref = seed_features(audio)
    assert ours.shape == ref.shape == (10, 201, 96)
    assert np.abs(ours[:4] - ref[:4]).max() < 1e-3  # dB
    assert np.abs(ours[4:] - ref[4:]).max() < 1e-4


def test_gcc_phat_peaks_at_the_channel_delay():
    config = replace(TINY, gcc_upsample=1)
    rng = np.random.default_rng(0)
    source = rng.standard_normal(16_000 + 20).astype(np.float32)
    delays = [0, 3, -2, 7]  # samples by which each channel lags the source
    audio = np.stack([source[10 - d : 10 - d + 16_000] for d in delays], axis=1)
    feats = extract_features(audio, config)
    assert feats.shape == (10, 101, 64)
    centre = config.n_mels // 2
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    for p, (n, m) in enumerate(pairs):
        peak = int(np.argmax(feats[4 + p, 10:-10].mean(axis=0))) - centre
        assert peak == delays[m] - delays[n], (n, m)


def test_upsampled_gcc_phat_resolves_fractional_delays():
    """Delays of a fraction of a sample: whole-sample GCC rounds them, gcc_upsample=8 finds them
    to 1/8 of a sample."""
    base = replace(TINY, gcc_upsample=1)
    config = replace(TINY, gcc_upsample=8)
    n = 16_000
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    delays = [0.0, 1.5, -1.25, 2.125]  # samples; pairs within the +-4 kept
    audio = np.stack(
        [np.fft.irfft(spectrum * np.exp(-2j * np.pi * freqs * d), n) for d in delays], axis=1
    ).astype(np.float32)
    feats = extract_features(audio, config)
    assert feats.shape == (10, 101, 64)
    whole = extract_features(audio, base)
    centre = config.n_mels // 2
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    for p, (a, b) in enumerate(pairs):
        peak = (int(np.argmax(feats[4 + p, 10:-10].mean(axis=0))) - centre) / 8
        assert peak == pytest.approx(delays[b] - delays[a], abs=1 / 16), (a, b)
        rounded = int(np.argmax(whole[4 + p, 10:-10].mean(axis=0))) - centre
        assert abs(rounded - (delays[b] - delays[a])) <= 0.5 + 1e-9, (a, b)
    assert config.hash() != base.hash() == replace(config, gcc_upsample=1).hash()
    assert TINY.gcc_upsample == 8 and PAPER.gcc_upsample == 1


@pytest.mark.parametrize("upsample", [1, 2, 8])
@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_direct_gcc_phat_equals_the_zero_padded_inverse_fft(preset, upsample):
    """Only the kept lags, by a matrix product, are those of the zero-padded inverse FFT (the
    DC and Nyquist weights included: a silent channel's cross spectra are all ones)."""
    config = replace(TINY if preset == "tiny" else PAPER, gcc_upsample=upsample)
    rng = np.random.default_rng(3)
    n = config.sample_rate // 2
    mic = 0.1 * rng.standard_normal((n, 4))  # independent channels, one silent for a while
    mic[: n // 4, 2] = 0
    source = rng.standard_normal(n + 20)  # delayed copies of one source, a little noise
    delayed = np.stack([source[10 - d : 10 - d + n] for d in (0, 3, -2, 7)], axis=1)
    delayed += 0.05 * rng.standard_normal(delayed.shape)
    for audio in (mic, delayed):
        frames = _Frames(audio.astype(np.float32), config.gcc_size, config)
        spec = frames.spectrum(0, frames.num_frames, precise=True)
        cross = _phat_cross_spectra(spec)
        reference = _gcc_irfft(cross, config.n_mels, upsample)
        assert reference.shape == (6, frames.num_frames, config.n_mels)
        for ours in (
            _gcc_direct(cross, config.n_mels, upsample),
            gcc_phat(spec, config.n_mels, upsample),
        ):
            assert ours.shape == reference.shape and ours.dtype == np.float32
            assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


def test_log_mel_of_a_tone_peaks_in_its_band():
    config = TINY
    t = np.arange(16_000) / 16_000
    audio = np.stack([np.sin(2 * np.pi * 1000 * t) * g for g in (1, 0.5, 0.25, 0.1)], axis=1)
    feats = extract_features(audio.astype(np.float32), config)
    import librosa

    centres = librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=8000)[1:-1]
    peak_bin = int(np.argmax(feats[0, 50]))
    assert abs(centres[peak_bin] - 1000) < 100
    # 6 dB less power per halving of the amplitude
    assert feats[0, 50, peak_bin] - feats[1, 50, peak_bin] == pytest.approx(6.02, abs=0.05)


@pytest.mark.parametrize(("azimuth", "elevation"), [(0, 0), (90, 0), (-135, 30), (60, -40)])
def test_intensity_vectors_point_at_a_plane_wave(azimuth, elevation):
    config = tiny_features("foa", "logmel_iv")
    assert config.kind == "logmel_iv"
    az, el = np.radians(azimuth), np.radians(elevation)
    s = np.random.default_rng(2).standard_normal(16_000).astype(np.float32)
    gains = [1, np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)]  # W, Y, Z, X
    feats = extract_features(np.stack([g * s for g in gains], axis=1).astype(np.float32), config)
    assert feats.shape == (7, 101, 64)
    x, y, z = (feats[4 + i].mean() for i in range(3))
    assert np.degrees(np.arctan2(y, x)) == pytest.approx(azimuth, abs=1)
    assert np.degrees(np.arctan2(z, np.hypot(x, y))) == pytest.approx(elevation, abs=1)


def test_config_hash_and_validation():
    a, b = PAPER, TINY
    assert a.hash() != b.hash() and a.hash() == FeatureConfig().hash()
    assert replace(a, dtype="float16").hash() != a.hash()
    assert (
        a.gcc_size == 2048
        and a.num_channels() == 10
        and replace(a, kind="logmel_iv").num_channels() == 7
    )
    with pytest.raises(ValueError, match="unknown feature kind 'mfcc'"):
        FeatureConfig(kind="mfcc")
    half = extract_features(np.zeros((1600, 4), np.float32) + 1e-3, replace(b, dtype="float16"))
    assert half.dtype == np.float16
