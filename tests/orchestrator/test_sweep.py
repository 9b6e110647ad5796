"""Sweeps: many cross-validations at once on a real local Ray, tracked in a real MLflow store,
compared with ``seld-orch compare`` (on an autoscaling GPU cluster: test_autoscaling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cv import CVSettings
from orchestrator.sweep import run_sweep
from orchestrator.sweep_spec import SweepError, load_sweep, shipped_sweeps
from orchestrator.tracking import default_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def write_sweep(path: Path, **fields) -> Path:
    spec = {
        "name": "sw",
        "base": "tiny",
        "set": {"cv.folds": [1], "train.epochs": 1, "train.max_batches_per_epoch": 4},
        "seeds": [0, 1],
        "variants": [{"name": "crnn"}, {"name": "joint", "set": {"method": "joint"}}],
    } | fields
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_shipped_sweeps_load_with_every_cell_checked():
    assert {"tiny-table", "paper-table"} <= set(shipped_sweeps())
    paper = load_sweep("paper-table")
    assert len(paper.cells) == 18 and paper.seeds == (0, 1, 2)
    rows = {
        (c.experiment.method, c.experiment.model.name, c.experiment.format) for c in paper.cells
    }
    assert rows == {
        (m, n, f)
        for f in ("mic", "foa")
        for m, n in (("joint", "CRNN10"), ("two-stage", "VGG9"), ("two-stage", "CRNN10"))
    }
    assert set(paper.published().values()) == {
        f"{v}/{f}"
        for v in ("joint-crnn", "two-stage-cnn", "two-stage-crnn")
        for f in ("mic", "foa")
    }
    assert {c.experiment.seed for c in paper.cells} == {0, 1, 2}
    tiny = load_sweep("tiny-table", ["train.epochs=2"], seeds=[4])
    assert [c.run for c in tiny.cells][:2] == ["joint-crnn-mic-seed4", "two-stage-cnn-mic-seed4"]
    assert {c.experiment.train.epochs for c in tiny.cells} == {2}


def test_the_methods_sweep_scores_every_cell_with_two_suites(tmp_path: Path):
    methods = load_sweep("methods-starss")
    assert methods.suites == ("dcase2019-regr",) and methods.to_dict()["suites"] == [
        "dcase2019-regr"
    ]
    assert [c.experiment.method for c in methods.cells[::3]] == [
        "two-stage",
        "joint",
        "multi-accdoa",
    ]
    assert {c.experiment.inference.threshold for c in methods.cells[6:]} == {0.5}
    budget = load_sweep("methods-starss-60")
    assert [
        (c.experiment.method, c.experiment.train.epochs, c.experiment.inference.threshold)
        for c in budget.cells[::3]
    ] == [("two-stage", 30, 0.3), ("joint", 60, 0.3), ("multi-accdoa", 60, 0.3)]
    with pytest.raises(SweepError, match="suites: unknown metric suite 'dcase2018'"):
        load_sweep(write_sweep(tmp_path / "s.yaml", variants=[{"name": "a"}], suites=["dcase2018"]))


def test_a_grid_names_its_variants_by_their_values(tmp_path: Path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "base: tiny\nseeds: [3, 3, 4]\ngrid:\n  method: [two-stage, joint]\n"
        "  data.format: [mic, foa]\n"
    )
    sweep = load_sweep(path)
    assert sweep.name == "grid" and sweep.seeds == (3, 4)
    assert [v.name for v in sweep.variants] == [
        "two-stage_mic", "two-stage_foa", "joint_mic", "joint_foa"
    ]  # fmt: skip
    assert len(sweep.cells) == 8


def test_an_invalid_variant_is_refused_before_anything_starts(tmp_path: Path):
    bad = write_sweep(
        tmp_path / "bad.yaml",
        variants=[{"name": "ok"}, {"name": "typo", "set": {"train.lrr": 0.1}}],
    )
    with pytest.raises(SweepError, match=r"bad.yaml: variant 'typo'.*train.lrr"):
        load_sweep(bad)
    ws = tmp_path / "ws"
    result = CliRunner().invoke(
        app, ["sweep", str(bad), "--dataset", str(tmp_path), "--workspace", str(ws)]
    )
    assert result.exit_code == 2, result.output
    assert "variant 'typo'" in result.output and "train.lrr" in result.output
    assert not (ws / "runs").exists() and not (ws / "mlflow.db").exists()
    dup = write_sweep(tmp_path / "dup.yaml", variants=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(SweepError, match="must differ"):
        load_sweep(dup)
    with pytest.raises(SweepError, match="format foa"):
        load_sweep(write_sweep(tmp_path / "x.yaml", variants=[
            {"name": "iv", "set": {"features.kind": "logmel_iv"}}]))  # fmt: skip


def _sweep_command(spec: Path, data: Path, ws: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "orchestrator.cli", "sweep", str(spec), "--dataset", str(data),
        "--workspace", str(ws), "--cpus-per-worker", "0.5", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_killed_sweep_continues_and_is_compared(tiny_data: Path, tiny_ws: Path, tmp_path: Path):
    """2 variants x 2 seeds, one fold of one epoch: the driver is killed during the second
    cell; the rerun keeps the first cell and the second's finished stage, and finishes."""
    spec, ws = write_sweep(tmp_path / "sw.yaml"), tiny_ws
    env = os.environ | ENV
    log = tmp_path / "first.log"
    runs = ws / "runs" / "sw"
    with log.open("w") as out:  # one cell at a time, so the kill lands between cells
        first = subprocess.Popen(
            _sweep_command(spec, tiny_data, ws, "--in-flight", "1"),
            cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.time() + 600
    while not (runs / "crnn-seed1" / "fold1" / "sed" / "done.json").exists():
        assert first.poll() is None, f"the sweep ended early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (runs / "crnn-seed0" / "metrics.json").exists()
    assert not (runs / "summary.json").exists()
    kept = {p: p.read_text() for p in runs.glob("crnn-seed*/fold1/*/done.json")}
    assert len(kept) >= 3  # seed 0's sed and doa, seed 1's sed

    second = subprocess.run(
        _sweep_command(spec, tiny_data, ws, "--json"),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout)
    status = {c["run"]: c["status"] for c in summary["cells"]}
    assert status == {
        "sw/crnn-seed0": "kept", "sw/crnn-seed1": "finished",
        "sw/joint-seed0": "finished", "sw/joint-seed1": "finished",
    }  # fmt: skip
    for path, text in kept.items():  # finished stages were not trained again
        assert path.read_text() == text

    # MLflow: sweep > 4 cv runs (variant, seed) > their fold/stage runs
    client = MlflowClient(default_tracking_uri(ws))
    found = client.search_runs([summary["experiment_id"]], max_results=1000)
    by_parent: dict[str, list] = {}
    for r in found:
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId", ""), []).append(r)
    (top,) = by_parent[""]
    assert top.info.run_id == summary["mlflow_run"] and top.data.tags["kind"] == "sweep"
    assert top.info.status == "FINISHED"
    cvs = by_parent[top.info.run_id]
    assert sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in cvs) == [
        ("crnn", "0"), ("crnn", "1"), ("joint", "0"), ("joint", "1")
    ]  # fmt: skip
    for r in cvs:
        assert r.data.tags["kind"] == "cv" and r.info.status == "FINISHED"
        assert "cv_seld" in r.data.metrics and r.data.params["seed"] == r.data.tags["seed"]
        stages = sorted(x.data.tags["stage"] for x in by_parent[r.info.run_id])
        assert stages == (["joint"] if r.data.tags["variant"] == "joint" else ["doa", "sed"])
    artifacts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"comparison.csv", "comparison.md", "comparison.png", "summary.json"} <= artifacts
    experiment = client.get_experiment(summary["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.seld-runs"])
    assert (
        view["searchFilter"] == "tags.kind = 'cv'" and "tags.`variant`" in view["selectedColumns"]
    )
    from orchestrator.cli.ui import experiment_views

    views = experiment_views(default_tracking_uri(ws), "http://127.0.0.1:5000")
    assert [url.split("#")[1] for _, url in views] == [
        f"/experiments/{experiment.experiment_id}/runs?viewStateShareKey=seld-runs",
        f"/experiments/{experiment.experiment_id}/runs?viewStateShareKey=seld-variants"
        "&compareRunsMode=CHART",
    ]

    # compare: one row per variant, mean ± sd over the two seeds, and the paired bootstrap
    result = CliRunner().invoke(app, ["compare", "sw", "--workspace", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert [(r["variant"], r["seeds"]) for r in table["rows"]] == [
        ("crnn", [0, 1]), ("joint", [0, 1])
    ]  # fmt: skip
    for row in table["rows"]:
        cells = [c for c in summary["cells"] if c["variant"] == row["variant"]]
        values = [c["overall"]["er"] for c in cells]
        assert row["mean"]["er"] == pytest.approx(sum(values) / 2)
        assert row["sd"]["er"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    # one fold: one test recording per cell, too few for a bootstrap, and the table says so
    assert table["pairs"] == [] and "1 recording(s) in common" in table["notes"][0]
    text = CliRunner().invoke(app, ["compare", "sw", "--workspace", str(ws), "--by", "ov"])
    assert text.exit_code == 0, text.output
    assert "crnn" in text.output and "±" in text.output and "per ov" in text.output


@pytest.mark.slow
def test_a_failing_variant_is_recorded_beside_the_finishing_one(
    local_ray, tiny_data: Path, tiny_ws: Path, tmp_path
):
    """(Fold jobs spread over GPU workers: test_autoscaling, on the shipped node types.)"""
    # the foa variant is valid but the dataset has no foa recordings: its cell fails at run time
    variants = [{"name": "crnn"}, {"name": "foa", "set": {"data.format": "foa"}}]
    spec = write_sweep(tmp_path / "gpu.yaml", name="gpu", variants=variants, seeds=[0],
                       set={"cv.folds": [1], "train.epochs": 1,
                            "train.max_batches_per_epoch": 2})  # fmt: skip
    sweep = load_sweep(spec)
    base = CVSettings(
        dataset=str(tiny_data), workspace=str(tiny_ws), config=sweep.cells[0].experiment.to_dict(),
        cpus_per_worker=0.5, tracking_uri=default_tracking_uri(tiny_ws),
    )  # fmt: skip
    summary = run_sweep(sweep, base)
    assert [c["status"] for c in summary["cells"]] == ["finished", "failed"]
    assert "foa_dev: folder missing" in summary["cells"][1]["error"]
    failed = summary["comparison"]["failed"]
    assert [(f["variant"], f["seed"]) for f in failed] == [("foa", 0)]
    assert [r["variant"] for r in summary["comparison"]["rows"]] == ["crnn"]
    client = MlflowClient(default_tracking_uri(tiny_ws))
    cells = client.search_runs([summary["experiment_id"]], "tags.kind = 'cv'")
    assert sorted((r.data.tags["variant"], r.info.status) for r in cells) == [
        ("crnn", "FINISHED"), ("foa", "FAILED")
    ]  # fmt: skip
    assert client.get_run(summary["mlflow_run"]).info.status == "FINISHED"


def test_the_published_table_gives_the_papers_seld_scores():
    from orchestrator.compare import published_table

    source, rows = published_table()
    assert "1905.00268" in source and len(rows) == 8
    # the SELD scores the reference notes derive from the paper's four metrics
    expected = {"baseline/mic": 0.220, "baseline/foa": 0.211}
    expected |= {"two-stage-crnn/mic": 0.112, "two-stage-crnn/foa": 0.120}
    for key, seld in expected.items():
        assert rows[key]["seld"] == pytest.approx(seld, abs=6e-4)
