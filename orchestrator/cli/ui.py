"""``seld-orch ui``: the MLflow UI on 127.0.0.1 against the workspace's store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import RESULTS, WorkspaceOpt, app
from orchestrator.cli.render import console, err_console


def experiment_views(uri: str, ui: str) -> list[tuple[str, str]]:
    """(label, address) of each experiment's saved views: its cv runs, and per variant."""

    from orchestrator.tracking import RUNS_VIEW, VARIANTS_VIEW, experiment_url, tracking_client

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []  # nothing tracked yet (and reading would create the store)
    views = []
    for e in tracking_client(uri).search_experiments():
        if f"mlflow.sharedViewState.{RUNS_VIEW}" in e.tags:
            views.append((f"{e.name}, cv runs", experiment_url(ui, e.experiment_id)))
            by_variant = experiment_url(ui, e.experiment_id, VARIANTS_VIEW, chart=True)
            views.append((f"{e.name}, per variant (charts)", by_variant))
    return views


@app.command(rich_help_panel=RESULTS)
def ui(
    workspace: WorkspaceOpt = Path("workspace"),
    port: Annotated[int, typer.Option("--port")] = 5000,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri")] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the workspace's store.

    A port already in use is an error (exit 2). SIGINT and SIGTERM stop the server and all its
    processes, and the command waits for them."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from orchestrator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(workspace, tracking_uri)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            err_console.print(
                f"[red]error:[/red] port {port} on 127.0.0.1 is already in use ({exc.strerror}); "
                "stop what uses it or pass --port",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C stops it)")
    for name, url in experiment_views(uri, f"http://127.0.0.1:{port}"):
        console.print(f"  {name}: {url}", highlight=False, soft_wrap=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # its own process group, so that a signal reaches the server's workers too
    server = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum, frame):
        os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = server.wait()
    finally:
        try:  # whatever is left of the group (workers that outlived the server)
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(1)
