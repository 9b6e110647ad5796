"""Shared fixtures: small real datasets written to temporary folders, and a local Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seld.data.metadata import Event, write_metadata

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


#: the shared end-to-end dataset: one 5 s mic recording per split (4 folds), synthesized once
TINY_DATA = {"seconds": 5, "per_split": 1, "formats": ("mic",), "seed": 5}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The session's tiny DCASE-layout mic dataset, shared by the end-to-end tests.

    Tests read it and never change it: its files are read-only, so a test that tried would
    fail rather than corrupt the others' data. A test that needs other data makes its own."""
    from seld.synth import SynthConfig, synthesize_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize_dataset(root, SynthConfig(**TINY_DATA), workers=2)
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    return root


@pytest.fixture(scope="session")
def tiny_extracted(tiny_data: Path, tmp_path_factory) -> Path:
    """A workspace holding ``tiny_data``'s features under the ``tiny`` preset, extracted once
    (copy it with ``tiny_ws`` before writing into it)."""
    from seld.data.dataset import DatasetLayout
    from seld.features.extraction import extract_recording
    from seld.features.store import feature_root

    ws = tmp_path_factory.mktemp("tiny-ws") / "ws"
    features = tiny_features("mic")
    for rec in DatasetLayout.discover(tiny_data).recordings("mic"):
        extract_recording(rec, features, feature_root(ws, features))
    return ws


@pytest.fixture
def tiny_ws(tiny_extracted: Path, tmp_path: Path) -> Path:
    """A test's own workspace that starts with ``tiny_data``'s extracted features."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(tiny_extracted, ws)
    return ws


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
