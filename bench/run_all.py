"""Run every benchmark and write one results table, ``bench/RESULTS.md``.

Each benchmark runs as its own process with small but meaningful arguments (the whole set takes
about ten minutes on a 2-core machine, plus about 17 for ``cv_overhead``, which trains the
demo's cross-validation twice); its key numbers come from its ``--json`` file, or from
its printed lines, and its full output is kept under the table. The header names the machine
(CPU, cores, memory, GPU), the load average before and after (benchmarks on a shared machine
are only as good as its quietest minute), the versions of the stack and the git commit.

    python bench/run_all.py [--only scorer,threshold_search] [--quick] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bench:
    name: str
    script: str
    args: list[str]
    quick_args: list[str]
    json: bool = True
    timeout_s: int = 900
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # filled after the run
    output: str = ""
    wall_s: float = 0.0
    returncode: int | None = None
    command: str = ""
    loads: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after


BENCHES = [
    Bench(
        "scorer",
        "bench/scorer.py",
        ["--recordings", "100", "--seconds", "60", "--repeats", "3"],
        ["--recordings", "8", "--seconds", "20", "--repeats", "1"],
    ),
    Bench(
        "threshold_search",
        "bench/threshold_search.py",
        ["--trials", "1000", "--legacy-trials", "150"],
        ["--trials", "60", "--legacy-trials", "20", "--per-split", "4"],
    ),
    Bench(
        "features",  # part 2 of bench/features.py is the extraction scaling (1 vs 2 Ray CPUs)
        "bench/features.py",
        ["--seconds", "30", "--recordings", "8", "--dataset-seconds", "10", "--repeats", "2"],
        ["--seconds", "5", "--recordings", "4", "--dataset-seconds", "3", "--repeats", "1"],
    ),
    Bench(
        "predict",
        "bench/predict.py",
        ["--repeats", "3", "--recordings", "4", "--paper-repeats", "1", "--paper-recordings", "1"],
        ["--repeats", "1", "--recordings", "1", "--presets", "tiny"],
    ),
    Bench(
        "train_step",
        "bench/train_step.py",
        ["--steps", "5", "--workers", "2"],
        ["--steps", "2", "--workers", "1"],
        json=False,
    ),
    Bench(
        "cv_overhead",  # the demo's cv (4 folds, 32 x 20 s, 5 epochs), bare and through Ray
        "bench/cv_overhead.py",
        [],
        ["--quick"],
        timeout_s=3600,
    ),
]


# ------------------------------------------------------------------ the machine


def machine() -> dict[str, str]:
    import numpy
    import optuna
    import ray
    import scipy
    import torch

    cpu = platform.processor() or "unknown"
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        memory = "unknown"
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain") else ""
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "optuna": optuna.__version__,
        "commit": f"{commit}{dirty}" if commit else "unknown",
    }


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------ running


def run(bench: Bench, quick: bool, tmp: Path) -> None:
    args = bench.quick_args if quick else bench.args
    json_path = tmp / f"{bench.name}.json"
    cmd = [sys.executable, bench.script, *args, *(["--json", str(json_path)] if bench.json else [])]
    bench.command = " ".join(["python", bench.script, *args])
    print(f"== {bench.command}", flush=True)
    start, before = time.perf_counter(), os.getloadavg()[0]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout_s, check=False
        )
        bench.returncode, bench.output = proc.returncode, proc.stdout
        if proc.returncode:
            bench.output += "\n" + proc.stderr[-3000:]
    except subprocess.TimeoutExpired as exc:
        bench.returncode = -1
        bench.output = f"(timed out after {bench.timeout_s} s)\n{exc.stdout or ''}"
    bench.wall_s = time.perf_counter() - start
    bench.loads = (before, os.getloadavg()[0])
    print(bench.output.rstrip(), flush=True)
    print(f"   ({bench.wall_s:.0f} s, exit {bench.returncode})", flush=True)
    if bench.returncode == 0:
        data = json.loads(json_path.read_text()) if bench.json else None
        bench.rows = ROWS[bench.name](data, bench.output)


def _scorer_rows(d: dict, _: str) -> list[tuple[str, str, str]]:
    what = f"{d['recordings']} recordings x {d['seconds_each']:g} s"
    return [
        ("scorer", f"score_files, {what}", f"{d['ours_score_files_s']:.3f} s"),
        ("scorer", "score_directories (CSV files read)", f"{d['ours_score_directories_s']:.3f} s"),
        ("scorer", "literal per-frame reference scorer", f"{d['reference_s']:.1f} s"),
        ("scorer", "speed-up over the reference", f"**{d['speedup']:.0f}x**"),
        ("scorer", "max abs difference (ER, F, DOA, FR, SELD; all, split, ov, ir)",
         f"{d['max_abs_difference']:.1e}"),
    ]  # fmt: skip


def _threshold_rows(d: dict, _: str) -> list[tuple[str, str, str]]:
    one, s = d["one_trial"], d["search"]
    sc = s["scores"]
    rows = [
        ("threshold search", f"data: {d['source']}", f"{d['recordings']} validation recordings"),
        ("threshold search", "one trial's scoring, before (submission rows + score_files)",
         f"{1000 * one['old_s']:.1f} ms"),
        ("threshold search", "one trial's scoring, after (prepared ThresholdScorer)",
         f"{1000 * one['new_s']:.1f} ms ({one['speedup']:.0f}x, identical numbers)"),
    ]  # fmt: skip
    if "legacy_trials_per_s" in d:
        rows.append(
            ("threshold search", f"search before ({d['legacy_trials']} trials, concurrency 1)",
             f"{d['legacy_trials_per_s']:.1f} trials/s")
        )  # fmt: skip
    rows += [
        ("threshold search", f"search after ({s['trials']} trials, concurrency "
         f"{s['concurrency']})", f"**{s['trials_per_s']:.1f} trials/s** ({s['search_s']:.0f} s)"),
        ("threshold search", "best setting", f"{s['best_config']}"),
        ("threshold search", "SELD validation: default 0.3 -> tuned",
         f"{sc['validation_default']['seld']:.4f} -> {sc['validation_tuned']['seld']:.4f}"),
        ("threshold search", "SELD test: default 0.3 -> tuned",
         f"{sc['test_default']['seld']:.4f} -> {sc['test_tuned']['seld']:.4f}"),
    ]  # fmt: skip
    return rows


def _features_rows(d: dict, _: str) -> list[tuple[str, str, str]]:
    one, sc = d["single"], d["scaling"]
    return [
        ("features", f"one {one['seconds']:g} s recording, paper preset, 1 core: ours",
         f"{one['ours_s']:.2f} s"),
        ("features", "the seed's algorithm, literal", f"{one['seed_s']:.2f} s"),
        ("features", "speed-up", f"**{one['speedup']:.1f}x**"),
        ("features", "max abs difference log-mel (dB) / GCC-PHAT",
         f"{one['max_diff_logmel_db']:.1e} / {one['max_diff_gcc']:.1e}"),
        ("features", "peak RSS of one extraction process", f"{one['peak_rss_mb']:.0f} MB"),
        ("extraction scaling", f"extract_dataset, {sc['recordings']} recordings x "
         f"{sc['seconds_each']:g} s, 1 Ray CPU", f"{sc['wall_s_1cpu']:.2f} s "
         f"({sc['recordings_per_s_1cpu']:.2f} rec/s)"),
        ("extraction scaling", "2 Ray CPUs", f"{sc['wall_s_2cpu']:.2f} s "
         f"({sc['recordings_per_s_2cpu']:.2f} rec/s)"),
        ("extraction scaling", "2 vs 1 CPU", f"**{sc['scaling']:.2f}x**"),
    ]  # fmt: skip


def _train_rows(_: None, out: str) -> list[tuple[str, str, str]]:
    rows = []
    head = re.search(r"^(\S+): ([\d,]+) parameters, batch (\d+).*?, (\S+)$", out, re.M)
    if head:
        rows.append(("train step", "model, batch, device", f"{head[1]} ({head[2]} parameters), "
                     f"batch {head[3]} x 2 s, {head[4]}"))  # fmt: skip
    for line in out.splitlines()[1:]:
        match = re.match(r"\s+(.+?)\s{2,}(-?[\d.]+ (?:ms|%|windows/s).*)$", line)
        if match:
            rows.append(("train step", match[1], match[2]))
    return rows


def _predict_rows(d: dict, _: str) -> list[tuple[str, str, str]]:
    rows = []
    for r in d["steps"]:
        t, p = r["seconds"], r["preset"]
        rows += [
            ("predict", f"{p}: one 60 s recording, 1 core: read / resample / features",
             f"{t['read']:.3f} / {t['resample']:.3f} / {t['features']:.3f} s"),
            ("predict", f"{p}: 4-fold ensemble ({r['models_in_ensemble']} models) / one fold",
             f"{t['ensemble']:.3f} / {t['one_fold']:.3f} s "
             f"({r['ensemble_over_one_fold']:.2f}x)"),
            ("predict", f"{p}: post-processing / CSV", f"{t['postprocessing']:.3f} / "
             f"{t['csv']:.3f} s"),
            ("predict", f"{p}: end to end (target for tiny: < 3 s)",
             f"**{r['end_to_end_s']:.2f} s** ({r['real_time_factor']:.0f}x real time)"),
            ("predict", f"{p}: ensemble as the cv runs its models / prediction copies",
             f"{t['ensemble_unprepared']:.3f} s / {t['ensemble']:.3f} s "
             f"({r['prepared_speedup']:.2f}x)"),
        ]  # fmt: skip
    for r in d["throughput"]:
        for kind in ("cold", "warm"):
            rows.append(
                ("predict", f"{r['preset']}: predict_recordings, {r['recordings']} x 60 s, "
                 f"{r['num_cpus']} Ray CPUs, {kind} cache",
                 f"{r[kind]['recordings_per_minute']:.1f} recordings/min")
            )  # fmt: skip
    return rows


def _cv_overhead_rows(d: dict, _: str) -> list[tuple[str, str, str]]:
    a, data, tree = d["analysis"], d["data"], d["ray"]["tree"]
    n = a["cores"]
    what = (
        f"tiny, folds {d['folds']}, {data['recordings']} x {data['seconds_each']:g} s, "
        f"{data['steps_per_stage']} steps a stage"
    )
    rows = [
        ("cv overhead", f"bare training ({what}), one process, {d['bare']['threads']} thread",
         f"{a['bare_train_s']:.1f} s ({a['bare_train_on_cores_s']:.1f} s on {n} cores)"),
        ("cv overhead", "`seld-orch cv`: whole command / training span",
         f"{a['ray_wall_s']:.1f} s / {a['ray_training_span_s']:.1f} s"),
        ("cv overhead", f"training span / bare training on {n} cores (goal <= 1.25)",
         f"**{a['ratio_span_over_bare']:.2f}x**"),
        ("cv overhead", "stage start latency, median / max (goal <= 3 s)",
         f"{a['start_latency_s']['median']:.1f} / {a['start_latency_s']['max']:.1f} s"),
        ("cv overhead", "peak memory of the cv's process tree, sum PSS / RSS",
         f"{tree['peak_sum_pss_mb']:.0f} / {tree['peak_sum_rss_mb']:.0f} MiB"),
    ]  # fmt: skip
    if "contention" in d:
        c = d["contention"]
        rows.append(
            ("cv overhead", f"one bare epoch, {n} processes at once / alone (1 thread; "
             f"{n} threads)", f"{c['factor']:.2f}x; {c[f'factor_{n}_threads_each']:.2f}x")
        )  # fmt: skip
    return rows


ROWS = {
    "scorer": _scorer_rows,
    "threshold_search": _threshold_rows,
    "features": _features_rows,
    "train_step": _train_rows,
    "predict": _predict_rows,
    "cv_overhead": _cv_overhead_rows,
}


# ------------------------------------------------------------------ the report


def report(benches: list[Bench], info: dict[str, str], started: str, loads: tuple[str, str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py` on {started}; each benchmark is its own process.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']}, {info['cores']} cores, {info['memory']} memory |",
        f"| GPU | {info['gpu']} |",
        f"| load average (1 / 5 / 15 min) | before: {loads[0]}; after: {loads[1]} |",
        f"| OS, Python | {info['os']}, Python {info['python']} |",
        f"| versions | torch {info['torch']}, ray {info['ray']}, numpy {info['numpy']}, "
        f"scipy {info['scipy']}, optuna {info['optuna']} |",
        f"| commit | {info['commit']} |",
        "",
        "The machine may be shared: the load averages (here and per benchmark below) say how busy",
        "it was. A load above the number of cores slows every timing, most of all the ones that",
        "use both cores (extraction scaling, the DataLoader workers of the train step).",
        "",
        "| benchmark | measure | value |",
        "|---|---|---|",
    ]
    for b in benches:
        if b.returncode != 0:
            lines.append(f"| {b.name} | **failed** (exit {b.returncode}) | see its output below |")
        for bench, measure, value in b.rows:
            lines.append(f"| {bench} | {measure} | {value} |")
    lines += ["", "## Commands and output", ""]
    for b in benches:
        lines += [
            f"### {b.name}: `{b.command}`",
            "",
            f"{b.wall_s:.0f} s; 1-minute load average {b.loads[0]:.1f} before, {b.loads[1]:.1f} "
            "after.",
            "",
            "```",
            b.output.rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHES)
    )
    parser.add_argument("--quick", action="store_true", help="tiny arguments (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    chosen = BENCHES
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}")
        chosen = [b for b in BENCHES if b.name in names]
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info, before = machine(), load()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for bench in chosen:
            run(bench, args.quick, Path(tmp))
    text = report(chosen, info, started, (before, load()))
    text += f"\nAll benchmarks: {time.perf_counter() - start:.0f} s.\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")
    if any(b.returncode != 0 for b in chosen):
        sys.exit(1)


if __name__ == "__main__":
    main()
