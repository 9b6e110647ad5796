"""What the command modules share: the Typer apps, the option types, and the steps from
options to library objects (experiment config, cv settings, a fold's data).

A :class:`seld.errors.SeldError` raised by any command ends it with its one-line message and exit
code 2 (:class:`_Group`); any other exception shows its traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from orchestrator.cli.render import err_console, print_redone
from orchestrator.layout import RunLayout
from seld.data.folds import PROTOCOLS
from seld.data.formats import FORMATS
from seld.errors import MissingArtifactError, SeldError
from seld.fsutil import environment_problem
from seld.metrics.suites import SUITES

#: the panels of ``seld-orch --help``, in the order it shows them (:meth:`_Group.list_commands`)
DATA, TRAINING, TUNING = "Data", "Training and evaluation", "Tuning and sweeps"
RESULTS, CLUSTER = "Results", "Cluster"
PANELS = (DATA, TRAINING, TUNING, RESULTS, CLUSTER)


class _Group(TyperGroup):
    """Bad input (a :class:`SeldError`) and the environment's errors (a full disk, no
    permission, a read-only file system, too many open files: :func:`seld.fsutil.
    environment_problem`) become one line ``error: MESSAGE`` and exit code 2; any other
    error is a bug and keeps its traceback."""

    def list_commands(self, ctx):
        """The commands by help panel (:data:`PANELS`), each panel's in order of creation."""

        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        return sorted(super().list_commands(ctx), key=rank)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SeldError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            problem = environment_problem(exc)
            if problem is None:
                raise
            err_console.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="seld-orch",
    help="Cross-validation and tuning of two-stage SELD (DCASE 2019 Task 3) on Ray, in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
config_app = typer.Typer(
    help="Experiment configs: presets and resolved configs.", no_args_is_help=True
)
tune_app = typer.Typer(help="Searches on Ray Tune with an Optuna searcher.", no_args_is_help=True)
submit_app = typer.Typer(
    help="Run cv, sweep or tune as a Ray job on a cluster (through its dashboard's Jobs API).",
    no_args_is_help=True,
)
slurm_app = typer.Typer(
    help="Run cv, sweep or tune on a Slurm allocation: Ray across its nodes, the runs resumed "
    "after a time limit.",
    no_args_is_help=True,
)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DatasetFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset-format",
        help=f"The dataset's layout and labels: {', '.join(FORMATS)} (default: detected).",
    ),
]
SuiteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--suite",
        help="Also score the test splits with this metric suite (repeatable): "
        f"{', '.join(SUITES)}; with jackknife intervals. A dataset is scored with its "
        "format's default suite anyway (dcase2019, dcase2022 for STARSS23).",
    ),
]

StorageOpt = Annotated[
    str,
    typer.Option(
        "--storage",
        help="Ray Train/Tune checkpoints: a path or URI all nodes reach (s3://..., NFS); "
        "default <workspace>/ray_results.",
    ),
]

SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


def _writable_workspace(workspace: Path) -> Path:
    """The workspace, created if needed; a one-line error naming it when it cannot be
    written (read-only file system, no permission, a file in the way)."""
    import tempfile

    try:
        workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workspace):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        err_console.print(
            f"[red]error:[/red] cannot write to workspace {workspace}: {reason}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    return workspace


WorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace",
        help="Everything a run writes: features, models, MLflow.",
        callback=_writable_workspace,
    ),
]

AddressOpt = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address; a local Ray when absent.")
]

DatasetOpt = Annotated[Path, typer.Option("--dataset", help="Dataset root (DCASE 2019 layout).")]

FormatOpt = Annotated[str, typer.Option("--format", help="mic or foa.")]

ConfigOpt = Annotated[
    str,
    typer.Option(
        "--config",
        help="Experiment config: a preset (paper-mic, paper-foa, paper-foa-iv, paper-joint-mic, "
        "paper-cnn-mic, tiny) or a YAML file.",
    ),
]

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config key, section.key=value (repeatable), e.g. --set train.lr=5e-4.",
    ),
]

EpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", help="Epochs per stage (train.epochs, replacing a step budget)."),
]

ConfigFormatOpt = Annotated[
    str | None, typer.Option("--format", help="mic or foa (data.format; default: the config's).")
]

ConfigSeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (seed).")]
ThresholdOpt = Annotated[
    float | None, typer.Option("--threshold", help="SED threshold (inference.threshold).")
]

NumCpusOpt = Annotated[
    int | None, typer.Option("--num-cpus", help="CPUs of the local Ray (default: all).")
]

GpuOpt = Annotated[
    bool, typer.Option("--gpu/--no-gpu", help="One GPU per fold job (--gpus-per-job 1).")
]
GpusPerJobOpt = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-job",
        min=0.0,
        max=1.0,
        help="Share of a GPU per fold job, e.g. 0.25: four fold jobs on one GPU, each held to "
        "a quarter of its memory.",
    ),
]


def gpu_share(gpu: bool, gpus_per_job: float | None) -> float:
    """The GPU share of each fold job from ``--gpu`` and ``--gpus-per-job``."""
    if gpus_per_job is None:
        return 1.0 if gpu else 0.0
    if gpu and gpus_per_job == 0:
        raise typer.BadParameter("--gpu asks for a GPU and --gpus-per-job 0 for none")
    return gpus_per_job


TrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow store (default: in workspace).")
]

FoldOpt = Annotated[int, typer.Option("--fold", min=1, help="Fold number (tests on that split).")]


def run_name(name: str) -> str:
    from orchestrator.runs import RunError, validate_run_name

    try:
        return validate_run_name(name)
    except RunError as exc:
        raise typer.BadParameter(str(exc)) from None


RunOpt = Annotated[
    str, typer.Option("--run", help="Run name under <workspace>/runs.", callback=run_name)
]

ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", help=f"One of {', '.join(PROTOCOLS)} (cv.protocol; seed is leaky)."),
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _interrupt_on_sigterm()


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a command the way Ctrl-C does: every ``with`` block unwinds, so the local
    Ray is shut down, MLflow runs are marked KILLED and temporary files are removed (SIGTERM's
    default would end the process on the spot)."""
    import signal

    from orchestrator.runs import interrupt

    signal.signal(signal.SIGTERM, interrupt)


def experiment_config(
    config: str,
    sets: list[str] | None,
    *,
    fmt: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    threshold: float | None = None,
    folds: str | None = None,
    protocol: str | None = None,
    dataset: Path | None = None,
):
    """The command's experiment config: ``--config``, then ``--set``, then the shortcut options
    that were given. A bad config ends the command (exit 2) naming the key. With ``dataset``,
    the cross-validation follows its format's official protocol where nothing else asks for
    one (:func:`dataset_overrides`)."""
    from seld.config import load_config

    shortcuts = {
        "data.format": fmt,
        "seed": seed,
        "inference.threshold": threshold,
        "cv.protocol": protocol,
        "cv.folds": None if folds is None else list(fold_numbers(folds)),
    }
    overrides = [*(dataset_overrides(dataset, sets, folds, protocol) if dataset else [])]
    overrides += [*(sets or [])]
    overrides += [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]
    if epochs is not None:  # an epoch count replaces a step budget
        overrides += [f"train.epochs={epochs}", "train.steps=null"]
    return load_config(config, overrides)


def dataset_overrides(
    dataset: Path, sets: list[str] | None, folds: str | None, protocol: str | None
) -> list[str]:
    """``cv.protocol`` and ``cv.folds`` of the dataset's format (STARSS23: its one official
    fold), unless the command sets either (``--protocol``, ``--folds``, ``--set cv.*``); none
    for DCASE 2019, whose protocol is every preset's."""
    from seld.data.formats import dataset_format_of

    fmt = dataset_format_of(dataset)
    asked = protocol is not None or folds is not None
    asked = asked or any(s.split("=", 1)[0].strip().startswith("cv.") for s in sets or [])
    if fmt.name == "dcase2019" or asked:
        return []
    return [f"cv.protocol={json.dumps(fmt.protocol)}", f"cv.folds={list(fmt.folds)}"]


def fold_data(dataset: Path, workspace: Path, experiment, fold: int):
    """A fold's feature files and scaler under the experiment's features and protocol."""
    from orchestrator import fold as folds

    features, fmt, protocol = experiment.features, experiment.format, experiment.cv.protocol
    return folds.fold_data(dataset, workspace, features, fmt, fold, protocol)


def fold_numbers(text: str) -> tuple[int, ...]:
    return tuple(int(k) for k in text.split(","))


def new_cv_settings(dataset: Path, workspace: Path, experiment, tracking_uri: str | None, **fields):
    """A new cv run's (or search's) settings from the command line's options."""
    from orchestrator.cv import CVSettings
    from orchestrator.tracking import resolve_tracking_uri

    return CVSettings(
        dataset=str(dataset.resolve()),
        workspace=str(workspace.resolve()),
        config=experiment.to_dict(),
        tracking_uri=resolve_tracking_uri(workspace, tracking_uri),
        **fields,
    )


def extract_missing(dataset: Path, workspace: Path, experiment) -> None:
    """Extract the features a training command needs; exit 1 naming every failed recording."""
    from orchestrator.extract import extract_dataset

    summary = extract_dataset(dataset, workspace, experiment.features, experiment.format)
    print_redone(summary.redone)
    if summary.failed:
        for reason in summary.failed.values():
            err_console.print(f"[red]failed:[/red] {reason}")
        err_console.print("[red]error:[/red] fix or remove the recordings above first")
        raise typer.Exit(1)


def cv_settings(workspace: Path, run: str):
    """The settings of an existing cv run of the workspace."""
    from orchestrator.cv import CVSettings

    layout = RunLayout.named(workspace, run)
    if not layout.config_json.exists():
        raise MissingArtifactError(f"{layout.config_json} missing: is {run!r} a finished cv run?")
    return CVSettings.from_run(layout.root)
