"""The ``seld-orch`` commands end to end on real files (in process, via Typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from seld.data.submission import read_submission, write_submission
from seld.metrics.reference import score_directories

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    result = invoke(
        "synth", "--out", root, "--per-split", 1, "--seconds", 4, "--num-cpus", 2, "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"] == 4
    return root


def test_synth_then_validate(synth_root: Path):
    assert sorted(p.name for p in synth_root.iterdir()) == ["foa_dev", "metadata_dev", "mic_dev"]
    result = invoke("validate", synth_root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == [] and report["checked"] == 8 and len(report["accepted"]) == 8
    again = invoke("synth", "--out", synth_root, "--per-split", 1, "--seconds", 4, "--json")
    assert json.loads(again.stdout)["written"] == 0  # complete recordings are skipped


def test_validate_names_every_problem(synth_root: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(synth_root, root)
    wav = root / "mic_dev" / "split2_ir1_ov2_1.wav"
    wav.write_bytes(wav.read_bytes()[:1000])
    csv = root / "metadata_dev" / "split3_ir2_ov1_2.csv"
    csv.write_text(csv.read_text().replace("\n", "\nunicorn,0.1,0.2,0,0,1\n", 1))
    result = invoke("validate", root, "--json")
    assert result.exit_code == 1
    problems = {
        (Path(p["file"]).name, p["problem"].split(":")[0])
        for p in json.loads(result.stdout)["problems"]
    }
    assert problems == {
        ("split2_ir1_ov2_1.wav", "truncated WAV"),
        ("split3_ir2_ov1_2.csv", "line 2"),
    }
    text = invoke("validate", root)
    assert text.exit_code == 1 and "unknown class label 'unicorn'" in text.output
    assert "8 audio file(s) checked, 5 accepted, 2 problem(s)" in text.output
    missing = invoke("validate", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "dataset root is not a folder" in missing.output


def test_score_oracle_and_perturbed(synth_root: Path, tmp_path: Path):
    pred = tmp_path / "pred"
    from seld.data.dataset import recording_durations
    from seld.data.dcase import num_label_frames
    from seld.data.metadata import read_metadata
    from seld.metrics.baselines import oracle

    durations = recording_durations(synth_root)
    rng = np.random.default_rng(0)
    for stem, duration in durations.items():
        rows = oracle(
            read_metadata(synth_root / "metadata_dev" / f"{stem}.csv"), num_label_frames(duration)
        )
        write_submission(pred / "oracle" / f"{stem}.csv", rows)
        noisy = rows[rng.random(len(rows)) > 0.1].copy()
        noisy[:, 2] = noisy[:, 2] + rng.choice([-20, 0, 20], len(noisy))
        write_submission(pred / "noisy" / f"{stem}.csv", noisy)
    perfect = invoke(
        "score", "--ref", synth_root / "metadata_dev", "--pred", pred / "oracle", "--json"
    )
    assert perfect.exit_code == 0, perfect.output
    scores = json.loads(perfect.stdout)
    assert scores["overall"]["seld"] == pytest.approx(0, abs=1e-6)
    assert set(scores["groups"]) == {"split", "ov", "ir"}

    result = invoke(
        "score", "--ref", synth_root / "metadata_dev", "--pred", pred / "noisy", "--json"
    )
    overall = json.loads(result.stdout)["overall"]
    expected = score_directories(
        synth_root / "metadata_dev", pred / "noisy", durations=durations
    ).overall
    assert overall["doa_error"] == pytest.approx(expected.doa_error)
    assert 0 < overall["doa_error"] < 20 and overall["frame_recall"] < 1
    # the recording length comes from the audio next to --ref: 4 s, not the 60 s default
    sixty = invoke(
        "score",
        "--ref",
        synth_root / "metadata_dev",
        "--pred",
        pred / "noisy",
        "--duration",
        60,
        "--json",
    )
    assert json.loads(sixty.stdout)["overall"]["frame_recall"] > overall["frame_recall"]
    table = invoke("score", "--ref", synth_root / "metadata_dev", "--pred", pred / "noisy")
    assert "SELD score" in table.output and "split 4" in table.output

    # other metric suites, side by side, with jackknife intervals
    suites = invoke(
        "score",
        "--ref",
        synth_root / "metadata_dev",
        "--pred",
        pred / "noisy",
        "--suite",
        "dcase2019",
        "--suite",
        "dcase2022",
        "--jackknife",
        "--json",
    )
    assert suites.exit_code == 0, suites.output
    both = json.loads(suites.stdout)
    assert both["dcase2019"]["overall"]["seld"] == pytest.approx(overall["seld"])
    assert both["dcase2019"]["per_class"] is None
    loc = both["dcase2022"]
    assert len(loc["per_class"]["f"]) == 11 and set(loc["per_file"]) == set(durations)
    low, high = loc["intervals"]["seld"]
    assert low <= loc["overall"]["seld"] <= high or low < high
    # the oracle is perfect (micro-averaged); macro-averaged, on the classes it has: the
    # official macro average counts a class absent from references and predictions as F 0
    oracle = json.loads(
        invoke(
            "score",
            "--ref",
            synth_root / "metadata_dev",
            "--pred",
            pred / "oracle",
            "--suite",
            "dcase2022",
            "--suite",
            "dcase2022-micro",
            "--json",
        ).stdout
    )
    perfect = {"er": 0, "f": 1, "le": 0, "lr": 1, "seld": 0}
    assert oracle["dcase2022-micro"]["overall"] == pytest.approx(perfect, abs=1e-5)
    macro = oracle["dcase2022"]
    absent = macro["absent_classes"]
    assert 0 < len(absent) < 11
    present = [c for c in range(11) if c not in absent]
    assert [macro["per_class"]["f"][c] for c in present] == pytest.approx([1] * len(present))
    assert [macro["per_class"]["le"][c] for c in absent] == [180.0] * len(absent)
    assert macro["overall"]["f"] == pytest.approx(len(present) / 11)
    shown = invoke(
        "score",
        "--ref",
        synth_root / "metadata_dev",
        "--pred",
        pred / "noisy",
        "--suite",
        "dcase2022",
    )
    assert "F20° ↑" in shown.output and "LE_CD (°) ↓" in shown.output, shown.output
    assert "neither in the references nor predicted" in shown.output
    unknown = invoke(
        "score",
        "--ref",
        synth_root / "metadata_dev",
        "--pred",
        pred / "noisy",
        "--suite",
        "dcase1999",
    )
    assert unknown.exit_code == 2 and "unknown metric suite 'dcase1999'" in unknown.output

    (pred / "noisy" / "split1_ir0_ov1_0.csv").unlink()
    missing = invoke("score", "--ref", synth_root / "metadata_dev", "--pred", pred / "noisy")
    assert missing.exit_code == 2 and "split1_ir0_ov1_0" in missing.output
    assert read_submission(pred / "oracle" / "split1_ir0_ov1_0.csv").shape[1] == 4


def test_folds(synth_root: Path):
    result = invoke("folds", "--dataset", synth_root, "--json")
    folds = json.loads(result.stdout)
    assert [f["test"] for f in folds] == [
        ["split1_ir0_ov1_0"],
        ["split2_ir1_ov2_1"],
        ["split3_ir2_ov1_2"],
        ["split4_ir3_ov2_3"],
    ]
    assert folds[0]["validation"] == ["split2_ir1_ov2_1"] and not folds[0]["leaky"]
    leaky = invoke("folds", "--dataset", synth_root, "--protocol", "seed")
    assert "leaky" in leaky.output


def test_extract_command(synth_root: Path, tmp_path: Path):
    result = invoke(
        "extract",
        "--dataset",
        synth_root,
        "--workspace",
        tmp_path / "ws",
        "--config",
        "tiny",
        "--num-cpus",
        1,
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == 4 and summary["failed"] == {}
    assert len(list(Path(summary["features"]).glob("mic_dev/*.h5"))) == 4


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path: Path):
    ws = tmp_path / "ws"
    result = invoke(
        "demo", "--workspace", ws, "--per-split", 1, "--seconds", 4, "--epochs", 1,
        "--trials", 10, "--suite", "dcase2022", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dataset"]["recordings"] == 4
    assert set(summary["folds"]) == {"1", "2", "3", "4"}
    for key in ("cv_before_tuning", "cv_after_tuning"):
        assert set(summary[key]) >= {"er", "f", "doa_error", "frame_recall", "seld"}
    search = summary["threshold_search"]
    assert search["trials"] == 10
    assert search["validation_tuned"]["seld"] <= search["validation_default"]["seld"]
    assert set(summary["groups_after_tuning"]) >= {"ov1", "ov2"}
    located = summary["suites_after_tuning"]["dcase2022"]
    assert set(located["overall"]) == {"er", "f", "le", "lr", "seld"}
    assert len(located["per_class"]["f"]) == 11 and located["intervals"] is not None
    assert summary["baselines"]["silence"]["er"] == 1
    assert len(list(Path(summary["plots"]).glob("*.png"))) == 4
    # everything in the local MLflow store: the cv run, its fold/stage runs, the threshold search
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    runs = client.search_runs(
        [client.get_experiment_by_name("seld-demo").experiment_id], max_results=100
    )
    kinds = sorted(r.data.tags.get("kind") for r in runs)
    assert kinds == ["cv", "stage", "stage", "stage", "stage", "stage", "stage", "stage",
                     "stage", "tune-thresholds"]  # fmt: skip
    cv = client.get_run(summary["mlflow"]["cv_run"])
    assert cv.data.metrics["cv_seld"] == pytest.approx(summary["cv_before_tuning"]["seld"])
    assert cv.data.metrics["tuned_cv_seld"] == pytest.approx(summary["cv_after_tuning"]["seld"])


def test_docs_cli_reference_is_generated_from_the_cli():
    # that the page is current is tests/test_docs.py's check; here, what it must hold
    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "reference" / "cli.md").read_text()
    for command in ("tune hparams", "tune thresholds", "submit cv", "cluster-check", "demo"):
        assert f"### `seld-orch {command}`" in page
    for option in ("--gpus-per-job", "--suite", "--sbatch"):
        assert f"`{option}`" in page


def test_score_warns_about_what_it_repairs_and_strict_rejects_it(synth_root, tmp_path: Path):
    from seld.data.dataset import recording_durations

    pred = tmp_path / "odd"
    stems = sorted(recording_durations(synth_root))
    for stem in stems:
        write_submission(pred / f"{stem}.csv", np.array([[5, 0, 10, 0]]))
    odd = stems[0]
    write_submission(pred / f"{odd}.csv", np.array([[5, 0, 400, 0], [9999, 1, 0, 0]]))
    result = invoke("score", "--ref", synth_root / "metadata_dev", "--pred", pred, "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # the warnings go to stderr, the JSON stays valid
    warned = " ".join(result.stderr.split())
    assert f"{odd}.csv: 1 row(s) with azimuth outside [-180, 180]" in warned
    assert "frame past the recording's last frame 199 (dropped)" in warned
    strict = invoke("score", "--ref", synth_root / "metadata_dev", "--pred", pred, "--strict")
    assert strict.exit_code == 2 and "azimuth outside" in strict.output


def test_bad_input_is_one_line_and_exit_2_but_a_bug_keeps_its_traceback(tmp_path: Path):
    """A SeldError (here: a missing run) is a message and exit 2; anything else is not caught,
    so it cannot pass for bad input (here: a run's config.json that is not JSON)."""
    missing = invoke("tune", "thresholds", "--run", "nope", "--workspace", tmp_path)
    assert missing.exit_code == 2 and missing.exception is not None
    assert "runs/nope/config.json missing: is 'nope' a finished cv run?" in missing.output
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{not json")
    broken = invoke("tune", "thresholds", "--run", "broken", "--workspace", tmp_path)
    assert broken.exit_code == 1 and isinstance(broken.exception, json.JSONDecodeError)
    assert "error:" not in broken.output
