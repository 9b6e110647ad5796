from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seld.data.dcase import CLASSES, num_label_frames, parse_recording_name
from seld.data.metadata import (
    MAX_TRACKS,
    DatasetError,
    Event,
    event_frame_span,
    events_to_targets,
    format_metadata,
    parse_metadata,
    read_metadata,
    rows_to_targets,
    write_metadata,
)

from conftest import REFERENCE_METADATA

HEADER = "sound_event_recording,start_time,end_time,ele,azi,dist\n"


@pytest.mark.skipif(not REFERENCE_METADATA.is_dir(), reason="shared/reference not beside the repo")
def test_real_dcase2019_metadata_files_parse():
    files = sorted(REFERENCE_METADATA.glob("*.csv"))
    assert len(files) == 4
    for path in files:
        name = parse_recording_name(path.name)
        events = read_metadata(path, duration_s=60.0)
        assert events, path
        assert all(e.label in CLASSES for e in events)
        assert all(0 <= e.start < e.end <= 61 for e in events)
        assert all(e.azimuth % 10 == 0 and e.elevation % 10 == 0 for e in events)
        assert {e.distance for e in events} <= {1, 2}
        targets = events_to_targets(events, num_label_frames(60), 0.02)
        # ov1 files never have two classes at once; ov2 files do somewhere
        polyphony = targets.activity.sum(axis=1).max()
        assert polyphony == (1 if name.ov == 1 else 2), path
    first = read_metadata(REFERENCE_METADATA / "split1_ir0_ov1_1.csv")
    assert first[0] == Event("cough", 0.36645229108, 1.33445229108, -10, -10, 2)


def test_write_then_read_round_trip(tmp_path: Path):
    events = [Event("phone", 0.25, 1.5, 20, -170, 2), Event("knock", 2.0, 2.5, -40, 0, 1)]
    path = tmp_path / "split1_ir0_ov1_0.csv"
    write_metadata(path, events)
    assert path.read_text().startswith(HEADER)
    assert "phone,0.25,1.5,20,-170,2" in path.read_text()
    assert read_metadata(path) == events
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("a,b,c\n", "malformed CSV header"),
        (HEADER + "speech,0.1,0.5,10,20\n", "line 2: malformed CSV row with 5 fields"),
        (HEADER + "dog,0.1,0.5,10,20,1\n", "line 2: unknown class label 'dog'"),
        (HEADER + "speech,0.5,0.1,10,20,1\n", "line 2: end time 0.1 is not after start 0.5"),
        (HEADER + "speech,0.1,zero,10,20,1\n", "line 2: malformed CSV row, non-numeric"),
        (HEADER + "speech,nan,0.5,10,20,1\n", "line 2: NaN or infinite"),
        (HEADER + "speech,-1,0.5,10,20,1\n", "line 2: negative start time"),
        (HEADER + "speech,0.1,0.5,10,200,1\n", "line 2: direction out of range"),
    ],
)
def test_malformed_metadata_names_file_and_problem(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "split1_ir0_ov1_0.csv"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_metadata(path)
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_missing_metadata_and_event_past_end(tmp_path: Path):
    with pytest.raises(DatasetError, match="missing metadata file"):
        read_metadata(tmp_path / "nope.csv")
    path = tmp_path / "split1_ir0_ov1_0.csv"
    write_metadata(path, [Event("speech", 1.0, 12.5, 0, 0, 1)])
    with pytest.raises(DatasetError, match=r"1.000-12.500 s lies past the end of the audio \(10"):
        read_metadata(path, duration_s=10.0)
    assert read_metadata(path, duration_s=12.5)
    # starting after the end is always an error; ending a little after it is clipped, as the
    # official code does for the development set's own such events
    write_metadata(path, [Event("speech", 10.2, 10.5, 0, 0, 1)])
    with pytest.raises(DatasetError, match="lies past the end"):
        read_metadata(path, duration_s=10.0)
    write_metadata(path, [Event("speech", 9.5, 10.6, 0, 0, 1)])
    assert read_metadata(path, duration_s=10.0)


def test_frame_span_follows_official_floor_ceil_inclusive():
    # start 0.3 s -> floor(0.3 * 50) = frame 15, end 0.51 s -> ceil(25.5) = 26, inclusive ->
    # stop 27; like the official code, multiplied: 0.14 * 50 is 7.000000000000001 -> ceil 8
    event = Event("knock", 0.3, 0.51, 0, 0, 1)
    assert event_frame_span(event, 0.02, 3000) == (15, 27)
    assert event_frame_span(Event("knock", 0.1, 0.14, 0, 0, 1), 0.02, 3000) == (5, 9)
    # clipped to the recording
    assert event_frame_span(Event("knock", 59.5, 60.0, 0, 0, 1), 0.02, 3000) == (2975, 3000)
    # at 100 frames per second
    assert event_frame_span(event, 0.01, 6000) == (30, 52)


def test_events_to_targets_any_hop():
    events = [Event("speech", 0.1, 0.3, 10, -40, 1), Event("knock", 0.2, 0.25, -20, 170, 2)]
    for hop, frames in ((0.02, 50), (0.01, 100), (0.1, 10)):
        t = events_to_targets(events, frames, hop)
        assert t.activity.shape == t.azimuth.shape == t.elevation.shape == (frames, 11)
        speech, knock = CLASSES.index("speech"), CLASSES.index("knock")
        active = np.flatnonzero(t.activity[:, speech])
        assert active[0] == round(0.1 / hop) and active[-1] == round(0.3 / hop)
        assert set(t.azimuth[active, speech]) == {-40} and set(t.elevation[active, speech]) == {10}
        assert t.azimuth[t.activity[:, knock] > 0, knock].tolist() == [170] * int(
            t.activity[:, knock].sum()
        )
        # inactive entries are zero and other classes stay silent
        assert t.activity.sum() == t.activity[:, [speech, knock]].sum()
        assert (t.azimuth[t.activity == 0] == 0).all()


def test_format_is_parseable_by_parse_metadata():
    events = [
        Event(label, i * 0.5, i * 0.5 + 0.4, 0, 10 * i - 50, 1) for i, label in enumerate(CLASSES)
    ]
    assert parse_metadata(format_metadata(events)) == events


def test_recording_names():
    name = parse_recording_name("split3_ir4_ov2_57.wav")
    assert (name.split, name.ir, name.ov, name.index) == (3, 4, 2, 57)
    assert name.stem == "split3_ir4_ov2_57"
    with pytest.raises(ValueError, match="not a DCASE 2019 recording name"):
        parse_recording_name("recording_01.wav")
    assert num_label_frames(60) == 3000 and num_label_frames(10.01) == 501


def test_track_targets_keep_every_instance_of_a_class():
    """Two events of one class overlapping: the one-direction targets keep the later one, the
    track targets both, in list order, as unit vectors; a class alone fills its first track."""
    events = [Event("phone", 0.0, 1.0, 0, 90, 1), Event("phone", 0.5, 1.5, 30, 0, 1)]
    events.append(Event("knock", 0.0, 0.5, -90, 0, 1))
    t = events_to_targets(events, 100, 0.02)
    phone, knock = CLASSES.index("phone"), CLASSES.index("knock")
    assert t.tracks.shape == (100, MAX_TRACKS, len(CLASSES), 3)
    np.testing.assert_allclose(t.tracks[10, 0, phone], [0, 1, 0], atol=1e-6)  # azimuth 90
    assert not t.tracks[10, 1:, phone].any()
    np.testing.assert_allclose(t.tracks[30, 0, phone], [0, 1, 0], atol=1e-6)  # both sound
    np.testing.assert_allclose(t.tracks[30, 1, phone], [3**0.5 / 2, 0, 0.5], atol=1e-6)
    assert t.azimuth[30, phone] == 0 and t.elevation[30, phone] == 30  # the later one
    np.testing.assert_allclose(t.tracks[60, 0, phone], t.tracks[30, 1, phone])  # then alone
    np.testing.assert_allclose(t.tracks[5, 0, knock], [0, 0, -1], atol=1e-6)
    norms = np.linalg.norm(t.tracks, axis=-1)
    assert set(np.round(np.unique(norms), 6)) == {0.0, 1.0}
    assert t.distances.shape == t.tracks.shape[:-1]  # each instance's distance in its slot
    assert (t.distances > 0).tolist() == (norms > 0.5).tolist()
    assert t.distances[30, 0, phone] == 1 and t.distances[5, 0, knock] == 1


def test_track_targets_of_rows_follow_the_source_index():
    # frame, class, source, azimuth, elevation at 100 ms; four instances of class 1 in frame 0
    rows = np.array(
        [[0, 1, 3, 0, 0], [0, 1, 0, 90, 0], [0, 1, 2, 180, 0], [0, 1, 1, -90, 0], [1, 4, 0, 0, 90]],
        dtype=np.float64,
    )
    t = rows_to_targets(rows, 10.0, 10, 0.02, 13)  # 20 ms feature frames
    assert t.tracks.shape == (10, MAX_TRACKS, 13, 3)
    expected = [[0, 1, 0], [0, -1, 0], [-1, 0, 0]]  # sources 0, 1, 2; source 3 left out
    for f in range(5):
        np.testing.assert_allclose(t.tracks[f, :, 1], expected, atol=1e-6)
    np.testing.assert_allclose(t.tracks[5:, 0, 4], [[0, 0, 1]] * 5, atol=1e-6)
    assert not t.tracks[5:, :, 1].any() and t.azimuth[0, 1] == 90  # the lowest source index
    assert t.distances is None  # rows without distances


def test_distance_targets_of_rows_sit_in_the_slots_of_their_vectors():
    # frame, class, source, azimuth, elevation, distance (m) at 100 ms
    rows = np.array(
        [[0, 1, 2, 180, 0, 3.5], [0, 1, 0, 90, 0, 1.25], [1, 4, 0, 0, 90, 2.0]], dtype=np.float64
    )
    t = rows_to_targets(rows, 10.0, 10, 0.02, 13)
    assert t.distances.shape == (10, MAX_TRACKS, 13) and t.distances.dtype == np.float32
    for f in range(5):  # source 0 in the first slot, source 2 in the second
        assert t.distances[f, :, 1].tolist() == [1.25, 3.5, 0.0]
        np.testing.assert_allclose(t.tracks[f, :2, 1], [[0, 1, 0], [-1, 0, 0]], atol=1e-6)
    assert (t.distances[5:, 0, 4] == 2.0).all() and t.distances[5:, 1:].sum() == 0
    assert t.distances[:5, :, 4].sum() == 0
    assert rows_to_targets(rows[:0], 10.0, 10, 0.02, 13).distances.sum() == 0  # no rows
    missing = rows.copy()
    missing[1, 5] = np.nan  # a row without a distance: no distance targets at all
    assert rows_to_targets(missing, 10.0, 10, 0.02, 13).distances is None
