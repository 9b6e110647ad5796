"""Fault soak: the commands under faults injected at random points, and commands run at once on
one workspace, each checked against a fault-free reference run.

    .venv/bin/python bench/soak.py --out /tmp/soak              # about an hour on 2 cores
    .venv/bin/python bench/soak.py --out /tmp/soak --rounds 1 --race 2   # a quick pass

Setup, before any clock: a small DCASE 2019 dataset (``synth``), its features extracted once
(the *base* workspace), and the reference: ``cv --config tiny --folds 1 --epochs 3`` without
faults. Each case runs in a fresh workspace holding a copy of the base features (or none, for
extraction) and a new MLflow store; every command runs as a user runs it, ``seld-orch`` in its
own process group, with Ray's session folder under the soak folder (``RAY_TMPDIR``), so that
what a case leaves running can be told from anything else on the machine.

Faults, one per case, at a random point (uniform over the reference command's duration):

- ``kill -9`` and ``SIGTERM`` of the driver of ``cv`` and of ``extract``; the command is then
  run again, as a user would;
- ``kill -9`` and ``SIGTERM`` of a fold job's training process (the pid its ``worker.json``
  names): the same ``cv`` must finish by itself (Ray retries the job from its last epoch);
- a truncated feature file and a truncated checkpoint (``last.pt``, cut in half after a driver
  was killed), then the command again;
- a full disk: extraction into a tmpfs too small for the features, then the tmpfs grown and the
  command again.

Concurrency cases: two ``cv`` started at the same moment on a new workspace (``--race N``
times), and ``cv``, a ``sweep``, ``tune thresholds``, ``predict`` and ``ui`` at once on one
workspace.

After each case: the scores equal the reference's (every number of ``metrics.json``'s folds,
or the features' arrays), no partial file (``*.tmp``) is left, no MLflow run is left RUNNING,
and no process or listening socket of the case is left (Ray's agents of an instance whose driver
was killed -9 take up to about two minutes to exit by themselves: the table counts those still
exiting at a case's end, and the soak checks, :data:`LINGER_S` after its last case, that none
is left). Every command's stderr is read for
Python tracebacks; an environmental fault must end in one-line errors. The table at the end:
cases, faults injected, results equal to the reference, one-line errors, tracebacks, leftovers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
SELD = [sys.executable, "-m", "orchestrator.cli"]
CV = ["--config", "tiny", "--folds", "1", "--epochs", "3"]
#: how long processes of a case may take to exit by themselves before they count as left
LINGER_S = 180.0


@dataclass
class Outcome:
    name: str
    faults: int = 0
    equal: bool | None = None
    one_line_errors: int = 0
    tracebacks: int = 0
    leftovers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    lingering: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, out: Path, seed: int):
        self.out = out
        self.rng = random.Random(seed)
        self.ray_tmp = out / "ray"
        self.ray_tmp.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(self.ray_tmp),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "250",  # the commands' lines unwrapped in the logs
            "MLFLOW_TRACKING_URI": "",
        }
        self.env.pop("MLFLOW_TRACKING_URI")
        self.data = out / "data"
        self.base = out / "base"
        self.reference: dict = {}
        self.reference_1: dict | None = None  # the one-epoch cv of the race
        self.reference_s = 0.0
        self.extract_s = 0.0
        self.cases = 0

    # --- running commands ------------------------------------------------------------------

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            return subprocess.Popen(
                SELD + args, env=self.env, stdout=f, stderr=f, cwd=self.out, start_new_session=True
            )

    def run(self, args: list[str], log: Path, timeout: float = 900) -> int:
        p = self.start(args, log)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise RuntimeError(f"{' '.join(args)} ran past {timeout} s; see {log}") from None

    def workspace(self, name: str, features: bool = True) -> Path:
        ws = self.out / "cases" / name
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        if features:
            shutil.copytree(self.base / "features", ws / "features")
        return ws

    # --- checks ----------------------------------------------------------------------------

    @staticmethod
    def scores(ws: Path, run: str) -> dict | None:
        path = ws / "runs" / run / "metrics.json"
        if not path.exists():
            return None
        m = json.loads(path.read_text())
        return {"folds": m["folds"], "all": m["overall"]}

    def equal_to_reference(self, ws: Path, run: str) -> bool:
        return self.scores(ws, run) == self.reference

    @staticmethod
    def partial_files(ws: Path) -> list[str]:
        return [str(p) for p in ws.rglob("*.tmp")]

    @staticmethod
    def running_mlflow_runs(ws: Path) -> list[str]:
        db = ws / "mlflow.db"
        if not db.exists():
            return []
        from orchestrator.tracking import tracking_client

        client = tracking_client(f"sqlite:///{db}")
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'")
        return [r.info.run_name for r in runs]

    def leftovers(self) -> list[str]:
        """Processes of the soak's commands still alive: its Ray sessions, its seld-orch."""
        found = []
        mark = str(self.ray_tmp)
        for p in psutil.process_iter(["pid", "cmdline", "environ"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
                env = p.info["environ"] or {}
            except (psutil.Error, TypeError):
                continue
            if p.pid == os.getpid():
                continue
            if mark in line or env.get("RAY_TMPDIR") == mark:
                listening = [
                    f"{c.laddr.ip}:{c.laddr.port}"
                    for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                ]
                found.append(f"{p.pid} {line[:80]} {' '.join(listening)}".strip())
        return found

    @staticmethod
    def read_errors(log: Path) -> tuple[int, int, list[str]]:
        """(tracebacks, one-line errors, the error lines) in a command's output."""
        text = log.read_text(errors="replace") if log.exists() else ""
        tracebacks = text.count("Traceback (most recent call last)")
        lines = [
            x.strip()
            for x in text.splitlines()
            if x.startswith(("error:", "failed:", "note:", "redone:"))
        ]
        return tracebacks, len([x for x in lines if x.startswith(("error:", "failed:"))]), lines

    def finish(self, outcome: Outcome, ws: Path, logs: list[Path], started: float) -> Outcome:
        time.sleep(2)
        # Ray's dashboard and runtime-env agents of an instance whose driver was killed -9
        # notice their raylet's death at once, then try to tell the (dead) GCS for up to about
        # two minutes before they exit, on 127.0.0.1 only: counted at the end, after LINGER_S
        outcome.lingering = [p.split()[0] for p in self.leftovers()]
        outcome.leftovers += [f"partial file {p}" for p in self.partial_files(ws)]
        outcome.leftovers += [f"MLflow run {r} RUNNING" for r in self.running_mlflow_runs(ws)]
        for log in logs:
            tracebacks, one_line, lines = self.read_errors(log)
            outcome.tracebacks += tracebacks
            outcome.one_line_errors += one_line
            outcome.notes += lines[:3]
        outcome.wall_s = time.monotonic() - started
        self.cases += 1
        flag = "ok" if outcome.equal and not outcome.leftovers and not outcome.tracebacks else "!!"
        print(
            f"[{flag}] {outcome.name}: faults {outcome.faults}, equal {outcome.equal}, "
            f"one-line errors {outcome.one_line_errors}, tracebacks {outcome.tracebacks}, "
            f"leftovers {len(outcome.leftovers)} ({outcome.wall_s:.0f} s)",
            flush=True,
        )
        for note in outcome.notes[:4] + outcome.leftovers[:4]:
            print(f"      {note}", flush=True)
        return outcome

    # --- set-up ----------------------------------------------------------------------------

    def setup(self) -> None:
        log = self.out / "logs" / "setup.log"
        if not self.data.exists():
            self.run(["synth", "--out", str(self.data), "--per-split", "1", "--seconds", "8",
                      "--formats", "mic", "--seed", "3"], log)  # fmt: skip
        t = time.monotonic()
        code = self.run(self.extract_args(self.base), log)
        self.extract_s = time.monotonic() - t
        assert code == 0, log.read_text()[-2000:]
        t = time.monotonic()
        code = self.run(self.cv_args(self.base, "reference"), log)
        self.reference_s = time.monotonic() - t
        assert code == 0, log.read_text()[-2000:]
        self.reference = self.scores(self.base, "reference")
        print(
            f"reference: cv {self.reference_s:.0f} s, extract {self.extract_s:.0f} s; "
            f"SELD {self.reference['all']}",
            flush=True,
        )

    def cv_args(self, ws: Path, run: str) -> list[str]:
        return ["cv", "--dataset", str(self.data), "--workspace", str(ws), "--run", run, *CV]

    def extract_args(self, ws: Path) -> list[str]:
        return ["extract", "--dataset", str(self.data), "--workspace", str(ws), "--config", "tiny"]

    # --- cases -----------------------------------------------------------------------------

    def driver_fault(self, command: str, sig: signal.Signals, i: int) -> Outcome:
        """Signal the driver of ``cv`` or ``extract`` at a random point, then run it again."""
        name = f"{command}-driver-{sig.name}-{i}"
        outcome, started = Outcome(f"{command}: driver {sig.name}"), time.monotonic()
        ws = self.workspace(name, features=command == "cv")
        args = self.cv_args(ws, "r") if command == "cv" else self.extract_args(ws)
        span = self.reference_s if command == "cv" else self.extract_s
        first, second = ws / "first.log", ws / "second.log"
        p = self.start(args, first)
        time.sleep(self.rng.uniform(0.05, 0.6) * span)  # early enough to hit a running command
        if p.poll() is None:
            os.kill(p.pid, sig)
            outcome.faults += 1
        p.wait(120)
        if sig == signal.SIGKILL:  # what a killed driver's Ray leaves is the next run's to see
            time.sleep(3)
        code = self.run(args, second)
        if command == "cv":
            outcome.equal = code == 0 and self.equal_to_reference(ws, "r")
        else:
            outcome.equal = code == 0 and self.same_features(ws)
        return self.finish(outcome, ws, [first, second], started)

    def worker_fault(self, sig: signal.Signals, i: int) -> Outcome:
        """Signal a fold job's training process: the same cv must end with the same scores."""
        outcome, started = Outcome(f"cv: fold job {sig.name}"), time.monotonic()
        ws = self.workspace(f"cv-worker-{sig.name}-{i}")
        log = ws / "cv.log"
        p = self.start(self.cv_args(ws, "r"), log)
        stage = ["sed", "doa"][self.rng.randrange(2)]
        info = ws / "runs" / "r" / "fold1" / stage / "worker.json"
        deadline = time.monotonic() + 600
        while not info.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        # within the stage's first epochs (a stage is about a third of the reference's cv)
        time.sleep(self.rng.uniform(0.0, 0.1) * self.reference_s)
        if info.exists() and not (info.parent / "done.json").exists():
            try:
                os.kill(json.loads(info.read_text())["pid"], sig)
                outcome.faults += 1
            except ProcessLookupError:
                pass
        code = p.wait(900)
        outcome.equal = code == 0 and self.equal_to_reference(ws, "r")
        if not outcome.faults:
            outcome.notes.append("the stage ended before the fault (no fault counted)")
        return self.finish(outcome, ws, [log], started)

    def truncated_feature(self, i: int) -> Outcome:
        outcome, started = Outcome("truncated feature file"), time.monotonic()
        ws = self.workspace(f"feature-cut-{i}")
        files = sorted((ws / "features").rglob("*.h5"))
        victim = files[self.rng.randrange(len(files))]
        with victim.open("r+b") as f:
            f.truncate(victim.stat().st_size // 2)
        outcome.faults += 1
        log = ws / "cv.log"
        code = self.run(self.cv_args(ws, "r"), log)
        outcome.equal = code == 0 and self.equal_to_reference(ws, "r")
        return self.finish(outcome, ws, [log], started)

    def truncated_checkpoint(self, i: int) -> Outcome:
        """Kill the driver once a checkpoint exists, cut it in half, run the cv again."""
        outcome, started = Outcome("truncated checkpoint"), time.monotonic()
        ws = self.workspace(f"checkpoint-cut-{i}")
        first, second = ws / "first.log", ws / "second.log"
        p = self.start(self.cv_args(ws, "r"), first)
        stages = [ws / "runs" / "r" / "fold1" / s for s in ("sed", "doa")]
        deadline = time.monotonic() + 600
        target = stages[self.rng.randrange(2)]
        while not (target / "last.pt").exists() and p.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the machine goes down: the training process and the driver at once (a fold job
        # outlives its driver by seconds, enough to finish a tiny stage)
        try:
            os.kill(json.loads((target / "worker.json").read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        time.sleep(3)
        last = target / "last.pt"
        if last.exists() and not (target / "done.json").exists():
            with last.open("r+b") as f:
                f.truncate(last.stat().st_size // 2)
            outcome.faults += 1
        elif (target / "last.prev.pt").exists() and not last.exists():
            outcome.faults += 1  # killed between keeping the previous one and the rename
            outcome.notes.append("last.pt missing (killed in its rename): nothing to cut")
        code = self.run(self.cv_args(ws, "r"), second)
        outcome.equal = code == 0 and self.equal_to_reference(ws, "r")
        return self.finish(outcome, ws, [first, second], started)

    def same_features(self, ws: Path) -> bool:
        base = sorted(p.relative_to(self.base) for p in (self.base / "features").rglob("*.h5"))
        mine = sorted(p.relative_to(ws) for p in (ws / "features").rglob("*.h5"))
        if base != mine:
            return False
        for rel in base:
            with h5py.File(self.base / rel, "r") as a, h5py.File(ws / rel, "r") as b:
                if set(a) != set(b):
                    return False
                for key in a:
                    if isinstance(a[key], h5py.Dataset) and not np.array_equal(
                        a[key][()], b[key][()]
                    ):
                        return False
        return True

    def full_disk(self, i: int) -> Outcome:
        outcome, started = Outcome("full disk during extract"), time.monotonic()
        ws = self.out / "cases" / f"full-disk-{i}"
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        need = sum(p.stat().st_size for p in (self.base / "features").rglob("*")) / 2**20
        small = max(2, int(need * self.rng.uniform(0.3, 0.7)))
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={small}m", "tmpfs", str(ws)],
                                 capture_output=True)  # fmt: skip
        if mounted.returncode != 0:
            outcome.notes.append(
                f"skipped: cannot mount a tmpfs ({mounted.stderr.decode().strip()})"
            )
            return outcome
        try:
            first, second = (
                self.out / "logs" / f"{ws.name}-1.log",
                self.out / "logs" / f"{ws.name}-2.log",
            )
            args = self.extract_args(ws)
            code = self.run(args, first)
            outcome.faults += 1
            outcome.notes.append(f"{small} MB of {need:.0f} MB: exit {code}")
            subprocess.run(
                ["mount", "-o", f"remount,size={int(need * 3) + 8}m", str(ws)], check=True
            )
            code = self.run(args, second)
            outcome.equal = code == 0 and self.same_features(ws)
            return self.finish(outcome, ws, [first, second], started)
        finally:
            subprocess.run(["umount", str(ws)], capture_output=True)

    def race(self, i: int) -> Outcome:
        """Two cv started at the same moment, different runs, one new workspace (one epoch
        each: the race is in the first seconds, when both set up the workspace's store)."""
        outcome, started = Outcome("two cv at once, new workspace"), time.monotonic()
        one_epoch = ["--epochs", "1"]
        if self.reference_1 is None:
            log = self.out / "logs" / "setup.log"
            self.run([*self.cv_args(self.base, "reference-1"), *one_epoch], log)
            self.reference_1 = self.scores(self.base, "reference-1")
        ws = self.workspace(f"race-{i}")
        logs = [ws / "a.log", ws / "b.log"]
        ps = [
            self.start([*self.cv_args(ws, n), *one_epoch], log)
            for n, log in zip("ab", logs, strict=True)
        ]
        codes = [p.wait(1200) for p in ps]
        outcome.equal = codes == [0, 0] and all(
            self.scores(ws, n) == self.reference_1 for n in "ab"
        )
        return self.finish(outcome, ws, logs, started)

    def everything_at_once(self, i: int) -> Outcome:
        """cv, a sweep, tune thresholds and predict of a finished run, and ui, on one workspace."""
        outcome, started = Outcome("cv + sweep + tune + predict + ui at once"), time.monotonic()
        ws = self.workspace(f"together-{i}")
        shutil.copytree(self.base / "runs" / "reference", ws / "runs" / "done")
        logs = {n: ws / f"{n}.log" for n in ("cv", "sweep", "tune", "predict", "ui")}
        sweep = ws / "two.yaml"
        sweep.write_text(
            "name: two\nbase: tiny\nset: {train.epochs: 1}\nseeds: [0]\n"
            "variants:\n  - name: two-stage\n  - name: joint\n    set: {method: joint}\n"
        )
        port = _free_port()
        ui = self.start(["ui", "--workspace", str(ws), "--port", str(port)], logs["ui"])
        ps = {
            "cv": self.start(self.cv_args(ws, "r"), logs["cv"]),
            "sweep": self.start(
                ["sweep", str(sweep), "--dataset", str(self.data), "--workspace", str(ws)],
                logs["sweep"],
            ),
            "tune": self.start(
                ["tune", "thresholds", "--workspace", str(ws), "--run", "done", "--trials", "4"],
                logs["tune"],
            ),
            "predict": self.start(
                [
                    "predict",
                    "--run",
                    "done",
                    "--workspace",
                    str(ws),
                    "--input",
                    str(self.data),
                    "--out",
                    str(ws / "pred"),
                ],
                logs["predict"],
            ),
        }
        # on the run the cv above is still training: done, or refused in one line
        training = ws / "runs" / "r" / "fold1" / "sed" / "worker.json"
        deadline = time.monotonic() + 300
        while not training.exists() and ps["cv"].poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, args in (
            ("tune-live", ["tune", "thresholds", "--workspace", str(ws), "--run", "r"]),
            ("predict-live", ["predict", "--run", "r", "--workspace", str(ws), "--input",
                              str(self.data), "--out", str(ws / "pred-live")]),
        ):  # fmt: skip
            logs[name] = ws / f"{name}.log"
            ps[name] = self.start(args, logs[name])
        answered = 0
        while any(p.poll() is None for p in ps.values()):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    answered += r.status == 200
            except OSError:
                pass
            time.sleep(2)
        codes = {n: p.returncode for n, p in ps.items()}
        ui.send_signal(signal.SIGTERM)
        ui.wait(60)
        outcome.notes.append(f"exits {codes}; ui answered {answered} health checks")
        live = {n: codes.pop(n) for n in ("tune-live", "predict-live")}
        for name, code in live.items():
            errors = [x for x in self.read_errors(logs[name])[2] if x.startswith("error:")]
            if code != 0 and len(errors) != 1:
                outcome.leftovers.append(f"{name} exit {code} without a one-line error")
        outcome.notes.append(f"on the run in training: {live}")
        outcome.equal = all(c == 0 for c in codes.values()) and self.equal_to_reference(ws, "r")
        return self.finish(outcome, ws, list(logs.values()), started)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/seld-soak"))
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the fault cases")
    parser.add_argument("--race", type=int, default=20, help="two-cv-at-once repetitions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    soak = Soak(args.out.resolve(), args.seed)
    soak.setup()
    outcomes: list[Outcome] = []
    for r in range(args.rounds):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            outcomes.append(soak.driver_fault("cv", sig, r))
            outcomes.append(soak.worker_fault(sig, r))
            outcomes.append(soak.driver_fault("extract", sig, r))
        outcomes.append(soak.truncated_feature(r))
        outcomes.append(soak.truncated_checkpoint(r))
        outcomes.append(soak.full_disk(r))
        outcomes.append(soak.everything_at_once(r))
    for r in range(args.race):
        outcomes.append(soak.race(r))
    # what was still exiting at a case's end must be gone LINGER_S later
    waited, left = 0.0, soak.leftovers()
    while left and waited < LINGER_S:
        time.sleep(5)
        waited += 5
        left = soak.leftovers()
    end_note = (
        f"{len(left)} process(es) of the soak still running {waited:.0f} s later: {left}"
        if left
        else f"no process of the soak left ({waited:.0f} s after it)"
    )
    print(
        "\n| case | runs | faults | equal to reference | one-line errors | tracebacks "
        "| leftovers | still exiting at the case's end |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_name: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_name.setdefault(o.name, []).append(o)
    for name, group in by_name.items():
        print(
            f"| {name} | {len(group)} | {sum(o.faults for o in group)} | "
            f"{sum(bool(o.equal) for o in group)}/{len(group)} | "
            f"{sum(o.one_line_errors for o in group)} | {sum(o.tracebacks for o in group)} | "
            f"{sum(len(o.leftovers) for o in group)} | "
            f"{sum(len(o.lingering) for o in group)} |"
        )
    total = {
        "cases": len(outcomes),
        "faults": sum(o.faults for o in outcomes),
        "equal": sum(bool(o.equal) for o in outcomes),
        "tracebacks": sum(o.tracebacks for o in outcomes),
        "leftovers": sum(len(o.leftovers) for o in outcomes),
    }
    print(
        f"| **all** | {total['cases']} | {total['faults']} | {total['equal']}/{total['cases']} | "
        f"{sum(o.one_line_errors for o in outcomes)} | {total['tracebacks']} | "
        f"{total['leftovers']} | {sum(len(o.lingering) for o in outcomes)} |"
    )
    print(f"\nafter the last case: {end_note}")
    print(f"\nwall time {time.monotonic() - started:.0f} s; details under {soak.out}")
    (soak.out / "soak.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    ok = (
        total["equal"] == total["cases"]
        and not total["tracebacks"]
        and not total["leftovers"]
        and not left
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
