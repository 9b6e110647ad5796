"""Synthesis in the STARSS23 layout: files the STARSS23 reader accepts, moving sources heard
where they are labelled, same-class overlaps with their own source indices, distinct sounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_synth import great_circle_deg, intensity_direction, sound_features
from typer.testing import CliRunner

from seld.data.formats import STARSS_CLASSES, TRACKWISE, StarssName, get_format
from seld.metrics.dcase2020 import several_per_frame
from seld.synth import SynthConfig
from seld.synth.sounds import make_sound
from seld.synth.starss import (
    LAYOUTS,
    plan_starss,
    plan_starss_scene,
    synthesize_starss,
    tracks,
)

SR = 24_000


def starss_config(**kw) -> SynthConfig:
    return SynthConfig(**({"layout": "starss23", "sample_rate": SR, "formats": ("mic",)} | kw))


def test_the_starss_layout_is_what_the_starss23_reader_accepts(tmp_path: Path):
    from orchestrator.cli import app

    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--layout", "starss23", "--per-split", "2"]
    args += ["--seconds", "8", "--formats", "mic,foa", "--num-cpus", "2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recordings"] == 4
    fmt = get_format("starss23")
    assert fmt.detect(out)
    report = fmt.validate(out)
    assert report.ok and report.checked == 8, [str(p) for p in report.problems]
    config = starss_config(seconds=8, per_split=2, formats=("mic", "foa"))
    names = {n.stem: n for n in plan_starss(config)}
    recordings = fmt.recordings(out)
    assert sorted((r.group, r.stem) for r in recordings) == [
        ("dev-test-synth", "fold4_room3_mix001"),
        ("dev-test-synth", "fold4_room4_mix002"),
        ("dev-train-synth", "fold3_room1_mix001"),
        ("dev-train-synth", "fold3_room2_mix002"),
    ]
    for rec in recordings:
        for audio in rec.audio.values():
            info = sf.info(str(audio))
            assert (info.channels, info.samplerate, info.frames) == (4, SR, 8 * SR)
        rows = fmt.read_reference(rec.metadata, num_frames=80)
        expected, _ = synthesize_starss(names[rec.stem], config)  # deterministic: made again
        assert np.array_equal(rows[:, :5], expected[:, :5])
        assert np.array_equal(rows[:, 5], expected[:, 5] / 100)  # centimetres in the file
        keys = rows[:, :3].astype(int)
        assert len(np.unique(keys, axis=0)) == len(keys)  # one row per (frame, class, source)
        assert set(rows[:, 5]) <= {1.0, 2.0}


def test_moving_sources_are_heard_from_their_labelled_directions():
    """Anechoic, one track (no overlaps): the FOA intensity of each label frame points where
    the frame's row says, for static and moving sources alike."""
    config = starss_config(seconds=20, formats=("foa",), max_image_order=0, seed=3)
    name = StarssName(3, 1, 1)
    assert tracks(name) == 1
    sources = plan_starss_scene(name, config)
    rows, audio = synthesize_starss(name, config)
    foa = audio["foa"].astype(np.float64)
    moving = [s for s in sources if s.speed]
    assert moving and any(s.speed == 0 for s in sources)
    errors = {True: [], False: []}
    for s in sources:
        frames = list(s.frames(SR))[1:-1]  # whole frames inside the event
        path = {s.azimuth_in(f, SR) for f in frames}
        assert (len(path) > 1) == (s.speed != 0 and len(frames) * abs(s.speed) / 10 > 10)
        for f in frames:
            segment = foa[f * SR // 10 : (f + 1) * SR // 10]
            if np.mean(segment[:, 0] ** 2) < 1e-4:
                continue  # a silent moment of the sound
            azimuth, elevation = intensity_direction(segment)
            (row,) = rows[(rows[:, 0] == f) & (rows[:, 1] == s.cls)]
            errors[bool(s.speed)].append(great_circle_deg(azimuth, elevation, row[3], row[4]))
    assert len(errors[True]) > 10 and len(errors[False]) > 5
    # 10 ms cross-fades at direction changes; otherwise one direction per frame
    assert np.median(errors[True]) < 3.0 and np.percentile(errors[True], 90) < 8.0, errors
    assert np.median(errors[False]) < 3.0, errors


def test_same_class_overlaps_have_their_own_source_indices():
    config = starss_config(seconds=30, per_split=6)
    overlaps = 0
    for name in plan_starss(config):
        sources = plan_starss_scene(name, config)
        active = max(
            sum(s.start <= t < s.stop for s in sources) for t in range(0, config.num_samples, 2400)
        )
        assert active <= tracks(name)
        for a in sources:
            for b in sources:
                if a is not b and a.cls == b.cls and a.start < b.stop and b.start < a.stop:
                    assert a.source != b.source
                    overlaps += 1
    assert overlaps > 0  # three tracks of 13 classes over 3 minutes: some meet


@pytest.mark.parametrize("layout", list(TRACKWISE))  # every track-wise format synthesizes
def test_every_class_of_a_layout_has_its_own_sound(layout: str):
    sounds = LAYOUTS[layout].sounds
    assert tuple(sounds) == get_format(layout).classes
    rng = np.random.default_rng(7)
    features = {
        label: np.stack([sound_features(make_sound(label, rng, 48_000, sounds))
                         for _ in range(16)])
        for label in sounds
    }  # fmt: skip
    every = np.concatenate(list(features.values()))
    mean, std = every.mean(axis=0), every.std(axis=0) + 1e-9
    train = {k: (v[:10] - mean) / std for k, v in features.items()}
    centroids = np.stack([v.mean(axis=0) for v in train.values()])
    correct = []
    for k, label in enumerate(sounds):
        z = (features[label][10:] - mean) / std
        nearest = np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
        correct.append(float(np.mean(nearest == k)))
    assert np.mean(correct) > 0.8 and min(correct) >= 0.5, dict(
        zip(STARSS_CLASSES, correct, strict=True)
    )


def test_the_starss_layout_needs_its_sample_rate():
    for layout in ("starss23", "tau2020", "tau2021"):
        with pytest.raises(ValueError, match="24000 Hz"):
            SynthConfig(layout=layout)
    with pytest.raises(ValueError, match="layout must be one of"):
        SynthConfig(layout="tau2019", sample_rate=SR)


@pytest.mark.parametrize("layout", ["tau2020", "tau2021"])
def test_tau_nigens_layouts_are_what_their_readers_accept(layout: str, tmp_path: Path):
    from seld.data.formats import detect_format
    from seld.synth import synthesize_dataset

    config = starss_config(layout=layout, seconds=6, per_split=1)
    synthesize_dataset(tmp_path, config, workers=1)
    fmt = detect_format(tmp_path)
    assert fmt.name == layout
    report = fmt.validate(tmp_path)
    assert report.ok and report.checked == 6, [str(p) for p in report.problems]
    recordings = fmt.recordings(tmp_path)
    names = {n.stem: n for n in plan_starss(config)}
    assert sorted(r.stem for r in recordings) == sorted(names)
    groups = {r.stem[:5]: r.group for r in recordings}
    if layout == "tau2021":
        train = dict.fromkeys(("fold1", "fold2", "fold3", "fold4"), "dev-train")
        assert groups == {**train, "fold5": "dev-val", "fold6": "dev-test"}
    else:
        assert set(groups.values()) == {""} and all("_ov" in r.stem for r in recordings)
    for rec in recordings:
        rows = fmt.read_reference(rec.metadata)
        expected, _ = synthesize_starss(names[rec.stem], config)
        assert expected.shape[1] == 5 and np.isnan(rows[:, 5]).all()  # no distances
        assert np.array_equal(rows[:, :5], expected)
        assert rows[:, 1].max() < len(fmt.classes)
        if layout == "tau2020":  # one instance of a class at a time, as the 2020 metric needs
            assert not several_per_frame(rows)
