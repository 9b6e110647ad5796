"""Fingerprints of a recording's input files, so that a cache is valid only for its inputs.

A feature file records the fingerprints of the audio and metadata it was made from; extraction
redoes a file whose inputs changed, and a fold's scaler records those of its training files.

- Metadata: a hash of the whole file's content (a few kB), so an edited label is always seen,
  and merely touching the file redoes nothing.
- Audio: a hash of its size, modification time (ns) and first and last 64 KiB. Reading the whole
  of 400 one-minute recordings (9 GB) on every run would cost 10 s warm and minutes cold; this
  costs 0.15 ms a file, 0.3 s for the whole check (``bench/fingerprint.py``), and sees a
  rewritten, resynthesized or replaced file. It does not see an in-place edit of the middle of
  a file that also restores the modification time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

_EDGE = 1 << 16


def metadata_fingerprint(path: Path | None) -> str:
    """Content hash of a metadata CSV; ``""`` for a recording without one."""
    if path is None:
        return ""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def audio_fingerprint(path: Path) -> str:
    """Hash of an audio file's size, modification time and first and last 64 KiB."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            fh.seek(-_EDGE, 2)
            digest.update(fh.read(_EDGE))
    return digest.hexdigest()[:16]


def content_fingerprint(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's whole content (hex, 32 characters): the key of features cached for
    recordings that are not part of a dataset (``seld-orch predict``), which may come from
    anywhere and under any name, so only their bytes identify them. Hashing costs about as much
    as reading the file, far less than extracting its features."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def input_fingerprints(audio_path: Path, metadata_path: Path | None) -> dict[str, str]:
    """``{"audio": ..., "metadata": ...}`` of one recording."""
    return {"audio": audio_fingerprint(audio_path), "metadata": metadata_fingerprint(metadata_path)}


def changed_inputs(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Which of ``audio`` and ``metadata`` differ between two fingerprints."""
    return [key for key in ("audio", "metadata") if recorded.get(key) != current.get(key)]


def combined(parts: Mapping[str, Mapping[str, str]]) -> str:
    """One hash of many recordings' fingerprints (keyed by recording), order-independent."""
    digest = hashlib.sha1()
    for stem in sorted(parts):
        digest.update(f"{stem}:{parts[stem].get('audio')}:{parts[stem].get('metadata')};".encode())
    return digest.hexdigest()[:16]
