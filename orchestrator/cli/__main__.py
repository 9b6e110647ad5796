"""``python -m orchestrator.cli``: the same as ``seld-orch``."""

from orchestrator.cli import app

app()
