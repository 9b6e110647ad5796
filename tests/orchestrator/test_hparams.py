"""Hyperparameter search: whole cross-validations as Ray Tune trials, ASHA, MLflow, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator.search_space import SearchSpaceError, load_search_space
from orchestrator.tracking import default_tracking_uri
from orchestrator.trial import check_space, iteration_metrics, trial_config
from seld.config import ConfigError, load_config
from seld.methods.models import build_model

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"


TINY = load_config("tiny")


def test_shipped_hparam_spaces_are_valid():
    for name in ("hparams.yaml", "hparams_tiny.yaml", "methods.yaml"):
        space = load_search_space(SPACES / name)
        check_space(space, TINY, SPACES / name)
        check_space(space, load_config("paper-mic"), SPACES / name)


def test_a_name_that_is_no_config_path_is_refused(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "params:\n  train.lr: {type: logfloat, low: 1.0e-4, high: 1.0e-2}\n"
        "  train.learning_speed: {type: float, low: 0, high: 1}\n"
    )
    with pytest.raises(SearchSpaceError, match=r"bad.yaml: params.train.learning_speed: not a"):
        check_space(load_search_space(path), TINY, path)
    path.write_text("params:\n  lr: {type: logfloat, low: 1.0e-4, high: 1.0e-2}\n")
    with pytest.raises(SearchSpaceError, match=r"params.lr: not a path .* did you mean train.lr"):
        check_space(load_search_space(path), TINY, path)
    path.write_text("params:\n  model.dropout: {type: float, low: 0, high: 0.5, per_class: true}\n")
    with pytest.raises(SearchSpaceError, match=r"params.model.dropout.per_class"):
        check_space(load_search_space(path), TINY, path)


def test_a_value_the_config_refuses_is_named(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("params:\n  model.dropout: {type: float, low: 0.5, high: 1.5}\n")
    with pytest.raises(SearchSpaceError, match=r"params.model.dropout: model.dropout: .*less"):
        check_space(load_search_space(path), TINY, path)
    path.write_text("params:\n  method: {type: categorical, choices: [two-stage, three-stage]}\n")
    with pytest.raises(
        SearchSpaceError,
        match=r"method: Input should be 'two-stage', 'joint', 'multi-accdoa' or 'multi-accddoa'",
    ):
        check_space(load_search_space(path), TINY, path)


def test_a_space_over_config_paths_samples_valid_configs():
    """Sampled trials of the shipped spaces are valid configs that build their models."""
    for name in ("hparams.yaml", "methods.yaml"):
        space = load_search_space(SPACES / name)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        for _ in range(6):
            trial = study.ask()
            space.define_by_run(trial)
            config = trial_config(TINY, trial.params)
            for key, value in trial.params.items():
                assert config.leaves()[key] == value
            train = config.train_config(config.stages[-1])
            model = build_model(train.model, in_channels=10, **train.model_kwargs)
            out = model(torch.zeros(2, 10, 64, 64))
            assert out["sed_logits"].shape == (2, 64, 11)
            study.tell(trial, 0.5)


def test_sampled_params_become_a_trainable_config():
    params = {
        "train.lr": 0.002,
        "train.batch_size": 32,
        "model.dropout": 0.2,
        "model.pool": "max",
        "model.width": 0.5,
        "train.loss": "mse",
        "train.window_s": 1.0,
    }
    config = trial_config(TINY, params).train_config("doa")
    base = TINY.train_config("doa")
    assert (config.lr, config.batch_size, config.loss, config.window_s) == (0.002, 32, "mse", 1.0)
    assert config.model_kwargs["channels"] == [c // 2 for c in base.model_kwargs["channels"]]
    assert config.model_kwargs["rnn_hidden"] == base.model_kwargs["rnn_hidden"] // 2
    assert (config.model_kwargs["dropout"], config.model_kwargs["pool"]) == (0.2, "max")
    model = build_model(config.model, in_channels=10, **config.model_kwargs)
    out = model(torch.zeros(2, 10, 64, 64))
    assert out["sed_logits"].shape == (2, 64, 11)
    with pytest.raises(ConfigError, match=r"train\.momentum: unknown key"):
        trial_config(TINY, {"train.momentum": 0.9})


def test_iterations_wait_for_every_fold():
    row = {
        "val_seld": 0.5,
        "val_er": 0.4,
        "val_f": 0.6,
        "val_doa_error": 30.0,
        "val_frame_recall": 0.8,
    }
    history = {"fold1/sed": {1: row, 2: row}, "fold2/sed": {1: row | {"val_seld": 0.7}}}
    assert iteration_metrics(history, (1, 2), 2, 1)["val_seld"] == pytest.approx(0.6)
    assert iteration_metrics(history, (1, 2), 2, 2) is None  # fold 2 has not finished epoch 2
    history["fold2/sed"][2] = row
    history |= {"fold1/doa": {1: row}, "fold2/doa": {1: row | {"val_seld": float("nan")}}}
    third = iteration_metrics(history, (1, 2), 2, 3)  # DOA epoch 1
    assert third["stage_is_doa"] == 1.0 and third["epoch"] == 1.0
    assert third["val_seld"] == pytest.approx((0.5 + 1e3) / 2)  # NaN counts as very bad


def test_iterations_carry_the_selection_suites_scores():
    # a STARSS23 run, or selection.suite=dcase2022: location-aware scores, no DOA error
    scores = {"val_er": 0.5, "val_f": 0.4, "val_lr": 0.6, "val_seld": 0.5, "val_selection": 1}
    rows = [scores | {"val_le": le} for le in (20.0, 40.0)]
    history = {f"fold{k}/sed": {1: row} for k, row in zip((1, 2), rows, strict=True)}
    out = iteration_metrics(history, (1, 2), 1, 1)
    assert set(out) == {"val_er", "val_f", "val_le", "val_lr", "val_seld", "stage_is_doa", "epoch"}
    assert out["val_le"] == pytest.approx(30.0)


def _search(ws: Path, data: Path, name: str) -> list[str]:
    return [
        sys.executable, "-m", "orchestrator.cli", "tune", "hparams",
        "--dataset", str(data), "--workspace", str(ws), "--name", name,
        "--space", str(SPACES / "hparams_tiny.yaml"), "--trials", "3", "--epochs", "2",
        "--folds", "1,2", "--final-folds", "1,2", "--seed", "3", "--json",
    ]  # fmt: skip


@pytest.mark.slow
def test_tiny_search_with_asha_resumes_after_the_driver_dies(tiny_data: Path, tmp_path: Path):
    data = tiny_data
    ws = tmp_path / "ws"
    env = os.environ | {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    # first attempt: killed (with its local Ray) once a trial has finished its SED stages
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(
            _search(ws, data, "hp"),
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 600
    while not list((ws / "runs" / "hp").glob("*/fold*/doa/last.pt")):
        assert first.poll() is None, f"the search ended early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (ws / "runs" / "hp" / "summary.json").exists()
    trial_dirs = {p.name for p in (ws / "runs" / "hp").iterdir() if p.is_dir()}
    assert trial_dirs

    second = subprocess.run(
        _search(ws, data, "hp"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming the search" in second.stderr
    summary = json.loads(second.stdout)

    # the Tune experiment: 3 trials, ranked by the two-stage validation SELD of finished ones
    assert len(summary["trials"]) == 3
    assert summary["scheduler"]["name"] == "ASHA" and summary["scheduler"]["max_t"] == 5
    assert trial_dirs <= {t["trial_id"] for t in summary["trials"]}
    done = [t for t in summary["trials"] if t["completed"]]
    assert summary["best"]["val_seld"] == min(t["val_seld"] for t in done)
    for t in summary["trials"]:
        assert 1 <= t["iterations"] <= 5
        assert t["completed"] == (t["iterations"] == 5)
        assert len(t["curve"]) == t["iterations"]
        assert set(t["config"]) >= {"train.lr", "model.dropout", "model.pool"}

    # MLflow: search run > trial runs > fold/stage runs; the best trial tagged; artifacts
    client = MlflowClient(default_tracking_uri(ws))
    runs = client.search_runs([summary["experiment_id"]], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    parent = by_id[summary["mlflow_parent_run"]]
    assert parent.data.tags["kind"] == "tune-hparams" and parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == summary["best"]["trial_id"]
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 3
    assert {r.data.tags["trial_id"] for r in trials} == {t["trial_id"] for t in summary["trials"]}
    assert [r.data.tags["best"] for r in trials].count("True") == 1
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status in ("FINISHED", "KILLED")
        assert {"hparam.train.lr", "hparam.model.dropout", "hparam.model.pool"} <= set(
            r.data.params
        )
        curve = client.get_metric_history(r.info.run_id, "iter_val_seld")
        assert sorted(m.step for m in curve) == list(range(1, len(curve) + 1))
        stages = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == r.info.run_id]
        assert {x.data.tags["stage"] for x in stages} == {"sed", "doa"}
    best = next(r for r in trials if r.data.tags["best"] == "True")
    assert best.data.metrics["val_cv_seld"] == pytest.approx(summary["best"]["val_seld"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "summary.json"} <= artifacts
    table = pd.read_csv(ws / "runs" / "hp" / "trials.csv")
    assert sorted(table["trial_id"]) == sorted(t["trial_id"] for t in summary["trials"])
    assert sorted(table["status"]) == sorted(
        "COMPLETE" if t["completed"] else "PRUNED" for t in summary["trials"]
    )

    # the final cv of the best config reports the test splits, reusing the trained folds
    final = by_id[summary["final_cv"]["mlflow_run"]]
    assert final.data.tags["kind"] == "cv" and final.data.tags["tuned_by"] == parent.info.run_id
    assert "cv_seld" in final.data.metrics
    finals = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == final.info.run_id]
    assert len(finals) == 4 and all(x.info.status == "FINISHED" for x in finals)
    assert summary["final_cv"]["overall"]["seld"] == pytest.approx(final.data.metrics["cv_seld"])
    best_dir = ws / "runs" / "hp" / summary["best"]["trial_id"]
    for k in (1, 2):
        copied = json.loads(
            (ws / "runs" / "hp-best" / f"fold{k}" / "sed" / "done.json").read_text()
        )
        assert copied == json.loads((best_dir / f"fold{k}" / "sed" / "done.json").read_text())
    # trials never predicted their test splits
    assert not list((ws / "runs" / "hp").glob("*/fold*/predictions/test_*"))
