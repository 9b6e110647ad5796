"""Training one stage (SED, DOA or joint) of one fold, with exact resume and a report callback.

The loop knows nothing of Ray or MLflow: after every epoch it saves a checkpoint and hands the
epoch's metrics and the checkpoint folder to ``report`` (the orchestrator passes Ray Train's).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import h5py
import numpy as np
import torch
import torch.distributed as dist
from pydantic import ConfigDict, Field
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from seld.data.dcase import NUM_CLASSES
from seld.data.formats import get_format
from seld.features.augment import BatchAugmenter
from seld.features.store import LabelFacts, Scaler, label_facts, reference_rows
from seld.features.window_source import WindowBatches, WindowSource
from seld.features.windows import WindowDataset
from seld.fsutil import atomic_path
from seld.methods.inference import activity_rows, detections, predict_file, submission_rows
from seld.methods.models import build_model, doa_model_from_sed
from seld.methods.registry import STAGES, get_stage
from seld.metrics.location_aware import pool
from seld.metrics.reference import count_file
from seld.metrics.scores import SeldCounts
from seld.metrics.suites import MetricSuite, get_suite, label_problem, tracked

log = logging.getLogger(__name__)

LR_SCHEDULES = ("step", "cosine")
SELECTIONS = ("best", "last")


@dataclass(frozen=True)
class TrainSettings:
    """How a model is optimised: the ``train`` section of an experiment config
    (:mod:`seld.config`). Iteration counts are optimizer steps.

    Budget: ``steps`` optimizer steps when set (the last epoch may be cut short), otherwise
    ``epochs`` passes over the windows. ``batch_size`` is the global batch: with W data-parallel
    workers each takes ``batch_size / W`` windows per step, so a step sees as many windows as on
    one worker and the learning rate is not scaled.

    Learning rate, ``lr_schedule``:
    - ``"step"`` (the seed's): ``lr`` until step ``lr_decay_start``, then multiplied by
      ``lr_decay_factor`` at that step and every ``lr_decay_every`` steps after it (the seed:
      1e-3, x0.9 at steps 32000, 34000, ...). Absolute step numbers.
    - ``"cosine"``: relative to the budget, from ``lr`` down to ``lr * lr_final_factor`` at its
      last step along half a cosine, whatever the number of epochs or windows.

    ``amsgrad``: Adam's AMSGrad variant (the seed's). ``amp``: mixed precision on CUDA (bf16
    where supported, else fp16 with loss scaling); ``False`` trains in fp32 throughout, as the
    seed does. CPU training is always fp32.

    Beyond the seed (off in the ``paper`` presets): ``augment`` applies a random channel
    symmetry of the array (:mod:`seld.features.augment`) to each training window;
    ``wrap_azimuth`` wraps the azimuth error of the DOA loss into [-180, 180) degrees.
    ``joint_sed_weight``: the one-stage method's loss is ``w * SED + (1 - w) * DOA`` (0.8).
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    epochs: Annotated[int, Field(ge=1)] = 50
    steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    amsgrad: bool = False
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_decay_start: Annotated[int, Field(ge=0)] = 30_000
    lr_decay_every: Annotated[int, Field(ge=1)] = 2_000
    lr_decay_factor: Annotated[float, Field(gt=0, le=1)] = 0.9
    lr_final_factor: Annotated[float, Field(gt=0, le=1)] = 0.02
    window_s: Annotated[float, Field(gt=0)] = 2.0
    hop_s: Annotated[float, Field(gt=0)] = 0.5
    loss: Literal["mae", "mse"] = "mae"
    joint_sed_weight: Annotated[float, Field(ge=0, le=1)] = 0.8
    wrap_azimuth: bool = False
    augment: bool = False
    num_workers: Annotated[int, Field(ge=0)] = 0
    max_batches_per_epoch: Annotated[int, Field(ge=1)] | None = None
    #: where training windows come from: memory-mapped caches ("mmap") or lazy HDF5 reads
    windows: Literal["mmap", "hdf5"] = "mmap"
    amp: bool = True
    channels_last: bool = True
    #: ``torch.compile`` the model for training (CUDA only; the first epoch pays the compile)
    compile: bool = False
    #: cuDNN autotuning (CUDA only): the fastest convolution algorithms for each input shape,
    #: timed on first use; the choice may differ between runs, so results are not bitwise
    #: repeatable on a GPU with it on
    cudnn_benchmark: bool = True


@dataclass(frozen=True, kw_only=True)
class TrainConfig(TrainSettings):
    """One stage's training: the ``train`` settings plus what the other sections of an
    experiment config decide for it (:meth:`seld.config.ExperimentConfig.train_config`).

    ``model`` and ``model_kwargs``: :func:`seld.methods.models.build_model` arguments.
    ``selection``: which epoch's model the stage hands on as ``best.pt``: the lowest validation
    score (``"best"``), or the last epoch's, as the seed evaluates a fixed iteration (``"last"``).
    ``sed_threshold``: the detection threshold of the validation scores. ``selection_suite``:
    the metric suite (:mod:`seld.metrics.suites`) of the validation scores, which selects the
    epoch; the dataset format's default when None.
    """

    stage: str = "sed"
    model: str = "CRNN10"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    selection: str = "best"
    sed_threshold: float = 0.3
    selection_suite: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}"
            )
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"unknown selection {self.selection!r}; choose one of {', '.join(SELECTIONS)}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or None, got {self.steps}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_kwargs"] = dict(self.model_kwargs)
        return data


@dataclass
class StageResult:
    """The outcome of one stage: where the best checkpoint is and the per-epoch history."""

    best_checkpoint: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    elapsed_s: float


def learning_rate_factor(step: int, config: TrainConfig, total_steps: int) -> float:
    """The multiplier of ``lr`` at optimizer step ``step`` of a ``total_steps`` budget."""
    if config.lr_schedule == "cosine":
        progress = min(step / max(total_steps - 1, 1), 1.0)
        final = config.lr_final_factor
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < config.lr_decay_start:
        return 1.0
    return config.lr_decay_factor ** ((step - config.lr_decay_start) // config.lr_decay_every + 1)


def step_budget(config: TrainConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps, epochs) of a stage: ``steps`` if set, else ``epochs`` full epochs."""
    if config.max_batches_per_epoch is not None:
        batches_per_epoch = min(batches_per_epoch, config.max_batches_per_epoch)
    batches_per_epoch = max(batches_per_epoch, 1)
    if config.steps is None:
        return config.epochs * batches_per_epoch, config.epochs
    return config.steps, math.ceil(config.steps / batches_per_epoch)


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each data-parallel rank's share of the global ``batch_size`` (an error when it does not
    divide evenly, since the step would then see another number of windows)."""
    if batch_size % world_size:
        raise ValueError(
            f"train.batch_size {batch_size} does not divide among {world_size} data-parallel "
            "workers; choose a multiple of the worker count"
        )
    return batch_size // world_size


def pick_device(prefer: str = "auto") -> torch.device:
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(prefer)


def gpu_share_device(share: float) -> torch.device:
    """The device of a process given ``share`` of one GPU (0 < share <= 1), or the CPU when
    it has none (``share`` 0, or no CUDA). With a fraction, the process's CUDA allocator is
    held to that fraction of the GPU's memory: past it, this process fails with CUDA's
    out-of-memory error, instead of starving the processes that share the GPU with it."""
    if share <= 0 or not torch.cuda.is_available():
        return torch.device("cpu")
    if share < 1:
        torch.cuda.set_per_process_memory_fraction(share)
    return torch.device("cuda")


#: a stage's note that its last checkpoint did not load, and what it resumed from instead
RESUME_NOTE = "resume-note.txt"


def save_checkpoint(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` through a temporary file; ``keep_previous``: the file it
    replaces is kept as :func:`previous_checkpoint` (a stage's ``last.pt``, so that one that
    no longer loads has a predecessor to resume from)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if keep_previous and path.exists():
            os.replace(path, previous_checkpoint(path))


def previous_checkpoint(path: Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint ``path`` replaced (``last.prev.pt``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Checkpoints hold tensors, numbers, strings, lists and dicts only: load them safely."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_checkpoint(last: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint to resume a stage from: ``last`` if it loads, else the one it replaced
    (:func:`previous_checkpoint`), else none (the stage starts over). The second value says,
    in one line, which and why, when ``last`` exists and does not load (a crash during a copy,
    a full disk on another file system); None otherwise. A checkpoint that does not load is
    renamed ``<name>.unreadable`` (kept for a look, never loaded again)."""
    previous = previous_checkpoint(last)
    if not last.exists():
        if not previous.exists():
            return None, None
        reason = "it is missing"  # a crash between keeping the previous and the rename
    else:
        try:
            return load_checkpoint(last), None
        except Exception as exc:
            text = str(exc).strip()
            # its first sentence: torch's own message goes on with advice for a paragraph
            reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
            os.replace(last, last.with_name(f"{last.name}.unreadable"))
    if previous.exists():
        try:
            ckpt = load_checkpoint(previous)
        except Exception:
            os.replace(previous, previous.with_name(f"{previous.name}.unreadable"))
        else:
            return ckpt, (
                f"{last} does not load ({reason}): resuming from {previous.name}, the "
                f"checkpoint of epoch {ckpt['epoch']}"
            )
    return None, f"{last} does not load ({reason}) and no earlier checkpoint does: starting over"


def world() -> tuple[int, int]:
    """(rank, world size) of the data-parallel group this process is in; (0, 1) when alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_stage_model(
    config: TrainConfig,
    in_channels: int,
    sed_state: Mapping[str, torch.Tensor] | None,
    num_classes: int = NUM_CLASSES,
) -> torch.nn.Module:
    """A stage's model: from scratch, or, for a stage that starts from another's (the
    two-stage DOA model), with the convolutional blocks of that stage's model state
    ``sed_state``. The heads have ``num_classes`` outputs (the dataset format's classes)."""
    stage = get_stage(config.stage)
    kwargs = {
        "in_channels": in_channels,
        "num_classes": num_classes,
        **dict(config.model_kwargs),
        **stage.model,  # what the stage's outputs need (a multi-ACCDOA head)
    }
    starts_from = stage.starts_from
    if starts_from is not None:
        if sed_state is None:
            raise ValueError(
                f"the {config.stage} stage needs the {starts_from.upper()} stage's model state"
            )
        return doa_model_from_sed(sed_state, {"name": config.model, **kwargs})
    return build_model(config.model, **kwargs)


def check_distance_targets(paths: Sequence[Path], stage: str) -> None:
    """``ValueError`` naming the first feature file without distance targets (labels without
    source distances), which a stage that trains on distances cannot use."""
    for path in paths:
        with h5py.File(path, "r") as h5:
            if "activity" in h5 and "distances" not in h5:
                raise ValueError(
                    f"the {stage} stage trains on source distances, and {path} holds none: "
                    "its labels have no distance column"
                )


def selection_suite(config: TrainConfig, labels: LabelFacts) -> MetricSuite:
    """The suite whose validation scores select a stage's epoch: the config's, else the
    dataset format's default. ``ValueError`` when it cannot score these labels, or the stage's
    predictions (a suite that scores distances, a stage that predicts none)."""
    suite = get_suite(config.selection_suite or get_format(labels.dataset_format).default_suite)
    distances = get_stage(config.stage).distances
    problem = label_problem(suite, labels.label_frames_per_second, labels.num_classes, distances)
    if problem:
        raise ValueError(f"selection.suite: {problem}")
    return suite


def _suite_scores(
    model: torch.nn.Module,
    paths: Sequence[Path],
    scaler: Scaler | None,
    config: TrainConfig,
    device: torch.device,
    labels: LabelFacts,
    suite: MetricSuite,
) -> dict[str, float]:
    """:func:`evaluate_files` with a metric suite other than DCASE 2019's (on any dataset
    format): the predicted (continuous) directions, or the 10-degree grid for a suite that
    rounds."""
    recordings = []
    stage = get_stage(config.stage)
    for path in paths:
        pred = predict_file(model, path, scaler, device=device)
        reference, frames = reference_rows(path)
        if labels.dataset_format == "dcase2019":  # (frame, class, azimuth, elevation)
            reference = tracked(reference)
        if stage.decode is not None:  # several tracks per class: the stage's own decoding
            rows = stage.decode(pred, config.sed_threshold, rounded=suite.rounds_to_grid)
            recordings.append((reference, rows, frames))
            continue
        if stage.oracle_activity:
            activity = np.zeros(pred.sed.shape, dtype=bool)
            activity[reference[:, 0].astype(int), reference[:, 1].astype(int)] = True
        else:
            activity = detections(pred, config.sed_threshold)
        if suite.rounds_to_grid:
            rows = tracked(submission_rows(pred, activity=activity))
        else:
            rows = activity_rows(pred, activity)
        recordings.append((reference, rows, frames))
    counts = suite.count_many(recordings, labels.label_frames_per_second, labels.num_classes)
    return suite.scores(pool(counts))


def selection_score(scores: Mapping[str, float], suite: MetricSuite, stage: str) -> float:
    """What model selection minimises: for ``sed`` the suite's detection error, (ER + 1 - F)
    / 2 (1 - F for a suite without ER), otherwise its aggregate (negated where higher is
    better); NaN counts as the worst."""
    directions = {m.key: m.higher_is_better for m in suite.metrics}
    if get_stage(stage).selects_on_detection:
        value = 1 - scores["f"]
        if "er" in scores:
            value = (scores["er"] + value) / 2
    else:
        value = -scores[suite.aggregate] if directions[suite.aggregate] else scores[suite.aggregate]
    return value if math.isfinite(value) else float("inf")


def evaluate_files(
    model: torch.nn.Module,
    paths: Sequence[Path],
    scaler: Scaler | None,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Validation metrics of one stage on whole recordings.

    ``sed``/``joint``: the model's own detections (threshold ``sed_threshold``) and directions.
    ``doa``: detections taken from the reference, as the seed does when training DOA, so the
    scores judge the directions alone. The scores are those of the config's selection suite
    (:func:`selection_suite`); ``selection`` is what model selection minimises
    (:func:`selection_score`): the SED error (ER + 1 - F) / 2 for ``sed``, the suite's SELD
    score otherwise.
    """
    labels = label_facts(paths[0])
    suite = selection_suite(config, labels)
    # the grid scorer's fast path holds one direction per class; a stage that decodes several
    # tracks per class goes through the suite's own counting, as any other suite does
    if suite.name != "dcase2019" or get_stage(config.stage).decode is not None:
        scores = _suite_scores(model, paths, scaler, config, device, labels, suite)
    else:
        counts = SeldCounts()
        for path in paths:
            pred = predict_file(model, path, scaler, device=device)
            reference, frames = reference_rows(path)
            activity = None
            if get_stage(config.stage).oracle_activity:
                activity = np.zeros(pred.sed.shape, dtype=bool)
                activity[reference[:, 0], reference[:, 1]] = True
            rows = submission_rows(pred, config.sed_threshold, activity=activity)
            counts = counts + count_file(reference, rows, frames)
        scores = counts.scores().as_dict()
    scores["selection"] = selection_score(scores, suite, config.stage)
    return {f"val_{k}": float(v) for k, v in scores.items()}


def train_stage(
    config: TrainConfig,
    train_paths: Sequence[Path],
    val_paths: Sequence[Path],
    scaler: Scaler | None,
    out_dir: Path,
    *,
    sed_state: Mapping[str, torch.Tensor] | None = None,
    report: Callable[[dict[str, float], Path], None] | None = None,
    device: str = "auto",
) -> StageResult:
    """Train one stage, checkpointing every epoch into ``out_dir``; resume if it holds one.

    ``out_dir/last.pt`` carries model, optimizer, scheduler, epoch, step, RNG states and history,
    so an interrupted run continues exactly where it stopped; ``out_dir/best.pt`` holds the
    model with the lowest validation ``selection`` score so far.

    Data parallel when run in an initialised ``torch.distributed`` group (e.g. by Ray Train with
    several workers per fold): each rank trains on its share of the windows with gradients
    averaged; rank 0 validates and writes the checkpoints, and every rank receives the epoch's
    metrics for ``report``.
    """
    started = time.perf_counter()
    dev = pick_device(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(train_paths[0], "r") as h5:
        fps = float(h5.attrs["frames_per_second"])
        in_channels = h5["features"].shape[0]
        num_classes = h5["activity"].shape[1]
        fmt = str(h5.attrs["format"])
    stage = get_stage(config.stage)
    if stage.distances:  # its loss needs every training window's distances
        check_distance_targets(train_paths, config.stage)
    window, hop = round(config.window_s * fps), round(config.hop_s * fps)
    rank, world_size = world()
    torch.manual_seed(config.seed)
    model = build_stage_model(config, in_channels, sed_state, num_classes).to(dev)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    if use_cuda and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dev.index] if use_cuda else None)
    if use_cuda and config.compile:
        net = torch.compile(net)
    generator = torch.Generator().manual_seed(config.seed)
    # raw windows: augmentation acts on unscaled features, then the batch is standardised
    loader = training_batches(
        config, train_paths, (window, hop), generator, (rank, world_size), dev
    )
    total_steps, epochs = step_budget(config, len(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=config.amsgrad)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config, total_steps)
    )
    augment_generator = torch.Generator().manual_seed(config.seed + 1)
    augmenter = None
    if config.augment:
        augmenter = BatchAugmenter(fmt, feature_kind(in_channels), augment_generator)
    standardise = _BatchScaler(scaler, dev)
    state = {"epoch": 0, "step": 0, "history": [], "best_score": float("inf"), "best_epoch": 0}

    last = out_dir / "last.pt"
    ckpt, note = resume_checkpoint(last)
    if note is not None:
        log.warning("%s", note)
        (out_dir / RESUME_NOTE).write_text(note + "\n")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        if "augment_generator" in ckpt:
            augment_generator.set_state(ckpt["augment_generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = {k: ckpt[k] for k in state}
        log.info("resuming %s at epoch %d", out_dir, state["epoch"])

    amp_dtype = torch.bfloat16 if use_cuda and torch.cuda.is_bf16_supported() else torch.float16
    # float16 (GPUs without bf16) needs loss scaling against gradient underflow; bf16 does not
    grad_scaler = torch.amp.GradScaler(
        "cuda", enabled=use_cuda and config.amp and amp_dtype == torch.float16
    )
    while state["epoch"] < epochs and state["step"] < total_steps:
        loader.set_epoch(state["epoch"])
        net.train()
        losses = []
        for i, batch in enumerate(loader):
            if config.max_batches_per_epoch is not None and i >= config.max_batches_per_epoch:
                break
            if state["step"] >= total_steps:
                break
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            if augmenter is not None:
                batch = augmenter(batch)
            features = standardise(batch["features"])
            if use_cuda and config.channels_last:
                features = features.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_cuda and config.amp):
                outputs = net(features)
            loss = stage.loss(outputs, batch, config)
            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
            scheduler.step()
            state["step"] += 1
            losses.append(float(loss.detach()))
        state["epoch"] += 1
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if world_size > 1:
            total = torch.tensor([train_loss], dtype=torch.float64, device=dev)
            dist.all_reduce(total)
            train_loss = float(total) / world_size
        metrics = {
            "epoch": state["epoch"],
            "step": state["step"],
            "train_loss": train_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "world_size": world_size,
        }
        if rank == 0:
            metrics.update(evaluate_files(model, val_paths, scaler, config, dev))
        if world_size > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        state["history"].append(metrics)
        improved = metrics["val_selection"] < state["best_score"]
        if config.selection == "last":  # the stage hands on its latest model, whatever it scores
            improved = True
        if improved:
            state["best_score"], state["best_epoch"] = metrics["val_selection"], state["epoch"]
        ckpt = {
            "model": model.state_dict(),
            "model_config": model.config,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "augment_generator": augment_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "train_config": _plain(config.to_dict()),
            **state,
        }
        if rank == 0:
            save_checkpoint(last, ckpt, keep_previous=True)
        if improved and rank == 0:
            save_checkpoint(
                out_dir / "best.pt",
                {
                    "model": ckpt["model"],
                    "model_config": ckpt["model_config"],
                    "epoch": state["epoch"],
                    "metrics": metrics,
                },
            )
        log.info("%s epoch %d: %s", config.stage, state["epoch"], metrics)
        if report is not None:
            report(metrics, out_dir)
    loader.close()
    if isinstance(loader, WindowBatches):  # the source is the caller's to close
        loader.source.close()
    return StageResult(
        out_dir / "best.pt",
        state["best_epoch"],
        state["best_score"],
        state["history"],
        time.perf_counter() - started,
    )


class _LazyBatches:
    """The lazy HDF5 path (``train.windows: hdf5``): a DataLoader over a WindowDataset, with
    the interface of :class:`~seld.features.window_source.WindowBatches`."""

    def __init__(self, dataset: WindowDataset, loader: DataLoader, sampler):
        self.dataset, self.loader, self.sampler = dataset, loader, sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def close(self) -> None:
        self.dataset.close()


def training_batches(
    config: TrainConfig,
    paths: Sequence[Path],
    window_hop: tuple[int, int],
    generator: torch.Generator,
    rank_world: tuple[int, int],
    device: torch.device,
):
    """Shuffled batches of raw training windows, each rank's share of the global batch.

    ``train.windows: mmap`` (default): memory-mapped per-recording caches, a batch gathered per
    call, pinned and copied without blocking to a GPU (:mod:`seld.features.window_source`);
    ``hdf5``: lazy HDF5 reads through a DataLoader, for data that should not be cached. Both give
    the same windows in the same order from the same generator
    (``tests/seld/test_window_source.py``)."""
    window, hop = window_hop
    rank, world_size = rank_world
    batch_size = rank_batch_size(config.batch_size, world_size)
    if config.windows == "mmap":
        source = WindowSource(paths, window=window, hop=hop)
        return WindowBatches(
            source,
            batch_size,
            generator=generator,
            world_size=world_size,
            rank=rank,
            seed=config.seed,
            persistent_workers=config.num_workers > 0,
            threads=config.num_workers,
            device=device,
        )
    dataset = WindowDataset(paths, window=window, hop=hop)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=False,
        num_workers=config.num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    return _LazyBatches(dataset, loader, sampler)


def feature_kind(channels: int) -> str:
    """The feature kind of a 4-channel recording's tensor, from its channel count."""
    kinds = {4 + 6: "logmel_gcc", 4 + 3: "logmel_iv"}
    if channels not in kinds:
        raise ValueError(f"no feature kind has {channels} channels (10: log-mel + GCC, 7: + IV)")
    return kinds[channels]


class _BatchScaler:
    """A fold's :class:`Scaler` on a batch (batch, channels, frames, bins), in float32 on the
    training device: the same arithmetic as ``Scaler.apply``, vectorised over the batch."""

    def __init__(self, scaler: Scaler | None, device: torch.device):
        self.mean = self.std = None
        if scaler is not None:
            self.mean = torch.as_tensor(scaler.mean, dtype=torch.float32, device=device)[:, None]
            self.std = torch.as_tensor(scaler.std, dtype=torch.float32, device=device)[:, None]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return features
        return (features - self.mean) / self.std


def load_model(path: Path, device: str = "cpu") -> torch.nn.Module:
    """Rebuild a model from a checkpoint (``best.pt`` or ``last.pt``), weights only."""
    ckpt = load_checkpoint(path)
    config = dict(ckpt["model_config"])
    model = build_model(config.pop("name"), **config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def _plain(value: Any) -> Any:
    """Tuples to lists, so the checkpoint holds only what ``weights_only`` loading accepts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
