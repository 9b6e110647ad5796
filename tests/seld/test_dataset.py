from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seld.data.audio import audio_info, read_audio
from seld.data.dataset import DatasetLayout, recording_durations, validate_dataset
from seld.data.metadata import DatasetError

from conftest import write_wav


def test_discover_and_list(make_dataset):
    root = make_dataset()
    (root / "mic_eval").mkdir()
    write_wav(root / "mic_eval" / "split0_ir0_ov1_0.wav", 1.0)
    layout = DatasetLayout.discover(root)
    assert layout.formats("dev") == ("mic", "foa")
    assert layout.formats("eval") == ("mic",)
    recs = layout.recordings("mic")
    assert [r.stem for r in recs] == ["split1_ir0_ov1_0", "split2_ir1_ov2_1"]
    assert recs[0].metadata_path == root / "metadata_dev" / "split1_ir0_ov1_0.csv"
    assert layout.recordings("mic", "eval")[0].metadata_path is None
    assert recording_durations(root) == {"split1_ir0_ov1_0": 2.0, "split2_ir1_ov2_1": 2.0}


def test_discover_rejects_non_dataset(tmp_path: Path):
    with pytest.raises(DatasetError, match="not a DCASE 2019 layout"):
        DatasetLayout.discover(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        DatasetLayout.discover(tmp_path / "missing")


def test_read_audio_resamples_once_with_high_quality(tmp_path: Path):
    sr = 48_000
    t = np.arange(sr) / sr
    tone = np.stack([np.sin(2 * np.pi * 1000 * t)] * 4, axis=1).astype(np.float32) * 0.5
    path = tmp_path / "tone.wav"
    sf.write(path, tone, sr, subtype="FLOAT")
    audio, out_sr = read_audio(path, sample_rate=32_000)
    assert out_sr == 32_000 and audio.shape == (32_000, 4) and audio.dtype == np.float32
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(32_000) / 32_000)
    # away from the edges the resampled tone matches the ideal one closely
    assert np.max(np.abs(audio[1000:-1000, 0] - ref[1000:-1000])) < 1e-3
    same, same_sr = read_audio(path)
    assert same_sr == sr and np.array_equal(same, tone)


def test_audio_problems_are_named(tmp_path: Path):
    good = write_wav(tmp_path / "good.wav", 1.0)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated WAV: data chunk declares") as info:
        audio_info(truncated)
    assert info.value.path == truncated
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(DatasetError, match="unreadable audio file"):
        audio_info(junk)
    stereo = write_wav(tmp_path / "stereo.wav", 1.0, channels=2)
    with pytest.raises(DatasetError, match="wrong channel count: 2 channels, expected 4"):
        read_audio(stereo)
    nan = tmp_path / "nan.wav"
    audio = np.zeros((4800, 4), dtype=np.float32)
    audio[1234, 2] = np.nan
    sf.write(nan, audio, 48_000, subtype="FLOAT")
    with pytest.raises(DatasetError, match="NaN or infinite samples \\(first at sample 1234\\)"):
        read_audio(nan)
    with pytest.raises(DatasetError, match="missing audio file"):
        audio_info(tmp_path / "absent.wav")


def test_validate_reports_every_problem_and_accepts_the_rest(make_dataset):
    stems = [f"split{s}_ir{s % 5}_ov{1 + s % 2}_{s}" for s in range(1, 5)] + [
        f"split1_ir{i}_ov1_{10 + i}" for i in range(6)
    ]
    root = make_dataset(stems)
    meta = root / "metadata_dev"
    header = "sound_event_recording,start_time,end_time,ele,azi,dist\n"
    # 1. truncated mic WAV
    wav = root / "mic_dev" / "split1_ir1_ov2_1.wav"
    wav.write_bytes(wav.read_bytes()[:5000])
    # 2. wrong channel count (foa)
    write_wav(root / "foa_dev" / "split2_ir2_ov1_2.wav", 2.0, channels=3)
    # 3. NaN samples
    bad = np.zeros((96_000, 4), dtype=np.float32)
    bad[50_000, 0] = np.inf
    sf.write(root / "mic_dev" / "split3_ir3_ov2_3.wav", bad, 48_000, subtype="FLOAT")
    sf.write(root / "foa_dev" / "split3_ir3_ov2_3.wav", np.zeros_like(bad), 48_000)
    # 4. missing metadata
    (meta / "split4_ir4_ov1_4.csv").unlink()
    # 5. unknown class label, 6. end before start, 7. event past the end, 8. malformed CSV
    (meta / "split1_ir0_ov1_10.csv").write_text(header + "dog,0.1,0.5,0,0,1\n")
    (meta / "split1_ir1_ov1_11.csv").write_text(header + "speech,0.9,0.5,0,0,1\n")
    (meta / "split1_ir2_ov1_12.csv").write_text(header + "speech,0.5,9.0,0,0,1\n")
    (meta / "split1_ir3_ov1_13.csv").write_text(header + "speech;0.5;0.9;0;0;1\n")
    # 9. metadata without audio, 10. a stray file name, 11. a recording in one format only,
    # 12. formats of different lengths
    (root / "foa_dev" / "split1_ir4_ov1_14.wav").unlink()
    write_wav(root / "foa_dev" / "split1_ir5_ov1_15.wav", 1.5)
    (meta / "split4_ir0_ov1_99.csv").write_text(header)
    write_wav(root / "mic_dev" / "recording.wav", 1.0)

    report = validate_dataset(root)
    found = {
        (p.path.relative_to(root).as_posix(), p.problem.split(" (")[0].split(":")[0])
        for p in report.problems
    }
    expected = {
        ("mic_dev/split1_ir1_ov2_1.wav", "truncated WAV"),
        ("foa_dev/split2_ir2_ov1_2.wav", "wrong channel count"),
        ("mic_dev/split3_ir3_ov2_3.wav", "NaN or infinite samples"),
        ("metadata_dev/split4_ir4_ov1_4.csv", "missing metadata file"),
        ("metadata_dev/split1_ir0_ov1_10.csv", "line 2"),
        ("metadata_dev/split1_ir1_ov1_11.csv", "line 2"),
        (
            "metadata_dev/split1_ir2_ov1_12.csv",
            "event speech at 0.500-9.000 s lies past the end of the audio",
        ),
        ("metadata_dev/split1_ir3_ov1_13.csv", "line 2"),
        ("metadata_dev/split4_ir0_ov1_99.csv", "metadata without a matching recording"),
        ("mic_dev/recording.wav", "unexpected file name"),
        ("foa_dev/split1_ir4_ov1_14.wav", "missing audio file"),
        (
            "foa_dev/split1_ir5_ov1_15.wav",
            f"length 1.500 s differs from {root}/mic_dev/split1_ir5_ov1_15.wav",
        ),
    }
    assert found == expected, sorted(found ^ expected)
    messages = " | ".join(str(p) for p in report.problems)
    assert "unknown class label 'dog'" in messages and "end time 0.5 is not after start" in messages
    assert "line 2: malformed CSV row with 1 fields, expected 6" in messages
    # the untouched recordings are accepted in both formats, and the intact format of a
    # recording whose other format is broken
    accepted = {p.relative_to(root).as_posix() for p in report.accepted}
    assert accepted == {"mic_dev/split1_ir4_ov1_14.wav", "mic_dev/split1_ir5_ov1_15.wav"} | {
        "foa_dev/split1_ir1_ov2_1.wav",
        "mic_dev/split2_ir2_ov1_2.wav",
        "foa_dev/split3_ir3_ov2_3.wav",
    }
    assert report.checked == 2 * len(stems) - 1
    assert not report.ok


def test_validate_clean_dataset(make_dataset):
    report = validate_dataset(make_dataset())
    assert report.ok and len(report.accepted) == 4


def test_validate_a_missing_format_folder_is_an_error(make_dataset):
    root = make_dataset(formats=("foa",))
    with pytest.raises(DatasetError, match="no mic_dev or mic_eval folder"):
        validate_dataset(root, formats=("mic",))


def test_unknown_split_is_named_and_a_bom_is_accepted(make_dataset):
    from seld.data.metadata import read_metadata

    root = make_dataset(stems=("split1_ir0_ov1_0", "split5_ir0_ov1_0"), formats=("mic",))
    csv = root / "metadata_dev" / "split1_ir0_ov1_0.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # as spreadsheet programs save it
    report = validate_dataset(root)
    assert [(p.path.name, "split 5" in p.problem) for p in report.problems] == [
        ("split5_ir0_ov1_0.wav", True)
    ]
    assert [p.name for p in report.accepted] == ["split1_ir0_ov1_0.wav"]
    assert len(read_metadata(csv, 2.0)) == 2


def test_off_grid_directions_and_same_class_overlaps_are_warnings(make_dataset):
    from seld.data.metadata import Event, write_metadata

    root = make_dataset(stems=("split1_ir0_ov2_0",), formats=("mic",))
    csv = root / "metadata_dev" / "split1_ir0_ov2_0.csv"
    events = (
        Event("speech", 0.1, 0.9, 50, 175, 1),  # elevation 50, azimuth 175: off the grid
        Event("speech", 0.5, 1.5, 0, 20, 1),  # overlaps the first speech
    )
    write_metadata(csv, events)
    report = validate_dataset(root)
    assert report.ok and len(report.accepted) == 1
    warnings = [w.problem for w in report.warnings]
    assert len(warnings) == 2 and all(w.path == csv for w in report.warnings)
    assert "azimuth 175, elevation 50" in warnings[0] and "off the DCASE 2019 grid" in warnings[0]
    assert "two speech events overlap at 0.5-0.9 s" in warnings[1]
