"""Exporting a finished search: trials.csv and the parameter-importance chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from orchestrator.search_space import load_search_space
from orchestrator.study import build_study, export_study, results_frame

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
TINY = load_search_space(SPACES / "tiny.yaml")  # threshold, smooth, median_frames if smooth


def objective(threshold: float, smooth: bool, median_frames: int | None) -> float:
    """Mostly the threshold matters; smoothing a little."""
    return (threshold - 0.4) ** 2 + (0.01 if smooth else 0.0) + 1e-4 * (median_frames or 0)


def tune_like_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Rows as ``ResultGrid.get_dataframe()`` gives them (bookkeeping columns included); the
    conditional ``median_frames`` is missing where ``smooth`` is False."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        threshold, smooth = float(rng.uniform(0.1, 0.9)), bool(rng.integers(2))
        median = int(rng.choice([3, 5, 7, 9])) if smooth else None
        row = {
            "val_seld": objective(threshold, smooth, median),
            "val_er": threshold,
            "timestamp": 1_700_000_000 + i,
            "done": True,
            "training_iteration": 1,
            "trial_id": f"t{i:03d}",
            "pid": 1,
            "hostname": "h",
            "time_total_s": 0.01,
            "config/threshold": threshold,
            "config/smooth": smooth,
        }
        if smooth:
            row["config/median_frames"] = median
        rows.append(row)
    return pd.DataFrame(rows)


def test_export_writes_trials_csv_and_importances(tmp_path: Path):
    frame = tune_like_frame(40)
    out = export_study(frame, TINY, "val_seld", "min", tmp_path / "study", "tiny search")
    assert out["trials_csv"] == tmp_path / "study" / "trials.csv"
    table = pd.read_csv(out["trials_csv"])
    assert list(table.columns) == [
        "trial_id",
        "config/threshold",
        "config/smooth",
        "config/median_frames",
        "val_seld",
        "val_er",
        "status",
    ]
    assert len(table) == 40 and (table["status"] == "COMPLETE").all()
    assert table["config/median_frames"].isna().sum() == (~frame["config/smooth"]).sum()
    # median_frames is conditional (not in every trial): Optuna leaves it out
    assert set(out["importances"]) == {"threshold", "smooth"}
    assert max(out["importances"], key=out["importances"].get) == "threshold"
    assert sum(out["importances"].values()) == pytest.approx(1)
    png = out["importance_png"]
    assert png == tmp_path / "study" / "importance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["note"] is None
    assert not list((tmp_path / "study").glob(".*.tmp"))  # written atomically, nothing left

    # the CSV alone (booleans as text, NaN for missing) rebuilds the same study
    again = export_study(table, TINY, "val_seld", "min", tmp_path / "again", "again")
    assert again["importances"] == pytest.approx(out["importances"])


def test_pruned_failed_and_maximised_trials(tmp_path: Path):
    frame = tune_like_frame(12)
    frame["status"] = ["COMPLETE"] * 8 + ["PRUNED"] * 2 + ["FAILED"] * 2
    frame.loc[10:, "val_seld"] = np.nan
    study, notes = build_study(frame, TINY, "val_seld", "min")
    assert len(study.trials) == 8 and not notes
    out = export_study(frame, TINY, "val_er", "max", tmp_path, "max")
    table = pd.read_csv(out["trials_csv"])
    assert list(table["status"]) == list(frame["status"])
    assert list(table.columns[:5]) == [
        "trial_id",
        "config/threshold",
        "config/smooth",
        "config/median_frames",
        "val_er",
    ]
    study, _ = build_study(frame, TINY, "val_er", "max")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.best_value == pytest.approx(frame["val_er"][:8].max())


def test_too_few_trials_or_nothing_varies_skips_the_chart(tmp_path: Path):
    one = tune_like_frame(1)
    out = export_study(one, TINY, "val_seld", "min", tmp_path / "one", "one")
    assert out["importance_png"] is None and out["importances"] == {}
    assert "at least 2" in out["note"]
    assert pd.read_csv(out["trials_csv"]).shape[0] == 1

    same = tune_like_frame(6)
    same["config/threshold"] = 0.5
    same["config/smooth"] = False
    same = same.drop(columns="config/median_frames")
    out = export_study(same, TINY, "val_seld", "min", tmp_path / "same", "same")
    assert out["importance_png"] is None and "varies" in out["note"]
    assert not (tmp_path / "same" / "importance.png").exists()

    # a value outside the space is left out, with a note, instead of failing the export
    bad = tune_like_frame(5)
    bad.loc[0, "config/threshold"] = 2.0
    study, notes = build_study(bad, TINY, "val_seld", "min")
    assert len(study.trials) == 4 and "t000" in notes[0]


def test_export_from_a_real_tune_run(local_ray, tmp_path: Path):
    def trainable(config: dict) -> None:  # defined here: Ray workers cannot import this module
        loss = (config["threshold"] - 0.4) ** 2 + (0.01 if config["smooth"] else 0.0)
        tune.report({"val_seld": loss, "val_er": config["threshold"]})

    searcher = OptunaSearch(
        space=TINY.define_by_run,
        metric="val_seld",
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5),
    )
    results = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="val_seld", mode="min", num_samples=14, search_alg=searcher, reuse_actors=True
        ),
        run_config=tune.RunConfig(name="study", storage_path=str(tmp_path / "ray"), verbose=0),
    ).fit()
    frame = results.get_dataframe()
    out = export_study(frame, TINY, "val_seld", "min", tmp_path / "out", "tiny")
    table = pd.read_csv(out["trials_csv"])
    assert len(table) == 14 and set(table["trial_id"]) == {r.metrics["trial_id"] for r in results}
    assert "threshold" in out["importances"] and out["importance_png"].exists()
    # the same rows from the results in memory (what the threshold search uses)
    memory = results_frame(results)
    columns = ["trial_id", "config/threshold", "config/smooth", "val_seld"]
    ordered = memory[columns].sort_values("trial_id").reset_index(drop=True)
    expected = frame[columns].sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(ordered, expected, check_dtype=False)
    assert (memory["status"] == "COMPLETE").all()
