"""``seld-orch``: one entry point whose subcommands share option names.

A command parses its options, calls one library function and renders the result; the work lives
in ``seld`` and the orchestrator modules. One module per command group:

    common.py     the Typer apps, shared options, options -> config/settings
    render.py     consoles, progress, tables (nothing below the CLI imports it)
    data.py       synth, validate, score, folds, extract
    training.py   train, evaluate, cv, demo, config list/show
    tuning.py     tune thresholds, tune hparams
    sweeps.py     sweep, compare
    predict.py    predict, export
    jobs.py       cluster-check, submit, status, logs, slurm
    ui.py         ui
"""

from __future__ import annotations

from orchestrator.cli import (  # noqa: F401  (registers commands)
    data,
    jobs,
    predict,
    sweeps,
    training,
    tuning,
    ui,
)
from orchestrator.cli.common import (
    CLUSTER,
    TRAINING,
    TUNING,
    app,
    config_app,
    slurm_app,
    submit_app,
    tune_app,
)

app.add_typer(config_app, name="config", rich_help_panel=TRAINING)
app.add_typer(tune_app, name="tune", rich_help_panel=TUNING)
app.add_typer(submit_app, name="submit", rich_help_panel=CLUSTER)
app.add_typer(slurm_app, name="slurm", rich_help_panel=CLUSTER)

__all__ = ["app"]
