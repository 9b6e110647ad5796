"""Small signal generators shared by the class sounds: filters, resonances, voices, envelopes.

All signals are mono ``float64`` arrays at ``sr`` samples per second; times are in seconds and
frequencies in hertz.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal


def num_samples(seconds: float, sr: int) -> int:
    """Samples in ``seconds`` (at least one)."""
    return max(1, round(seconds * sr))


def time_axis(seconds: float, sr: int) -> np.ndarray:
    """Sample times ``(n,)`` in seconds from 0."""
    return np.arange(num_samples(seconds, sr)) / sr


def bandpass(x: np.ndarray, low_hz: float, high_hz: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth band-pass (``high_hz`` is clipped below Nyquist)."""
    high_hz = min(high_hz, 0.45 * sr)
    sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def highpass(x: np.ndarray, cutoff_hz: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth high-pass."""
    sos = signal.butter(order, cutoff_hz, btype="highpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def lowpass(x: np.ndarray, cutoff_hz: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth low-pass."""
    sos = signal.butter(order, min(cutoff_hz, 0.45 * sr), btype="lowpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def damped_sine(freq_hz: float, decay_s: float, seconds: float, sr: int, phase: float = 0.0):
    """``sin(2 pi f t + phase) * exp(-t / decay_s)`` over ``seconds``."""
    t = time_axis(seconds, sr)
    return np.sin(2 * np.pi * freq_hz * t + phase) * np.exp(-t / decay_s)


def resonate(x: np.ndarray, formants: Sequence[tuple[float, float]], sr: int) -> np.ndarray:
    """Cascade of two-pole resonators, one per ``(centre Hz, bandwidth Hz)``: a vocal tract."""
    y = x
    for freq, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / sr)
        a = [1.0, -2.0 * r * np.cos(2 * np.pi * min(freq, 0.45 * sr) / sr), r * r]
        y = signal.lfilter([1.0 - r], a, y)
    return y / (np.max(np.abs(y)) + 1e-12)


def glottal_source(f0_hz: np.ndarray, sr: int, rng: np.random.Generator, jitter: float = 0.01):
    """A voiced excitation following the per-sample pitch contour ``f0_hz`` ``(n,)``.

    One pulse per glottal cycle (the closing instant), with small random pitch jitter, low-passed
    to the roughly -6 dB/octave tilt of radiated voiced speech.
    """
    wobble = lowpass(rng.standard_normal(f0_hz.size), 30.0, sr, order=1)
    wobble /= np.max(np.abs(wobble)) + 1e-12
    phase = np.cumsum(f0_hz * (1.0 + jitter * wobble) / sr)
    pulses = (np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0).astype(float)
    voiced = lowpass(pulses, 1200.0, sr, order=1)
    return voiced - np.mean(voiced)


def glide(start: float, end: float, n: int) -> np.ndarray:
    """A smooth (half-cosine) glide from ``start`` to ``end`` over ``n`` samples."""
    w = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    return start + (end - start) * w


def hann_envelope(n: int, attack: float = 0.5) -> np.ndarray:
    """A rise/fall envelope of ``n`` samples peaking at fraction ``attack`` of its length."""
    peak = int(np.clip(attack, 0.01, 0.99) * n)
    rise = np.sin(np.linspace(0.0, np.pi / 2, max(peak, 1))) ** 2
    fall = np.cos(np.linspace(0.0, np.pi / 2, max(n - peak, 1))) ** 2
    return np.concatenate([rise, fall])[:n]


def fade(x: np.ndarray, sr: int, seconds: float = 0.003) -> np.ndarray:
    """Short linear fade-in and fade-out so a sound never starts or stops with a click."""
    n = min(num_samples(seconds, sr), x.size // 2)
    if n < 1:
        return x
    out = x.copy()
    ramp = np.linspace(0.0, 1.0, n)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def place(out: np.ndarray, x: np.ndarray, start_s: float, sr: int) -> None:
    """Add ``x`` into ``out`` from ``start_s`` on, dropping what falls past the end."""
    start = round(start_s * sr)
    if start >= out.size:
        return
    stop = min(out.size, start + x.size)
    out[start:stop] += x[: stop - start]


def pink_noise(shape: tuple[int, int], rng: np.random.Generator, sr: int) -> np.ndarray:
    """Independent pink (1/f power) noise per column, ``(samples, channels)``, unit RMS.

    The spectrum is flat below 50 Hz so the DC and the lowest bins do not dominate.
    """
    n, channels = shape
    spectrum = rng.standard_normal((n // 2 + 1, channels)) + 1j * rng.standard_normal(
        (n // 2 + 1, channels)
    )
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum *= (1.0 / np.sqrt(np.maximum(freqs, 50.0)))[:, None]
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=n, axis=0)
    return noise / (np.sqrt(np.mean(noise**2, axis=0, keepdims=True)) + 1e-12)
