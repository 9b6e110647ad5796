"""Input features: log-mel and GCC-PHAT (mic format), log-mel and intensity vectors (FOA).

Every feature of a recording is derived from one STFT per channel per transform size, computed for
all channels at once; GCC-PHAT is computed for all pairs and frames in one batched inverse FFT,
or, when upsampled, in one matrix product that yields only the kept lags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import combinations
from typing import Annotated, Literal

import librosa
import numpy as np
import scipy.fft
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import ConfigDict, Field
from threadpoolctl import threadpool_limits

#: Feature kinds: log-mel + GCC-PHAT (the seed's, for either format) and log-mel + intensity
#: vectors (the standard SELD feature for first-order ambisonics).
KINDS = ("logmel_gcc", "logmel_iv")


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes a feature tensor of shape (channels, frames, n_mels).

    ``sample_rate`` in Hz (audio is resampled to it once); ``n_fft`` and ``hop_length`` in samples
    at that rate; ``gcc_n_fft`` is the transform size of GCC-PHAT (``None``: the next power of two
    >= 2 * n_fft - 1, as in the seed); GCC-PHAT keeps the ``n_mels`` lags around zero.
    ``gcc_upsample`` > 1 zero-pads the cross-power spectrum by that factor before the inverse
    FFT, so the kept lags step by 1 / ``gcc_upsample`` samples: at 16 kHz the tetrahedral array's
    largest delay is about 3.2 samples, which 64 whole-sample lags resolve into only ~7 useful
    lags, and ``gcc_upsample=8`` spreads it over ~51 (beyond the seed, whose value is 1).
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    kind: Literal["logmel_gcc", "logmel_iv"] = "logmel_gcc"
    sample_rate: Annotated[int, Field(ge=4_000, le=192_000)] = 32_000
    n_fft: Annotated[int, Field(ge=64, le=16_384)] = 1024
    hop_length: Annotated[int, Field(ge=1)] = 320
    n_mels: Annotated[int, Field(ge=2, le=512)] = 96
    fmin: Annotated[float, Field(ge=0)] = 50.0
    fmax: Annotated[float, Field(gt=0)] | None = None
    window: str = "hann"
    gcc_n_fft: Annotated[int, Field(ge=2)] | None = None
    gcc_upsample: Annotated[int, Field(ge=1, le=64)] = 1
    dtype: Literal["float32", "float16"] = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown feature kind {self.kind!r}; choose one of {', '.join(KINDS)}"
            )
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"feature dtype must be float32 or float16, not {self.dtype!r}")
        if self.gcc_upsample < 1:
            raise ValueError(f"gcc_upsample must be >= 1, got {self.gcc_upsample}")
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
        fields = asdict(self)
        if fields["gcc_upsample"] == 1:  # configs from before the option keep their folder
            del fields["gcc_upsample"]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


#: Frames per processing block (a few MB of spectra, so blocks stay in cache).
_BLOCK_FRAMES = 64
#: Magnitudes below this count as digital silence in the phase transform.
_TINY = 1e-30


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """(n_mels, n_fft // 2 + 1) Slaney-normalised mel filters, as the seed builds them."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


class _Frames:
    """Windowed frames of all channels for one transform size, centred like librosa's STFT
    (reflect padding of n_fft // 2 at both ends, frame t centred on sample t * hop)."""

    def __init__(self, audio: np.ndarray, n_fft: int, config: FeatureConfig):
        pad = n_fft // 2
        padded = np.pad(
            np.ascontiguousarray(audio.T, dtype=np.float32), ((0, 0), (pad, pad)), mode="reflect"
        )
        self.view = sliding_window_view(padded, n_fft, axis=-1)[:, :: config.hop_length]
        self.window64 = scipy.signal.get_window(config.window, n_fft, fftbins=True)
        self.window = self.window64.astype(np.float32)

    @property
    def num_frames(self) -> int:
        return self.view.shape[1]

    def spectrum(self, start: int, stop: int, precise: bool = False) -> np.ndarray:
        """(channels, stop - start, n_fft // 2 + 1) spectra of frames start..stop-1.

        complex64 by default; ``precise`` transforms in double precision (complex128), which
        keeps the phase of bins far below the loudest one (e.g. above the cut-off of the
        resampler) exact, as the seed's double-precision FFT does.
        """
        if precise:
            return scipy.fft.rfft(self.view[:, start:stop] * self.window64, axis=-1)
        return scipy.fft.rfft(self.view[:, start:stop] * self.window, axis=-1)


def stft(audio: np.ndarray, n_fft: int, config: FeatureConfig) -> np.ndarray:
    """Centred, reflect-padded STFT of all channels: (samples, channels) ->
    (channels, frames, n_fft // 2 + 1) complex64."""
    frames = _Frames(audio, n_fft, config)
    return frames.spectrum(0, frames.num_frames)


def log_mel(spec: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log mel power in dB (ref 1, amin 1e-10, no top_db): (channels, frames, freq) ->
    (channels, frames, n_mels)."""
    mel_w = mel_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
    )
    power = spec.real**2 + spec.imag**2
    return 10.0 * np.log10(np.maximum(power @ mel_w.T, 1e-10))


def gcc_phat(spec: np.ndarray, n_lags: int, upsample: int = 1) -> np.ndarray:
    """GCC-PHAT of every channel pair (n < m, in the order (0,1), (0,2), ..., (2,3)).

    ``spec``: (channels, frames, freq) of an STFT of size 2 * (freq - 1). Returns
    (pairs, frames, n_lags) float32: lags -n_lags/2 .. n_lags/2 - 1 in units of 1 / ``upsample``
    samples, zero lag at n_lags/2; a positive lag means channel m lags channel n. The values are
    those of the inverse FFT of ``upsample`` times the STFT's size of the cross-power spectrum
    zero-padded (the correlation band-limitedly interpolated, :func:`_gcc_irfft`). With
    ``upsample`` > 1 only the kept lags are computed (:func:`_gcc_direct`, one matrix product for
    all pairs and frames): ~10x faster at ``upsample=8``, ~2x at 2; at 1 the batched inverse FFT
    is as fast, and exact, so it stays.

    The phase transform exp(1j * angle(X_m conj(X_n))) equals U_m conj(U_n) with the unit
    phasors U = X / |X|, so each channel is normalised once instead of each pair; a zero bin
    (digital silence) gives 1, as exp(1j * angle(0)) does.
    """
    cross = _phat_cross_spectra(spec)
    if upsample == 1:
        return _gcc_irfft(cross, n_lags, upsample)
    return _gcc_direct(cross, n_lags, upsample)


def _phat_cross_spectra(spec: np.ndarray) -> np.ndarray:
    """(pairs, frames, freq) complex64 phase-transformed cross-power spectra (see gcc_phat)."""
    magnitude = np.abs(spec)
    normal = magnitude > _TINY
    unit = np.divide(spec, magnitude, out=np.zeros_like(spec), where=normal)
    unit = unit.astype(np.complex64, copy=False)  # unit phasors need no double precision
    first, second = zip(*combinations(range(spec.shape[0]), 2), strict=True)
    cross = unit[list(second)] * np.conj(unit[list(first)])
    cross[~(normal[list(second)] & normal[list(first)])] = 1
    return cross


def _gcc_irfft(cross: np.ndarray, n_lags: int, upsample: int) -> np.ndarray:
    """The kept lags of one batched, zero-padded inverse real FFT of the cross spectra."""
    size = upsample * 2 * (cross.shape[-1] - 1)
    cc = scipy.fft.irfft(cross, n=size, axis=-1)  # single precision in, single precision out
    half = n_lags // 2
    return np.concatenate([cc[..., -half:], cc[..., :half]], axis=-1)


@lru_cache(maxsize=16)
def _gcc_lag_matrix(n_freq: int, n_lags: int, upsample: int) -> np.ndarray:
    """(2 * n_freq, n_lags) float32 matrix taking the interleaved (real, imaginary) parts of a
    cross spectrum to the kept lags of its zero-padded inverse real FFT of size
    N = upsample * 2 * (n_freq - 1): cc[n] = sum_k w_k / N (Re X_k cos(2 pi k n / N) -
    Im X_k sin(2 pi k n / N)), w_k = 2 except w = 1 at DC and, without padding (upsample 1), at
    the Nyquist bin (with padding the last bin is an inner bin of the larger transform). The
    imaginary parts at DC and Nyquist meet sin = 0, so they are ignored as by the inverse FFT.
    """
    size = upsample * 2 * (n_freq - 1)
    half = n_lags // 2
    k = np.arange(n_freq)[:, None]
    lags = np.arange(-half, half)[None, :]
    angle = 2 * np.pi * ((k * lags) % size) / size  # exact integer phase, then radians
    weight = np.full((n_freq, 1), 2.0 / size)
    weight[0] = 1.0 / size
    if upsample == 1:
        weight[-1] = 1.0 / size
    matrix = np.empty((2 * n_freq, n_lags))
    matrix[0::2] = weight * np.cos(angle)
    matrix[1::2] = -weight * np.sin(angle)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False  # shared by the cache
    return matrix


def _gcc_direct(cross: np.ndarray, n_lags: int, upsample: int) -> np.ndarray:
    """The same lags as :func:`_gcc_irfft`, computed directly: one real matrix product of the
    complex64 spectra viewed as interleaved float32 (real, imaginary) pairs, no copy."""
    pairs, n_frames, n_freq = cross.shape
    flat = np.ascontiguousarray(cross, dtype=np.complex64).view(np.float32)
    cc = flat.reshape(pairs * n_frames, 2 * n_freq) @ _gcc_lag_matrix(n_freq, n_lags, upsample)
    return cc.reshape(pairs, n_frames, n_lags)


def intensity_vectors(spec: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mel-band active intensity vectors of FOA (channels W, Y, Z, X), normalised by energy.

    ``spec``: (4, frames, freq) -> (3, frames, n_mels), in the order x, y, z.
    """
    mel_w = mel_filterbank(
        config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
    )
    w, y, z, x = spec
    energy = np.abs(w) ** 2 + (np.abs(x) ** 2 + np.abs(y) ** 2 + np.abs(z) ** 2) / 3.0
    iv = np.stack([np.real(np.conj(w) * c) for c in (x, y, z)]) / np.maximum(energy, 1e-10)
    return iv @ mel_w.T


def extract_features(audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Feature tensor of one recording.

    ``audio``: (samples, channels) at ``config.sample_rate``. Returns (channels, frames, n_mels):
    ``logmel_gcc``: the log-mels of the audio channels, then GCC-PHAT of every pair (10 channels
    for 4 microphones); ``logmel_iv``: 4 log-mels then 3 intensity-vector channels.

    Frames are processed in blocks: per block, one STFT of all channels per transform size, and
    every feature derived from those spectra (the whole-recording spectra of a minute of audio
    would take hundreds of MB, which costs more to allocate than to compute).

    The matrix products run on one BLAS thread: a multi-threaded BLAS sums in another order
    (measured: log-mels 3.8e-6 dB apart between a 2-thread process and a Ray worker), and a
    feature must not depend on where it was computed. Recordings run in parallel instead.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _extract_features(audio, config)


def _extract_features(audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    if audio.ndim != 2:
        raise ValueError(f"audio must be (samples, channels), got shape {audio.shape}")
    if config.kind == "logmel_iv" and audio.shape[1] != 4:
        raise ValueError(f"intensity vectors need 4 FOA channels, got {audio.shape[1]}")
    frames = _Frames(audio, config.n_fft, config)
    gcc_frames = None
    if config.kind == "logmel_gcc" and config.gcc_size != config.n_fft:
        gcc_frames = _Frames(audio, config.gcc_size, config)
    n_frames = frames.num_frames
    out = np.empty((config.num_channels(audio.shape[1]), n_frames, config.n_mels), config.dtype)
    n_audio = audio.shape[1]
    for start in range(0, n_frames, _BLOCK_FRAMES):
        stop = min(start + _BLOCK_FRAMES, n_frames)
        spec = frames.spectrum(start, stop)
        out[:n_audio, start:stop] = log_mel(spec, config)
        if config.kind == "logmel_gcc":
            source = frames if gcc_frames is None else gcc_frames
            gcc_spec = source.spectrum(start, stop, precise=True)
            out[n_audio:, start:stop] = gcc_phat(gcc_spec, config.n_mels, config.gcc_upsample)
        else:
            out[n_audio:, start:stop] = intensity_vectors(spec, config)
    return out
