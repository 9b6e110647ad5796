"""Cross-validation on a real local Ray (and a simulated multi-node cluster), real MLflow."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cv import CVSettings
from orchestrator.cv_jobs import fold_job
from orchestrator.cv_run import run_cv
from orchestrator.extract import extract_dataset
from orchestrator.ray_utils import ray_session
from orchestrator.tracking import default_tracking_uri
from seld.config import load_config
from seld.methods.training import load_checkpoint
from seld.synth import SynthConfig, synthesize_dataset

from conftest import tiny_config

pytestmark = pytest.mark.slow

os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"


def make_data(root: Path, per_split: int, seconds: float, drop: dict[int, int] | None = None):
    """A dataset of its own (most tests share the session's ``tiny_data``)."""
    data = root / "data"
    synthesize_dataset(
        data, SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",), seed=5), workers=2
    )
    for split, count in (drop or {}).items():  # make some folds' training sets smaller
        for wav in sorted((data / "mic_dev").glob(f"split{split}_*.wav"))[:count]:
            (data / "metadata_dev" / f"{wav.stem}.csv").unlink()
            wav.unlink()
    return data


def settings(data: Path, ws: Path, *sets: str, epochs=2, folds=None, **kw) -> CVSettings:
    base = dict(
        dataset=str(data),
        workspace=str(ws),
        config=tiny_config(*sets, epochs=epochs, folds=folds),
        cpus_per_worker=0.5,
        tracking_uri=default_tracking_uri(ws),
    )
    return CVSettings(**(base | kw))


TINY_FEATURES = load_config("tiny").features


def test_four_fold_cv_is_tracked_and_rescorable(local_ray, tiny_data: Path, tiny_ws: Path):
    data, ws = tiny_data, tiny_ws
    assert extract_dataset(data, ws, TINY_FEATURES, "mic").ok  # the shared features are reused
    summary = run_cv(settings(data, ws), suites=("dcase2022",))
    s = settings(data, ws)

    client = MlflowClient(s.tracking_uri)
    runs = client.search_runs([summary["experiment_id"]])
    children = [r for r in runs if r.data.tags.get("kind") == "stage"]
    assert sorted((r.data.tags["fold"], r.data.tags["stage"]) for r in children) == sorted(
        (str(k), stage) for k in (1, 2, 3, 4) for stage in ("sed", "doa")
    )
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == summary["mlflow_parent_run"]
        assert r.info.status == "FINISHED"
        history = client.get_metric_history(r.info.run_id, "val_seld")
        assert [m.step for m in history] == [1, 2]
    parent = client.get_run(summary["mlflow_parent_run"])
    assert {"cv_er", "cv_f", "cv_doa_error", "cv_frame_recall", "cv_seld"} <= set(
        parent.data.metrics
    )
    assert parent.data.params["name"] == "tiny" and parent.data.params["train.epochs"] == "2"
    assert parent.data.params["features.n_mels"] == "64" and parent.data.tags["config"] == "tiny"
    assert parent.data.tags["config_hash"] == s.experiment.hash()
    assert "mlflow.source.git.commit" in parent.data.tags or "version.ray" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"metrics.json", "config.json", "submissions", "checkpoints", "plots"} <= artifacts
    assert json.loads((s.run_dir / "config.json").read_text())["config"]["train"]["epochs"] == 2
    assert len(list((s.run_dir / "plots").glob("*.png"))) == 4

    submissions = s.run_dir / "submissions"
    assert sorted(p.stem for p in submissions.glob("*.csv")) == sorted(
        p.stem for p in (data / "mic_dev").glob("*.wav")
    )
    result = CliRunner().invoke(
        app, ["score", "--ref", str(data / "metadata_dev"), "--pred", str(submissions), "--json"]
    )
    rescored = json.loads(result.stdout)["overall"]
    for key in ("er", "f", "frame_recall"):
        assert rescored[key] == pytest.approx(parent.data.metrics[f"cv_{key}"])

    # the test splits also scored with the DCASE 2022 suite: continuous directions (the CSVs
    # hold the 10-degree grid), per class, with jackknife intervals, in MLflow
    loc = summary["suites"]["dcase2022"]
    assert parent.data.metrics["cv_dcase2022_seld"] == pytest.approx(loc["overall"]["seld"])
    assert (
        len(loc["per_class"]["f"]) == 11
        and loc["intervals"]["seld"][0] < loc["intervals"]["seld"][1]
    )
    on_grid = CliRunner().invoke(
        app,
        [
            "score",
            "--ref",
            str(data / "metadata_dev"),
            "--pred",
            str(submissions),
            "--suite",
            "dcase2022",
            "--json",
        ],
    )
    grid_le = json.loads(on_grid.stdout)["dcase2022"]["overall"]["le"]
    assert grid_le != pytest.approx(loc["overall"]["le"], abs=1e-6)  # not the rounded rows
    # one fold's evaluation from the run's cached predictions, with the suite beside
    fold1 = CliRunner().invoke(
        app,
        ["evaluate", "--dataset", str(data), "--fold", "1", "--workspace", str(ws),
         "--run", s.run, "--suite", "dcase2022", "--json"],
    )  # fmt: skip
    assert fold1.exit_code == 0, fold1.output
    evaluated = json.loads(fold1.stdout)
    assert evaluated["two_stage"]["overall"]["seld"] == pytest.approx(summary["folds"]["1"]["seld"])
    assert set(evaluated["suites"]["dcase2022"]["overall"]) == {"er", "f", "le", "lr", "seld"}

    # thresholds tuned on the validation predictions: never worse there, same with the same seed
    from orchestrator.search_space import load_search_space
    from orchestrator.tune import tune_thresholds

    space = load_search_space(Path(__file__).resolve().parents[2] / "search_spaces" / "tiny.yaml")
    first = tune_thresholds(s, space, trials=12, seed=3)
    second = tune_thresholds(s, space, trials=12, seed=3)
    assert first["best_config"] == second["best_config"]
    scores = first["scores"]
    assert scores["validation_tuned"]["seld"] <= scores["validation_default"]["seld"] + 1e-12
    assert first["trials"] == 12
    tuned = [
        r
        for r in client.search_runs([summary["experiment_id"]])
        if r.data.tags.get("kind") == "tune-thresholds"
    ]
    assert len(tuned) == 2 and tuned[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {a.path for a in client.list_artifacts(tuned[0].info.run_id)} >= {
        "trials.csv",
        "summary.json",
    }
    assert "tuned_cv_seld" in client.get_run(parent.info.run_id).data.metrics

    # a metric suite's aggregate instead, and a higher-is-better score in its own direction
    import dataclasses

    import pandas as pd

    from seld.errors import ConfigError

    loc = tune_thresholds(s, space, trials=8, seed=3, suite="dcase2022")
    assert loc["suite"] == "dcase2022" and loc["mode"] == "min"
    assert set(loc["scores"]["test_tuned"]) == {"er", "f", "le", "lr", "seld"}
    trials = pd.read_csv(s.run_dir / "thresholds-dcase2022" / "trials.csv")
    assert len(trials) == 8
    assert loc["scores"]["validation_tuned"]["seld"] == pytest.approx(trials["val_seld"].min())
    up = tune_thresholds(s, dataclasses.replace(space, metric="val_f"), trials=8, seed=3,
                         suite="dcase2022")  # fmt: skip
    assert up["mode"] == "max"
    trials = pd.read_csv(s.run_dir / "thresholds-dcase2022" / "trials.csv")
    assert up["scores"]["validation_tuned"]["f"] == pytest.approx(trials["val_f"].max())
    assert "tuned_dcase2022_cv_seld" in client.get_run(parent.info.run_id).data.metrics
    with pytest.raises(ConfigError, match="is not a score of the dcase2019 suite"):
        tune_thresholds(s, dataclasses.replace(space, metric="val_le"))

    # a rerun of the same command skips every finished stage
    again = run_cv(s)
    for k, fold in again["stages"].items():
        for stage in ("sed", "doa"):
            assert fold[stage] == summary["stages"][k][stage]  # read back, not retrained
    assert again["overall"] == pytest.approx(summary["overall"], nan_ok=True)


def _kill_worker_after_epoch(stage_dir: Path, epoch: int, killed: dict) -> threading.Thread:
    """Test-only failure injection: once the stage has checkpointed ``epoch`` (and is not done),
    SIGKILL the Ray Train worker training it (its pid is in the stage's ``worker.json``)."""

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (stage_dir / "done.json").exists():
            try:
                seen = load_checkpoint(stage_dir / "last.pt")["epoch"]
                pid = json.loads((stage_dir / "worker.json").read_text())["pid"]
            except (FileNotFoundError, RuntimeError, EOFError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            if seen >= epoch:
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, epoch=seen)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_killed_worker_resumes_from_its_checkpoint(local_ray, tiny_data: Path, tiny_ws: Path):
    data, ws = tiny_data, tiny_ws
    s = settings(data, ws, folds=(1,), epochs=4)
    sed = s.run_dir / "fold1" / "sed"
    killed: dict = {}
    watcher = _kill_worker_after_epoch(sed, 1, killed)
    run_cv(s)
    watcher.join(timeout=5)
    assert killed and 1 <= killed["epoch"] < 4  # the worker died in the middle of the stage
    restarted = json.loads((sed / "worker.json").read_text())["pid"]
    assert restarted != killed["pid"]  # Ray Train started another worker, which finished
    last = load_checkpoint(sed / "last.pt")
    assert last["epoch"] == 4 and [h["epoch"] for h in last["history"]] == [1, 2, 3, 4]
    assert (s.run_dir / "fold1" / "doa" / "done.json").exists()


@pytest.mark.heavy
def test_data_parallel_workers_per_fold(local_ray, tiny_data: Path, tiny_ws: Path):
    data, ws = tiny_data, tiny_ws
    s = settings(data, ws, folds=(2,), workers_per_fold=2, epochs=1)
    summary = run_cv(s)
    for stage in ("sed", "doa"):
        history = load_checkpoint(s.run_dir / "fold2" / stage / "last.pt")["history"]
        assert [h["world_size"] for h in history] == [2]
    assert summary["overall"]["er"] >= 0


def _reserved_placement_groups() -> list[str]:
    table = ray.util.placement_group_table()
    return [pg for pg, info in table.items() if info["state"] in ("PENDING", "CREATED")]


def test_a_killed_fold_job_gives_its_cpus_back(tiny_data: Path, tiny_ws: Path):
    """What ASHA does to a trial: its fold jobs are killed in the middle of a stage. On the
    Ray Train path, Ray Train's cleaner must then remove the stage's placement group, or its
    CPUs stay reserved and every later trial waits for them forever (this hung the resumed
    search of issue 6)."""
    data, ws = tiny_data, tiny_ws
    s = settings(data, ws, folds=(1,), epochs=500, trainer="ray-train")
    with ray_session(num_cpus=2, dashboard=True) as dashboard_url:
        assert dashboard_url and dashboard_url.startswith("127.0.0.1:")
        gcs = ray.get_runtime_context().gcs_address
        job = fold_job.options(runtime_env={"env_vars": {"RAY_ADDRESS": gcs}})
        ref = job.remote(s.to_dict(), 1, None, {"sed": "", "doa": ""})
        sed = s.run_dir / "fold1" / "sed"
        deadline = time.time() + 300
        while not (sed / "last.pt").exists():  # training has started: its CPUs are reserved
            assert time.time() < deadline
            time.sleep(0.5)
        assert _reserved_placement_groups()
        assert ray.available_resources().get("CPU", 0) == pytest.approx(1.5)
        ray.cancel(ref, force=True)
        with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
            ray.get(ref)
        deadline = time.time() + 60
        while _reserved_placement_groups():
            assert time.time() < deadline, "the killed stage's placement group was never removed"
            time.sleep(0.5)
        while ray.available_resources().get("CPU", 0) < 2:
            assert time.time() < deadline, ray.available_resources()
            time.sleep(0.5)
        assert not (sed / "done.json").exists()  # it was killed, not finished


@ray.remote(num_cpus=0)
class _Trial:
    """Stands for a Tune trial's actor: it starts the fold jobs and waits for them."""

    def run(self, settings: dict, run_ids: dict) -> None:
        from orchestrator.cv_jobs import run_fold_jobs

        run_fold_jobs(CVSettings.from_dict(settings), run_ids, None)


def test_a_stopped_trial_takes_its_fold_tasks_with_it(tiny_data: Path, tiny_ws: Path):
    """ASHA stops a trial by killing its actor, which owns the fold tasks: each fold task's
    worker process must die with it and give its CPUs back, without marking the stage done."""
    data, ws = tiny_data, tiny_ws
    s = settings(data, ws, folds=(1,), epochs=500, run="stopped-trial")
    assert not s.uses_ray_train
    with ray_session(num_cpus=2):
        trial = _Trial.remote()
        ref = trial.run.remote(s.to_dict(), {1: {"sed": "", "doa": ""}})
        sed = s.run_dir / "fold1" / "sed"
        deadline = time.time() + 300
        while not (sed / "last.pt").exists():  # training has started: its CPUs are held
            assert time.time() < deadline
            time.sleep(0.5)
        while ray.available_resources().get("CPU", 0) != pytest.approx(1.5):  # view lags
            assert time.time() < deadline, ray.available_resources()
            time.sleep(0.2)
        worker = json.loads((sed / "worker.json").read_text())["pid"]
        ray.kill(trial)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(ref)
        deadline = time.time() + 60
        while ray.available_resources().get("CPU", 0) < 2 or _alive(worker):
            assert time.time() < deadline, (ray.available_resources(), _alive(worker))
            time.sleep(0.5)
        assert not (sed / "done.json").exists()  # it was stopped, not finished


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@ray.remote(num_cpus=0)
class _SlowSink:
    def __init__(self):
        self.calls = 0

    def call(self) -> int:
        self.calls += 1
        time.sleep(0.05)
        return 1

    def count(self) -> int:
        return self.calls


@ray.remote(num_cpus=2)
def _holder(sink, wait) -> tuple[float, float]:
    started = time.time()
    for _ in range(20):
        wait([sink.call.remote()])
    return started, time.time()


@ray.remote(num_cpus=1)
def _next_in_queue() -> float:
    return time.time()


def test_waiting_on_the_sink_keeps_the_cpu(local_ray):
    """A fold task that waits for the metrics sink keeps its CPU: the next queued task starts
    only when it ends (with ``ray.get`` Ray lends the blocked task's CPU away)."""
    from orchestrator.cv import wait_holding_cpu

    sink = _SlowSink.remote()
    for wait, overlaps in ((ray.get, True), (wait_holding_cpu, False)):
        before = ray.get(sink.count.remote())
        holder = _holder.remote(sink, wait)
        while ray.get(sink.count.remote()) < before + 2:  # the holder runs, and waits
            time.sleep(0.02)
        queued = _next_in_queue.remote()
        (_, ended), started = ray.get(holder), ray.get(queued)
        assert (started < ended) == overlaps, (wait, started - ended)


@pytest.mark.heavy  # node spread: also test_sweep (two GPU nodes)
def test_folds_spread_over_nodes_and_doa_follows_its_own_sed(tmp_path: Path):
    from ray.cluster_utils import Cluster

    data = make_data(tmp_path, per_split=4, seconds=8, drop={1: 3, 2: 3})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2, num_gpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        ws = tmp_path / "ws"
        extract_dataset(data, ws, TINY_FEATURES, "mic")
        summary = run_cv(settings(data, ws, gpus_per_job=1.0, epochs=3, cpus_per_worker=0.5))
    finally:
        ray.shutdown()
        cluster.shutdown()
    stages = summary["stages"]
    nodes = {stages[k][stage]["node_id"] for k in stages for stage in ("sed", "doa")}
    assert len(nodes) == 2  # the two GPU nodes both ran fold jobs
    for k in stages:
        assert stages[k]["doa"]["start"] >= stages[k]["sed"]["end"]
    # fold 3 trains on the small splits 1 and 2: its DOA starts while fold 1's SED still runs
    slowest_sed_end = max(stages[k]["sed"]["end"] for k in stages)
    assert stages["3"]["doa"]["start"] < slowest_sed_end


def test_four_fold_jobs_share_one_gpu(tiny_data: Path, tiny_ws: Path):
    """`cv --gpus-per-job 0.25` on a node with one (simulated) GPU: the four fold jobs hold a
    quarter of it each and train at once, all on GPU 0 (their CUDA_VISIBLE_DEVICES). Half a
    GPU each would run two, then the other two."""
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        assert ray.cluster_resources()["GPU"] == 1
        args = ["cv", "--dataset", str(tiny_data), "--workspace", str(tiny_ws), "--run", "shared"]
        args += ["--epochs", "2", "--gpus-per-job", "0.25", "--json"]
        result = CliRunner().invoke(app, args)
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    run_dir = tiny_ws / "runs" / "shared"
    assert json.loads((run_dir / "config.json").read_text())["run"]["gpus_per_job"] == 0.25
    entered, ended = [], []
    for k in (1, 2, 3, 4):
        for stage in ("sed", "doa"):
            done = json.loads((run_dir / f"fold{k}" / stage / "done.json").read_text())
            assert done["gpu_ids"] == ["0"], (k, stage, done["gpu_ids"])
        worker = json.loads((run_dir / f"fold{k}" / "sed" / "worker.json").read_text())
        entered.append(worker["started"])
        ended.append(json.loads((run_dir / f"fold{k}" / "sed" / "done.json").read_text())["end"])
    assert max(entered) < min(ended)  # every fold's SED had started before the first ended
    assert CVSettings.from_run(run_dir).gpus_per_job == 0.25
    # a run made before fractional GPUs (use_gpu: true) reads as a whole GPU per job
    legacy = CVSettings.from_run(run_dir).to_dict()
    legacy.pop("gpus_per_job")
    assert CVSettings.from_dict(legacy | {"use_gpu": True}).gpus_per_job == 1.0
    with pytest.raises(ValueError, match=r"gpus_per_job 1\.5"):
        CVSettings.from_dict(legacy | {"gpus_per_job": 1.5})


def test_trials_and_sweep_cells_count_gpu_shares(tmp_path: Path):
    """A search's trials at once and a sweep's cells in flight count each fold job's share of
    a GPU: a 4-fold cv at a quarter of a GPU per job fits one GPU."""
    from orchestrator.hparams import default_concurrency
    from orchestrator.sweep import default_cells_in_flight
    from orchestrator.sweep_spec import load_sweep

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        sweep = load_sweep("tiny-table")
        for share, trials in ((1.0, 1), (0.5, 1), (0.25, 2), (0.1, 5)):
            s = settings(tmp_path, tmp_path, gpus_per_job=share)
            assert default_concurrency(s) == trials, share
            assert default_cells_in_flight(s, sweep) == trials + 1, share
    finally:
        ray.shutdown()


def test_search_space_errors_name_the_field(tmp_path: Path):
    from orchestrator.search_space import SearchSpaceError, load_search_space

    spaces = Path(__file__).resolve().parents[2] / "search_spaces"
    for path in spaces.glob("*.yaml"):
        assert load_search_space(path).params  # every shipped space is valid
    bad = {
        "params:\n  threshold: {type: float, low: 0.9, high: 0.1}\n": "params.threshold: low",
        "params:\n  threshold: {type: gaussian, low: 0, high: 1}\n": "params.threshold.type",
        "params:\n  loss: {type: categorical}\n": "params.loss.choices",
        "params:\n  lr: {type: logfloat, low: 0, high: 1}\n": "params.lr.low",
        "params:\n  x: {type: float, low: 0, high: 1, colour: red}\n": "unknown field(s)",
        "params:\n  m: {type: int, low: 1, high: 5, when: {later: true}}\n": "params.m.when",
        "threshold: 0.3\n": "expected a mapping with a 'params' mapping",
    }
    for text, message in bad.items():
        path = tmp_path / "space.yaml"
        path.write_text(text)
        with pytest.raises(SearchSpaceError, match=re.escape(message)) as info:
            load_search_space(path)
        assert str(path) in str(info.value)


def test_the_joint_method_trains_through_cv_with_set_overrides(tiny_data: Path, tmp_path: Path):
    """`cv --config paper-joint-mic --set ...` made tiny: one joint stage per fold, and a
    --set value reaches the training loop, the run folder and MLflow."""
    data, ws = tiny_data, tmp_path / "ws"
    sets = [
        *("features.sample_rate=16000", "features.n_fft=512", "features.hop_length=160"),
        *("features.n_mels=64", "model.channels=[16,32,32,32]", "model.rnn_hidden=16"),
        *("train.batch_size=16", "train.lr=0.002", "train.max_batches_per_epoch=3"),
    ]
    args = ["cv", "--dataset", str(data), "--workspace", str(ws), "--run", "joint"]
    args += ["--config", "paper-joint-mic", *[x for s in sets for x in ("--set", s)]]
    args += ["--folds", "1", "--epochs", "2", "--json"]
    result = CliRunner().invoke(app, args, env={"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["folds"]) == ["1"] and list(summary["stages"]["1"]) == ["joint"]
    assert 0 <= summary["overall"]["er"]

    run_dir = ws / "runs" / "joint"
    assert not (run_dir / "fold1" / "sed").exists()
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["method"] == "joint" and written["train"]["lr"] == 0.002
    last = load_checkpoint(run_dir / "fold1" / "joint" / "last.pt")
    assert last["train_config"]["lr"] == 0.002 and last["train_config"]["stage"] == "joint"
    assert last["train_config"]["amsgrad"] is True  # the preset's, not overridden
    assert [h["lr"] for h in last["history"]] == [0.002, 0.002]  # the loop ran at that rate
    assert last["model_config"]["channels"] == [16, 32, 32, 32]

    client = MlflowClient(default_tracking_uri(ws))
    parent = client.get_run(summary["mlflow_parent_run"])
    params = parent.data.params
    assert (params["train.lr"], params["method"], params["name"]) == (
        "0.002",
        "joint",
        "paper-joint-mic",
    )
    assert params["model.channels"] == "[16, 32, 32, 32]" and params["features.n_mels"] == "64"
    assert params["train.epochs"] == "2" and params["train.steps"] == "None"
    assert parent.data.tags["method"] == "joint" and len(parent.data.tags["config_hash"]) == 12
    children = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.data.tags["stage"] for r in children] == ["joint"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"config.yaml"}


@ray.remote
def _process_state() -> tuple[int, bool]:
    import os
    import sys

    return os.getpid(), "orchestrator.cv" in sys.modules and "torch" in sys.modules


def test_warmed_workers_take_the_next_fold_tasks(local_ray, tmp_path: Path):
    """The processes warmed while the driver sets up are the ones the next tasks of the fold
    task's shape get, with torch and the training code already loaded."""
    from orchestrator.cv_jobs import NO_PLACEMENT_GROUP, warm_fold_workers

    s = settings(tmp_path, tmp_path, cpus_per_worker=1.0)
    refs = warm_fold_workers(s)
    assert len(refs) == 2  # two fold tasks fit on the 2 CPUs
    ray.get(refs)
    probe = _process_state.options(num_cpus=1.0, scheduling_strategy=NO_PLACEMENT_GROUP)
    states = ray.get([probe.remote() for _ in range(2)])
    assert all(loaded for _, loaded in states), states
    assert warm_fold_workers(settings(tmp_path, tmp_path, gpus_per_job=1.0)) == []


def test_multi_accdoa_cross_validates_and_tunes_on_dcase2019_data(tiny_data: Path, tiny_ws: Path):
    """The method of three tracks per class on the 2019 grid: its decoded rows (a class may
    hold several directions in a frame, as the 2019 format allows) are scored by the official
    scorer, per ov and ir, and its threshold search counts them with the 2019 suite."""
    from seld.data.submission import read_submission

    runner = CliRunner()
    sets = ["--set", "method=multi-accdoa", "--set", "inference.threshold=0.2"]
    result = runner.invoke(app, ["cv", "--dataset", str(tiny_data), "--workspace", str(tiny_ws),
                                 "--folds", "1", "--epochs", "1", *sets, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["suite"] == "dcase2019" and list(summary["stages"]["1"]) == ["multi-accdoa"]
    assert set(summary["overall"]) == {"er", "f", "doa_error", "frame_recall", "seld"}
    assert {"ov", "ir"} <= set(summary["groups"])
    submissions = sorted((tiny_ws / "runs" / "cv" / "submissions").glob("*.csv"))
    rows = [read_submission(p) for p in submissions]
    assert submissions and all(r.shape[1] == 4 for r in rows) and any(len(r) for r in rows)
    tuned = runner.invoke(app, ["tune", "thresholds", "--workspace", str(tiny_ws), "--run", "cv",
                                "--trials", "3", "--json"])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    search = json.loads(tuned.stdout)
    assert search["suite"] == "dcase2019"
    assert search["scores"]["test_default"]["seld"] == pytest.approx(summary["overall"]["seld"])
