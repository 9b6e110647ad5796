"""Caches valid only for their inputs, one writer per run, safe run names, clean interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cv import CVSettings
from orchestrator.cv_run import claimed_run
from orchestrator.extract import extract_dataset
from orchestrator.jsonout import to_json
from orchestrator.runs import RunError, RunLock, validate_run_name
from orchestrator.tracking import default_tracking_uri
from seld.config import load_config
from seld.data.audio import read_audio
from seld.data.folds import make_folds
from seld.data.metadata import Event, write_metadata
from seld.features.spectral import extract_features
from seld.features.store import fold_scaler
from seld.fsutil import remove_stale_temporaries

from conftest import DEFAULT_EVENTS, tiny_config, tiny_features, write_wav

CONFIG = tiny_features("mic")
STEMS = ["split1_ir0_ov1_0", "split2_ir0_ov1_0", "split3_ir0_ov1_0", "split4_ir0_ov1_0"]
runner = CliRunner()


def _dataset(root: Path, seed: int, stems=STEMS) -> Path:
    for i, stem in enumerate(stems):
        write_wav(root / "mic_dev" / f"{stem}.wav", 2.0, seed=seed * 100 + i)
        write_metadata(root / "metadata_dev" / f"{stem}.csv", DEFAULT_EVENTS)
    return root


def test_another_dataset_in_the_same_workspace_is_extracted_anew(local_ray, tmp_path: Path):
    """The stale-dataset sequence: B after A in one workspace trains on B's features."""
    a, b, ws = _dataset(tmp_path / "A", 1), _dataset(tmp_path / "B", 2), tmp_path / "ws"
    first = extract_dataset(a, ws, CONFIG, "mic")
    assert len(first.written) == 4 and not first.redone
    second = extract_dataset(b, ws, CONFIG, "mic")
    assert len(second.written) == 4 and not second.skipped
    assert second.redone == {stem: "audio changed" for stem in STEMS}
    audio, _ = read_audio(b / "mic_dev" / f"{STEMS[0]}.wav", sample_rate=CONFIG.sample_rate)
    with h5py.File(second.root / "mic_dev" / f"{STEMS[0]}.h5") as h5:
        np.testing.assert_array_equal(h5["features"][()], extract_features(audio, CONFIG))
    # unchanged inputs are skipped again
    third = extract_dataset(b, ws, CONFIG, "mic")
    assert len(third.skipped) == 4 and not third.written


def test_a_fixed_label_reaches_features_and_scaler(local_ray, tmp_path: Path):
    data, ws = _dataset(tmp_path / "A", 1), tmp_path / "ws"
    root = extract_dataset(data, ws, CONFIG, "mic").root
    (fold,) = make_folds([*map(_name, STEMS)], folds=[1])
    scaler = fold_scaler(root, "mic", fold)
    # a label moved: speech now starts at 0.5 s instead of 0.1 s, in a training recording
    train_stem = fold.train[0].stem
    fixed = (Event("speech", 0.5, 0.9, 10, -40, 1), DEFAULT_EVENTS[1])
    write_metadata(data / "metadata_dev" / f"{train_stem}.csv", fixed)
    again = extract_dataset(data, ws, CONFIG, "mic")
    assert again.redone == {train_stem: "metadata changed"}
    with h5py.File(root / "mic_dev" / f"{train_stem}.h5") as h5:
        speech = h5["activity"][:, 5]
        assert speech[20] == 0 and speech[60] == 1  # 0.2 s inactive now, 0.6 s active
    # the features did not change, but the scaler's inputs did: it is refitted, not reused
    refit = fold_scaler(root, "mic", fold)
    assert refit.inputs != scaler.inputs
    np.testing.assert_allclose(refit.mean, scaler.mean)


def _name(stem: str):
    from seld.data.dcase import parse_recording_name

    return parse_recording_name(stem)


def test_run_names_cannot_leave_the_workspace(tmp_path: Path):
    for bad in ("../../escape", "/tmp/abs", "a/b", "..", "", ".hidden", "x" * 200, "a/../b"):
        with pytest.raises(RunError):
            validate_run_name(bad)
        if bad != "a/b":  # a search's trial runs are nested: search/trial
            with pytest.raises(RunError):
                CVSettings(dataset=str(tmp_path), workspace=str(tmp_path), run=bad)
    assert validate_run_name("paper-mic_2.v1") == "paper-mic_2.v1"
    assert CVSettings(dataset="d", workspace="w", run="search/trial_1").run == "search/trial_1"
    result = runner.invoke(
        app, ["cv", "--dataset", str(tmp_path), "--workspace", str(tmp_path), "--run", "../x"]
    )
    assert result.exit_code == 2 and "bad run name" in result.output
    assert not (tmp_path.parent / "x").exists()


def test_a_second_writer_is_refused_and_a_dead_holder_is_taken_over(tmp_path: Path):
    run_dir = tmp_path / "runs" / "same"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from orchestrator.runs import RunLock\n"
            f"with RunLock({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError) as info, RunLock(run_dir):
            pass
        assert f"PID {holder.pid}" in str(info.value) and "in use" in str(info.value)
    finally:
        holder.kill()  # kill -9: the lock file and lock.json stay behind
        holder.wait()
    assert (run_dir / "lock.json").exists()
    with RunLock(run_dir):
        assert json.loads((run_dir / "lock.json").read_text())["pid"] == os.getpid()
    assert not (run_dir / "lock.json").exists()


def test_reusing_a_run_name_with_other_settings_is_refused(tmp_path: Path):
    data, ws = _dataset(tmp_path / "A", 1), tmp_path / "ws"
    base = dict(dataset=str(data), workspace=str(ws), run="a", tracking_uri="")
    one, two = tiny_config(epochs=1), tiny_config("seed=5", "model.width=0.5", epochs=2)
    with claimed_run(CVSettings(**base, config=one)):
        pass
    with claimed_run(CVSettings(**base, config=one)):  # the same settings continue
        pass
    with pytest.raises(RunError) as info, claimed_run(CVSettings(**base, config=two)):
        pass
    message = str(info.value)
    assert "train.epochs (1 -> 2)" in message and "seed (0 -> 5)" in message
    assert "model.width (1.0 -> 0.5)" in message and "--overwrite" in message
    with pytest.raises(RunError, match=r"run.workers_per_fold \(1 -> 2\)"):
        with claimed_run(CVSettings(**base, config=one, workers_per_fold=2)):
            pass
    (ws / "runs" / "a" / "fold1").mkdir()
    with claimed_run(CVSettings(**base, config=two), overwrite=True) as run_dir:
        assert not (run_dir / "fold1").exists()
    recorded = json.loads((ws / "runs" / "a" / "config.json").read_text())
    assert recorded["config"]["train"]["epochs"] == 2 and recorded["inputs"]["dataset"]
    written = yaml.safe_load((ws / "runs" / "a" / "config.yaml").read_text())
    assert written == two and load_config(ws / "runs" / "a" / "config.yaml").to_dict() == two
    # a changed recording is a changed run too
    write_metadata(data / "metadata_dev" / f"{STEMS[0]}.csv", DEFAULT_EVENTS[:1])
    with pytest.raises(RunError, match=r"inputs\.dataset"):
        with claimed_run(CVSettings(**base, config=two)):
            pass


def test_scores_without_references_are_missing_not_infinite():
    from seld.metrics.reference import count_file

    rows = np.array([[0, 1, 10, 0]])
    scores = count_file(np.zeros((0, 4), int), rows, 50).scores()
    assert np.isnan(scores.er) and np.isnan(scores.seld)
    text = to_json({"scores": scores.as_dict(), "inf": float("inf"), "n": np.float32(1.5)})
    parsed = json.loads(text)  # strict JSON: no NaN, no Infinity
    assert parsed["scores"]["er"] is None and parsed["inf"] is None and parsed["n"] == 1.5


def test_temporaries_of_a_live_writer_are_kept(tmp_path: Path):
    from seld.fsutil import atomic_path

    folder = tmp_path / "f"
    with atomic_path(folder / "x.h5") as tmp:
        tmp.write_bytes(b"partial")
        assert remove_stale_temporaries(folder) == 0 and tmp.exists()  # its writer is alive
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        orphan = folder / tmp.name.replace(f".{os.getpid()}.", f".{dead.pid}.")
        orphan.write_bytes(b"left by a killed writer")
        assert remove_stale_temporaries(folder) == 1 and not orphan.exists() and tmp.exists()


def test_a_run_continued_removes_what_a_killed_run_was_writing(tmp_path: Path):
    """A driver killed while a fold job wrote a checkpoint leaves its temporary file (found by
    bench/soak.py); the next command on the run removes it, never a live writer's."""
    from seld.fsutil import atomic_path

    data, ws = _dataset(tmp_path / "A", 1), tmp_path / "ws"
    settings = CVSettings(
        dataset=str(data), workspace=str(ws), run="a", tracking_uri="", config=tiny_config()
    )
    with claimed_run(settings) as run_dir:
        stage = run_dir / "fold1" / "doa"
        stage.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with atomic_path(stage / "last.pt") as live:
        live.write_bytes(b"being written")
        orphan = stage / live.name.replace(f".{os.getpid()}.", f".{dead.pid}.")
        orphan.write_bytes(b"left by a killed writer")
        with claimed_run(settings):
            assert not orphan.exists() and live.exists()


@pytest.mark.slow
def test_cv_under_sigterm_marks_its_mlflow_runs_killed(tmp_path: Path):
    from seld.synth import SynthConfig, synthesize_dataset

    data, ws = tmp_path / "data", tmp_path / "ws"
    synthesize_dataset(data, SynthConfig(seconds=4, per_split=1, formats=("mic",), seed=3))
    cli = Path(sys.executable).parent / "seld-orch"
    proc = subprocess.Popen(
        [
            str(cli),
            "cv",
            "--dataset",
            str(data),
            "--workspace",
            str(ws),
            "--run",
            "t",
            "--folds",
            "1",
            "--epochs",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"},
    )
    runs_file = ws / "runs" / "t" / "mlflow_runs.json"
    epoch_seen = ws / "runs" / "t" / "fold1" / "sed" / "last.pt"
    deadline = time.time() + 240
    while not epoch_seen.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert epoch_seen.exists(), proc.stderr.read() if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    runs = json.loads(runs_file.read_text())
    client = MlflowClient(default_tracking_uri(ws))
    assert client.get_run(runs["parent"]).info.status == "KILLED"
    statuses = {client.get_run(r).info.status for r in runs["children"]["1"].values()}
    assert "RUNNING" not in statuses
    assert not list((ws / "runs" / "t").rglob(".*.tmp"))  # no partial file left


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_port_in_use_is_an_error(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["ui", "--workspace", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 2 and f"port {port}" in result.output


@pytest.mark.slow
def test_ui_under_sigterm_leaves_no_server_behind(tmp_path: Path):
    import socket

    port, ws = _free_port(), tmp_path / "ui-ws"
    cli = Path(sys.executable).parent / "seld-orch"
    proc = subprocess.Popen([str(cli), "ui", "--workspace", str(ws), "--port", str(port)])
    deadline = time.time() + 120
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the MLflow server did not start")
    assert len(_processes_mentioning(str(ws))) >= 2  # ui and its server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    time.sleep(1)
    assert _processes_mentioning(str(ws)) == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_an_unwritable_workspace_is_named_in_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    workspace = blocker / "ws"
    for command in (["extract", "--dataset", str(tmp_path)], ["cv", "--dataset", str(tmp_path)]):
        result = runner.invoke(app, [*command, "--workspace", str(workspace)])
        assert result.exit_code == 2
        assert f"cannot write to workspace {workspace}" in " ".join(result.output.split())
        assert "Traceback" not in result.output


def test_the_local_ray_listens_on_loopback_only():
    import psutil
    import ray

    from orchestrator.ray_utils import ray_session

    with ray_session(num_cpus=2, dashboard=True):

        @ray.remote
        class Echo:
            def ping(self) -> int:
                return os.getpid()

        @ray.remote
        def task() -> int:
            return os.getpid()

        actor = Echo.remote()
        ray.get([actor.ping.remote(), task.remote()])
        me = psutil.Process()
        ours = {me.pid} | {p.pid for p in me.children(recursive=True)}
        listening = [
            (c.laddr.ip, c.laddr.port, c.pid)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in ours
        ]
    names = {pid: psutil.Process(pid).name() for _, _, pid in listening if psutil.pid_exists(pid)}
    assert len(listening) >= 5, listening  # GCS, raylet, agents, the driver, workers
    outside = [
        (ip, port, names.get(pid))
        for ip, port, pid in listening
        if ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    ]
    assert outside == [], outside


def _open_store(uri: str, barrier, results) -> None:
    """In a new process: wait for the others, then open (create) the tracking store."""
    from orchestrator.tracking import tracking_client

    barrier.wait()
    try:
        tracking_client(uri).create_experiment(f"e{os.getpid()}")
        results.put("ok")
    except Exception as exc:  # what a user would see: MLflow's error
        results.put(f"{type(exc).__name__}: {exc}".splitlines()[0])


def test_commands_started_together_set_up_one_new_tracking_store(tmp_path: Path):
    """Three processes open a new workspace's SQLite store at the same moment; each gets a
    working store. Opened without the lock, two such processes failed in 4 of 4 tries on this
    machine (``table ... already exists`` from MLflow's own set-up)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    barrier, results = context.Barrier(3), context.Queue()
    processes = [
        context.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(3)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [results.get(timeout=5) for _ in processes] == ["ok"] * 3
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert len(names - {"Default"}) == 3


def _set_up_store(uri: str) -> None:
    from orchestrator.tracking import tracking_client

    tracking_client(uri)


def test_a_store_set_up_interrupted_is_never_left_half_made(tmp_path: Path):
    """A command killed while it creates a new workspace's store (MLflow's set-up takes
    seconds) leaves either no store or a whole one. Before, a cv sent SIGTERM at that moment
    left tables without their migration record, and every later command of the workspace
    failed with ``table secrets already exists`` (found by bench/soak.py)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    database = tmp_path / "ws" / "mlflow.db"
    uri = f"sqlite:///{database}"
    process = context.Process(target=_set_up_store, args=(uri,))
    process.start()
    while not list(database.parent.glob(".mlflow.db.*.tmp")) and process.is_alive():
        time.sleep(0.01)
    time.sleep(0.5)
    process.kill()  # in the middle of the set-up, under its temporary name
    process.join()
    assert not database.exists()
    from orchestrator.tracking import tracking_client

    tracking_client(uri).create_experiment("after")  # the next command sets it up
    assert not list(database.parent.glob("*.tmp"))


def _first_revision() -> str:
    """The first of MLflow's store migrations."""
    from alembic.script import ScriptDirectory
    from mlflow.store import db_migrations

    return ScriptDirectory(os.path.dirname(db_migrations.__file__)).get_base()


def test_a_half_made_store_without_runs_is_made_anew_one_with_runs_is_kept(tmp_path: Path):
    """What an interrupted set-up left before: tables without MLflow's migration record."""
    import sqlite3

    from orchestrator import tracking

    for runs in (False, True):
        database = tmp_path / str(runs) / "mlflow.db"
        uri = f"sqlite:///{database}"
        make = "from mlflow.tracking import MlflowClient; import sys; c = MlflowClient(sys.argv[1])"
        make += "; c.create_run(c.create_experiment('x'))" if runs else "; c.search_experiments()"
        # in another process: MLflow keeps one store object per URI in a process
        subprocess.run([sys.executable, "-c", make, uri], check=True, capture_output=True)
        # as a set-up killed in its migrations leaves it: some tables made, the migration
        # record behind them (here: at the first revision, one table still missing)
        with sqlite3.connect(database) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (_first_revision(),))
            db.execute("DROP TABLE secrets")
        with pytest.raises(Exception, match=r"already exists|duplicate column"):
            MlflowClient(uri).search_experiments()  # MLflow alone cannot open it
        if runs:
            with pytest.raises(Exception, match=r"already exists|duplicate column"):
                tracking.tracking_client(uri)
            assert database.exists() and not Path(f"{database}.incomplete").exists()
        else:
            tracking.tracking_client(uri).create_experiment("made anew")
            assert Path(f"{database}.incomplete").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs (needs the right to mount, as root in a VM or CI has; skipped without)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_extract_is_one_line_a_recording_and_the_next_run_completes(
    tiny_data: Path, small_disk: Path
):
    """Extract onto a 6 MB disk: what fits is written, every other recording fails with one
    line naming its feature file and the full disk (HDF5 writing straight to a full disk could
    crash the worker), no temporary file is left; with space, the next run does the rest."""
    ws = small_disk / "ws"
    args = ["extract", "--dataset", str(tiny_data), "--workspace", str(ws), "--num-cpus", "2"]
    full = CliRunner().invoke(app, [*args, "--json"])
    assert full.exit_code == 1, full.output
    summary = json.loads(full.stdout)
    assert summary["written"] >= 1 and summary["failed"]
    for audio, reason in summary["failed"].items():
        assert reason.startswith(f"{audio}: features not written: {ws}")
        assert reason.endswith(".h5: no space left on the device") and "\n" not in reason
    assert not list(small_disk.rglob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    again = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert again["failed"] == {} and again["written"] == len(summary["failed"])
