"""Cluster commands: check a `ray up` definition, submit cv, sweep or tune as Ray jobs, follow
them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import JsonOpt, app, submit_app
from orchestrator.cli.render import console, err_console
from orchestrator.jsonout import to_json


@app.command("cluster-check")
def cluster_check(
    path: Annotated[Path, typer.Argument(help="A `ray up` cluster definition.")] = Path(
        "cluster.yaml"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Check a `ray up` cluster definition offline: Ray's schema and config checks, the Ray
    version its nodes install, no cloud credentials needed. Exit 1 and name every broken field;
    exit 2 when its node provider cannot be loaded here; list placeholders still to change."""
    from orchestrator.cluster import (
        ClusterConfigError,
        ProviderUnavailableError,
        check_cluster_config,
    )

    try:
        warnings = check_cluster_config(path)
    except (ClusterConfigError, ProviderUnavailableError) as exc:
        if json_out:
            console.print_json(to_json({"file": str(path), "ok": False, "error": str(exc)}))
        else:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1 if isinstance(exc, ClusterConfigError) else 2) from None
    if json_out:
        console.print_json(to_json({"file": str(path), "ok": True, "warnings": warnings}))
        return
    for warning in warnings:
        console.print(f"[yellow]to change:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"{path}: valid for `ray up` ({len(warnings)} placeholder(s) to change)")


JobAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The cluster's dashboard (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, "
        "else http://127.0.0.1:8265).",
    ),
]

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _submit(command: str, ctx: typer.Context, address: str | None, follow: bool) -> None:
    from orchestrator.submit import follow_logs, job_info, submit

    job_id = submit(command, list(ctx.args), address=address)
    console.print(job_id, highlight=False)
    err_console.print(f"`seld-orch status {job_id}`, `seld-orch logs {job_id} --follow`")
    if follow:
        follow_logs(job_id, lambda text: print(text, end="", flush=True), address)
        status = job_info(job_id, address)["status"]
        err_console.print(f"job {job_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


FollowOpt = Annotated[bool, typer.Option("--follow", help="Print the job's output until it ends.")]


@submit_app.command("cv", context_settings=PASS_THROUGH)
def submit_cv(ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False) -> None:
    """Submit `seld-orch cv ARGS` as a Ray job and print its id. Paths (--dataset, --workspace)
    must be absolute and on storage every node shares."""
    _submit("cv", ctx, address, follow)


@submit_app.command("sweep", context_settings=PASS_THROUGH)
def submit_sweep(
    ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False
) -> None:
    """Submit `seld-orch sweep SWEEP ARGS` as a Ray job and print its id. A sweep file must be
    an absolute path on storage every node shares (or a shipped sweep's name)."""
    _submit("sweep", ctx, address, follow)


@submit_app.command("tune", context_settings=PASS_THROUGH)
def submit_tune(
    ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False
) -> None:
    """Submit `seld-orch tune ARGS` (thresholds or hparams) as a Ray job and print its id."""
    _submit("tune", ctx, address, follow)


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job id; all jobs when absent.")] = None,
    address: JobAddressOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to end; exit 1 unless it succeeded.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """The state of a submitted job (or of every job on the cluster)."""
    from orchestrator.submit import job_info, list_jobs
    from orchestrator.submit import wait as wait_job

    if job is None:
        rows = list_jobs(address)
    elif wait:
        rows = [wait_job(job, address)]
    else:
        rows = [job_info(job, address)]
    if json_out:
        console.print_json(to_json(rows if job is None else rows[0]))
    else:
        table = Table(title="Ray jobs", title_justify="left")
        for column in ("job", "status", "elapsed", "entrypoint", "message"):
            table.add_column(column, overflow="fold")
        for row in sorted(rows, key=lambda r: r["start_time"] or 0):
            elapsed = "" if row["elapsed_s"] is None else f"{row['elapsed_s']:.0f} s"
            table.add_row(
                row["job_id"], row["status"], elapsed, row["entrypoint"], row["message"] or ""
            )
        console.print(table)
    if job is not None and wait and rows[0]["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="A job id.")],
    address: JobAddressOpt = None,
    follow: FollowOpt = False,
) -> None:
    """A submitted job's output (stdout and stderr of its driver)."""
    from orchestrator.submit import follow_logs
    from orchestrator.submit import logs as job_logs

    if follow:
        follow_logs(job, lambda text: print(text, end="", flush=True), address)
    else:
        print(job_logs(job, address), end="", flush=True)
