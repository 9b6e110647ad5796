"""Four-fold cross-validation of the two-stage method on Ray: the settings, and one fold's work.

Each fold is one Ray job that trains the method's stages in turn (SED(k), then DOA(k) from
SED(k)'s convolutional blocks), then predicts the fold's validation and test recordings, so
DOA(k) starts the moment SED(k) ends, whatever the other folds do. Folds run concurrently as
resources allow (:mod:`orchestrator.cv_jobs` starts them).

A fold with one training worker is one Ray task (:func:`fold_task`) of the worker's CPUs (and
GPU): its process trains every stage of the fold and is then reused by the next queued fold,
so a stage starts in well under a second. Every epoch is checkpointed in the run folder; a
crashed or lost worker is retried by Ray (``max_retries``) in a new process, on any node, and
resumes from the last epoch (``last.pt``); rerunning the same ``cv`` command after the driver
died skips finished stages (``done.json``) and resumes unfinished ones. Data-parallel folds
(several workers) run on Ray Train instead (:mod:`orchestrator.cv_jobs`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import ray

from orchestrator.fold import FoldData, fold_data, predict_split, train_fold_stage
from orchestrator.layout import RunLayout, ray_storage
from orchestrator.runs import TRAINERS, validate_run_name
from seld.config import ExperimentConfig, load_config, validate_config
from seld.fsutil import atomic_path
from seld.methods.inference import views_of
from seld.methods.training import RESUME_NOTE, TrainConfig, gpu_share_device, load_checkpoint


@dataclass(frozen=True)
class CVSettings:
    """Everything a cv run needs, plain values only (it travels to every fold job): the
    experiment config (``config``, :class:`seld.config.ExperimentConfig` as a dict) and how
    this run executes it (where, with which resources)."""

    dataset: str
    workspace: str
    config: Mapping[str, Any] = field(default_factory=lambda: load_config("tiny").to_dict())
    run: str = "cv"
    #: the GPU share of each fold job (each data-parallel worker): 0 trains on CPUs, 1 gives a
    #: job a whole GPU, a fraction lets several jobs share one (0.25: four folds on one GPU,
    #: each held to a quarter of its memory)
    gpus_per_job: float = 0.0
    workers_per_fold: int = 1
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    #: one of :data:`orchestrator.runs.TRAINERS`
    trainer: str = "auto"
    tracking_uri: str = ""
    #: where Ray Train keeps its checkpoints: a path or URI every node reaches (``s3://...``,
    #: an NFS path); default ``<workspace>/ray_results``
    storage: str = ""
    #: the splits each fold job predicts once trained (search trials leave out the test split)
    predict_splits: tuple[str, ...] = ("validation", "test")

    def __post_init__(self) -> None:
        validate_run_name(self.run, nested=True)
        if not 0 <= self.gpus_per_job <= 1:
            raise ValueError(
                f"gpus_per_job {self.gpus_per_job}: expected a share of one GPU, 0 to 1 "
                "(0: CPUs only)"
            )
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer {self.trainer!r}: expected one of {', '.join(TRAINERS)}")
        if self.trainer == "task" and self.workers_per_fold > 1:
            raise ValueError(
                "trainer 'task' trains with one worker per fold; data-parallel "
                "folds (workers_per_fold > 1) need trainer 'ray-train' or 'auto'"
            )

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_job > 0

    @property
    def uses_ray_train(self) -> bool:
        """Whether the folds train on Ray Train (data parallel, or asked for)."""
        return self.trainer == "ray-train" or self.workers_per_fold > 1

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
        if "use_gpu" in data:  # runs made before fractional GPUs: a whole GPU or none
            data["gpus_per_job"] = 1.0 if data.pop("use_gpu") else 0.0
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
    #: the GPUs Ray gave the stage's training process (its ``CUDA_VISIBLE_DEVICES``)
    gpu_ids: list[str] = field(default_factory=list)
    #: lines saying that a checkpoint did not load and what the stage resumed from instead
    notes: list[str] = field(default_factory=list)


def _resume_notes(out_dir: Path) -> list[str]:
    path = out_dir / RESUME_NOTE
    return path.read_text().splitlines() if path.exists() else []


def settings_fold_data(s: CVSettings, fold: int) -> FoldData:
    return fold_data(
        Path(s.dataset), Path(s.workspace), s.experiment.features, s.fmt, fold, s.protocol
    )


class StageBook:
    """The files and live status of one stage of one fold, shared by both ways of training it:
    ``done.json`` (a finished stage is skipped on a rerun), ``node.txt`` and ``worker.json``
    (who trains it now), the metrics sink's state and history."""

    def __init__(self, s: CVSettings, fold: int, stage: str, sink: Any, run_id: str):
        self.s, self.fold, self.stage, self.sink, self.run_id = s, fold, stage, sink, run_id
        self.job = f"fold{fold}/{stage}"
        self.out_dir = s.layout.stage(fold, stage)
        self.done_path = s.layout.done(fold, stage)
        self._pending: list[Any] = []

    def finished(self) -> dict[str, Any] | None:
        """The record of the stage if an earlier run finished it (the sink is told)."""
        if not self.done_path.exists():
            return None
        record = json.loads(self.done_path.read_text())
        record["notes"] = []  # said when that run trained it, not again
        if self.sink is not None:
            self.sink.set_history.remote(self.job, record["history"])
            self.sink.set_state.remote(self.job, "done (earlier run)")
        return record

    def starting(self) -> None:
        if self.sink is not None:
            self.sink.set_state.remote(self.job, "starting")

    def entered(self) -> None:
        """The training worker of rank 0 has entered the stage: say who it is, and replay the
        epochs of an interrupted attempt to whoever follows the curves."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "node.txt").write_text(ray.get_runtime_context().get_node_id())
        worker = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "gpu_ids": [str(g) for g in ray.get_runtime_context().get_accelerator_ids()["GPU"]],
        }
        with atomic_path(self.out_dir / "worker.json") as tmp:
            tmp.write_text(json.dumps(worker))
        last = self.out_dir / "last.pt"
        if self.sink is not None and last.exists():
            try:
                history = load_checkpoint(last)["history"]
            except Exception:
                history = []
            wait_holding_cpu([self.sink.set_history.remote(self.job, history)])

    def log_epoch(self, metrics: dict[str, float]) -> None:
        """Send an epoch's metrics without waiting (a sink's calls run in the order sent);
        :meth:`finish` waits for them all."""
        if self.sink is not None:
            self._pending.append(self.sink.log_epoch.remote(self.run_id, self.job, metrics))

    def flush(self) -> None:
        """Wait until the sink has the epochs sent so far."""
        wait_holding_cpu(self._pending)
        self._pending = []

    def finish(self, start: float) -> dict[str, Any]:
        """Write ``done.json`` of the trained stage and end its MLflow run; its record."""
        self.flush()
        best = load_checkpoint(self.s.layout.checkpoint(self.fold, self.stage, "best"))
        last = load_checkpoint(self.s.layout.checkpoint(self.fold, self.stage, "last"))
        record = StageRecord(
            self.fold,
            self.stage,
            start,
            time.time(),
            int(best["epoch"]),
            float(best["metrics"]["val_selection"]),
            (self.out_dir / "node.txt").read_text(),
            last["history"],
            json.loads((self.out_dir / "worker.json").read_text()).get("gpu_ids", []),
            _resume_notes(self.out_dir),
        )
        with atomic_path(self.done_path) as tmp:
            tmp.write_text(json.dumps(asdict(record)))
        if self.sink is not None:
            self.sink.set_state.remote(self.job, "done")
            self.sink.end_run.remote(self.run_id)
        return asdict(record)


def wait_holding_cpu(refs: list[Any]) -> list[Any]:
    """The values of ``refs``, waiting without lending this task's CPU away.

    A task blocked in ``ray.get`` (or ``ray.wait``) gives its CPUs back to Ray until it resumes
    (so that nested tasks cannot deadlock): a fold task waiting a moment for the metrics sink
    would let the next queued fold start, and both would then train on one CPU. Waiting on
    the refs' futures does not tell Ray it is blocked
    (``tests/orchestrator/test_cv.py::test_waiting_on_the_sink_keeps_the_cpu``)."""
    return [future.result() for future in [ref.future() for ref in refs]]


def fold_device(s: CVSettings) -> str:
    """Where a fold's training process trains and predicts: its GPU if it was given one, held
    to its share of the GPU's memory (:func:`seld.methods.training.gpu_share_device`)."""
    return gpu_share_device(s.gpus_per_job).type


def predict_fold(s: CVSettings, data: FoldData, device: str = "cpu") -> None:
    """The fold's cached predictions of every stage on ``s.predict_splits``."""
    views = views_of(s.experiment)
    for split in s.predict_splits:
        for stage in s.stages:
            predict_split(data, s.run_dir, split, stage, device, views)


def train_fold(
    settings: dict[str, Any], fold: int, sink: Any, run_ids: dict[str, str], asked: float
) -> dict[str, Any]:
    """One fold in this process: its stages in turn, then its predictions.

    Run as :func:`fold_task`, with the worker's CPUs (torch gets as many threads) and GPU. A
    retry after a crash skips the finished stages and resumes the unfinished one from its last
    epoch. ``asked``: when the fold was submitted (the first stage's ``start``; a later stage
    starts when the one before it ends)."""
    import torch

    s = CVSettings.from_dict(settings)
    torch.set_num_threads(max(1, int(s.cpus_per_worker)))
    device = fold_device(s)
    data: FoldData | None = None  # resolved once, when first needed
    records: dict[str, Any] = {}
    start = asked
    for stage in s.stages:
        book = StageBook(s, fold, stage, sink, run_ids[stage])
        record = book.finished()
        if record is None:
            book.starting()
            book.entered()
            if data is None:
                data = settings_fold_data(s, fold)
            train_fold_stage(
                data,
                s.train_config(stage),
                s.run_dir,
                report=lambda metrics, _folder, book=book: book.log_epoch(metrics),
                device=device,
            )
            record = book.finish(start)
        records[stage] = record
        start = time.time()
    predict_fold(s, data if data is not None else settings_fold_data(s, fold), device)
    return {"fold": fold, "stages": records}


#: :func:`train_fold` as a Ray task; :func:`orchestrator.cv_jobs.run_fold_jobs` sets its
#: resources and retries
fold_task = ray.remote(train_fold)
