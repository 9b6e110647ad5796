"""Memory of fold jobs: peak RSS of each process of a cv run against the dataset's size.

Runs the real cv path (``run_cv``: four concurrent fold jobs, each a Ray task that trains SED then
DOA as Ray Train jobs and predicts its validation and test splits) on one node, tiny preset, one
epoch, for two synthetic datasets of different size, and prints the peak resident set size
(the kernel's high-water mark, VmHWM, which is what ``getrusage`` reports as ``ru_maxrss``) of:

* each Ray Train worker (one per fold and stage: training and validation read the HDF5 feature
  files lazily, one window at a time, through ``seld.features.windows.WindowDataset``);
* each fold-job task process (scaler, then inference of the fold's validation and test
  recordings, one recording at a time);

next to the size of the feature files on disk. The RSS of a process is read from
``/proc/<pid>/status`` every 0.1 s by a thread of this script, for every Ray worker that is a
descendant of this process (so other Ray instances on the machine are ignored), and written to
``<out>/rss-<N>.json``.

    python bench/fold_memory.py [--sizes 8,32] [--seconds 6] [--out /tmp/seld-fold-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(16):
        parent = _ppid(pid)
        if parent is None or parent <= 1:
            return False
        if parent == ancestor:
            return True
        pid = parent
    return False


class RssSampler:
    """Polls the Ray workers below this process; keeps each one's titles and peak RSS."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.me = os.getpid()
        self.seen: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    self._sample(int(entry.name))
            self._stop.wait(self.interval_s)

    def _sample(self, pid: int) -> None:
        known = self.seen.get(pid)
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if known is None and not (title.startswith("ray::") and _descends_from(pid, self.me)):
                return
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, UnicodeDecodeError):
            return
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        hwm_kb = int(fields["VmHWM"].split()[0]) if "VmHWM" in fields else 0
        entry = self.seen.setdefault(pid, {"pid": pid, "titles": [], "peak_rss_mb": 0.0})
        name = title.removeprefix("ray::").split(".")[0].split(" ")[0]
        if name and name not in entry["titles"]:
            entry["titles"].append(name)
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], hwm_kb / 1024)

    def processes(self) -> list[dict]:
        return sorted(self.seen.values(), key=lambda e: e["pid"])


def role(entry: dict) -> str:
    titles = entry["titles"]
    if "RayTrainWorker" in titles:  # spare workers Ray Train started but never ran are left out
        return "train worker" if "execute" in titles else "unused train worker"
    if "fold_job" in titles:
        return "fold job task"
    if "MetricsSink" in titles:
        return "metrics sink"
    if "TrainController" in titles:
        return "train controller"
    return "other"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_size(per_split: int, seconds: float, out: Path, cpus: int) -> dict:
    from orchestrator.cv import CVSettings
    from orchestrator.cv_run import run_cv
    from orchestrator.extract import extract_dataset
    from orchestrator.ray_utils import ray_session
    from orchestrator.tracking import default_tracking_uri
    from seld.config import load_config
    from seld.synth import SynthConfig, synthesize_dataset

    root = out / f"n{per_split}"
    data, workspace = root / "data", root / "ws"
    synthesize_dataset(
        data, SynthConfig(seconds=seconds, per_split=per_split, formats=("mic",), seed=1), workers=2
    )
    # features first, in a Ray session of their own: the cv session's workers do nothing else
    with ray_session(num_cpus=cpus):
        extracted = extract_dataset(data, workspace, load_config("tiny").features, "mic")
    feature_bytes = folder_bytes(extracted.root)
    feature_files = len(list(extracted.root.rglob("*.h5")))

    settings = CVSettings(
        dataset=str(data),
        workspace=str(workspace),
        config=load_config("tiny", ["train.epochs=1"]).to_dict(),
        cpus_per_worker=cpus / 4,  # the four fold jobs at once on this node
        run="memory",
        tracking_uri=default_tracking_uri(workspace),
    )
    # a rerun must train again: no finished stages, no Ray Train checkpoints to resume from
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    for folder in (workspace / "ray_results").glob(f"{settings.run}-fold*"):
        shutil.rmtree(folder)
    started = time.perf_counter()
    with RssSampler() as sampler, ray_session(num_cpus=cpus):
        summary = run_cv(settings)
    elapsed = time.perf_counter() - started
    processes = [dict(e, role=role(e)) for e in sampler.processes()]
    result = {
        "per_split": per_split,
        "recordings": 4 * per_split,
        "seconds": seconds,
        "feature_files": feature_files,
        "feature_mb": feature_bytes / 2**20,
        "cv_s": elapsed,
        "cv_seld": summary["overall"]["seld"],
        "processes": processes,
    }
    path = out / f"rss-{per_split}.json"
    path.write_text(json.dumps(result, indent=2))
    return result


def summarise(result: dict, kind: str) -> tuple[int, float, float]:
    peaks = [p["peak_rss_mb"] for p in result["processes"] if p["role"] == kind]
    if not peaks:
        return 0, float("nan"), float("nan")
    return len(peaks), statistics.median(peaks), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,32", help="recordings per split, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each recording")
    parser.add_argument("--out", type=Path, default=Path("/tmp/seld-fold-memory"))
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"== {size} recordings per split x {args.seconds:g} s", flush=True)
        results.append(run_size(size, args.seconds, args.out, args.cpus))
        for p in results[-1]["processes"]:
            if p["role"] in ("train worker", "fold job task"):
                print(f"   pid {p['pid']:>7}  {p['role']:<14} {p['peak_rss_mb']:7.0f} MB")

    header = (
        "| recordings | feature files on disk | train workers: n, median / max peak RSS "
        "| fold-job tasks: n, median / max peak RSS | cv time |"
    )
    print()
    print(header)
    print("|" + "---|" * 5)
    for r in results:
        tw, tw_med, tw_max = summarise(r, "train worker")
        fj, fj_med, fj_max = summarise(r, "fold job task")
        print(
            f"| {r['per_split']}/split ({r['recordings']} x {r['seconds']:g} s) "
            f"| {r['feature_files']} files, "
            f"{r['feature_mb']:.1f} MB | {tw}, {tw_med:.0f} / {tw_max:.0f} MB "
            f"| {fj}, {fj_med:.0f} / {fj_max:.0f} MB | {r['cv_s']:.0f} s |"
        )
    if len(results) >= 2:
        first, last = results[0], results[-1]
        data_ratio = last["feature_mb"] / first["feature_mb"]
        tw0, tw1 = summarise(first, "train worker")[2], summarise(last, "train worker")[2]
        fj0, fj1 = summarise(first, "fold job task")[2], summarise(last, "fold job task")[2]
        print(
            f"\nfeatures x{data_ratio:.1f}; max train-worker peak RSS x{tw1 / tw0:.2f} "
            f"({tw1 - tw0:+.0f} MB); max fold-job peak RSS x{fj1 / fj0:.2f} ({fj1 - fj0:+.0f} MB)"
            f"  (JSON in {args.out})"
        )


if __name__ == "__main__":
    main()
