"""MLflow: where runs go, the run hierarchy, and one process that writes for all fold jobs.

Default store: a SQLite database and an artifact folder inside the workspace; any tracking URI
(a server, ``databricks``, ...) by ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``. A cv run is a
parent run (config as params, final metric table as metrics); each fold and stage is a child
run with its epoch curves. Fold jobs on many processes do not write to the store themselves:
they send metrics to one :class:`orchestrator.sink.MetricsSink` actor, so a SQLite store sees
a single writer. The SQLite store is set up by one process at a time (:func:`tracking_client`).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import math
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from seld.fsutil import atomic_path, remove_stale_temporaries

log = logging.getLogger(__name__)

PACKAGES = ("torch", "ray", "optuna", "mlflow", "numpy", "librosa", "h5py", "seld-orchestrator")


def default_tracking_uri(workspace: Path) -> str:
    return f"sqlite:///{(Path(workspace) / 'mlflow.db').resolve()}"


def resolve_tracking_uri(workspace: Path, uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workspace)


#: the SQLite stores this process has seen created (each is set up once per process)
_READY: set[str] = set()


def tracking_client(uri: str) -> MlflowClient:
    """An MLflow client of ``uri``. A SQLite store is created and migrated by one process at a
    time: under an exclusive lock on ``<database>.lock`` beside it, the first client of the
    process opens the store (which creates its tables, or migrates them), so two commands
    started together on a new workspace do not both create the tables (MLflow's own set-up
    is not safe against that: ``table ... already exists``, ``duplicate column name``). Other
    stores (a tracking server) are returned as they are."""
    if uri.startswith("sqlite:///") and uri not in _READY:
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _set_up_sqlite(database)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        _READY.add(uri)
    return MlflowClient(uri)


def _set_up_sqlite(database: Path) -> None:
    """Create (or migrate) the SQLite store ``database``; the caller holds its lock.

    A new store is created under a temporary name and renamed into place once MLflow has set
    it up, so a command killed during the set-up (which takes a few seconds) leaves no store
    rather than half of one. A store that an older version of this function left half made
    (its set-up fails, and it holds no run) is moved aside to ``<name>.incomplete`` and made
    anew, with a warning; one that holds runs is never touched: its error is raised."""
    remove_stale_temporaries(database.parent, f".{database.name}.*.tmp")  # a killed set-up's
    if not database.exists():
        with atomic_path(database) as tmp:
            MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)
        return
    try:
        MlflowClient(f"sqlite:///{database}").search_experiments(max_results=1)
    except Exception as exc:
        if _holds_runs(database):
            raise
        aside = database.with_name(f"{database.name}.incomplete")
        os.replace(database, aside)
        _forget_engine(f"sqlite:///{database}")
        reason = str(exc).strip().splitlines()[0][:200]
        log.warning(
            "%s was set up only in part (%s): moved to %s, made anew", database, reason, aside
        )
        _set_up_sqlite(database)


def _forget_engine(uri: str) -> None:
    """Close the SQLAlchemy engine MLflow keeps for ``uri`` in this process (its connections
    still point at the file moved aside), so that the next client opens the new file."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
    if engine is not None:
        engine.dispose()


def _holds_runs(database: Path) -> bool:
    """Whether the SQLite store ``database`` holds any run (read without MLflow)."""
    import sqlite3

    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return bool(connection.execute("SELECT 1 FROM runs LIMIT 1").fetchall())
    except sqlite3.Error:
        return False  # no runs table: nothing was ever logged there
    finally:
        connection.close()


def get_experiment(client: MlflowClient, name: str, workspace: Path) -> str:
    """The experiment's id, created with its artifacts in the workspace when missing, and
    tagged so that the UI opens it on its runs table (:data:`EXPERIMENT_TAGS`)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
        if all(found.tags.get(k) == v for k, v in EXPERIMENT_TAGS.items()):
            return experiment_id
    elif client.tracking_uri.startswith(("http://", "https://", "databricks")):
        # a tracking server decides where artifacts go (its --artifacts-destination: S3, ...)
        experiment_id = client.create_experiment(name)
    else:
        location = (Path(workspace) / "mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    for key, value in EXPERIMENT_TAGS.items():
        client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


#: the saved views of every experiment's runs table (``?viewStateShareKey=<name>``): the cv runs
#: one per row, and the same grouped by sweep variant (the mean over its seeds per metric; its
#: charts are the cross-validated scores, one bar per variant)
RUNS_VIEW, VARIANTS_VIEW = "seld-runs", "seld-variants"
#: the runs table's columns in those views: what a comparison of cv runs reads first
RUNS_VIEW_COLUMNS = [
    "tags.`variant`",
    "tags.`method`",
    "tags.`seed`",
    "metrics.`cv_seld`",
    "metrics.`cv_doa_error`",
    "metrics.`cv_f`",
    "metrics.`cv_er`",
    "metrics.`cv_frame_recall`",
    "tags.`config`",
]
_RUNS_VIEW = {
    "searchFilter": "tags.kind = 'cv'",
    "orderByKey": "metrics.`cv_seld`",
    "orderByAsc": True,
    "selectedColumns": RUNS_VIEW_COLUMNS,
    "runsExpanded": {},
    "viewMaximized": False,
    "runListHidden": False,
}
_BY_VARIANT = {
    "aggregateFunction": "average",
    "groupByKeys": [{"mode": "tag", "groupByData": "variant"}],
}
#: MLflow 3's UI opens an experiment of kind "custom model development" on its runs table (not
#: the GenAI overview), and a ``mlflow.sharedViewState.<name>`` tag is a saved view of it, as
#: the UI's own "share" button stores one (JSON: filter, order, columns, grouping)
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(_RUNS_VIEW),
    f"mlflow.sharedViewState.{VARIANTS_VIEW}": json.dumps(
        _RUNS_VIEW | {"groupBy": _BY_VARIANT, "chartsSearchFilter": "cv_"}
    ),
}


def experiment_url(ui: str, experiment_id: str, view: str = RUNS_VIEW, chart: bool = False) -> str:
    """The UI address of an experiment's runs table in a saved view (or of its charts)."""
    url = f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={view}"
    return url + ("&compareRunsMode=CHART" if chart else "")


def provenance_tags() -> dict[str, str]:
    """Git commit of the code and versions of the main packages."""
    tags = {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        if commit:
            tags["mlflow.source.git.commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    for name in PACKAGES:
        try:
            tags[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return tags


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches (MLflow takes at most 100 per call), values cut to 500 chars."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:500]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config to MLflow params (``a.b = value``, the dotted leaves of
    :func:`seld.config.flatten`), values as short strings (lists as JSON)."""
    # here, not at the top: seld.config imports torch, which the metrics sink must not load
    from seld.config import flatten as dotted_leaves

    return {
        name: json.dumps(value) if isinstance(value, list | tuple) else str(value)
        for name, value in dotted_leaves(params, prefix).items()
    }


def log_scores(
    client: MlflowClient, run_id: str, prefix: str, scores: Mapping[str, float], step: int = 0
) -> None:
    for key, value in scores.items():
        if value is not None and math.isfinite(value):  # not computable: no metric at all
            client.log_metric(run_id, f"{prefix}{key}", float(value), step=step)
