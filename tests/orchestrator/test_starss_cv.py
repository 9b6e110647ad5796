"""A STARSS23-layout dataset end to end through the CLI: synth -> validate -> extract -> a tiny
cv on its official fold -> score, with the format's default suite (DCASE 2022) and others side
by side; bad metadata named by file and line while the other recordings complete."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from seld.data.folds import make_folds
from seld.data.formats import StarssName, get_format
from seld.data.metadata import rows_to_targets
from seld.errors import ConfigError
from seld.features.store import reference_rows
from seld.methods.inference import to_label_rate
from seld.metrics.suites import get_suite, score_recordings

RUNNER = CliRunner()


def invoke(*args: str):
    result = RUNNER.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def starss_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("starss") / "data"
    invoke("synth", "--out", str(root), "--layout", "starss23", "--per-split", "5",
           "--seconds", "10", "--formats", "mic", "--num-cpus", "2")  # fmt: skip
    return root


def test_a_starss_dataset_trains_and_scores_end_to_end(starss_data: Path, tmp_path: Path):
    data, ws = starss_data, tmp_path / "ws"
    assert "0 problem(s)" in invoke("validate", str(data)).stdout

    extracted = json.loads(invoke("extract", "--dataset", str(data), "--workspace", str(ws),
                                  "--num-cpus", "2", "--json").stdout)  # fmt: skip
    assert extracted["failed"] == {} and extracted["written"] == 10
    fmt = get_format("starss23")
    meta = {r.stem: r.metadata for r in fmt.recordings(data)}
    written = sorted(Path(extracted["features"], "mic_dev").glob("*.h5"))
    assert [p.stem for p in written] == sorted(meta)
    for path in written:
        with h5py.File(path) as h5:
            assert h5.attrs["dataset_format"] == "starss23"
            assert h5.attrs["label_frames_per_second"] == 10.0
            assert h5["activity"].shape[1] == 13
            reference = h5["reference"][()]
        assert np.array_equal(reference, fmt.read_reference(meta[path.stem]), equal_nan=True)

    # no --protocol: the dataset's own (starss23, fold 1); two suites beside the default
    result = invoke("cv", "--dataset", str(data), "--workspace", str(ws), "--epochs", "2",
                    "--suite", "dcase2022-micro", "--json")  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["dataset_format"] == "starss23" and summary["suite"] == "dcase2022"
    assert list(summary["folds"]) == ["1"] and summary["groups"] == {}
    assert set(summary["overall"]) == {"er", "f", "le", "lr", "seld"}
    assert set(summary["suites"]) == {"dcase2022", "dcase2022-micro"}
    assert summary["suites"]["dcase2022"]["overall"] == pytest.approx(summary["overall"])
    assert len(summary["suites"]["dcase2022"]["per_class"]["f"]) == 13
    assert set(summary["suites"]["dcase2022"]["intervals"]) >= {"seld", "f", "er"}
    ceiling = summary["ceiling"]  # one direction per class cannot predict a second instance
    assert ceiling["suite"] == "dcase2022" and 0 <= ceiling["overlapping_cells"] < 1
    assert set(ceiling["overall"]) == set(summary["overall"])
    history = summary["stages"]["1"]["sed"]["history"]
    assert {"val_le", "val_lr", "val_seld"} <= set(history[-1])  # validated with the suite

    run_dir = ws / "runs" / "cv"
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["cv"] == {"folds": [1], "protocol": "starss23"}
    submissions = sorted((run_dir / "submissions").glob("*.csv"))
    assert [p.stem for p in submissions] == sorted(s for s in meta if s.startswith("fold4"))
    for path in submissions:
        rows = fmt.read_prediction(path)
        assert rows.shape[1] == 6 and set(rows[:, 2]) <= {0.0}

    # the same submissions, rescored from the files by `score` as the official scorer reads
    # them: the same counts; directions written to 0.01 degree move LE by less than that
    rescored = json.loads(invoke("score", "--ref", str(data / "metadata_dev" / "dev-test-synth"),
                                 "--pred", str(run_dir / "submissions"), "--dataset-format",
                                 "starss23", "--json").stdout)["dcase2022"]["overall"]  # fmt: skip
    for key in ("er", "f", "lr"):
        assert rescored[key] == pytest.approx(summary["overall"][key], rel=1e-12), key
    assert rescored["le"] == pytest.approx(summary["overall"]["le"], abs=0.01)

    # evaluate and tune thresholds read the run the same way: the format's suite by default
    fold1 = json.loads(invoke("evaluate", "--dataset", str(data), "--workspace", str(ws),
                              "--run", "cv", "--fold", "1", "--json").stdout)  # fmt: skip
    assert fold1["suite"] == "dcase2022"
    assert fold1["two_stage"] == pytest.approx(summary["overall"])
    assert set(fold1["constant_direction"]) == set(summary["overall"])
    tuned = json.loads(invoke("tune", "thresholds", "--workspace", str(ws), "--run", "cv",
                              "--trials", "4", "--json").stdout)  # fmt: skip
    assert tuned["suite"] == "dcase2022" and tuned["mode"] == "min"
    assert tuned["scores"]["test_default"] == pytest.approx(summary["overall"])
    from orchestrator.search_space import shipped_space

    space = str(shipped_space("thresholds_per_class.yaml"))
    per_class = json.loads(invoke("tune", "thresholds", "--workspace", str(ws), "--run", "cv",
                                  "--space", space, "--trials", "3", "--json").stdout)  # fmt: skip
    thresholds = {k for k in per_class["best_config"] if k.startswith("threshold_")}
    assert thresholds == {f"threshold_{c}" for c in get_format("starss23").classes}

    # compare reads the suite's scores and per-recording counts
    compared = json.loads(invoke("compare", "cv", "--workspace", str(ws), "--json").stdout)
    assert compared["suite"] == "dcase2022" and list(compared["metrics"]) == list(
        summary["overall"]
    )
    (row,) = compared["rows"]
    assert row["mean"]["seld"] == pytest.approx(summary["overall"]["seld"])
    counts = json.loads((run_dir / "test_counts.json").read_text())
    assert counts["suite"] == "dcase2022" and sorted(counts["recordings"]) == sorted(
        p.stem for p in submissions
    )
    # and the scores of the other suite the run was scored with, from its own counts
    micro = json.loads(invoke("compare", "cv", "--workspace", str(ws), "--suite",
                              "dcase2022-micro", "--json").stdout)  # fmt: skip
    assert micro["suite"] == "dcase2022-micro"
    assert micro["rows"][0]["mean"] == pytest.approx(
        summary["suites"]["dcase2022-micro"]["overall"]
    )
    other = json.loads((run_dir / "test_counts.dcase2022-micro.json").read_text())
    assert other["suite"] == "dcase2022-micro" and sorted(other["recordings"]) == sorted(
        counts["recordings"]
    )
    unscored = RUNNER.invoke(app, ["compare", "cv", "--workspace", str(ws), "--suite", "dcase2020"])
    assert unscored.exit_code == 2 and "not scored with the dcase2020 suite" in unscored.output

    # predict: the run's model on its test recordings (audio read and extracted again) writes
    # what the cv wrote, in the format's track-wise form, and scores it with the format's suite
    out = tmp_path / "predicted"
    predicted = json.loads(invoke("predict", "--run", "cv", "--workspace", str(ws), "--input",
                                  str(data / "mic_dev" / "dev-test-synth"), "--out", str(out),
                                  "--ref", str(data / "metadata_dev"), "--post", "default",
                                  "--json").stdout)  # fmt: skip
    assert predicted["model"]["dataset_format"] == "starss23"
    assert sorted(predicted["written"]) == [p.stem for p in submissions]
    for path in submissions:
        ours, theirs = fmt.read_prediction(out / path.name), fmt.read_prediction(path)
        np.testing.assert_array_equal(ours[:, :3], theirs[:, :3])
        np.testing.assert_allclose(ours[:, 3:5], theirs[:, 3:5], atol=0.02)
    assert predicted["scores"]["suite"] == "dcase2022"
    for key in ("er", "f", "lr"):
        assert predicted["scores"]["overall"][key] == pytest.approx(summary["overall"][key]), key
    assert predicted["scores"]["intervals"]["seld"][0] <= predicted["scores"]["overall"]["seld"]
    assert (out / "plots" / f"{submissions[0].stem}.png").stat().st_size > 0

    # export: a model file of the format's classes that predicts the whole dataset root alone
    model = tmp_path / "model.zip"
    manifest = json.loads(invoke("export", "--run", "cv", "--workspace", str(ws), "--out",
                                 str(model), "--json").stdout)  # fmt: skip
    assert manifest["dataset_format"] == "starss23" and manifest["classes"] == list(fmt.classes)
    everything = tmp_path / "everything"
    invoke("predict", "--model", str(model), "--input", str(data), "--out", str(everything),
           "--post", "default", "--no-plots")  # fmt: skip
    assert sorted(p.stem for p in everything.glob("*.csv")) == sorted(meta)
    for path in submissions:
        assert (everything / path.name).read_text() == (out / path.name).read_text()

    refused = RUNNER.invoke(app, ["cv", "--dataset", str(data), "--workspace", str(ws),
                                  "--run", "other", "--suite", "dcase2019"])  # fmt: skip
    assert refused.exit_code != 0
    assert "the dcase2019 suite scores DCASE 2019 labels" in refused.output
    refused = RUNNER.invoke(app, ["cv", "--dataset", str(data), "--workspace", str(ws), "--run",
                                  "other", "--set", "selection.suite=dcase2019"])  # fmt: skip
    assert refused.exit_code != 0 and "selection.suite: the dcase2019 suite" in refused.output
    assert not (ws / "runs" / "other" / "metrics.json").exists()


@pytest.mark.parametrize("method", ["multi-accdoa", "multi-accddoa"])
def test_multi_accdoa_trains_predicts_and_exports_on_a_starss_dataset(
    starss_data: Path, tmp_path: Path, method: str
):
    """The third method through the CLI: a tiny cv (its one stage, ADPIT on the track targets),
    scored with the format's suite; its test CSVs on up to three tracks; tune thresholds on its
    vectors' lengths; predict with the exported model writes what the cv wrote. The fourth,
    multi-ACCDDOA, the same with distances: its epoch selected and its test splits and
    threshold search scored with the DCASE 2024 suite, its CSVs of six columns (a distance in
    metres) scored by that suite as the cv scored them."""
    data, ws = starss_data, tmp_path / "ws"
    distances = method == "multi-accddoa"
    sets = ["--set", f"method={method}", "--set", "inference.threshold=0.2"]
    if distances:
        sets += ["--set", "selection.suite=dcase2024", "--suite", "dcase2024"]
    summary = json.loads(invoke("cv", "--dataset", str(data), "--workspace", str(ws), "--epochs",
                                "1", *sets, "--json").stdout)  # fmt: skip
    assert list(summary["stages"]["1"]) == [method]
    assert summary["suite"] == "dcase2022" and set(summary["overall"]) == {
        "er", "f", "le", "lr", "seld"
    }  # fmt: skip
    run_dir = ws / "runs" / "cv"
    fmt = get_format("starss23")
    submissions = sorted((run_dir / "submissions").glob("*.csv"))
    rows = np.concatenate([fmt.read_prediction(p, distances) for p in submissions])
    assert len(rows) and set(np.unique(rows[:, 2])) <= {0.0, 1.0, 2.0}
    assert {len(line.split(",")) for p in submissions for line in p.read_text().splitlines()} == {
        6 if distances else 5
    }
    with h5py.File(next((ws / "features").glob("*/mic_dev/*.h5"))) as h5:
        assert h5["tracks"].shape[1:] == (3, 13, 3) and h5.attrs["store_version"] == 3
        assert h5["distances"].shape[1:] == (3, 13) and h5["distances"][()].max() >= 1.0

    suite = ["--suite", "dcase2024"]
    evaluate = ["evaluate", "--dataset", str(data), "--workspace", str(ws), "--run", "cv",
                "--fold", "1", *sets[:4], *suite]  # fmt: skip
    if not distances:  # a suite that scores distances refuses a method that predicts none
        refused = RUNNER.invoke(app, evaluate)
        assert (
            refused.exit_code == 2 and "dcase2024 suite scores source distances" in refused.output
        )
        tuned = json.loads(invoke("tune", "thresholds", "--workspace", str(ws), "--run", "cv",
                                  "--trials", "3", "--json").stdout)  # fmt: skip
        assert tuned["scores"]["test_default"] == pytest.approx(summary["overall"])
    else:  # evaluate and tune thresholds score it with the 2024 suite as the cv did
        scored = summary["suites"]["dcase2024"]["overall"]
        history = summary["stages"]["1"][method]["history"]
        assert {"val_rde", "val_doae", "val_seld"} <= set(history[-1])  # selected on dcase2024
        fold1 = json.loads(invoke(*evaluate, "--json").stdout)
        assert fold1["suites"]["dcase2024"]["overall"] == pytest.approx(scored)
        tuned = json.loads(invoke("tune", "thresholds", "--workspace", str(ws), "--run", "cv",
                                  "--trials", "3", *suite, "--json").stdout)  # fmt: skip
        assert tuned["suite"] == "dcase2024" and set(tuned["scores"]["test_tuned"]) == set(scored)

    model, out = tmp_path / "model.zip", tmp_path / "predicted"
    manifest = json.loads(invoke("export", "--run", "cv", "--workspace", str(ws), "--out",
                                 str(model), "--json").stdout)  # fmt: skip
    assert manifest["method"] == method and manifest["stages"] == [method]
    invoke("predict", "--model", str(model), "--input", str(data / "mic_dev" / "dev-test-synth"),
           "--out", str(out), "--post", "default", "--no-plots")  # fmt: skip
    for path in submissions:
        ours, theirs = (fmt.read_prediction(p, distances) for p in (out / path.name, path))
        np.testing.assert_array_equal(ours[:, :3], theirs[:, :3])
        np.testing.assert_allclose(ours[:, 3:5], theirs[:, 3:5], atol=0.02)
        if distances:
            assert (ours[:, 5] >= 0).all()
            np.testing.assert_allclose(ours[:, 5], theirs[:, 5], atol=0.011)
    if not distances:
        return
    # the predicted CSVs, read as the DCASE 2024 scorer reads them, score what the cv scored
    recordings = {}
    for path in submissions:
        (features,) = (ws / "features").glob(f"*/mic_dev/{path.stem}.h5")
        reference, frames = reference_rows(features)
        recordings[path.stem] = (reference, fmt.read_prediction(out / path.name, True), frames)
    rescored = score_recordings(get_suite("dcase2024"), recordings, frames_per_second=10.0,
                                num_classes=13).overall  # fmt: skip
    for key in ("f", "lr", "er"):
        assert rescored[key] == pytest.approx(scored[key], rel=1e-9), key
    for key, tolerance in (("doae", 0.05), ("de", 0.01), ("rde", 0.01), ("seld", 0.01)):
        assert rescored[key] == pytest.approx(scored[key], abs=tolerance), key


def test_bad_starss_metadata_is_named_and_the_rest_extracts(starss_data: Path, tmp_path: Path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(starss_data, data)
    bad = sorted((data / "metadata_dev" / "dev-train-synth").glob("*.csv"))[1]
    bad.chmod(0o644)
    lines = bad.read_text().splitlines()
    fields = lines[2].split(",")
    fields[1] = "13"  # past the 13 classes (0..12)
    lines[2] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    result = RUNNER.invoke(app, ["extract", "--dataset", str(data), "--workspace",
                                 str(tmp_path / "ws"), "--num-cpus", "2", "--json"])  # fmt: skip
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["written"] == 9
    (reason,) = summary["failed"].values()
    assert str(bad) in reason and "line 3: unknown class index 13" in reason


def test_rows_become_one_direction_per_class_at_the_feature_rate():
    # frame, class, source, azimuth, elevation, distance; 100 ms label frames
    rows = np.array(
        [
            [0, 2, 1, 50.0, 10.0, 1.0],
            [0, 2, 0, -30.0, 0.0, 2.0],  # the lowest source index of class 2 wins
            [1, 2, 0, -20.0, 0.0, 2.0],
            [2, 5, 0, 170.0, -20.0, 1.0],
        ]
    )
    targets = rows_to_targets(rows, 10.0, 16, 0.02, 13)  # 20 ms feature frames
    assert targets.activity.shape == (16, 13)
    assert targets.activity[:5, 2].all() and targets.activity[5:10, 2].all()
    assert (targets.azimuth[:5, 2] == -30).all() and (targets.azimuth[5:10, 2] == -20).all()
    assert (targets.activity[10:15, 5] == 1).all() and targets.activity[15].sum() == 0
    assert targets.elevation[12, 5] == -20 and targets.activity.sum() == 15


def test_predictions_reach_100_ms_frames_averaged():
    sed = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    pooled = to_label_rate(sed, 50.0, 4, 10.0, mean=True)  # 5 feature frames per label frame
    assert pooled[:, 0].tolist() == [2.0, 7.0, 12.0, 17.0]
    assert to_label_rate(sed, 50.0, 4, 10.0)[:, 0].tolist() == [2.0, 7.0, 12.0, 17.0]
    # past the end, the last frame repeats; the DCASE 2019 path picks each frame's start
    assert to_label_rate(sed, 50.0, 5, 10.0, mean=True)[4, 0] == 19.0
    assert to_label_rate(sed, 50.0, 3, 50.0)[:, 0].tolist() == [0.0, 1.0, 2.0]


def test_the_starss23_protocol_holds_out_part_of_dev_train():
    names = [StarssName(3, r, m) for r in (1, 2) for m in range(1, 5)]
    names += [StarssName(4, 9, m) for m in (1, 2)]
    (fold,) = make_folds(names, protocol="starss23")
    dev_train = sorted(n for n in names if n.fold == 3)
    every = get_format("starss23").validation_every
    assert fold.validation == tuple(dev_train[::every])
    assert set(fold.train) == set(dev_train) - set(fold.validation)
    assert {n.fold for n in fold.test} == {4} and not fold.leaky
    with pytest.raises(ConfigError, match="one fold"):
        make_folds(names, protocol="starss23", folds=[2])
    with pytest.raises(ValueError, match="no test recordings"):
        make_folds(dev_train, protocol="starss23")


@pytest.mark.parametrize(
    ("layout", "suite", "test_fold"), [("tau2020", "dcase2020", 1), ("tau2021", "dcase2021", 6)]
)
def test_tau_nigens_datasets_train_on_their_official_split(layout, suite, test_fold, tmp_path):
    data, ws = tmp_path / "data", tmp_path / "ws"
    invoke("synth", "--out", str(data), "--layout", layout, "--per-split", "1", "--seconds", "8",
           "--formats", "mic", "--num-cpus", "2")  # fmt: skip
    assert "0 problem(s)" in invoke("validate", str(data)).stdout
    summary = json.loads(invoke("cv", "--dataset", str(data), "--workspace", str(ws),
                                "--epochs", "1", "--json").stdout)  # fmt: skip
    assert (summary["dataset_format"], summary["suite"]) == (layout, suite)
    assert list(summary["folds"]) == ["1"] and set(summary["overall"]) == {
        "er", "f", "le", "lr", "seld"
    }  # fmt: skip
    config = json.loads((ws / "runs" / "cv" / "config.json").read_text())["config"]
    assert config["cv"] == {"folds": [1], "protocol": layout}
    submissions = sorted((ws / "runs" / "cv" / "submissions").glob("*.csv"))
    assert [p.stem[:5] for p in submissions] == [f"fold{test_fold}"]
    with h5py.File(next((ws / "features").glob("*/mic_dev/*.h5"))) as h5:
        assert h5["activity"].shape[1] == len(get_format(layout).classes)
        assert "distances" not in h5  # the TAU-NIGENS labels carry no distances
    if layout == "tau2020":  # once is enough
        return
    refused = RUNNER.invoke(app, ["cv", "--dataset", str(data), "--workspace", str(ws), "--run",
                                  "other", "--set", "method=multi-accddoa"])  # fmt: skip
    assert refused.exit_code != 0
    assert "the multi-accddoa method trains on source distances, and " in refused.output
    assert "have no distance column" in refused.output
    assert not (ws / "runs" / "other" / "metrics.json").exists()
