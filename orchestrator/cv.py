"""Four-fold cross-validation of the two-stage method on Ray Train, tracked in MLflow.

Each fold is a Ray task that runs two Ray Train ``TorchTrainer`` jobs in turn: SED(k), then
DOA(k) from SED(k)'s convolutional blocks, then the fold's inference. Folds run concurrently as
resources allow, so DOA(k) starts when SED(k) ends, whatever the other folds do. Every epoch
is checkpointed (to the run folder and to Ray Train's storage); a crashed worker is restarted by
Ray Train's failure config and resumes from the last epoch; rerunning the same ``cv`` command
after the driver died skips finished stages (``done.json``) and resumes unfinished ones.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.fold import FoldData, fold_data, predict_split, train_fold_stage
from orchestrator.layout import RunLayout, ray_storage
from orchestrator.ray_utils import HEAD_NODE
from orchestrator.runs import validate_run_name
from seld.config import ExperimentConfig, load_config, validate_config
from seld.fsutil import atomic_path
from seld.training import TrainConfig, load_checkpoint


@dataclass(frozen=True)
class CVSettings:
    """Everything a cv run needs, plain values only (it travels to every fold job): the
    experiment config (``config``, :class:`seld.config.ExperimentConfig` as a dict) and how
    this run executes it (where, with which resources)."""

    dataset: str
    workspace: str
    config: Mapping[str, Any] = field(default_factory=lambda: load_config("tiny").to_dict())
    run: str = "cv"
    use_gpu: bool = False
    workers_per_fold: int = 1
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    tracking_uri: str = ""
    #: where Ray Train keeps its checkpoints: a path or URI every node reaches (``s3://...``,
    #: an NFS path); default ``<workspace>/ray_results``
    storage: str = ""
    #: the splits each fold job predicts once trained (search trials leave out the test split)
    predict_splits: tuple[str, ...] = ("validation", "test")

    def __post_init__(self) -> None:
        validate_run_name(self.run, nested=True)

    @cached_property
    def experiment(self) -> ExperimentConfig:
        return validate_config(self.config, f"run {self.run}")

    @property
    def fmt(self) -> str:
        return self.experiment.data.format

    @property
    def folds(self) -> tuple[int, ...]:
        return self.experiment.cv.folds

    @property
    def protocol(self) -> str:
        return self.experiment.cv.protocol

    @property
    def threshold(self) -> float:
        return self.experiment.inference.threshold

    @property
    def median_frames(self) -> int:
        return self.experiment.inference.median_frames

    @property
    def stages(self) -> tuple[str, ...]:
        return self.experiment.stages

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    @property
    def layout(self) -> RunLayout:
        return RunLayout.named(self.workspace, self.run)

    @property
    def storage_path(self) -> str:
        return ray_storage(self.workspace, self.storage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CVSettings:
        """The inverse of :meth:`to_dict` (tuples come back as lists through Ray and JSON)."""
        data = dict(data)
        if "predict_splits" in data:
            data["predict_splits"] = tuple(data["predict_splits"])
        return cls(**data)

    @classmethod
    def from_run(cls, run_dir: Path) -> CVSettings:
        """The settings a cv run was made with, from its ``config.json``."""
        saved = json.loads(RunLayout(Path(run_dir)).config_json.read_text())
        return cls.from_dict({**saved["run"], "config": saved["config"]})

    def with_config(self, experiment: ExperimentConfig, **changes: Any) -> CVSettings:
        return replace(self, config=experiment.to_dict(), **changes)

    def train_config(self, stage: str) -> TrainConfig:
        return self.experiment.train_config(stage)


@dataclass
class StageRecord:
    fold: int
    stage: str
    start: float
    end: float
    best_epoch: int
    best_selection: float
    node_id: str = ""
    history: list[dict[str, float]] = field(default_factory=list)


def settings_fold_data(s: CVSettings, fold: int) -> FoldData:
    return fold_data(
        Path(s.dataset), Path(s.workspace), s.experiment.features, s.fmt, fold, s.protocol
    )


def _train_loop(config: dict[str, Any]) -> None:
    """Runs in the Ray Train worker: one stage of one fold."""
    s = CVSettings.from_dict(config["settings"])
    fold, stage, run_id, sink = config["fold"], config["stage"], config["run_id"], config["sink"]
    job = f"fold{fold}/{stage}"
    out_dir = s.layout.stage(fold, stage)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and not (out_dir / "last.pt").exists():
        with checkpoint.as_directory() as folder:  # restarted on a node without the local copy
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(folder) / "last.pt", out_dir / "last.pt")
    train_config = s.train_config(stage)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "node.txt").write_text(ray.get_runtime_context().get_node_id())
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:  # who trains this stage now, for ops (and the failure test)
        worker = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        with atomic_path(out_dir / "worker.json") as tmp:
            tmp.write_text(json.dumps(worker))
    if rank == 0 and sink is not None and (out_dir / "last.pt").exists():
        # resuming: the epochs before the crash are known to whoever follows the curves
        ray.get(sink.set_history.remote(job, load_checkpoint(out_dir / "last.pt")["history"]))

    def report(metrics: dict[str, float], folder: Path) -> None:
        if rank != 0:  # every rank reports; rank 0 owns the checkpoint and the tracking
            ray.train.report(metrics)
            return
        if sink is not None:
            ray.get(sink.log_epoch.remote(run_id, job, metrics))
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(folder / "last.pt", Path(tmp) / "last.pt")
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    import torch

    device = "cuda" if s.use_gpu and torch.cuda.is_available() else "cpu"
    train_fold_stage(
        settings_fold_data(s, fold), train_config, s.run_dir, report=report, device=device
    )


@ray.remote(num_cpus=0)
def fold_job(settings: dict[str, Any], fold: int, sink: Any, run_ids: dict[str, str]) -> dict:
    """The method's stages of fold k in turn (SED(k) then DOA(k), or joint(k)), then the
    fold's cached predictions on validation and test."""
    s = CVSettings.from_dict(settings)
    records = {}
    for stage in s.stages:
        out_dir = s.layout.stage(fold, stage)
        done = s.layout.done(fold, stage)
        job = f"fold{fold}/{stage}"
        if done.exists():
            records[stage] = json.loads(done.read_text())
            if sink is not None:
                sink.set_history.remote(job, records[stage]["history"])
                sink.set_state.remote(job, "done (earlier run)")
            continue
        if sink is not None:
            sink.set_state.remote(job, "starting")
        resources = {"CPU": s.cpus_per_worker} | ({"GPU": 1} if s.use_gpu else {})
        name = f"{s.run}-fold{fold}-{stage}"
        if not (out_dir / "last.pt").exists():
            _forget_train_run(s.storage_path, name)
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={
                "settings": settings,
                "fold": fold,
                "stage": stage,
                "run_id": run_ids[stage],
                "sink": sink,
            },
            scaling_config=ScalingConfig(
                num_workers=s.workers_per_fold,
                use_gpu=s.use_gpu,
                resources_per_worker=resources,
            ),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(
                name=name,
                storage_path=s.storage_path,
                failure_config=FailureConfig(max_failures=s.max_failures),
            ),
        )
        start = time.time()
        trainer.fit()
        best = load_checkpoint(s.layout.checkpoint(fold, stage, "best"))
        history = load_checkpoint(s.layout.checkpoint(fold, stage, "last"))["history"]
        record = StageRecord(
            fold,
            stage,
            start,
            time.time(),
            int(best["epoch"]),
            float(best["metrics"]["val_selection"]),
            (out_dir / "node.txt").read_text(),
            history,
        )
        records[stage] = asdict(record)
        done.write_text(json.dumps(records[stage]))
        if sink is not None:
            sink.set_state.remote(job, "done")
            sink.end_run.remote(run_ids[stage])
    data = settings_fold_data(s, fold)
    for split in s.predict_splits:
        for stage in s.stages:
            predict_split(data, s.run_dir, split, stage)
    return {"fold": fold, "stages": records}


def _forget_train_run(storage: str, name: str) -> None:
    """A stage that starts from scratch (its run folder was deleted) must not let Ray Train
    resume an earlier finished run of the same name, which would skip the training."""
    if "://" in storage:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        if fs.get_file_info(f"{root}/{name}").type != pyarrow.fs.FileType.NotFound:
            fs.delete_dir(f"{root}/{name}")
        return
    shutil.rmtree(Path(storage) / name, ignore_errors=True)


def run_fold_jobs(
    settings: CVSettings,
    run_ids: dict[int, dict[str, str]],
    sink: Any,
    on_status: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    poll_s: float = 1.0,
    on_history: Callable[[dict[str, dict[int, dict[str, float]]]], None] | None = None,
) -> list[dict]:
    """Start every fold job and wait for all, reporting the live status as it changes
    (``on_status``) and every job's epoch metrics so far (``on_history``). If the waiting is
    interrupted (Ctrl-C, or a search trial stopped early), the fold jobs are cancelled."""
    payload = settings.to_dict()
    # Ray Train's helpers in the fold jobs (its placement-group cleaner) find the cluster
    # through the state API; with several Ray instances on one machine they must be told which
    job = fold_job.options(
        # on the head, with the Train controller that fit() attaches to the caller's node: a
        # worker node then holds only training workers, which Ray Train restarts elsewhere
        resources=HEAD_NODE,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
        runtime_env={"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}},
    )
    refs = [job.remote(payload, k, sink, run_ids[k]) for k in settings.folds]
    pending = list(refs)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            if on_status is not None and sink is not None:
                on_status(ray.get(sink.get_status.remote()))
            if on_history is not None and sink is not None:
                on_history(ray.get(sink.get_history.remote()))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return ray.get(refs)
