"""Shared fixtures: small real datasets written to temporary folders, and a local Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seld.metadata import Event, write_metadata

REFERENCE_METADATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / ("dcase2019-metadata-examples")
)


def write_wav(
    path: Path,
    seconds: float = 2.0,
    channels: int = 4,
    sr: int = 48_000,
    seed: int = 0,
    subtype: str = "PCM_16",
) -> Path:
    """A real WAV of quiet noise."""
    rng = np.random.default_rng(seed)
    audio = (0.05 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype)
    return path


DEFAULT_EVENTS = (
    Event("speech", 0.1, 0.9, 10, -40, 1),
    Event("knock", 1.0, 1.5, -20, 170, 2),
)


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny DCASE-layout dataset: ``stems`` in mic_dev and foa_dev with metadata."""

    def make(
        stems=("split1_ir0_ov1_0", "split2_ir1_ov2_1"), seconds: float = 2.0, formats=("mic", "foa")
    ) -> Path:
        root = tmp_path / "dataset"
        for i, stem in enumerate(stems):
            for fmt in formats:
                write_wav(root / f"{fmt}_dev" / f"{stem}.wav", seconds, seed=i)
            write_metadata(root / "metadata_dev" / f"{stem}.csv", DEFAULT_EVENTS)
        return root

    return make


@pytest.fixture
def local_ray():
    """A local Ray of 2 CPUs for one test, started as the commands start theirs."""
    from orchestrator.ray_utils import ray_session

    with ray_session(num_cpus=2):
        yield


def tiny_config(*sets: str, epochs: int | None = None, folds: tuple[int, ...] | None = None):
    """The ``tiny`` experiment config with ``--set``-style overrides, as a cv run holds it."""
    from seld.config import load_config

    overrides = list(sets)
    if epochs is not None:
        overrides += [f"train.epochs={epochs}", "train.steps=null"]
    if folds is not None:
        overrides.append(f"cv.folds={list(folds)}")
    return load_config("tiny", overrides).to_dict()


def tiny_features(fmt: str = "mic", kind: str | None = None):
    """The ``tiny`` preset's features for a format (``kind`` e.g. ``logmel_iv`` for FOA)."""
    from seld.config import load_config

    sets = [f"data.format={fmt}"] + ([f"features.kind={kind}"] if kind else [])
    return load_config("tiny", sets).features


def tiny_train(stage: str, **fields):
    """One stage's training config of the ``tiny`` preset, with fields replaced."""
    from dataclasses import replace

    from seld.config import load_config

    return replace(load_config("tiny").train_config(stage), **fields)
