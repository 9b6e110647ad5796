"""Starting a cross-validation's fold jobs on Ray, and waiting for them.

One worker per fold (the default): each fold is a Ray task (:func:`orchestrator.cv.fold_task`)
holding the worker's CPUs (and GPU) for all its stages and predictions, retried by Ray in a new
process on any node after a crash (``max_retries``), resuming from the last epoch. Ray reuses
an idle worker process for the next queued fold, so a queued fold starts the moment a CPU is
free, with torch and the project already imported.

Data parallel (several workers per fold, or ``trainer: ray-train``): each fold is a
coordinating task on the head (:func:`fold_job`) that runs a Ray Train ``TorchTrainer`` per
stage: its workers train in a ``torch.distributed`` group, Ray Train restarts them after a
failure (``FailureConfig``) from the checkpoint it keeps in its storage. Each ``fit()`` starts a
Train controller, a worker group and Ray Train's helper actors, several seconds per stage.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.cv import (
    CVSettings,
    StageBook,
    fold_device,
    fold_task,
    predict_fold,
    settings_fold_data,
)
from orchestrator.fold import train_fold_stage
from orchestrator.ray_utils import HEAD_NODE

#: outside any placement group the submitter runs in (a Tune trial's, for a search): a fold
#: takes its own resources, which the search counted when it sized its trials
NO_PLACEMENT_GROUP = PlacementGroupSchedulingStrategy(placement_group=None)


@ray.remote
def _warm_up() -> None:
    """Loads what a fold task needs (torch, the training code) into this worker process."""
    import orchestrator.cv  # noqa: F401


def warm_fold_workers(settings: CVSettings) -> list[Any]:
    """Start as many worker processes as fold tasks can run at once and load torch and the
    training code into them, while the driver is still setting up (the metrics sink, MLflow):
    Ray gives the fold tasks submitted next these processes, so the first stages start without
    the few seconds of imports (4.3-4.7 s on 2 cores). Nothing waits for them. Only the
    one-task-per-fold path on CPUs: Ray Train starts its own workers, and fold tasks on GPU
    nodes would not land in processes warmed here."""
    if settings.uses_ray_train or settings.use_gpu:
        return []
    slots = int(ray.available_resources().get("CPU", 0) // max(settings.cpus_per_worker, 1e-9))
    warm = _warm_up.options(
        num_cpus=settings.cpus_per_worker, scheduling_strategy=NO_PLACEMENT_GROUP
    )
    return [warm.remote() for _ in range(min(len(settings.folds), slots))]


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
    if settings.uses_ray_train:
        job = fold_job.options(
            # on the head, with the Train controller that fit() attaches to the caller's node:
            # a worker node then holds only training workers, which Ray Train restarts elsewhere
            resources=HEAD_NODE,
            scheduling_strategy=NO_PLACEMENT_GROUP,
            # Ray Train's helpers in the fold jobs (its placement-group cleaner) find the
            # cluster through the state API; with several Ray instances on one machine they
            # must be told which
            runtime_env={"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}},
        )
        refs = [job.remote(payload, k, sink, run_ids[k]) for k in settings.folds]
    else:
        task = fold_task.options(
            num_cpus=settings.cpus_per_worker,
            num_gpus=settings.gpus_per_job,
            # a worker that died (killed, out of memory, its node lost) is tried again in a
            # new process; an exception of the training itself is not
            max_retries=settings.max_failures,
            retry_exceptions=False,
            scheduling_strategy=NO_PLACEMENT_GROUP,
        )
        refs = [task.remote(payload, k, sink, run_ids[k], time.time()) for k in settings.folds]
    pending = list(refs)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            if on_status is not None and sink is not None:
                on_status(ray.get(sink.get_status.remote()))
            if on_history is not None and sink is not None:
                on_history(ray.get(sink.get_history.remote()))
    except BaseException:
        stop_fold_jobs(pending)
        raise
    return ray.get(refs)


#: how long cancelled fold jobs get to unwind (remove their partial files) before being killed
CANCEL_GRACE_S = 10.0


def stop_fold_jobs(refs: list[Any], grace_s: float = CANCEL_GRACE_S) -> None:
    """Cancel running fold jobs: first by interrupting them (a ``KeyboardInterrupt`` inside, so
    that a checkpoint being written is removed, not left half-written), then, those still
    running after ``grace_s``, by killing their processes."""
    for ref in refs:
        ray.cancel(ref)
    _, still = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    for ref in still:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished or cancelled in between: nothing left to stop
            pass


def _train_loop(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker: one stage of one fold."""
    import ray.train
    from ray.train import Checkpoint

    s = CVSettings.from_dict(config["settings"])
    fold, stage = config["fold"], config["stage"]
    book = StageBook(s, fold, stage, config["sink"], config["run_id"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and not (book.out_dir / "last.pt").exists():
        with checkpoint.as_directory() as folder:  # restarted on a node without the local copy
            book.out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(folder) / "last.pt", book.out_dir / "last.pt")
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:  # who trains this stage now, for ops (and the failure test)
        book.entered()

    def report(metrics: dict[str, float], folder: Path) -> None:
        if rank != 0:  # every rank reports; rank 0 owns the checkpoint and the tracking
            ray.train.report(metrics)
            return
        book.log_epoch(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(folder / "last.pt", Path(tmp) / "last.pt")
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    train_fold_stage(
        settings_fold_data(s, fold),
        s.train_config(stage),
        s.run_dir,
        report=report,
        device=fold_device(s),
    )
    book.flush()  # the epochs are logged before fit() returns


@ray.remote(num_cpus=0)
def fold_job(settings: dict[str, Any], fold: int, sink: Any, run_ids: dict[str, str]) -> dict:
    """The data-parallel path of fold k: a Ray Train run per stage (SED(k) then DOA(k), or
    joint(k)), then the fold's cached predictions on validation and test."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = CVSettings.from_dict(settings)
    records = {}
    for stage in s.stages:
        book = StageBook(s, fold, stage, sink, run_ids[stage])
        record = book.finished()
        if record is not None:
            records[stage] = record
            continue
        book.starting()
        resources = {"CPU": s.cpus_per_worker} | ({"GPU": s.gpus_per_job} if s.use_gpu else {})
        name = f"{s.run}-fold{fold}-{stage}"
        if not (book.out_dir / "last.pt").exists():
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
        records[stage] = book.finish(start)
    predict_fold(s, settings_fold_data(s, fold))
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
