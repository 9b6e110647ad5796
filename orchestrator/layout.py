"""Every path of a workspace and of a run, in one place.

<workspace>/
  runs/<run>/                       one cv run (or a search: runs/<search>/<trial>/ are its trials)
    config.json, config.yaml        what the run is (RunLayout.config_json, .config_yaml)
    .lock, lock.json                its one writer (orchestrator.runs.RunLock)
    mlflow_runs.json                its MLflow run ids, so a rerun continues them
    fold<k>/<stage>/                last.pt, best.pt, done.json, node.txt, worker.json
    fold<k>/predictions/<split>_<stage>.npz   cached per-frame predictions
    fold<k>/submissions/            one fold's test submissions (`seld-orch evaluate`)
    submissions/, plots/            all test recordings' CSVs and figures
    metrics.json                    the cross-validated scores
    test_counts.json                each test recording's metric counts (paired comparisons)
    test_counts.<suite>.json        the same under each other suite the run was scored with
  runs/<sweep>/                     a sweep: sweep.json, summary.json, comparison.{csv,md,png,json}
    <variant>-seed<seed>/           its cells, each a cv run as above
    <search>/                       a threshold search of the run (trials.csv, ...)
  features/<config hash>/...        seld.features.store.feature_root
  ray_results/                      Ray Train/Tune storage unless --storage names another
  mlflow.db, mlartifacts/           the default MLflow store
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The files of one run, under ``root`` (``<workspace>/runs/<run>``)."""

    root: Path

    @classmethod
    def named(cls, workspace: str | Path, run: str) -> RunLayout:
        return cls(Path(workspace) / "runs" / run)

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def mlflow_runs(self) -> Path:
        return self.root / "mlflow_runs.json"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def test_counts(self) -> Path:
        """Each test recording's metric counts, for paired comparisons (``compare``)."""
        return self.root / "test_counts.json"

    def suite_counts(self, suite: str) -> Path:
        """Each test recording's counts under another metric suite than the run's own
        (``cv --suite``), for paired comparisons of that suite."""
        return self.root / f"test_counts.{suite}.json"

    @property
    def sweep_json(self) -> Path:
        """A sweep's spec and MLflow run (its cells are the child runs of this folder)."""
        return self.root / "sweep.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def fold(self, k: int) -> Path:
        return self.root / f"fold{k}"

    def stage(self, k: int, stage: str) -> Path:
        return self.fold(k) / stage

    def checkpoint(self, k: int, stage: str, which: str = "best") -> Path:
        """``best`` (the selected model) or ``last`` (everything needed to resume)."""
        return self.stage(k, stage) / f"{which}.pt"

    def done(self, k: int, stage: str) -> Path:
        return self.stage(k, stage) / "done.json"

    def predictions(self, k: int, split: str, stage: str) -> Path:
        return self.fold(k) / "predictions" / f"{split}_{stage}.npz"

    def fold_submissions(self, k: int) -> Path:
        return self.fold(k) / "submissions"

    def child(self, name: str) -> RunLayout:
        """A run nested in this one (a search's trial, ``runs/<search>/<trial>``)."""
        return RunLayout(self.root / name)


def ray_storage(workspace: str | Path, storage: str = "") -> str:
    """Where Ray Train and Tune keep their checkpoints: ``storage`` (a path or URI every node
    reaches) or ``<workspace>/ray_results``."""
    return storage or str((Path(workspace) / "ray_results").resolve())
