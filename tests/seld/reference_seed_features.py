"""A literal re-implementation of the seed implementation's feature algorithm.

The oracle for ``seld.features.spectral`` (tests) and the reference of ``bench/features.py``. Per
channel: a centred, reflect-padded Hann STFT (n_fft 1024, hop 320 at 32 kHz), power through
librosa's mel filters (96 bins from 50 Hz), ``power_to_db(ref=1, amin=1e-10, top_db=None)``. Per
pair (n < m): STFTs of both channels at 2048 points, R = X_m conj(X_n), and for every frame in a
Python loop ``irfft(exp(1j * angle(R)))`` with the last 48 and the first 48 lags kept, in that
order. Written from that description, slow on purpose.
"""

from __future__ import annotations

import librosa
import numpy as np


def seed_features(
    audio: np.ndarray, sample_rate=32_000, n_fft=1024, hop=320, n_mels=96, fmin=50.0
) -> np.ndarray:
    """``audio``: (samples, channels) at ``sample_rate`` -> (channels + pairs, frames, n_mels)."""
    mel_w = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin)
    gcc_n_fft = int(2 ** np.ceil(np.log2(2 * n_fft - 1)))
    channels = audio.T
    logmels, gccs = [], []
    for n in range(channels.shape[0]):
        power = (
            np.abs(
                librosa.stft(
                    y=channels[n],
                    n_fft=n_fft,
                    hop_length=hop,
                    center=True,
                    window="hann",
                    pad_mode="reflect",
                )
            )
            ** 2
        )
        logmels.append(librosa.power_to_db(mel_w @ power, ref=1.0, amin=1e-10, top_db=None).T)
        for m in range(n + 1, channels.shape[0]):
            x_m = librosa.stft(
                y=channels[m],
                n_fft=gcc_n_fft,
                hop_length=hop,
                center=True,
                window="hann",
                pad_mode="reflect",
            )
            x_n = librosa.stft(
                y=channels[n],
                n_fft=gcc_n_fft,
                hop_length=hop,
                center=True,
                window="hann",
                pad_mode="reflect",
            )
            cross = x_m * np.conj(x_n)
            frames = []
            for t in range(cross.shape[1]):
                cc = np.fft.irfft(np.exp(1j * np.angle(cross[:, t])))
                frames.append(np.concatenate((cc[-(n_mels // 2) :], cc[: n_mels // 2])))
            gccs.append(np.array(frames))
    return np.stack(logmels + gccs).astype(np.float32)
