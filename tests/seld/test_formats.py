"""Dataset formats: the STARSS23 layout read, validated and scored from real WAV and CSV files,
every bad input named by file and line; DCASE 2019 through the same registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from reference_location_aware import Counter
from typer.testing import CliRunner

from orchestrator.cli import app
from seld.data.formats import FORMATS, detect_format, get_format, scoring_pairs
from seld.data.metadata import DatasetError
from seld.errors import ConfigError

SECONDS = 3.0  # 30 label frames of 100 ms
RATE = 24_000


def _moving_rows(rng: np.random.Generator, n_events: int, overlap: bool) -> list[list[float]]:
    rows = []
    for source in range(n_events):
        cls = 4 if overlap else int(rng.integers(0, 13))
        start = int(rng.integers(0, 25))
        az, el, speed = rng.integers(-180, 180), rng.integers(-60, 60), rng.integers(-10, 10)
        for f in range(start, min(30, start + int(rng.integers(3, 12)))):
            azimuth = int((az + speed * (f - start) + 180) % 360 - 180)
            rows.append([f, cls, source, azimuth, int(el)])
    return sorted(rows)


def write_starss(root: Path, seed: int = 0, distance: bool = False) -> dict[str, list]:
    """A small STARSS23-layout development set: two sites x train/test, one recording each,
    FOA and MIC audio (noise), metadata with moving sources and a same-class overlap."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, group in enumerate(("dev-train-sony", "dev-train-tau", "dev-test-sony", "dev-test-tau")):
        stem = f"fold{3 + i // 2}_room{21 + i}_mix00{i + 1}"
        rows = _moving_rows(rng, 4, overlap=i == 1)
        for fmt in ("foa", "mic"):
            wav = root / f"{fmt}_dev" / group / f"{stem}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            audio = 0.01 * rng.standard_normal((int(SECONDS * RATE), 4)).astype(np.float32)
            sf.write(wav, audio, RATE, subtype="PCM_16")
        csv = root / "metadata_dev" / group / f"{stem}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        lines = [",".join(map(str, r + ([150] if distance else []))) for r in rows]
        csv.write_text("\n".join(lines) + "\n")
        out[stem] = rows
    return out


def test_the_registry_and_detection(tmp_path: Path):
    assert set(FORMATS) == {"dcase2019", "starss23", "tau2020", "tau2021"}
    with pytest.raises(ConfigError, match="unknown dataset format 'tau2018'; choose one of"):
        get_format("tau2018")
    write_starss(tmp_path / "starss")
    assert detect_format(tmp_path / "starss").name == "starss23"
    (tmp_path / "d19" / "mic_dev").mkdir(parents=True)
    assert detect_format(tmp_path / "d19").name == "dcase2019"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no registered layout found"):
        detect_format(tmp_path / "empty")


def test_starss_recordings_and_labels(tmp_path: Path):
    rows = write_starss(tmp_path, distance=True)
    fmt = get_format("starss23")
    recordings = fmt.recordings(tmp_path)
    assert [r.group for r in recordings] == [
        "dev-test-sony", "dev-test-tau", "dev-train-sony", "dev-train-tau"
    ]  # fmt: skip
    assert all(set(r.audio) == {"foa", "mic"} and r.metadata is not None for r in recordings)
    first = recordings[2]
    read = fmt.read_reference(first.metadata)
    np.testing.assert_array_equal(read[:, :5], np.array(rows[first.stem], dtype=float))
    assert (read[:, 5] == 1.5).all()  # 150 cm in the file, metres as the 2024 scorer reads it
    assert fmt.validate(tmp_path).ok


def test_starss_predictions_polar_and_cartesian(tmp_path: Path):
    fmt = get_format("starss23")
    polar = tmp_path / "p.csv"
    polar.write_text("3,1,0,90.5,-10\n4,1,0,-170,45\n")
    np.testing.assert_allclose(fmt.read_prediction(polar)[:, 3:5], [[90.5, -10], [-170, 45]])
    cart = tmp_path / "c.csv"
    cart.write_text("3,1,0,0.0,1.0,0.0\n4,2,1,0.5,0.5,0.7071067811865476\n")
    np.testing.assert_allclose(fmt.read_prediction(cart)[:, 3:5], [[90, 0], [45, 45]], atol=1e-9)
    # the 2024 conventions: four columns (no track), polar + distance, Cartesian + distance
    d24 = tmp_path / "d.csv"
    d24.write_text("3,1,90,0\n4,1,2,-90,0,1.5\n5,2,0,0.0,1.0,0.0,2.5\n")
    read = fmt.read_prediction(d24, distances=True)
    np.testing.assert_allclose(read[:, 2:], [[0, 90, 0, np.nan], [2, -90, 0, 1.5], [0, 90, 0, 2.5]])


def test_track_wise_rows_with_distances_are_written_as_the_2024_scorer_reads_them(tmp_path):
    from seld.data.submission import write_tracked_submission

    rows = np.array([[3, 1, 0, 90.123, -10.0, 1.456], [3, 1, 2, -170.0, 45.0, 0.5]])
    write_tracked_submission(tmp_path / "p.csv", rows)
    assert (tmp_path / "p.csv").read_text() == "3,1,0,90.12,-10.00,1.46\n3,1,2,-170.00,45.00,0.50\n"
    read = get_format("starss23").read_prediction(tmp_path / "p.csv", distances=True)
    np.testing.assert_allclose(read, rows, atol=0.005)  # metres both ways
    write_tracked_submission(tmp_path / "five.csv", rows[:, :5])  # no distance: five columns
    assert (tmp_path / "five.csv").read_text().splitlines()[0] == "3,1,0,90.12,-10.00"


def test_which_labels_carry_distances(tmp_path: Path):
    write_starss(tmp_path / "with", distance=True)
    write_starss(tmp_path / "without")
    fmt = get_format("starss23")
    assert fmt.without_distances(tmp_path / "with") == []
    missing = fmt.without_distances(tmp_path / "without")
    assert len(missing) == 4 and all(p.suffix == ".csv" for p in missing)
    assert get_format("dcase2019").without_distances(tmp_path / "without") == []


BAD = {
    "a header line": (
        "frame,class,source,azimuth,elevation\n",
        "line 1: frame 'frame' is not a number",
    ),
    "an unknown class": ("3,13,0,10,0\n", "line 1: unknown class index 13 (0..12)"),
    "a frame past the end": ("0,1,0,10,0\n30,1,0,10,0\n", "line 2: frame 30 outside 0..29"),
    "a negative source": ("3,1,-1,10,0\n", "line 1: negative source index -1"),
    "an impossible elevation": ("3,1,0,10,95\n", "line 1: elevation 95 outside -90..90"),
    "a wrong width": ("3,1,0,10\n", "line 1: 4 columns, expected 5 or 6"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_metadata_file_is_named_and_the_rest_accepted(tmp_path: Path, case: str):
    write_starss(tmp_path)
    text, message = BAD[case]
    broken = tmp_path / "metadata_dev" / "dev-train-tau" / "fold3_room22_mix002.csv"
    broken.write_text(text)
    report = get_format("starss23").validate(tmp_path)
    assert [(p.path, p.problem) for p in report.problems] == [(broken, message)]
    assert len(report.accepted) == 6 and report.checked == 8  # the other three recordings


def test_missing_metadata_folder_bad_audio_and_cli(tmp_path: Path):
    write_starss(tmp_path)
    gone = tmp_path / "metadata_dev" / "dev-test-tau"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    wav = tmp_path / "mic_dev" / "dev-test-sony" / "fold4_room23_mix003.wav"
    sf.write(wav, np.zeros((RATE, 4), dtype=np.float32), 48_000)
    report = get_format("starss23").validate(tmp_path)
    problems = {(p.path.name, p.problem) for p in report.problems}
    assert problems == {
        ("dev-test-tau", "missing metadata sub-folder for its audio"),
        ("fold4_room23_mix003.wav", "sample rate 48000 Hz, expected 24000"),
    }
    result = CliRunner().invoke(app, ["validate", str(tmp_path), "--json"])
    assert result.exit_code == 1
    listed = json.loads(result.stdout)["problems"]
    assert {Path(p["file"]).name for p in listed} == {"dev-test-tau", "fold4_room23_mix003.wav"}


def test_score_the_2024_suite_with_distances(tmp_path: Path):
    """The DCASE 2024 suite on STARSS-layout references with distances (cm) and predictions in
    the 2024 format (polar + distance in metres), equal to the literal frame-wise reference."""
    from reference_frame_wise import Counter as FrameCounter

    rows = write_starss(tmp_path / "data", seed=2, distance=True)
    rng = np.random.default_rng(7)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    counter = FrameCounter(13)
    for stem, ref in rows.items():
        pred = [[*r[:3], r[3] + float(rng.normal(0, 12)), r[4], float(rng.uniform(0.5, 3))]
                for r in ref if rng.random() < 0.85]  # fmt: skip
        (pred_dir / f"{stem}.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in pred))
        counter.add(np.array([[*r, 1.5] for r in ref], float),
                    np.array(pred, float).reshape(-1, 6), max(r[0] for r in ref))  # fmt: skip
    ref_dir = tmp_path / "data" / "metadata_dev"
    result = CliRunner().invoke(
        app, ["score", "--ref", str(ref_dir), "--pred", str(pred_dir), "--suite", "dcase2024",
              "--suite", "dcase2022", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    expected = counter.scores("macro")
    for key in ("er", "f", "doae", "de", "rde", "lr", "seld"):
        assert scores["dcase2024"]["overall"][key] == pytest.approx(float(expected[key]), abs=1e-9)
    assert set(scores["dcase2022"]["overall"]) == {"er", "f", "le", "lr", "seld"}
    # a class in neither side: each suite's own note of how its macro average counts it
    assert scores["dcase2024"]["absent_classes"]
    table = CliRunner().invoke(
        app, ["score", "--ref", str(ref_dir), "--pred", str(pred_dir), "--suite", "dcase2024"]
    )
    assert "its DOA and distance errors are left out" in table.output
    assert "LE 180" not in table.output
    # without distances in the references the 2024 suite says so
    no_distance = tmp_path / "nd"
    write_starss(no_distance, seed=2)
    refused = CliRunner().invoke(
        app, ["score", "--ref", str(no_distance / "metadata_dev"), "--pred", str(pred_dir),
              "--suite", "dcase2024"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "reference: a row without a distance" in refused.output


def test_score_a_starss_layout_with_its_suite(tmp_path: Path):
    """Predictions in the STARSS format (flat folder, as a system writes them), scored by the
    format's default suite at 100 ms and 13 classes, equal the literal reference."""
    rows = write_starss(tmp_path / "data")
    rng = np.random.default_rng(5)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    counter = Counter(13)
    for stem, ref in rows.items():
        pred = [[*r[:3], r[3] + float(rng.normal(0, 12)), r[4]] for r in ref if rng.random() < 0.85]
        (pred_dir / f"{stem}.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in pred))
        counter.add(np.array(ref, float), np.array(pred, float).reshape(-1, 5),
                    max(r[0] for r in ref), 10)  # fmt: skip
    ref_dir = tmp_path / "data" / "metadata_dev"
    result = CliRunner().invoke(
        app, ["score", "--ref", str(ref_dir), "--pred", str(pred_dir), "--jackknife", "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["dcase2022"]
    expected = counter.scores("macro")
    for key in ("er", "f", "le", "lr", "seld"):
        assert scores["overall"][key] == pytest.approx(float(expected[key]), abs=1e-9), key
    assert len(scores["per_class"]["f"]) == 13
    table = CliRunner().invoke(app, ["score", "--ref", str(ref_dir), "--pred", str(pred_dir)])
    assert "starss23 scores" in table.output and "femaleSpeech" in table.output
    pairs = scoring_pairs(get_format("starss23"), ref_dir, pred_dir)
    assert set(pairs) == set(rows)
    (pred_dir / f"{sorted(rows)[0]}.csv").unlink()
    missing = CliRunner().invoke(app, ["score", "--ref", str(ref_dir), "--pred", str(pred_dir)])
    assert missing.exit_code == 2 and "missing predictions for 1 recording(s)" in missing.output
