"""Cross-validation overhead: the same stages of the same folds, bare and through ``seld-orch cv``.

In one run, on one synthesized dataset and one workspace (features extracted, fold scalers and
window caches built before either clock starts):

1. **bare**: in this process, without Ray, the stages of every fold one after another (SED(k)
   then DOA(k), then the fold's predictions of its validation and test splits), through the
   functions a fold job calls (``orchestrator.cv.settings_fold_data``,
   ``orchestrator.fold.train_fold_stage``, ``orchestrator.fold.predict_split``) with the same
   experiment config, on ``--threads`` torch/BLAS threads (default 1: what a Ray training worker
   of 1 CPU gets, since Ray sets ``OMP_NUM_THREADS`` to a task's CPUs when it starts it; the
   CPU time of each worker's busiest threads is printed).
   ``seld.methods.training.evaluate_files`` is wrapped by a timer (it still runs) to split each
   epoch into training and validation.
2. **contention** (skip with ``--no-contention``): one epoch of SED(1) alone, then SED(1..N) at
   once in N bare processes on ``--threads`` threads each, and once more on N threads each: how
   much slower N concurrent trainings are on this machine without any Ray (shared caches,
   memory bandwidth, other jobs), and what oversubscribed torch threads would cost.
3. **ray**: ``seld-orch cv`` as a subprocess (its own embedded local Ray with all cores, as a
   user runs it) on the same dataset, workspace and config (passed as ``--set``). While it
   runs, every process below it is sampled every ``--sample-s``: resident set size (RSS) and
   proportional set size (PSS, ``/proc/<pid>/smaps_rollup``), CPU time and threads, per Ray
   role (training worker, Train controller, fold job, metrics sink, helper actors, worker
   processes starting, raylet, GCS, ...). Peak memory is the peak of the *sum* over the tree
   at one sample (RSS double-counts shared pages such as torch's libraries; PSS does not).
   This machine's memory cgroup is shared with other work, so its peak is not used.

The bare reference on N cores (N = the cores the cv's Ray gets) is the bare training time / N:
the folds are independent and each fold's chain runs on one core. The ratio printed is the
cv's training span (first stage asked for -> last stage done, from ``done.json``) over it, and
the whole command's wall time over (bare training + predictions) / N.

Per stage, from what the cv run writes: ``done.json`` (``start``: the stage was asked for: the
fold task's submission for a fold's first stage, the end of the stage before it for the next; on
the Ray Train path, the fold job calling ``trainer.fit()``; ``end``: the stage's ``done.json``
written), ``worker.json`` (``started``: the training process entered the stage), the MLflow
timestamp of each epoch's metrics (logged by the worker's report at the epoch's end), and on the
Ray Train path (``--trainer ray-train``) Ray Train's controller log of the stage (in the cv's
Ray session folder: when the controller came up, its attempts to start the worker group, how
long the placement group, the worker actors and the train context took, when it shut the group
down). A fold task holds its CPU until its predictions are written (their files' times). The
**start latency** of a stage is the time from the moment it could have had a CPU (its ask, or,
when all CPUs were held by other stages, the moment the stage whose CPU it took released it) to
its worker entering the stage; its **teardown** is the last epoch's report to the stage's end.
The 2-core time of the training span is then split into bare training, stages running slower
than bare, and CPUs waiting on start-ups.

    python bench/cv_overhead.py [--quick] [--folds 1,2,3,4] [--per-split 8] [--seconds 20]
        [--epochs 5] [--seed 0] [--threads 1] [--trainer auto|ray-train] [--workspace DIR]
        [--keep] [--json F]
    python bench/cv_overhead.py --reanalyse F.json --workspace DIR   # analysis only

Default: the demo's dataset and budget (32 recordings of 20 s, 4 folds, 5 epochs per stage,
seed 0: 190 steps per stage), about 17 minutes on a quiet 2-core machine. ``--quick``: 2 folds,
4 recordings of 10 s per split, 2 epochs (a few minutes). ``bench/cv_profile.py`` profiles the
same cv run's processes with py-spy.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
RUN_BARE, RUN_RAY, RUN_CONTENTION = "bench-bare", "bench-ray", "bench-contention"


# ------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        return names[0].strip() if names else platform.processor()
    except OSError:
        return platform.processor() or "unknown"


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def busy_jiffies() -> int:
    """CPU time (clock ticks) the whole machine spent busy since boot, all cores."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle


class Phase:
    """Wall time, load and CPU use of a stretch of the benchmark (this process's and the
    machine's: what the rest of a shared machine took meanwhile)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> Phase:
        self.load_before = loadavg()[0]
        self.busy0, self.t0 = busy_jiffies(), time.time()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.load_after = loadavg()[0]
        self.machine_cores_busy = (busy_jiffies() - self.busy0) / CLK_TCK / max(self.wall_s, 1e-9)

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 2),
            "load_1min_before": round(self.load_before, 2),
            "load_1min_after": round(self.load_after, 2),
            "machine_cores_busy": round(self.machine_cores_busy, 2),
        }


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg()[0]:.2f}] {text}", flush=True)


# ------------------------------------------------------------------ data


def experiment_overrides(args: argparse.Namespace) -> list[str]:
    """The config the two paths train, as ``--set`` overrides of the ``tiny`` preset (the
    demo's: ``seed``, and an epoch budget instead of a step budget)."""
    return [
        f"seed={args.seed}",
        f"train.epochs={args.epochs}",
        "train.steps=null",
        f"cv.folds={json.dumps(list(args.folds))}",
    ]


def prepare(args: argparse.Namespace, dataset: Path, workspace: Path, settings) -> dict:
    """Synthesize (skipping complete recordings), extract missing features, fit the fold
    scalers and build the window caches, so that neither path pays for them."""
    from orchestrator.cv import settings_fold_data
    from orchestrator.extract import plan_extraction
    from seld.features.extraction import extract_recording
    from seld.features.window_source import WindowSource
    from seld.synth import SynthConfig, synthesize_dataset

    started = time.perf_counter()
    config = SynthConfig(
        seconds=args.seconds, per_split=args.per_split, formats=("mic",), seed=args.seed
    )
    say(f"synthesizing {4 * args.per_split} recordings of {args.seconds:g} s into {dataset}")
    synthesize_dataset(dataset, config, workers=min(2, os.cpu_count() or 1))
    experiment = settings.experiment
    _, todo, _ = plan_extraction(dataset, workspace, experiment.features, experiment.format)
    say(f"extracting features of {len(todo)} recording(s) (in this process)")
    for rec in todo:
        extract_recording(rec, experiment.features, _feature_root(workspace, experiment))
    train_cfg = settings.train_config(experiment.stages[0])
    windows = 0
    for fold in settings.folds:
        data = settings_fold_data(settings, fold)  # fits and caches the fold's scaler
        with_fps = _fps(data.train[0])
        window = round(train_cfg.window_s * with_fps)
        hop = round(train_cfg.hop_s * with_fps)
        source = WindowSource(data.train, window=window, hop=hop)  # builds the window caches
        windows = max(windows, len(source))
        source.close()
    batches = -(-windows // train_cfg.batch_size)
    return {
        "recordings": 4 * args.per_split,
        "seconds_each": args.seconds,
        "training_windows_per_fold": windows,
        "steps_per_stage": batches * train_cfg.epochs,
        "prepare_s": round(time.perf_counter() - started, 1),
    }


def _feature_root(workspace: Path, experiment) -> Path:
    from seld.features.store import feature_root

    return feature_root(workspace, experiment.features)


def _fps(path: Path) -> float:
    import h5py

    with h5py.File(path, "r") as h5:
        return float(h5.attrs["frames_per_second"])


# ------------------------------------------------------------------ bare


def bare(settings, threads: int) -> dict:
    """Every stage of every fold in turn in this process, then the fold's predictions, as a
    fold job does them, without Ray; per epoch: when its report came and its validation time."""
    import torch
    from threadpoolctl import threadpool_limits

    import seld.methods.training
    from orchestrator.cv import settings_fold_data
    from orchestrator.fold import predict_split, train_fold_stage
    from seld.methods.inference import views_of

    torch.set_num_threads(threads)
    validation: list[float] = []
    evaluate = seld.methods.training.evaluate_files

    def timed_evaluate(*a, **kw):  # the real validation, timed
        t0 = time.perf_counter()
        try:
            return evaluate(*a, **kw)
        finally:
            validation.append(time.perf_counter() - t0)

    shutil.rmtree(settings.run_dir, ignore_errors=True)
    stages, predictions = [], []
    cpu0 = sum(os.times()[:2])
    seld.methods.training.evaluate_files = timed_evaluate
    try:
        with threadpool_limits(limits=threads):
            for fold in settings.folds:
                for stage in settings.stages:
                    validation.clear()
                    reports: list[float] = []
                    start = time.time()
                    data = settings_fold_data(settings, fold)  # as _train_loop does per stage
                    result = train_fold_stage(
                        data,
                        settings.train_config(stage),
                        settings.run_dir,
                        report=lambda _m, _f, r=reports: r.append(time.time()),
                        device="cpu",
                    )
                    end = time.time()
                    epochs = _diffs([start, *reports])
                    stages.append(
                        {
                            "fold": fold,
                            "stage": stage,
                            "start": start,
                            "end": end,
                            "wall_s": round(end - start, 3),
                            "epoch_s": [round(e, 3) for e in epochs],
                            "validation_s": [round(v, 3) for v in validation],
                            "history": result.history,
                        }
                    )
                    say(
                        f"bare fold{fold}/{stage}: {end - start:6.1f} s "
                        f"({len(epochs)} epochs, validation {sum(validation):.1f} s)"
                    )
                t0 = time.perf_counter()
                data = settings_fold_data(settings, fold)
                views = views_of(settings.experiment)  # the test-time views the cv predicts with
                for split in settings.predict_splits:
                    for stage in settings.stages:
                        predict_split(data, settings.run_dir, split, stage, views=views)
                predictions.append(round(time.perf_counter() - t0, 3))
    finally:
        seld.methods.training.evaluate_files = evaluate
    rusage_kb = _vm_hwm_kb(os.getpid())
    return {
        "threads": threads,
        "stages": stages,
        "train_s": round(sum(s["wall_s"] for s in stages), 2),
        "validation_s": round(sum(sum(s["validation_s"]) for s in stages), 2),
        "predict_s": round(sum(predictions), 2),
        "predict_per_fold_s": {str(k): s for k, s in zip(settings.folds, predictions, strict=True)},
        "cpu_s": round(sum(os.times()[:2]) - cpu0, 1),
        "peak_rss_mb_this_process": round(rusage_kb / 1024, 1),
    }


def _diffs(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _vm_hwm_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", status)
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------ contention


def _one_epoch(settings_dict: dict, fold: int, threads: int, barrier) -> float:
    """In a spawned process: one epoch of SED(fold), bare, on ``threads`` threads."""
    import torch
    from threadpoolctl import threadpool_limits

    from orchestrator.cv import CVSettings, settings_fold_data
    from orchestrator.fold import train_fold_stage

    torch.set_num_threads(threads)
    s = CVSettings.from_dict(settings_dict)
    config = replace(s.train_config("sed"), epochs=1)
    run_dir = Path(s.run_dir) / f"p{fold}"
    shutil.rmtree(run_dir, ignore_errors=True)
    data = settings_fold_data(s, fold)
    if barrier is not None:
        barrier.wait()
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        train_fold_stage(data, config, run_dir, device="cpu")
        return time.perf_counter() - t0


def contention(settings, threads: int, cores: int) -> dict:
    """One bare epoch of SED(1) alone, then SED(1..cores) at once, each in its own process on
    ``threads`` threads, and once more with ``cores`` threads each (torch's default: what
    oversubscribed workers would cost, were ``OMP_NUM_THREADS`` not set)."""
    ctx = multiprocessing.get_context("spawn")
    folds = [settings.folds[i % len(settings.folds)] for i in range(cores)]
    payload = replace(settings, run=RUN_CONTENTION).to_dict()
    with ctx.Pool(1) as pool:
        alone = pool.apply(_one_epoch, (payload, folds[0], threads, None))
    say(f"contention: one SED epoch alone, {threads} thread(s): {alone:.1f} s")
    together = {}
    for n in sorted({threads, cores}):
        with ctx.Manager() as manager, ctx.Pool(cores) as pool:
            barrier = manager.Barrier(cores)
            jobs = [pool.apply_async(_one_epoch, (payload, k, n, barrier)) for k in folds]
            together[n] = [j.get() for j in jobs]
        say(
            f"contention: {cores} at once, {n} thread(s) each: "
            f"{', '.join(f'{t:.1f}' for t in together[n])} s"
        )
    shutil.rmtree(replace(settings, run=RUN_CONTENTION).run_dir, ignore_errors=True)
    return {
        "processes": cores,
        "threads": threads,
        "alone_s": round(alone, 2),
        "together_s": [round(t, 2) for t in together[threads]],
        "factor": round(statistics.mean(together[threads]) / alone, 3),
        f"together_{cores}_threads_each_s": [round(t, 2) for t in together[cores]],
        f"factor_{cores}_threads_each": round(statistics.mean(together[cores]) / alone, 3),
    }


# ------------------------------------------------------------------ the process tree


def _role(cmdline: list[str]) -> str:
    """What a process of the cv's tree is, from its command line (Ray workers retitle
    themselves ``ray::<Actor>.<method>`` or ``ray::<task>``)."""
    if not cmdline:
        return "?"
    head = cmdline[0]
    if head.startswith("ray::"):
        name = head.removeprefix("ray::").split(" ")[0]
        if name.startswith(("RayTrainWorker", "train_fold")):  # Ray Train's, or a fold task
            return "train worker"
        if name.startswith("TrainController"):
            return "train controller"
        if name.startswith("fold_job"):
            return "fold job"
        if name.startswith("MetricsSink"):
            return "metrics sink"
        if name == "IDLE":
            return "idle worker"
        return "actor " + name.split(".")[0]
    executable = Path(head).name
    if executable in ("gcs_server", "raylet"):
        return executable
    # a worker's command line names the raylet's socket and the GCS, so look at the script
    script = " ".join(cmdline[:3])
    for needle, role in (
        ("default_worker.py", "worker (starting)"),
        ("setup_worker.py", "worker (starting)"),
        ("dashboard/agent.py", "dashboard agent"),
        ("runtime_env/agent", "runtime env agent"),
        ("log_monitor", "log monitor"),
        ("monitor.py", "autoscaler monitor"),
        ("dashboard.py", "dashboard"),
        ("seld-orch", "driver (seld-orch cv)"),
        ("orchestrator.cli", "driver (seld-orch cv)"),
    ):
        if needle in script:
            return role
    return executable


class TreeSampler:
    """Samples every process below ``root`` every ``interval_s``: RSS, PSS, CPU time and
    threads; CPU time is charged to the role the process had at each sample."""

    def __init__(self, root: int, interval_s: float = 0.5):
        self.root, self.interval_s = root, interval_s
        self.peak_rss = self.peak_pss = 0
        self.peak_at = 0.0
        self.peak_by_role: dict[str, dict[str, float]] = {}
        self.cpu_by_role: dict[str, float] = {}
        self.pids_by_role: dict[str, set[int]] = {}
        self.threads_by_role: dict[str, int] = {}
        self.peak_cores_by_role: dict[str, float] = {}
        self.worker_threads: dict[int, dict[int, tuple[str, int]]] = {}
        self.cpu_by_pid: dict[int, list] = {}
        self.samples = 0
        self._cpu: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as exc:  # a sampler must not end the benchmark
                print(f"sampler: {exc!r}", file=sys.stderr)
            self._stop.wait(self.interval_s)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def _sample(self) -> None:
        now = time.time()
        rss_total = pss_total = 0
        by_role: dict[str, list[int]] = {}
        for pid in self._tree():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                stat = Path(f"/proc/{pid}/stat").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            parts = [p for p in cmdline.split("\0") if p]
            role = _role(parts)
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = int(fields[11]) + int(fields[12])  # utime + stime
            threads, rss = int(fields[17]), int(fields[21]) * PAGE
            pss = int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)) * 1024
            before, then = self._cpu.get(pid, (0, 0.0))
            self.cpu_by_role[role] = self.cpu_by_role.get(role, 0.0) + (cpu - before) / CLK_TCK
            if then:  # cores this one process used since the last sample
                rate = (cpu - before) / CLK_TCK / max(now - then, 1e-3)
                self.peak_cores_by_role[role] = max(self.peak_cores_by_role.get(role, 0), rate)
            self._cpu[pid] = (cpu, now)
            self.cpu_by_pid[pid] = [pid, role, cpu / CLK_TCK]
            if role == "train worker":
                self._thread_cpu(pid)
            self.pids_by_role.setdefault(role, set()).add(pid)
            self.threads_by_role[role] = max(self.threads_by_role.get(role, 0), threads)
            rss_total += rss
            pss_total += pss
            acc = by_role.setdefault(role, [0, 0, 0])
            acc[0] += rss
            acc[1] += pss
            acc[2] += 1
        self.samples += 1
        if pss_total > self.peak_pss:
            self.peak_pss, self.peak_at = pss_total, now
            self.peak_by_role = {
                role: {"rss_mb": a[0] / 2**20, "pss_mb": a[1] / 2**20, "processes": a[2]}
                for role, a in by_role.items()
            }
        self.peak_rss = max(self.peak_rss, rss_total)

    def _thread_cpu(self, pid: int) -> None:
        threads = self.worker_threads.setdefault(pid, {})
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{task.name}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            threads[int(task.name)] = (comm, int(fields[11]) + int(fields[12]))

    def busiest_worker_threads(self) -> list[list]:
        """Per training worker process, its threads that used at least 5% of its CPU time
        (name, CPU s): several busy threads would mean torch computes on several threads."""
        out = []
        for pid, threads in sorted(self.worker_threads.items()):
            total = sum(cpu for _, cpu in threads.values()) or 1
            busy = sorted(
                ((comm, round(cpu / CLK_TCK, 1)) for comm, cpu in threads.values()),
                key=lambda x: -x[1],
            )
            out.append([pid, [b for b in busy if b[1] * CLK_TCK >= 0.05 * total]])
        return out

    def as_dict(self) -> dict:
        return {
            "interval_s": self.interval_s,
            "samples": self.samples,
            "peak_sum_rss_mb": round(self.peak_rss / 2**20, 1),
            "peak_sum_pss_mb": round(self.peak_pss / 2**20, 1),
            "at_peak_pss_by_role": {
                r: {k: round(v, 1) for k, v in d.items()}
                for r, d in sorted(self.peak_by_role.items(), key=lambda x: -x[1]["pss_mb"])
            },
            "cpu_s_by_role": {
                r: round(v, 1) for r, v in sorted(self.cpu_by_role.items(), key=lambda x: -x[1])
            },
            "processes_by_role": {r: len(p) for r, p in sorted(self.pids_by_role.items())},
            "max_threads_by_role": dict(sorted(self.threads_by_role.items())),
            "peak_cores_of_one_process_by_role": {
                r: round(v, 2) for r, v in sorted(self.peak_cores_by_role.items())
            },
            "train_worker_busy_threads": self.busiest_worker_threads(),
            "top_processes_by_cpu_s": [
                [pid, role, round(cpu, 1)]
                for pid, role, cpu in sorted(self.cpu_by_pid.values(), key=lambda x: -x[2])[:12]
            ],
        }


# ------------------------------------------------------------------ through seld-orch cv


def cli_command(
    dataset: Path, workspace: Path, overrides: list[str], trainer: str = "auto"
) -> list[str]:
    script = Path(sys.executable).parent / "seld-orch"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]
    sets = [x for o in overrides for x in ("--set", o)]
    return [
        *head,
        "cv",
        "--dataset",
        str(dataset),
        "--workspace",
        str(workspace),
        "--run",
        RUN_RAY,
        *sets,
        "--trainer",
        trainer,
        "--json",
    ]


def through_cli(settings, command: list[str], logs: Path, sample_s: float) -> dict:
    """``seld-orch cv`` as a subprocess with its own local Ray; its process tree sampled, its
    stages followed on disk for progress."""
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    for folder in Path(settings.storage_path).glob(f"{RUN_RAY}-fold*"):
        shutil.rmtree(folder)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OMP_NUM_THREADS")}
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "cv.stdout.json", logs / "cv.stderr.log"
    say("$ " + " ".join(command))
    started = time.time()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        try:
            with TreeSampler(proc.pid, sample_s) as sampler:
                _follow(settings, proc, started)
        except BaseException:
            proc.terminate()  # the CLI marks its MLflow runs KILLED and stops its own Ray
            proc.wait(timeout=60)
            raise
    ended = time.time()
    if proc.returncode:
        tail = err_path.read_text()[-4000:]
        raise SystemExit(f"seld-orch cv failed (exit {proc.returncode}):\n{tail}")
    return {
        "command": command,
        "pid": proc.pid,
        "started": started,
        "ended": ended,
        "wall_s": round(ended - started, 2),
        "summary": json.loads(out_path.read_text()),
        "tree": sampler.as_dict(),
    }


def _follow(settings, proc: subprocess.Popen, started: float) -> None:
    seen: set[tuple[int, str, str]] = set()
    last_note = time.time()
    while proc.poll() is None:
        for fold in settings.folds:
            for stage in settings.stages:
                folder = settings.layout.stage(fold, stage)
                for what, name in (("started", "worker.json"), ("done", "done.json")):
                    key = (fold, stage, what)
                    if key not in seen and (folder / name).exists():
                        seen.add(key)
                        say(f"ray  fold{fold}/{stage} {what} (t+{time.time() - started:.0f} s)")
        if time.time() - last_note > 60:
            last_note = time.time()
            say(f"ray  running, t+{time.time() - started:.0f} s")
        time.sleep(1.0)


def stage_timeline(settings, cores: int, logs: dict[str, dict]) -> list[dict]:
    """Per stage of the cv run: ask, worker start, epoch reports (MLflow timestamps), end; the
    queue (waiting for a CPU held by other stages), start latency and teardown.

    Which CPU a stage got: stages, in the order their workers started, take the CPU freed
    first; a CPU is free again when the stage holding it shut its worker group down (Ray
    Train's controller log; without it, when its fit() returned)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    runs = json.loads(settings.layout.mlflow_runs.read_text())["children"]
    rows = []
    for fold in settings.folds:
        for stage in settings.stages:
            done = json.loads(settings.layout.done(fold, stage).read_text())
            worker = json.loads((settings.layout.stage(fold, stage) / "worker.json").read_text())
            metrics = client.get_metric_history(runs[str(fold)][stage], "train_loss")
            reports = [m.timestamp / 1000 for m in sorted(metrics, key=lambda m: m.step)]
            log = logs.get(f"{settings.run}-fold{fold}-{stage}", {})
            rows.append(
                {
                    "fold": fold,
                    "stage": stage,
                    "ask": done["start"],
                    "worker_started": worker["started"],
                    "reports": reports,
                    "end": done["end"],
                    "released": log.get("shut_down", done["end"]),
                    "history": done["history"],
                    "log": log,
                }
            )
    for fold in settings.folds:  # a fold task holds its CPU until its predictions are written
        last = [r for r in rows if r["fold"] == fold][-1]
        if not last["log"]:
            written = [
                p.stat().st_mtime for p in settings.layout.root.glob(f"fold{fold}/predictions/*")
            ]
            last["released"] = max([last["end"], *written])
            last["predictions_end"] = last["released"]
    free = [float("-inf")] * cores
    heapq.heapify(free)
    for row in sorted(rows, key=lambda r: r["worker_started"]):
        freed = heapq.heappop(free)
        row["could_start"] = max(row["ask"], freed)
        row["queue_s"] = row["could_start"] - row["ask"]
        row["start_latency_s"] = row["worker_started"] - row["could_start"]
        row["teardown_s"] = row["end"] - row["reports"][-1]
        row["held_after_last_report_s"] = row["released"] - row["reports"][-1]
        row["epoch_s"] = _diffs([row["worker_started"], *row["reports"]])
        row["busy_s"] = row["reports"][-1] - row["worker_started"]
        row["wall_s"] = row["end"] - row["ask"]
        heapq.heappush(free, row["released"])
    return rows


#: what Ray Train's controller logs about a stage's start, in its session's logs/train folder
#: (of the attempt that started the worker group: a stage that waits 60 s for a CPU times out
#: and tries again)
CONTROLLER_STEPS = {
    "placement_group_s": r"Placement group ready in ([\d.]+)s",
    "worker_actors_created_s": r"worker actors created in ([\d.]+)s",
    "train_context_initialized_s": r"Train context initialized on workers in ([\d.]+)s",
    "train_fn_launched_s": r"Train function launched on workers in ([\d.]+)s",
    "worker_group_startup_total_s": r"Worker group startup completed in ([\d.]+)s total",
}
CONTROLLER_EVENTS = {
    "requesting": "Requesting resources",
    "attempting": "Attempting to start training worker group",
    "shutting_down": "Shutting down",
    "shut_down": "Worker group shutdown successful",
}


def controller_logs(cli_pid: int, run: str) -> dict[str, dict]:
    """Per stage (``<run>-fold<k>-<stage>``): the time of the controller's first log line, of
    its steps (resources requested, the last attempt to start the worker group, shutdown),
    the durations it logs for each part of starting the worker group, and how many attempts
    timed out. From the cv's own Ray session (named after the CLI's process id) under Ray's
    default temp folder."""
    sessions = sorted(Path(tempfile.gettempdir(), "ray").glob(f"session_*_{cli_pid}"))
    out: dict[str, dict] = {}
    if not sessions:
        return out
    for path in (sessions[-1] / "logs" / "train").glob("ray-train-sys-controller-*.log"):
        text = path.read_text(errors="replace")
        names = re.findall(rf"{re.escape(run)}-fold\d+-\w+", text)
        if not names:
            continue
        entry: dict = {"log": path.name, "timed_out_attempts": 0}
        for raw in text.splitlines():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            stamp, message = record.get("asctime", ""), record.get("message", "")
            when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            when += int(stamp[20:23] or 0) / 1000
            entry.setdefault("first_log", when)
            if "startup timed out" in message and record.get("levelname") == "ERROR":
                entry["timed_out_attempts"] += 1
            for key, needle in CONTROLLER_EVENTS.items():
                if needle in message:  # the last one: the attempt that succeeded
                    entry[key] = when
            for key, pattern in CONTROLLER_STEPS.items():
                match = re.search(pattern, message)
                if match:
                    entry[key] = float(match.group(1))
        out[max(set(names), key=names.count)] = entry
    return out


def startup_breakdown(rows: list[dict]) -> list[dict]:
    """Per stage, its start latency and teardown split by what the controller logged."""
    out = []
    for r in rows:
        log = r["log"]
        if "attempting" not in log or "placement_group_s" not in log:
            continue
        pg_ready = log["attempting"] + log["placement_group_s"]
        item = {
            "job": f"fold{r['fold']}/{r['stage']}",
            "queued_for_cpu": r["queue_s"] > 0,
            "timed_out_attempts": log["timed_out_attempts"],
            # the fold job's fit() -> the new controller actor's first log line
            "ask_to_controller_up_s": log["first_log"] - r["ask"],
            # the moment a CPU was free for it -> its placement group ready
            "cpu_free_to_placement_group_s": pg_ready - r["could_start"],
        }
        for key in ("worker_actors_created_s", "train_context_initialized_s"):
            item[key] = log.get(key, float("nan"))
        if "worker_group_startup_total_s" in log:
            started = log["attempting"] + log["worker_group_startup_total_s"]
            item["launch_to_train_loop_s"] = r["worker_started"] - (
                pg_ready + item["worker_actors_created_s"] + item["train_context_initialized_s"]
            )
            item["start_latency_s"] = r["start_latency_s"]
            item["group_started_to_train_loop_s"] = r["worker_started"] - started
        if "shutting_down" in log:
            item["last_report_to_shutdown_s"] = log["shutting_down"] - r["reports"][-1]
            if "shut_down" in log:
                item["worker_group_shutdown_s"] = log["shut_down"] - log["shutting_down"]
                item["shutdown_to_fit_returned_s"] = r["end"] - log["shut_down"]
        out.append({k: round(v, 2) if isinstance(v, float) else v for k, v in item.items()})
    return out


# ------------------------------------------------------------------ analysis


def analyse(
    bare_r: dict,
    ray: dict,
    rows: list[dict],
    cores: int,
    contention_r: dict | None,
    breakdown: list[dict],
):
    bare_by = {(s["fold"], s["stage"]): s for s in bare_r["stages"]}
    first_ask = min(r["ask"] for r in rows)
    last_end = max(r["end"] for r in rows)
    span = last_end - first_ask
    bare_train = bare_r["train_s"]
    # fold tasks predict on their CPU before the next fold starts: the predictions that ended
    # inside the span are part of the work it holds (the Ray Train path predicts in its
    # CPU-less fold jobs, alongside the training)
    per_fold = bare_r.get("predict_per_fold_s", {})
    inside = sum(
        per_fold.get(str(r["fold"]), 0.0) for r in rows if r.get("predictions_end", 1e99) < last_end
    )
    ideal = (bare_train + inside) / cores
    stages = []
    max_loss_diff = max_sel_diff = 0.0
    for r in rows:
        b = bare_by[(r["fold"], r["stage"])]
        for hb, hr in zip(b.get("history", []), r["history"], strict=False):
            max_loss_diff = max(max_loss_diff, abs(hb["train_loss"] - hr["train_loss"]))
            max_sel_diff = max(max_sel_diff, abs(hb["val_selection"] - hr["val_selection"]))
        stages.append(
            {
                "job": f"fold{r['fold']}/{r['stage']}",
                "ask_t": round(r["ask"] - first_ask, 2),
                "queue_s": round(r["queue_s"], 2),
                "start_latency_s": round(r["start_latency_s"], 2),
                "busy_s": round(r["busy_s"], 2),
                "teardown_s": round(r["teardown_s"], 2),
                "held_after_last_report_s": round(r["held_after_last_report_s"], 2),
                "wall_s": round(r["wall_s"], 2),
                "epoch_s": [round(e, 2) for e in r["epoch_s"]],
                "bare_s": b["wall_s"],
                "bare_epoch_s": b["epoch_s"],
                "bare_validation_s": round(sum(b["validation_s"]), 2),
                "busy_over_bare": round(r["busy_s"] / b["wall_s"], 3),
            }
        )
    busy = sum(s["busy_s"] for s in stages)
    # a CPU is idle between a stage's release of it and the next stage's train loop
    lifecycle = sum(s["start_latency_s"] + s["held_after_last_report_s"] for s in stages)
    # N cores x span = bare work + slower epochs + start/teardown gaps + CPUs left idle
    accounting = {
        "cores_x_span_s": round(cores * span, 1),
        "bare_training_s": round(bare_train, 1),
        "slower_stages_s (busy - bare)": round(busy - bare_train, 1),
        "start latency + release after last report": round(lifecycle, 1),
        "cpu_idle_other_s (tail, gaps)": round(cores * span - busy - lifecycle, 1),
    }
    before = first_ask - ray["started"]
    after = ray["ended"] - last_end
    whole_bare = (bare_train + bare_r["predict_s"]) / cores
    out = {
        "cores": cores,
        "bare_train_s": bare_train,
        "bare_predictions_inside_span_s": round(inside, 1),
        "bare_train_on_cores_s": round(ideal, 1),
        "bare_predict_s": bare_r["predict_s"],
        "ray_wall_s": ray["wall_s"],
        "ray_before_first_stage_s": round(before, 1),
        "ray_training_span_s": round(span, 1),
        "ray_after_last_stage_s": round(after, 1),
        "ratio_span_over_bare": round(span / ideal, 3),
        "ratio_wall_over_bare_with_predictions": round(ray["wall_s"] / whole_bare, 3),
        "start_latency_s": {
            "median": round(statistics.median(s["start_latency_s"] for s in stages), 2),
            "max": round(max(s["start_latency_s"] for s in stages), 2),
        },
        "teardown_s": {
            "median": round(statistics.median(s["teardown_s"] for s in stages), 2),
            "max": round(max(s["teardown_s"] for s in stages), 2),
        },
        "accounting": accounting,
        "stages": stages,
        "startup_breakdown": breakdown,
        "same_training": {
            "max_abs_diff_train_loss": max_loss_diff,
            "max_abs_diff_val_selection": max_sel_diff,
        },
    }
    if contention_r is not None:
        adjusted = ideal * contention_r["factor"]
        out["bare_train_on_cores_with_contention_s"] = round(adjusted, 1)
        out["ratio_span_over_bare_with_contention"] = round(span / adjusted, 3)
    return out


def report(result: dict) -> None:
    a, tree, ph = result["analysis"], result["ray"]["tree"], result["phases"]
    cores, data, b = a["cores"], result["data"], result["bare"]

    def line(label: str, value: str) -> None:
        print(f"  {label:<52}{value}")

    print()
    print(
        f"== cv overhead: tiny preset, {data['recordings']} recordings x "
        f"{data['seconds_each']:g} s, folds {result['folds']}, {result['epochs']} epochs "
        f"({data['steps_per_stage']} steps) per stage"
    )
    print(f"machine: {result['machine']['cpu']}, {cores} cores")
    for name, p in ph.items():
        print(
            f"  {name}: {p['wall_s']:.0f} s, load (1 min) {p['load_1min_before']:.2f} -> "
            f"{p['load_1min_after']:.2f}, the machine's busy cores {p['machine_cores_busy']:.2f}"
        )
    line(
        f"bare, one process, {b['threads']} thread(s): training",
        f"{a['bare_train_s']:8.1f} s (validation {b['validation_s']:.1f} s)",
    )
    line("bare predictions (validation + test)", f"{a['bare_predict_s']:8.1f} s")
    inside = a.get("bare_predictions_inside_span_s", 0)
    line(
        f"bare training (+ {inside} s of predictions inside the span) on {cores} cores",
        f"{a['bare_train_on_cores_s']:8.1f} s",
    )
    if "bare_train_on_cores_with_contention_s" in a:
        c = result["contention"]
        line(
            f"... x contention of {cores} bare processes ({c['factor']:.2f}x)",
            f"{a['bare_train_on_cores_with_contention_s']:8.1f} s",
        )
        print(
            f"    (one SED epoch alone {c['alone_s']:.1f} s; {cores} at once {c['together_s']} s;"
            f" {cores} at once with {cores} threads each "
            f"{c[f'together_{cores}_threads_each_s']} s)"
        )
    line("seld-orch cv, whole command", f"{a['ray_wall_s']:8.1f} s")
    line("  before the first stage (Ray, MLflow, jobs)", f"{a['ray_before_first_stage_s']:8.1f} s")
    line("  training span (first ask -> last stage done)", f"{a['ray_training_span_s']:8.1f} s")
    line("  after the last stage (predict, score, log)", f"{a['ray_after_last_stage_s']:8.1f} s")
    line(f"ratio: training span / bare on {cores} cores", f"{a['ratio_span_over_bare']:8.2f}x")
    if "ratio_span_over_bare_with_contention" in a:
        line(
            "ratio: training span / bare with contention",
            f"{a['ratio_span_over_bare_with_contention']:8.2f}x",
        )
    line(
        f"ratio: whole command / bare (train + predict) / {cores}",
        f"{a['ratio_wall_over_bare_with_predictions']:8.2f}x",
    )
    lat, tear = a["start_latency_s"], a["teardown_s"]
    line("stage start latency, median / max", f"{lat['median']:8.2f} / {lat['max']:.2f} s")
    line("teardown (last report -> fit() returned)", f"{tear['median']:8.2f} / {tear['max']:.2f} s")
    line(
        f"peak memory, cv process tree (every {tree['interval_s']} s)",
        f"sum PSS {tree['peak_sum_pss_mb']:.0f} MiB, sum RSS {tree['peak_sum_rss_mb']:.0f} MiB",
    )
    line("peak RSS of this process after the bare path", f"{b['peak_rss_mb_this_process']:.0f} MiB")
    same = a["same_training"]
    line(
        "same training? max |diff| of train loss, selection",
        f"{same['max_abs_diff_train_loss']:.1e}, {same['max_abs_diff_val_selection']:.1e}",
    )
    print()
    print("  stage        ask   queue  start  busy   tear  stage   bare  busy/  val(bare)")
    print("               t s     s    lat s    s   down s  wall s    s   bare      s")
    for s in a["stages"]:
        print(
            f"  {s['job']:<11}{s['ask_t']:6.1f}{s['queue_s']:7.1f}{s['start_latency_s']:7.2f}"
            f"{s['busy_s']:7.1f}{s['teardown_s']:7.2f}{s['wall_s']:8.1f}{s['bare_s']:7.1f}"
            f"{s['busy_over_bare']:6.2f}{s['bare_validation_s']:8.1f}"
        )
    if a["startup_breakdown"]:
        print()
        print("  start and teardown of each stage, from Ray Train's controller log (s):")
        keys = [k for k in a["startup_breakdown"][0] if k != "job"]
        for key in keys:
            values = [b.get(key, float("nan")) for b in a["startup_breakdown"]]
            cells = " ".join(f"{v:6.2f}" for v in values)
            print(f"    {key:<36}{cells}")
        print(
            f"    {'(stages)':<36}"
            + " ".join(f"{b['job'].removeprefix('fold'):>6}" for b in a["startup_breakdown"])
        )
    print()
    print(f"  where the {cores} cores' time of the training span went (s):")
    for k, v in a["accounting"].items():
        print(f"    {k:<40}{v:8.1f}")
    print()
    print("  CPU seconds by role in the cv's process tree (sampled):")
    for role, cpu in tree["cpu_s_by_role"].items():
        n = tree["processes_by_role"].get(role, 0)
        threads = tree["max_threads_by_role"].get(role, 0)
        peak = tree["peak_cores_of_one_process_by_role"].get(role, 0.0)
        print(
            f"    {role:<34}{cpu:7.1f} s  {n:3d} process(es), up to {threads} threads, "
            f"one process at most {peak:.2f} cores"
        )
    worker_cpu = tree["cpu_s_by_role"].get("train worker", 0.0)
    print(
        f"  CPU of the training workers {worker_cpu:.1f} s; of the bare path (training + "
        f"predictions) {b['cpu_s']:.1f} s"
    )
    print(f"  busiest processes (pid, last role, CPU s): {tree['top_processes_by_cpu_s']}")
    for pid, threads in tree["train_worker_busy_threads"]:
        print(f"  training worker {pid}: threads >= 5% of its CPU (name, CPU s): {threads}")
    print("  at the peak (PSS MiB / RSS MiB / processes):")
    for role, d in tree["at_peak_pss_by_role"].items():
        print(f"    {role:<34}{d['pss_mb']:7.0f}{d['rss_mb']:8.0f}{d['processes']:4.0f}")


# ------------------------------------------------------------------ main


def reanalyse(args: argparse.Namespace) -> None:
    from orchestrator.cv import CVSettings
    from orchestrator.tracking import default_tracking_uri
    from seld.config import load_config

    result = json.loads(args.reanalyse.read_text())
    workspace = (args.workspace or Path(result["workspace"])).resolve()
    settings = CVSettings(
        dataset=str(workspace / "dataset"),
        workspace=str(workspace),
        config=load_config("tiny", result["overrides"]).to_dict(),
        run=RUN_RAY,
        tracking_uri=default_tracking_uri(workspace),
    )
    cores = result["analysis"]["cores"]
    logs = controller_logs(result["ray"]["pid"], RUN_RAY)
    rows = stage_timeline(settings, cores, logs)
    old = result["analysis"]
    result["analysis"] = analyse(
        result["bare"],
        result["ray"],
        rows,
        cores,
        result.get("contention"),
        startup_breakdown(rows),
    )
    if not any("history" in s for s in result["bare"]["stages"]):
        result["analysis"]["same_training"] = old["same_training"]
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 folds, 4 x 10 s a split, 2 epochs")
    parser.add_argument("--folds", default=None, help="comma-separated folds (default 1,2,3,4)")
    parser.add_argument("--per-split", type=int, default=None, help="recordings per split (8)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per recording (20)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per stage (5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads, bare path")
    parser.add_argument(
        "--trainer",
        default="auto",
        choices=("auto", "task", "ray-train"),
        help="the cv's --trainer: its fold tasks (auto), or Ray Train per stage (ray-train)",
    )
    parser.add_argument("--no-contention", action="store_true")
    parser.add_argument("--sample-s", type=float, default=0.5)
    parser.add_argument("--workspace", type=Path, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--reanalyse",
        type=Path,
        metavar="JSON",
        help="recompute the analysis of an earlier run from its JSON and its --workspace "
        "(run folders, MLflow store, Ray's session logs), without training",
    )
    args = parser.parse_args()
    if args.reanalyse:
        reanalyse(args)
        return
    quick = {"folds": "1,2", "per_split": 4, "seconds": 10.0, "epochs": 2}
    full = {"folds": "1,2,3,4", "per_split": 8, "seconds": 20.0, "epochs": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.folds = tuple(int(k) for k in args.folds.split(","))

    from orchestrator.cv import CVSettings
    from orchestrator.tracking import default_tracking_uri
    from seld.config import load_config

    cores = os.cpu_count() or 1
    tmp = None
    if args.workspace is None:
        tmp = Path(tempfile.mkdtemp(prefix="seld-cv-overhead-"))
        args.workspace = tmp
    workspace = args.workspace.resolve()
    dataset = workspace / "dataset"
    overrides = experiment_overrides(args)
    experiment = load_config("tiny", overrides)
    settings = CVSettings(
        dataset=str(dataset),
        workspace=str(workspace),
        config=experiment.to_dict(),
        run=RUN_BARE,
        tracking_uri=default_tracking_uri(workspace),
    )
    say(f"{cpu_model()}, {cores} cores; load averages {' / '.join(f'{x:.2f}' for x in loadavg())}")
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "workspace": str(workspace),
        "machine": {"cpu": cpu_model(), "cores": cores, "python": platform.python_version()},
        "folds": list(args.folds),
        "epochs": args.epochs,
        "seed": args.seed,
        "overrides": overrides,
        "phases": {},
    }
    try:
        result["data"] = prepare(args, dataset, workspace, settings)
        say(f"prepared: {result['data']}")
        with Phase("bare") as phase:
            result["bare"] = bare(settings, args.threads)
        result["phases"]["bare"] = phase.as_dict()
        contention_r = None
        if not args.no_contention and cores > 1:
            with Phase("contention") as phase:
                contention_r = contention(settings, args.threads, cores)
            result["contention"] = contention_r
            result["phases"]["contention"] = phase.as_dict()
        command = cli_command(dataset, workspace, overrides, args.trainer)
        ray_settings = replace(settings, run=RUN_RAY)
        with Phase("ray") as phase:
            result["ray"] = through_cli(ray_settings, command, workspace / "logs", args.sample_s)
        result["phases"]["ray"] = phase.as_dict()
        logs = controller_logs(result["ray"]["pid"], RUN_RAY)
        rows = stage_timeline(ray_settings, cores, logs)
        breakdown = startup_breakdown(rows)
        result["analysis"] = analyse(
            result["bare"], result["ray"], rows, cores, contention_r, breakdown
        )
        result["ray"]["cv_scores"] = result["ray"].pop("summary")["overall"]
        report(result)
        say("done")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
            print(f"wrote {args.json}")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"workspace kept: {tmp}")


if __name__ == "__main__":
    main()
