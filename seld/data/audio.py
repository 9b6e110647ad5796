"""Audio files: header checks (including truncation), reading, resampling."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from seld.data.metadata import DatasetError

#: Samples read per block when scanning a whole file for NaN / Inf.
_SCAN_BLOCK = 1 << 18


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, after checking it against the file's size."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read and check an audio file's header.

    Raises :class:`DatasetError` for a missing, unreadable or truncated file (a WAV whose data
    chunk is shorter than its header declares: libsndfile would silently read the shorter part).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "missing audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DatasetError(path, f"unreadable audio file ({exc})") from None
    if path.suffix.lower() == ".wav":
        _check_wav_complete(path)
    if info.frames <= 0:
        raise DatasetError(path, "audio file holds no samples")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.subtype)


def _check_wav_complete(path: Path) -> None:
    """Walk the RIFF chunks; the data chunk must be as long as its header says."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise DatasetError(path, "unreadable audio file (not a RIFF/WAVE file)")
        if head[:4] == b"RF64":  # 64-bit sizes live in a ds64 chunk; libsndfile checks those
            return
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size > available:
                    raise DatasetError(
                        path,
                        f"truncated WAV: data chunk declares {chunk_size} bytes, "
                        f"the file holds {available}",
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)
    raise DatasetError(path, "truncated WAV: no data chunk")


def read_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = 4,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 of shape (samples, channels), optionally resampled.

    Resampling uses soxr's very-high-quality mode, once, on all channels together.
    Raises :class:`DatasetError` for a truncated or unreadable file, a channel count other than
    ``channels`` (when given), or NaN / Inf samples.
    """
    info = audio_info(path)
    if channels is not None and info.channels != channels:
        raise DatasetError(
            info.path, f"wrong channel count: {info.channels} channels, expected {channels}"
        )
    try:
        audio, sr = sf.read(str(info.path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DatasetError(info.path, f"unreadable audio file ({exc})") from None
    _check_finite(audio, info.path)
    if sample_rate is not None and sr != sample_rate:
        audio, sr = resample(audio, sr, sample_rate), sample_rate
    return audio, sr


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """(samples, channels) float32 audio from ``rate`` to ``target_rate`` Hz, all channels at
    once, with soxr's very-high-quality mode (the one resampler of every feature)."""
    if rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(audio, rate, target_rate, quality="VHQ").astype(np.float32, copy=False)


def scan_audio(path: str | os.PathLike[str], channels: int | None = 4) -> AudioInfo:
    """Check a whole audio file without holding it in memory: header, channels, finite samples."""
    info = audio_info(path)
    if channels is not None and info.channels != channels:
        raise DatasetError(
            info.path, f"wrong channel count: {info.channels} channels, expected {channels}"
        )
    try:
        start = 0
        for block in sf.blocks(
            str(info.path), blocksize=_SCAN_BLOCK, dtype="float32", always_2d=True
        ):
            _check_finite(block, info.path, start)
            start += block.shape[0]
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DatasetError(info.path, f"unreadable audio file ({exc})") from None
    return info


def _check_finite(audio: np.ndarray, path: Path, first_sample: int = 0) -> None:
    """``audio``: (samples, channels); ``first_sample``: index of its first row in the file."""
    bad_rows = ~np.isfinite(audio).all(axis=1)
    if bad_rows.any():
        first_bad = first_sample + int(np.argmax(bad_rows))
        raise DatasetError(path, f"NaN or infinite samples (first at sample {first_bad})")
