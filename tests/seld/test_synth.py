"""The synthetic scene generator: layout, determinism, resumability, physics, class sounds."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import pytest
import soundfile as sf
from scipy import signal

from seld.data.dcase import (
    AZIMUTH_GRID,
    CLASSES,
    ELEVATION_GRID,
    MAX_ELEVATION_AT_DISTANCE,
    METADATA_HEADER,
    MIC_CAPSULES_DEG,
    MIC_RADIUS_M,
    RecordingName,
    parse_recording_name,
)
from seld.data.metadata import read_metadata
from seld.synth import (
    ROOM_SPECS,
    SOUNDS,
    SynthConfig,
    SynthesisError,
    make_sound,
    missing_recordings,
    plan_recordings,
    synthesize_dataset,
    synthesize_recording,
    writer,
)
from seld.synth.rooms import capsule_positions, room_responses, source_position, spatialize

SR = 48_000
C = pra.constants.get("c")


def great_circle_deg(az1: float, el1: float, az2: float, el2: float) -> float:
    a1, e1, a2, e2 = np.radians([az1, el1, az2, el2])
    cos = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(a1 - a2)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def intensity_direction(foa: np.ndarray) -> tuple[float, float]:
    """(azimuth, elevation) in degrees of the mean active intensity W * (X, Y, Z) of ``foa``
    ``(samples, 4)`` in W, Y, Z, X order."""
    ix, iy, iz = (foa[:, [3, 1, 2]] * foa[:, [0]]).mean(axis=0)
    return float(np.degrees(np.arctan2(iy, ix))), float(
        np.degrees(np.arctan2(iz, np.hypot(ix, iy)))
    )


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------- naming


def test_plan_covers_rooms_and_overlaps_in_every_split():
    names = plan_recordings(SynthConfig(per_split=10))
    assert len(names) == 40 and len({n.stem for n in names}) == 40
    assert [n.index for n in names] == list(range(40))
    for name in names:
        assert parse_recording_name(name.stem + ".wav") == name
    for split in (1, 2, 3, 4):
        pairs = {(n.ir, n.ov) for n in names if n.split == split}
        assert pairs == set(itertools.product(range(5), (1, 2)))
    small = plan_recordings(SynthConfig(per_split=2))
    for split in (1, 2, 3, 4):
        assert {n.ov for n in small if n.split == split} == {1, 2}
    assert {n.ir for n in small} == set(range(5))
    # names do not depend on which splits are asked for
    assert plan_recordings(SynthConfig(per_split=2, splits=(3,))) == [
        n for n in small if n.split == 3
    ]


# ---------------------------------------------------------------------------------- layout

LAYOUT = SynthConfig(seconds=4.0, per_split=3, splits=(1, 2), seed=3)


@pytest.fixture(scope="module")
def layout_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "dataset"
    assert synthesize_dataset(root, LAYOUT, workers=2) == plan_recordings(LAYOUT)
    return root


def test_dataset_layout_and_files_are_dcase(layout_dataset: Path):
    names = plan_recordings(LAYOUT)
    assert {n.ir for n in names} == set(range(5)) and {n.ov for n in names} == {1, 2}
    assert sorted(p.name for p in layout_dataset.iterdir()) == [
        "foa_dev",
        "metadata_dev",
        "mic_dev",
    ]
    for folder, suffix in (("metadata_dev", ".csv"), ("mic_dev", ".wav"), ("foa_dev", ".wav")):
        # every file is a finished recording: no temporary files are left behind
        assert sorted(p.name for p in (layout_dataset / folder).iterdir()) == sorted(
            n.stem + suffix for n in names
        )
    for name in names:
        csv = layout_dataset / "metadata_dev" / f"{name.stem}.csv"
        assert csv.read_text().splitlines()[0] == ",".join(METADATA_HEADER)
        events = read_metadata(csv, duration_s=LAYOUT.seconds)
        assert len(events) >= 2, name
        for fmt in ("mic", "foa"):
            info = sf.info(str(layout_dataset / f"{fmt}_dev" / f"{name.stem}.wav"))
            assert (info.channels, info.samplerate, info.frames) == (4, SR, 4 * SR)
            assert (info.format, info.subtype) == ("WAV", "PCM_16")
        for e in events:
            assert 0 <= e.start < e.end < LAYOUT.seconds
            assert e.azimuth in AZIMUTH_GRID and e.elevation in ELEVATION_GRID
            assert e.distance in MAX_ELEVATION_AT_DISTANCE
            assert abs(e.elevation) <= MAX_ELEVATION_AT_DISTANCE[int(e.distance)]
        assert [e.start for e in events] == sorted(e.start for e in events)


def test_overlap_rules(layout_dataset: Path):
    for name in plan_recordings(LAYOUT):
        events = read_metadata(layout_dataset / "metadata_dev" / f"{name.stem}.csv")
        for a, b in itertools.combinations(events, 2):
            overlap = a.start < b.end and b.start < a.end
            if name.ov == 1:
                assert not overlap, (name, a, b)
            elif overlap:
                assert (a.azimuth, a.elevation) != (b.azimuth, b.elevation), (name, a, b)
                assert a.label != b.label, (name, a, b)
        for t in [e.start for e in events]:
            assert sum(e.start <= t < e.end for e in events) <= name.ov, (name, t)


def test_events_are_audible_where_labelled(layout_dataset: Path):
    for name in plan_recordings(LAYOUT):
        if name.ov != 1:
            continue
        events = read_metadata(layout_dataset / "metadata_dev" / f"{name.stem}.csv")
        for fmt in ("mic", "foa"):
            audio, _ = sf.read(layout_dataset / f"{fmt}_dev" / f"{name.stem}.wav")
            assert 0.5 < np.max(np.abs(audio)) < 1.0
            active = np.zeros(len(audio), dtype=bool)
            for e in events:
                active[round(e.start * SR) : round(e.end * SR)] = True
            on, off = np.mean(audio[active] ** 2), np.mean(audio[~active] ** 2)
            assert 10 * np.log10(on / off) > 6, (name, fmt)


# ------------------------------------------------------------------ determinism and reruns

SMALL = SynthConfig(seconds=3.0, per_split=1, splits=(1, 2))


def test_same_seed_same_bytes_regardless_of_workers(tmp_path: Path):
    synthesize_dataset(tmp_path / "a", SMALL, workers=1)
    synthesize_dataset(tmp_path / "b", SMALL, workers=2)
    synthesize_dataset(tmp_path / "c", SynthConfig(seconds=3.0, per_split=1, splits=(1, 2), seed=1))
    a, b, c = (files_of(tmp_path / d) for d in "abc")
    assert len(a) == 6 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_mic_audio_does_not_depend_on_foa_being_made():
    name = RecordingName(1, 2, 2, 0)
    events, both = synthesize_recording(name, SMALL)
    events_mic, mic_only = synthesize_recording(
        name, SynthConfig(seconds=3.0, per_split=1, formats=("mic",))
    )
    assert events == events_mic and list(mic_only) == ["mic"]
    np.testing.assert_array_equal(both["mic"], mic_only["mic"])
    assert both["mic"].dtype == np.float32 and both["mic"].shape == (3 * SR, 4)


def test_rerun_makes_only_what_is_missing(tmp_path: Path):
    config = SynthConfig(seconds=2.0, per_split=1, splits=(1, 2))
    first, second = plan_recordings(config)
    assert synthesize_dataset(tmp_path, config, workers=1) == [first, second]
    before = files_of(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    deleted = tmp_path / "foa_dev" / f"{second.stem}.wav"
    deleted.unlink()
    assert missing_recordings(tmp_path, config) == [second]
    reported: list[RecordingName] = []
    assert synthesize_dataset(tmp_path, config, workers=1, progress=reported.append) == [second]
    assert reported == [second]
    assert files_of(tmp_path) == before  # the same bytes again
    for path, mtime in mtimes.items():
        if second.stem not in path.name:
            assert path.stat().st_mtime_ns == mtime, path
    assert synthesize_dataset(tmp_path, config, workers=1, progress=reported.append) == []
    assert reported == [second]


# -------------------------------------------------------------------------------- physics


def gcc_phat_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 16, upsample: int = 16) -> float:
    """Delay of ``a`` relative to ``b`` in (fractional) samples, by upsampled GCC-PHAT."""
    n = 2 * len(a)
    cross = np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n))
    cc = np.fft.irfft(cross / (np.abs(cross) + 1e-12), n * upsample)
    window = np.concatenate([cc[-max_lag * upsample :], cc[: max_lag * upsample + 1]])
    return (np.argmax(window) - max_lag * upsample) / upsample


DIRECTIONS = [(0, 0, 1), (90, 30, 1), (-135, -40, 1), (170, 20, 2), (-60, -10, 2), (40, -20, 2)]


@pytest.mark.parametrize(("azimuth", "elevation", "distance"), DIRECTIONS)
def test_mic_time_differences_match_the_capsule_geometry(azimuth, elevation, distance):
    responses = room_responses(1, azimuth, elevation, distance, SR, max_order=0).mic
    noise = np.random.default_rng(0).standard_normal(SR // 8)
    mic = spatialize(noise, responses)

    # geometry from the dataset's description, independently of seld.synth.rooms
    def direction(az: float, el: float) -> np.ndarray:
        az, el = np.radians(az), np.radians(el)
        return np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])

    capsules = np.stack([MIC_RADIUS_M * direction(az, el) for az, el in MIC_CAPSULES_DEG])
    source = distance * direction(azimuth, elevation)
    arrival = np.linalg.norm(source - capsules, axis=1) / C * SR
    # sample 0 of an impulse response is the emission time
    np.testing.assert_allclose(np.argmax(np.abs(responses), axis=0), arrival, atol=1)
    for i, j in itertools.combinations(range(4), 2):
        lag = gcc_phat_lag(mic[:, i], mic[:, j])
        assert lag == pytest.approx(arrival[i] - arrival[j], abs=0.1), (i, j)


def test_foa_intensity_points_at_the_labelled_direction_anechoic():
    config = SynthConfig(seconds=8.0, max_image_order=0, seed=5)
    name = RecordingName(1, 3, 1, 0)
    events, audio = synthesize_recording(name, config)
    assert len(events) >= 4
    for e in events:
        segment = audio["foa"][round(e.start * SR) : round(e.end * SR)].astype(np.float64)
        azimuth, elevation = intensity_direction(segment)
        assert great_circle_deg(azimuth, elevation, e.azimuth, e.elevation) < 3.0, e
    # both formats hold the same scene: W against the capsules' mean below 1 kHz
    sos = signal.butter(4, 1000, fs=SR, output="sos")
    w = signal.sosfilt(sos, audio["foa"][:, 0])
    mic = signal.sosfilt(sos, audio["mic"].mean(axis=1))
    assert np.corrcoef(w, mic)[0, 1] > 0.95


@pytest.mark.parametrize("ir", [2, 4])
def test_foa_intensity_of_the_direct_sound_in_reverberant_rooms(ir: int):
    noise = np.random.default_rng(1).standard_normal(SR // 4)
    for azimuth, elevation, distance in DIRECTIONS:
        responses = room_responses(ir, azimuth, elevation, distance, SR)
        foa = spatialize(noise, responses.foa)
        arrival = round(distance / C * SR)
        onset = foa[arrival : arrival + round(0.01 * SR)]
        error = great_circle_deg(*intensity_direction(onset), azimuth, elevation)
        assert error < 15.0, (azimuth, elevation, distance, error)
        # and the room does reverberate: energy well after the direct sound
        w = responses.foa[:, 0].astype(np.float64)
        late = np.sum(w[arrival + round(0.05 * SR) :] ** 2) / np.sum(w**2)
        assert late > 0.05


def test_mic_responses_are_pyroomacoustics_own():
    spec = ROOM_SPECS[0]
    ours = room_responses(0, -120, 30, 1, SR).mic
    room = pra.ShoeBox(
        list(spec.size), fs=SR, materials=pra.Material(spec.absorption), max_order=spec.max_order
    )
    room.add_source(source_position(spec, -120, 30, 1))
    room.add_microphone_array(capsule_positions(spec.array_center))
    room.compute_rir()
    delay = pra.constants.get("frac_delay_length") // 2  # ours start at the emission time
    for m in range(4):
        theirs = np.asarray(room.rir[m][0])[delay:]
        n = min(len(theirs), len(ours))
        np.testing.assert_allclose(ours[:n, m], theirs[:n], atol=1e-5 * np.max(np.abs(theirs)))


def test_rooms_fit_every_direction_and_reverberate_as_specified():
    measured = []
    for ir, spec in enumerate(ROOM_SPECS):
        for distance, limit in MAX_ELEVATION_AT_DISTANCE.items():
            for azimuth in AZIMUTH_GRID:
                for elevation in (e for e in ELEVATION_GRID if abs(e) <= limit):
                    position = source_position(spec, azimuth, elevation, distance)
                    margin = min(np.min(position), np.min(np.asarray(spec.size) - position))
                    assert margin >= 0.3, (spec.name, azimuth, elevation, distance)
        rir = room_responses(ir, 50, 0, 2, SR).mic[:, 0]
        rt60 = pra.experimental.measure_rt60(rir, SR, decay_db=30)
        assert rt60 == pytest.approx(spec.rt60, rel=0.3), spec.name
        measured.append(rt60)
    assert max(measured) > 2.5 * min(measured)
    assert len({spec.size for spec in ROOM_SPECS}) == 5


# ---------------------------------------------------------------------------- class sounds


def sound_features(x: np.ndarray) -> np.ndarray:
    """Log band-energy statistics (24 log-spaced bands, 50 Hz-20 kHz) and envelope statistics."""
    freqs, _, spec = signal.stft(x, SR, nperseg=1024, noverlap=512)
    power = np.abs(spec) ** 2
    edges = np.geomspace(50.0, 20000.0, 25)
    bands = np.stack(
        [power[(freqs >= lo) & (freqs < hi)].sum(axis=0) for lo, hi in itertools.pairwise(edges)]
    )
    log_bands = 10 * np.log10(bands + 1e-10)
    loudness = 10 * np.log10(power.sum(axis=0) + 1e-10)
    loud = loudness > loudness.max() - 20
    shape = log_bands[:, loud].mean(axis=1)
    envelope = [loudness[loud].std(), loud.mean(), np.abs(np.diff(loudness)).mean(), len(x) / SR]
    return np.concatenate([shape - shape.max(), log_bands[:, loud].std(axis=1), envelope])


def test_every_class_has_its_own_sound():
    assert tuple(SOUNDS) == CLASSES
    rng = np.random.default_rng(42)
    train = {
        label: [sound_features(make_sound(label, rng, SR)) for _ in range(12)] for label in CLASSES
    }
    test = {
        label: [sound_features(make_sound(label, rng, SR)) for _ in range(8)] for label in CLASSES
    }
    all_train = np.concatenate([np.stack(v) for v in train.values()])
    mean, std = all_train.mean(axis=0), all_train.std(axis=0) + 1e-9
    centroids = np.stack([((np.stack(v) - mean) / std).mean(axis=0) for v in train.values()])
    correct = {}
    for k, label in enumerate(CLASSES):
        z = (np.stack(test[label]) - mean) / std
        nearest = np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
        correct[label] = float(np.mean(nearest == k))
    # chance is 1 / 11; every class must be recognised most of the time
    assert np.mean(list(correct.values())) > 0.85, correct
    assert min(correct.values()) >= 0.5, correct


@pytest.mark.parametrize("label", CLASSES)
def test_sounds_vary_and_have_dcase_like_lengths(label: str):
    rng = np.random.default_rng(7)
    sounds = [make_sound(label, rng, SR) for _ in range(6)]
    lengths = [len(s) / SR for s in sounds]
    assert all(0.15 <= length <= 3.2 for length in lengths), lengths
    assert len({round(length, 3) for length in lengths}) > 1
    assert all(np.isfinite(s).all() and np.max(np.abs(s)) > 0 for s in sounds)
    again = make_sound(label, np.random.default_rng(7), SR)
    np.testing.assert_array_equal(again, sounds[0])


# ---------------------------------------------------------------------------------- errors


def test_bad_settings_and_failures_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="formats"):
        SynthConfig(formats=("binaural",))
    with pytest.raises(ValueError, match="max_image_order"):
        SynthConfig(max_image_order=-1)
    with pytest.raises(ValueError, match=r"rooms are ir0\.\.ir4"):
        synthesize_recording(RecordingName(1, 7, 1, 0), SMALL)
    with pytest.raises(ValueError, match="workers"):
        synthesize_dataset(tmp_path, SMALL, workers=0)

    def broken(name: RecordingName, config: SynthConfig):
        raise MemoryError("out of memory")

    monkeypatch.setattr(writer, "synthesize_recording", broken)
    with pytest.raises(SynthesisError, match="split1_ir0_ov1_0") as info:
        synthesize_dataset(tmp_path, SMALL, workers=1)
    assert isinstance(info.value.__cause__, MemoryError)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
