"""One synthetic STARSS23-layout cross-validation scored with every metric suite that can score
it, side by side, over seeds.

Synthesizes a STARSS23-layout dataset (``seld-orch synth --layout starss23``: fold 3 trains,
fold 4 tests; moving sources, same-class overlaps), then runs ``seld-orch cv`` on it with the
``tiny`` preset once per seed (the dataset's own protocol: one fold, a quarter of dev-train
validating) and scores the test split with the format's default suite (DCASE 2022, with
jackknife 95% intervals), the DCASE 2019 metrics on continuous directions (``dcase2019-regr``,
the 2019 column: the grid-defined ``dcase2019`` suite cannot take these labels) and the DCASE
2020, 2021 and 2022-micro suites. Prints each suite's scores as mean ± sd over the seeds, the
first seed's 2022 intervals, the one-direction ceiling (what a method with one direction per
class could reach on these references), and why the other suites are not in the table.

    python bench/starss_suites.py [--per-split 8] [--seconds 30] [--epochs 10]
        [--seeds 0,1,2] [--out bench/starss-work] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestrator.cli"]
SUITES = ("dcase2019-regr", "dcase2020", "dcase2021", "dcase2022", "dcase2022-micro")
NOT_SCORED = {
    "dcase2019": "scores DCASE 2019 labels only (50 frames per second, 11 classes, the 10° grid); "
    "dcase2019-regr is its definition on continuous directions",
    "dcase2024": "scores source distances, and the two-stage method predicts none",
}


def run(*args: str) -> str:
    out = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(args[:1])} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-split", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "starss-work")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data, ws = args.out / "data", args.out / "ws"
    started = time.perf_counter()
    synth = ["synth", "--out", str(data), "--layout", "starss23", "--formats", "mic"]
    run(*synth, "--per-split", str(args.per_split), "--seconds", str(args.seconds))
    took = time.perf_counter() - started
    print(f"synthesized {2 * args.per_split} recordings of {args.seconds:g} s ({took:.0f} s)")
    summaries = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        t = time.perf_counter()
        extra = [x for name in SUITES if name != "dcase2022" for x in ("--suite", name)]
        cv = ["cv", "--dataset", str(data), "--workspace", str(ws), "--run", f"seed{seed}"]
        cv += ["--set", f"seed={seed}", "--epochs", str(args.epochs), *extra, "--json"]
        out = run(*cv)
        summaries[seed] = json.loads(out)
        print(f"seed {seed}: cv in {time.perf_counter() - t:.0f} s")
    first = summaries[min(summaries)]
    table = {}
    for name in SUITES:
        keys = tuple(first["suites"][name]["overall"])
        print(f"\n{'suite':16s}" + "".join(f"{k:>18s}" for k in keys))
        values = np.array(
            [[s["suites"][name]["overall"][k] for k in keys] for s in summaries.values()]
        )
        table[name] = {
            k: (float(m), float(d))
            for k, m, d in zip(
                keys,
                values.mean(0),
                values.std(0, ddof=1) if len(values) > 1 else np.zeros(len(keys)),
                strict=True,
            )
        }
        print(f"{name:16s}" + "".join(f"{m:>10.3f} ± {d:5.3f}" for m, d in table[name].values()))
    keys = ("er", "f", "le", "lr", "seld")
    intervals = first["suites"]["dcase2022"]["intervals"]
    shown = ", ".join(f"{k} [{intervals[k][0]:.3f}, {intervals[k][1]:.3f}]" for k in keys)
    print(f"\ndcase2022 jackknife 95% intervals, seed {min(summaries)}: {shown}")
    ceiling = first["ceiling"]
    best = ", ".join(f"{k} {ceiling['overall'][k]:.3f}" for k in keys)
    share = ceiling["overlapping_cells"]
    print(f"one-direction ceiling ({ceiling['suite']}): {best}; {share:.1%} of the active cells")
    for name, why in NOT_SCORED.items():
        print(f"{name}: not in the table: the suite {why}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        found = {"table": table, "intervals": intervals, "ceiling": ceiling}
        args.json.write_text(json.dumps({**found, "seeds": list(summaries)}, indent=2))


if __name__ == "__main__":
    main()
