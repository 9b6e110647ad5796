"""Where the processes of a ``seld-orch cv`` run spend their time: py-spy on each Ray role.

Runs ``seld-orch cv`` (its own local Ray) on a workspace that ``bench/cv_overhead.py`` prepared
(``--workspace DIR``: its synthesized dataset and extracted features), and attaches
``py-spy record --idle --threads`` to the first ``--per-role`` processes of each Ray role (Train
controller, training worker, fold job, metrics sink, Ray Train's helper actors) as soon as a
process takes that role. py-spy's blocking mode is used: in ``--nonblocking`` or
``--subprocesses`` mode it fails on most samples of Ray's actor threads (Ray 2.60, Python
3.11). Blocking mode pauses the process for each sample, so this run's wall times are not
benchmark numbers (``bench/cv_overhead.py`` measures those); the shares are what it is for.

A process is attached once it has retitled itself ``ray::<Role>``, so what it did before (the
interpreter's start, ``import ray``, loading the actor's class) is not in its profile. Printed
per process and thread, wall seconds (samples / rate) by cause: for a training worker's
training thread, training steps / validation / checkpoint saves / each part of the per-epoch
report; for main threads and the controller's event loop, the module being imported while
deserializing arguments (a Ray actor handle or function in the arguments imports the module
that defines it), or the leaf function. Raw profiles are kept in ``--out``.

py-spy is not a dependency of the project: ``pip install py-spy`` into the venv first.

    python bench/cv_profile.py --workspace DIR [--quick] [--per-role 1] [--rate 20]
        [--out /tmp/seld-cv-profile]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cv_overhead import cli_command, experiment_overrides, loadavg

ROLES = (
    "RayTrainWorker",
    "TrainController",
    "fold_job",
    "MetricsSink",
    "PlacementGroupCleaner",
    "SynchronizationActor",
    "DatasetManager",
    "PreemptionWatcher",
)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(
                int(entry.name)
            )
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def profile_run(command: list[str], out: Path, per_role: int, rate: int) -> list[Path]:
    """Run the cv command; attach py-spy to the first ``per_role`` processes of each role."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} missing: pip install py-spy into the venv")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OMP_NUM_THREADS")}
    left = dict.fromkeys(ROLES, per_role)
    attached: set[int] = set()
    spies, files = [], []
    print("$ " + " ".join(command), flush=True)
    with open(out / "cv.stdout.json", "w") as so, open(out / "cv.stderr.log", "w") as se:
        cli = subprocess.Popen(command, stdout=so, stderr=se, env=env)
        started = time.time()
        while cli.poll() is None:
            for pid in _tree(cli.pid):
                if pid in attached:
                    continue
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                except OSError:
                    continue
                role = next((r for r in ROLES if title.startswith(f"ray::{r}")), None)
                if role is None or not left[role]:
                    continue
                left[role] -= 1
                attached.add(pid)
                raw = out / f"{role}-{pid}.txt"
                files.append(raw)
                print(f"  t+{time.time() - started:5.1f} s: py-spy on {role} {pid}", flush=True)
                spies.append(
                    subprocess.Popen(
                        [
                            *(str(py_spy), "record", "--pid", str(pid), "--idle", "--threads"),
                            *("--format", "raw", "--rate", str(rate), "-o", str(raw)),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(0.2)
    for spy in spies:
        spy.wait()
    print(f"cv exit {cli.returncode} after {time.time() - started:.0f} s", flush=True)
    return [f for f in files if f.exists()]


def _short(frame: str) -> str:
    return re.sub(r" \(.*", "", frame)


def cause(thread: str, frames: list[str]) -> str:
    text = ";".join(frames)
    if "TrainingThread" in thread:
        if "report (orchestrator/cv.py" in text:
            inner = text[text.index("report (orchestrator/cv.py") :]
            if "ray/train" not in inner:
                return "report: ray.get(sink.log_epoch) (MLflow write in the sink)"
            if "copyfile" in inner or "TemporaryDirectory" in inner:
                return "report: copy of last.pt into a temporary folder"
            if "_upload_checkpoint" in inner or "persist_current_checkpoint" in inner:
                return "report: ray.train.report, checkpoint copied to storage"
            if "_wait_then_report" in inner:
                return "report: ray.train.report, waiting for the controller"
            return "report: ray.train.report, other"
        for needle, what in (
            ("evaluate_files", "validation (evaluate_files)"),
            ("save_checkpoint", "checkpoint saves (last.pt, best.pt)"),
            ("train_stage (seld/methods/training.py", "training steps"),
            ("settings_fold_data", "fold data (paths, scaler)"),
            ("_train_loop", "the train loop's own setup"),
        ):
            if needle in text:
                return what
        return "Ray Train around the train loop"
    modules = [
        m for m in re.findall(r"<module> \(([^)]*?):\d+\)", text) if "default_worker" not in m
    ]
    if modules:
        return "import " + modules[0].split("site-packages/")[-1]
    if "TrainController._step" in text:
        parts = [_short(f) for f in frames if not re.search("_inject_tracing|_resume_span", f)]
        i = parts.index("TrainController._step")
        return "control loop: " + ";".join(parts[i + 1 : i + 3])
    return "leaf: " + (_short(frames[-1]) if frames else "-")


def summarise(raw: Path, rate: int, min_s: float = 0.2) -> None:
    by: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread, rest = re.sub(r"^thread \(\d+\):? ?", "", frames[0]) or "(unnamed)", frames[1:]
        if thread.startswith(("PythonGCThread", "MonitoringThread", "(unnamed)")):
            continue  # waiting threads of Ray's, no work of ours
        by[(thread, cause(thread, rest))] += int(count)
        threads[thread] += int(count)
    print(f"== {raw.stem}")
    for thread, n in threads.most_common():
        print(f"   {thread[:60]}: {n / rate:.1f} s")
        for (t, what), m in by.most_common():
            if t == thread and m / rate >= min_s:
                print(f"      {m / rate:7.2f} s  {what[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="cv_overhead's --quick settings")
    parser.add_argument("--folds", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-role", type=int, default=1)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/seld-cv-profile"))
    args = parser.parse_args()
    defaults = {"folds": "1,2", "epochs": 2} if args.quick else {"folds": "1,2,3,4", "epochs": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.folds = tuple(int(k) for k in args.folds.split(","))
    workspace = args.workspace.resolve()
    run = "bench-profile"
    shutil.rmtree(workspace / "runs" / run, ignore_errors=True)
    for folder in (workspace / "ray_results").glob(f"{run}-fold*"):
        shutil.rmtree(folder)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    command = cli_command(workspace / "dataset", workspace, experiment_overrides(args))
    command[command.index("--run") + 1] = run
    print(f"load averages {' / '.join(f'{x:.2f}' for x in loadavg())}")
    files = profile_run(command, args.out, args.per_role, args.rate)
    print(f"load averages {' / '.join(f'{x:.2f}' for x in loadavg())}")
    print(f"wall seconds per thread (samples / {args.rate} Hz), by cause; raw in {args.out}")
    for raw in sorted(files):
        summarise(raw, args.rate)


if __name__ == "__main__":
    main()
