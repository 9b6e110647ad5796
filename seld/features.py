"""Input features: log-mel and GCC-PHAT (mic format), log-mel and intensity vectors (FOA).

Every feature of a recording is derived from one STFT per channel per transform size, computed for
all channels at once; GCC-PHAT is computed for all pairs and frames in one batched inverse FFT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from itertools import combinations

import librosa
import numpy as np
import scipy.fft

#: Feature kinds: log-mel + GCC-PHAT (the seed's, for either format) and log-mel + intensity
#: vectors (the standard SELD feature for first-order ambisonics).
KINDS = ("logmel_gcc", "logmel_iv")


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes a feature tensor of shape (channels, frames, n_mels).

    ``sample_rate`` in Hz (audio is resampled to it once); ``n_fft`` and ``hop_length`` in samples
    at that rate; ``gcc_n_fft`` is the transform size of GCC-PHAT (``None``: the next power of two
    >= 2 * n_fft - 1, as in the seed); GCC-PHAT keeps the ``n_mels`` lags around zero.
    """

    kind: str = "logmel_gcc"
    sample_rate: int = 32_000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 96
    fmin: float = 50.0
    fmax: float | None = None
    window: str = "hann"
    gcc_n_fft: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown feature kind {self.kind!r}; choose one of {', '.join(KINDS)}"
            )
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"feature dtype must be float32 or float16, not {self.dtype!r}")
        if self.n_mels % 2:
            raise ValueError(f"n_mels must be even (GCC-PHAT lags are centred), got {self.n_mels}")

    @property
    def gcc_size(self) -> int:
        if self.gcc_n_fft is not None:
            return self.gcc_n_fft
        return int(2 ** np.ceil(np.log2(2 * self.n_fft - 1)))

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_channels(self, audio_channels: int = 4) -> int:
        if self.kind == "logmel_gcc":
            return audio_channels + audio_channels * (audio_channels - 1) // 2
        return audio_channels + 3

    def hash(self) -> str:
        """A short stable hash naming the feature folder: two configs never share one."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


PRESETS: dict[str, FeatureConfig] = {
    # the seed implementation's parameters
    "paper": FeatureConfig(),
    # small and fast, for CI and the demo: 100 frames per second like the paper
    "tiny": FeatureConfig(sample_rate=16_000, n_fft=512, hop_length=160, n_mels=64),
}


def feature_preset(name: str, fmt: str = "mic") -> FeatureConfig:
    """A preset for a format: FOA gets intensity vectors unless the seed's GCC is asked for."""
    if name not in PRESETS:
        raise ValueError(f"unknown feature preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    return replace(config, kind="logmel_iv") if fmt == "foa" else config


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """(n_mels, n_fft // 2 + 1) Slaney-normalised mel filters, as the seed builds them."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def stft(audio: np.ndarray, n_fft: int, config: FeatureConfig) -> np.ndarray:
    """Centred, reflect-padded STFT of all channels at once.

    ``audio``: (samples, channels) -> (channels, n_fft // 2 + 1, frames), complex64.
    """
    return librosa.stft(
        np.ascontiguousarray(audio.T),
        n_fft=n_fft,
        hop_length=config.hop_length,
        window=config.window,
        center=True,
        pad_mode="reflect",
    )


def log_mel(spec: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log mel power in dB (ref 1, amin 1e-10, no top_db): (channels, freq, frames) ->
    (channels, frames, n_mels)."""
    mel_w = mel_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
    )
    power = spec.real**2 + spec.imag**2
    mel = np.einsum("mf,cft->ctm", mel_w, power, optimize=True)
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


#: Frames per GCC-PHAT block: whole-recording cross-spectra of a minute of 4-channel audio take
#: ~300 MB, and allocating them costs more than the transform; blocks stay in cache.
_GCC_BLOCK_FRAMES = 256
_TINY = 1e-30


def gcc_phat(spec: np.ndarray, n_lags: int) -> np.ndarray:
    """GCC-PHAT of every channel pair (n < m, in the order (0,1), (0,2), ..., (2,3)).

    ``spec``: (channels, freq, frames) of an STFT of size 2 * (freq - 1). Returns
    (pairs, frames, n_lags) float32: lags -n_lags/2 .. n_lags/2 - 1 in samples, zero lag at
    n_lags/2; a positive lag means channel m lags channel n. All pairs and the frames of a block
    go through one batched inverse FFT.
    """
    pairs = list(combinations(range(spec.shape[0]), 2))
    n_frames = spec.shape[2]
    half = n_lags // 2
    out = np.empty((len(pairs), n_frames, n_lags), dtype=np.float32)
    cross = np.empty((len(pairs), _GCC_BLOCK_FRAMES, spec.shape[1]), dtype=np.complex64)
    magnitude = np.empty(cross.shape, dtype=np.float32)
    for start in range(0, n_frames, _GCC_BLOCK_FRAMES):
        stop = min(start + _GCC_BLOCK_FRAMES, n_frames)
        block = np.swapaxes(spec[:, :, start:stop], 1, 2)  # (channels, frames, freq)
        c = cross[:, : stop - start]
        for p, (n, m) in enumerate(pairs):
            np.multiply(block[m], np.conj(block[n]), out=c[p])
        mag = np.abs(c, out=magnitude[:, : stop - start])
        # the phase transform exp(1j * angle(c)); bins too small to divide by (digital
        # silence) take the same formula, which gives 1 for an exact zero
        normal = mag > _TINY
        np.divide(c, mag, out=c, where=normal)
        c[~normal] = np.exp(1j * np.angle(c[~normal]))
        cc = scipy.fft.irfft(c, axis=-1)  # single precision in, single precision out
        out[:, start:stop, :half] = cc[..., -half:]
        out[:, start:stop, half:] = cc[..., :half]
    return out


def intensity_vectors(spec: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mel-band active intensity vectors of FOA (channels W, Y, Z, X), normalised by energy.

    ``spec``: (4, freq, frames) -> (3, frames, n_mels), in the order x, y, z.
    """
    mel_w = mel_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
    )
    w, y, z, x = spec
    energy = np.abs(w) ** 2 + (np.abs(x) ** 2 + np.abs(y) ** 2 + np.abs(z) ** 2) / 3.0
    iv = np.stack([np.real(np.conj(w) * c) for c in (x, y, z)]) / np.maximum(energy, 1e-10)
    return np.einsum("mf,cft->ctm", mel_w, iv, optimize=True)


def extract_features(audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Feature tensor of one recording.

    ``audio``: (samples, channels) at ``config.sample_rate``. Returns (channels, frames, n_mels):
    ``logmel_gcc``: the log-mels of the audio channels, then GCC-PHAT of every pair (10 channels
    for 4 microphones); ``logmel_iv``: 4 log-mels then 3 intensity-vector channels.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be (samples, channels), got shape {audio.shape}")
    spec = stft(audio, config.n_fft, config)
    parts = [log_mel(spec, config)]
    if config.kind == "logmel_gcc":
        gcc_spec = spec if config.gcc_size == config.n_fft else stft(audio, config.gcc_size, config)
        parts.append(gcc_phat(gcc_spec, config.n_mels))
    else:
        if audio.shape[1] != 4:
            raise ValueError(f"intensity vectors need 4 FOA channels, got {audio.shape[1]}")
        parts.append(intensity_vectors(spec, config))
    return np.concatenate(parts, axis=0).astype(config.dtype)
