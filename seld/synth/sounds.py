"""Procedural sounds for the 11 DCASE 2019 classes, one generator per class.

Every generator takes a ``numpy.random.Generator`` and a sample rate and returns a mono
``float64`` signal of roughly 0.3-3 s whose pitch, length, rhythm and timbre vary per call.
:func:`make_sound` trims silence and normalises the loudest 50 ms to unit RMS, so the label of an
event (its start and end) is where the sound is audible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from seld.synth.dsp import (
    bandpass,
    damped_sine,
    fade,
    glide,
    glottal_source,
    hann_envelope,
    highpass,
    lowpass,
    num_samples,
    place,
    resonate,
    time_axis,
)

SoundGenerator = Callable[[np.random.Generator, int], np.ndarray]

#: Vowel formants (F1, F2, F3) in Hz of an adult male voice.
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730, 1090, 2440),  # a
    (270, 2290, 3010),  # i
    (530, 1840, 2480),  # e
    (570, 840, 2410),  # o
    (300, 870, 2240),  # u
    (660, 1720, 2410),  # ae
)


def _vowel(formants: tuple[float, float, float], scale: float) -> list[tuple[float, float]]:
    return [(f * scale, 60.0 + 0.06 * f) for f in formants]


def knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    """2-5 knocks on wood: damped low-mid resonances with a short click on top."""
    count = int(rng.integers(2, 6))
    spacing = rng.uniform(0.1, 0.25)
    base = rng.uniform(150.0, 450.0)
    ratios = (1.0, rng.uniform(1.5, 2.4), rng.uniform(2.7, 3.8))
    out = np.zeros(num_samples((count - 1) * spacing * 1.3 + 0.2, sr))
    t = 0.0
    for i in range(count):
        hit = sum(
            damped_sine(base * r, rng.uniform(0.015, 0.045) / (k + 1), 0.2, sr) / (k + 1)
            for k, r in enumerate(ratios)
        )
        click = bandpass(rng.standard_normal(num_samples(0.01, sr)), 1000.0, 4000.0, sr)
        hit[: click.size] += 0.3 * click * np.exp(-np.arange(click.size) / (0.002 * sr))
        place(out, hit * rng.uniform(0.6, 1.0) * (0.9**i), t, sr)
        t += spacing * rng.uniform(0.8, 1.3)
    return out


def drawer(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A drawer sliding: band-passed friction noise, slowly modulated, ending in a soft bump."""
    seconds = rng.uniform(0.6, 2.0)
    t = time_axis(seconds, sr)
    centre = rng.uniform(500.0, 1500.0)
    friction = bandpass(rng.standard_normal(t.size), centre / 1.6, centre * 1.6, sr)
    rate = rng.uniform(3.0, 8.0)
    wobble = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    stick = 1.0 + 0.5 * lowpass(rng.standard_normal(t.size), 25.0, sr, order=1) * 20
    out = friction * wobble * np.clip(stick, 0.2, 2.0) * hann_envelope(t.size, 0.3)
    bump = damped_sine(rng.uniform(90.0, 160.0), 0.04, 0.15, sr)
    place(out, 2.0 * bump * np.max(np.abs(out)), seconds - 0.15, sr)
    return out


def clearthroat(rng: np.random.Generator, sr: int) -> np.ndarray:
    """'A-hem': two short rough, noisy, low-pitched voiced bursts."""
    f0 = rng.uniform(80.0, 130.0)
    parts = (rng.uniform(0.1, 0.2), rng.uniform(0.2, 0.45))
    gap = rng.uniform(0.03, 0.1)
    out = np.zeros(num_samples(sum(parts) + gap, sr))
    start = 0.0
    for seconds in parts:
        n = num_samples(seconds, sr)
        t = np.arange(n) / sr
        voice = glottal_source(glide(f0 * 1.1, f0 * 0.85, n), sr, rng, jitter=0.06)
        rough = 1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(25.0, 40.0) * t)
        source = voice * rough / (np.std(voice) + 1e-12) + 0.8 * rng.standard_normal(n)
        vowel = resonate(source, [(rng.uniform(400, 600), 150), (rng.uniform(1100, 1500), 200)], sr)
        place(out, vowel * hann_envelope(n, 0.15), start, sr)
        start += seconds + gap
    return out


def phone(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A phone ringing: bursts of a fast two-tone trill with on/off pauses."""
    low = rng.uniform(900.0, 1400.0)
    high = low * rng.uniform(1.15, 1.4)
    trill = rng.uniform(15.0, 25.0)
    on, off = rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.3)
    bursts = int(rng.integers(2, 5))
    bursts = max(1, min(bursts, int(2.9 // (on + off))))
    t = time_axis(on, sr)
    freq = np.where(np.sin(2 * np.pi * trill * t) >= 0, low, high)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    burst = fade(np.sin(phase) + 0.2 * np.sin(3 * phase), sr, 0.005)
    out = np.zeros(num_samples(bursts * (on + off) - off, sr))
    for i in range(bursts):
        place(out, burst, i * (on + off), sr)
    return out


def keys_drop(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Keys hitting a surface: a cluster of bright, inharmonic metallic pings."""
    seconds = rng.uniform(0.25, 0.6)
    out = np.zeros(num_samples(seconds, sr))
    hits = int(rng.integers(6, 16))
    times = np.concatenate([[0.0], np.sort(rng.exponential(seconds / 4, hits - 1))])
    for i, when in enumerate(times[times < seconds - 0.06]):
        decays = rng.uniform(0.01, 0.05, size=int(rng.integers(4, 7)))
        ping = sum(
            damped_sine(rng.uniform(2500.0, 10000.0), decay, 6 * decays.max(), sr)
            for decay in decays
        )
        place(out, ping * rng.uniform(0.4, 1.0) * (0.85**i), float(when), sr)
    return out


def speech(
    rng: np.random.Generator, sr: int, f0_hz: tuple[float, float] = (100.0, 220.0)
) -> np.ndarray:
    """Speech-like babble: a voice with gliding pitch within ``f0_hz``, changing vowels,
    ~4 syllables/s."""
    seconds = rng.uniform(1.0, 3.0)
    n = num_samples(seconds, sr)
    f0_start, f0_end = rng.uniform(*f0_hz, size=2)
    f0 = glide(f0_start, f0_end, n) * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * np.arange(n) / sr))
    voice = glottal_source(f0, sr, rng, jitter=0.015)
    scale = rng.uniform(0.95, 1.15)
    out = np.zeros(n)
    start = 0.0
    while start < seconds - 0.12:
        length = min(rng.uniform(0.16, 0.32), seconds - start)
        a, b = round(start * sr), round((start + length) * sr)
        vowel = _VOWELS[int(rng.integers(len(_VOWELS)))]
        syllable = resonate(voice[a:b], _vowel(vowel, scale), sr) * hann_envelope(b - a, 0.35)
        if rng.random() < 0.4:  # a fricative consonant before the vowel
            hiss = highpass(rng.standard_normal(num_samples(0.05, sr)), 3500.0, sr)
            syllable[: hiss.size] += (
                0.05 * hiss[: syllable.size] * hann_envelope(hiss.size)[: syllable.size]
            )
        out[a:b] += syllable * rng.uniform(0.6, 1.0)
        start += length + rng.uniform(0.0, 0.06)
    return out


def keyboard(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Typing: rapid short clicks (key down and a softer key up), irregularly spaced."""
    seconds = rng.uniform(1.0, 3.0)
    out = np.zeros(num_samples(seconds, sr))
    rate = rng.uniform(6.0, 12.0)
    thock_hz = rng.uniform(250.0, 500.0)
    t = 0.0
    while t < seconds - 0.08:
        click = bandpass(rng.standard_normal(num_samples(0.006, sr)), 2000.0, 6000.0, sr)
        click = np.concatenate(
            [
                click * np.exp(-np.arange(click.size) / (0.0015 * sr)),
                np.zeros(num_samples(0.03, sr)),
            ]
        )
        click += 0.3 * damped_sine(thock_hz * rng.uniform(0.9, 1.1), 0.006, click.size / sr, sr)
        level = rng.uniform(0.5, 1.0)
        place(out, level * click, t, sr)
        place(out, 0.4 * level * click, t + rng.uniform(0.03, 0.07), sr)
        t += rng.gamma(4.0, 1.0 / (4.0 * rate))
    return out


def pageturn(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A page turning: a rising and falling high-passed broadband swish with paper crackle."""
    seconds = rng.uniform(0.4, 1.2)
    n = num_samples(seconds, sr)
    swish = highpass(rng.standard_normal(n), rng.uniform(1500.0, 3000.0), sr, order=3)
    flutter = 0.7 + 0.3 * lowpass(rng.standard_normal(n), 20.0, sr, order=1) * 15
    crackle = (rng.random(n) < 40.0 / sr) * rng.standard_normal(n) * 6.0
    crackle = highpass(crackle, 2000.0, sr)
    return (swish * np.clip(flutter, 0.2, 1.5) + crackle) * hann_envelope(n, rng.uniform(0.3, 0.7))


def cough(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-3 coughs: explosive noisy bursts through a throat formant, decaying fast."""
    count = int(rng.integers(1, 4))
    formants = [(rng.uniform(450.0, 800.0), 250.0), (rng.uniform(1300.0, 1900.0), 350.0)]
    out = np.zeros(num_samples(count * 0.6, sr))
    t = 0.0
    for i in range(count):
        seconds = rng.uniform(0.2, 0.4)
        n = num_samples(seconds, sr)
        voice = glottal_source(np.full(n, rng.uniform(150.0, 300.0)), sr, rng, jitter=0.05)
        source = rng.standard_normal(n) + 0.4 * voice / (np.std(voice) + 1e-12)
        burst = resonate(source, formants, sr) + 0.03 * highpass(rng.standard_normal(n), 2000, sr)
        env = np.exp(-np.arange(n) / (rng.uniform(0.05, 0.1) * sr))
        env[: num_samples(0.005, sr)] *= np.linspace(0, 1, num_samples(0.005, sr))
        place(out, burst * env * (0.8**i), t, sr)
        t += seconds + rng.uniform(0.08, 0.2)
    return out[: num_samples(t, sr)]


def doorslam(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A door slamming: a strong low thump, a wooden resonance, a crack and a short rattle."""
    seconds = rng.uniform(0.35, 0.8)
    thump = damped_sine(rng.uniform(45.0, 80.0), rng.uniform(0.08, 0.15), seconds, sr)
    body = 0.5 * damped_sine(rng.uniform(120.0, 250.0), rng.uniform(0.05, 0.1), seconds, sr)
    n = thump.size
    crack = highpass(rng.standard_normal(n), 1000.0, sr) * np.exp(-np.arange(n) / (0.004 * sr))
    rattle = bandpass(rng.standard_normal(n), 300.0, 800.0, sr) * np.exp(
        -np.arange(n) / (0.08 * sr)
    )
    return thump + body + 0.8 * crack + 0.2 * rattle


def laughter(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Laughter: a series of breathy voiced 'ha' pulses at ~5 Hz with a high, falling pitch."""
    count = int(rng.integers(4, 11))
    rate = rng.uniform(4.0, 6.0)
    f0 = rng.uniform(220.0, 350.0)
    scale = rng.uniform(1.0, 1.2)
    out = np.zeros(num_samples(count / rate + 0.2, sr))
    for i in range(count):
        n = num_samples(rng.uniform(0.07, 0.12), sr)
        pitch = f0 * (1.0 - 0.2 * i / count)
        voice = glottal_source(glide(pitch * 1.05, pitch * 0.9, n), sr, rng, jitter=0.03)
        breath = 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * sr))
        ha = resonate(voice / (np.std(voice) + 1e-12) + breath, _vowel(_VOWELS[0], scale), sr)
        place(out, ha * hann_envelope(n, 0.25) * (0.92**i), i / rate * rng.uniform(0.95, 1.05), sr)
    return out


def female_speech(rng: np.random.Generator, sr: int) -> np.ndarray:
    """:func:`speech` with a higher voice (180-300 Hz)."""
    return speech(rng, sr, (180.0, 300.0))


def male_speech(rng: np.random.Generator, sr: int) -> np.ndarray:
    """:func:`speech` with a lower voice (85-150 Hz)."""
    return speech(rng, sr, (85.0, 150.0))


def melody(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A short tune: 4-10 notes of a pentatonic scale, each a few decaying harmonics."""
    root = 220.0 * 2 ** (rng.integers(0, 12) / 12)
    steps = np.array([0, 2, 4, 7, 9, 12, 14])
    out = np.zeros(0)
    for _ in range(int(rng.integers(4, 11))):
        length = num_samples(rng.choice([0.15, 0.25, 0.4]), sr)
        t = np.arange(length) / sr
        f = root * 2 ** (steps[rng.integers(len(steps))] / 12)
        note = sum(0.6**h * np.sin(2 * np.pi * f * (h + 1) * t) for h in range(4))
        out = np.concatenate(
            [out, note * np.exp(-t * rng.uniform(3.0, 8.0)) * hann_envelope(length, 0.05)]
        )
    return out


def alarm(rng: np.random.Generator, sr: int) -> np.ndarray:
    """An alarm: 3-8 beeps alternating between two tones (square-ish, a few harmonics)."""
    low = rng.uniform(600.0, 1000.0)
    high = low * rng.uniform(1.2, 1.5)
    beep, gap = num_samples(rng.uniform(0.12, 0.25), sr), num_samples(rng.uniform(0.05, 0.12), sr)
    t = np.arange(beep) / sr
    out = []
    for i in range(int(rng.integers(3, 9))):
        f = high if i % 2 else low
        tone = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 3, 5))
        out += [tone * hann_envelope(beep, 0.05), np.zeros(gap)]
    return np.concatenate(out)


#: The generator of each class, in class-index order.
SOUNDS: dict[str, SoundGenerator] = {
    "knock": knock,
    "drawer": drawer,
    "clearthroat": clearthroat,
    "phone": phone,
    "keysDrop": keys_drop,
    "speech": speech,
    "keyboard": keyboard,
    "pageturn": pageturn,
    "cough": cough,
    "doorslam": doorslam,
    "laughter": laughter,
}

#: Samples below this fraction of the peak at either end are trimmed off (-50 dB).
_TRIM_LEVEL = 10 ** (-50 / 20)


def make_sound(
    label: str, rng: np.random.Generator, sr: int, sounds: dict[str, SoundGenerator] | None = None
) -> np.ndarray:
    """One fresh instance of class ``label``: mono ``(samples,)`` ``float64``.

    Leading and trailing silence (below -50 dB of the peak) is trimmed and the loudest 50 ms
    frame is scaled to unit RMS. ``sounds``: the generator of each class (default
    :data:`SOUNDS`, DCASE 2019's). Raises ``KeyError`` listing the classes for an unknown label.
    """
    sounds = SOUNDS if sounds is None else sounds
    try:
        generator = sounds[label]
    except KeyError:
        raise KeyError(f"no sound for class {label!r}; classes: {', '.join(sounds)}") from None
    x = generator(rng, sr)
    loud = np.flatnonzero(np.abs(x) > _TRIM_LEVEL * np.max(np.abs(x)))
    x = fade(x[loud[0] : loud[-1] + 1], sr, 0.002)
    frame = num_samples(0.05, sr)
    usable = x[: x.size // frame * frame].reshape(-1, frame) if x.size >= frame else x[None, :]
    return x / (np.sqrt(np.max(np.mean(usable**2, axis=1))) + 1e-12)
