"""Cluster commands: check a `ray up` definition, submit cv, sweep or tune as Ray jobs, follow
them; run them on a Slurm allocation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import CLUSTER, JsonOpt, app, slurm_app, submit_app
from orchestrator.cli.render import console, err_console
from orchestrator.jsonout import to_json
from orchestrator.slurm import SlurmOptions


@app.command("cluster-check", rich_help_panel=CLUSTER)
def cluster_check(
    path: Annotated[Path, typer.Argument(help="A `ray up` cluster definition.")] = Path(
        "cluster.yaml"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Check a `ray up` cluster definition offline, with no cloud credentials.

    Ray's schema and config checks, and the Ray version its nodes install. Exit 1 and name
    every broken field; exit 2 when its node provider cannot be loaded here; list placeholders
    still to change."""
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
    """Submit `seld-orch cv ARGS` as a Ray job and print its id.

    Paths (--dataset, --workspace) must be absolute and on storage every node shares."""
    _submit("cv", ctx, address, follow)


@submit_app.command("sweep", context_settings=PASS_THROUGH)
def submit_sweep(
    ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False
) -> None:
    """Submit `seld-orch sweep SWEEP ARGS` as a Ray job and print its id.

    A sweep file must be an absolute path on storage every node shares (or a shipped sweep's
    name)."""
    _submit("sweep", ctx, address, follow)


@submit_app.command("tune", context_settings=PASS_THROUGH)
def submit_tune(
    ctx: typer.Context, address: JobAddressOpt = None, follow: FollowOpt = False
) -> None:
    """Submit `seld-orch tune ARGS` (thresholds or hparams) as a Ray job and print its id."""
    _submit("tune", ctx, address, follow)


@app.command(rich_help_panel=CLUSTER)
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


@app.command(rich_help_panel=CLUSTER)
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


def _workspace_of(args: list[str]) -> Path:
    """The ``--workspace`` a command's arguments name (the commands' default otherwise)."""
    for i, arg in enumerate(args):
        if arg == "--workspace" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--workspace="):
            return Path(arg.split("=", 1)[1])
    return Path("workspace")


SlurmCommandArg = Annotated[
    list[str],
    typer.Argument(
        help="The command and its arguments, after `--`: cv, sweep or tune, as you would run "
        "it here (relative paths mean the same in the job).",
        show_default=False,
    ),
]


@slurm_app.command("submit")
def slurm_submit(
    command: SlurmCommandArg,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes (Ray: one per node).")] = (
        SlurmOptions.nodes
    ),
    gpus_per_node: Annotated[
        int, typer.Option("--gpus-per-node", help="GPUs per node; 0 for a CPU job.")
    ] = SlurmOptions.gpus_per_node,
    cpus_per_node: Annotated[
        int, typer.Option("--cpus-per-node", help="CPUs per node.")
    ] = SlurmOptions.cpus_per_node,
    mem: Annotated[
        str | None, typer.Option("--mem", help="Memory per node (Slurm's form: 64G).")
    ] = SlurmOptions.mem_per_node,
    time_limit: Annotated[
        str, typer.Option("--time", help="Time limit, Slurm's form: 04:00:00, 2-00:00:00.")
    ] = SlurmOptions.time,
    partition: Annotated[
        str | None, typer.Option("--partition", help="Partition (the cluster's default).")
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Account (the cluster's default).")
    ] = None,
    signal_lead: Annotated[
        int,
        typer.Option(
            "--signal-lead",
            help="Seconds before the time limit at which the job stops and requeues itself.",
        ),
    ] = SlurmOptions.signal_lead_s,
    job_name: Annotated[str, typer.Option("--job-name", help="Slurm's job name.")] = (
        SlurmOptions.job_name
    ),
    sbatch_extra: Annotated[
        list[str] | None,
        typer.Option("--sbatch", help="A further sbatch directive (--qos=long); repeatable."),
    ] = None,
    interface: Annotated[
        str | None,
        typer.Option(
            "--interface",
            help="The network interface the nodes share (ib0); default: the address the "
            "head's host name resolves to.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the script and print it; submit nothing.")
    ] = False,
) -> None:
    """Write an sbatch script that runs COMMAND across a Slurm allocation, and submit it.

    Prints the job id and the script's path; `sbatch` the same script again to resume."""
    from orchestrator.slurm import SlurmError, batch_script, submit, write_script

    try:
        options = SlurmOptions(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            cpus_per_node=cpus_per_node,
            mem_per_node=mem,
            time=time_limit,
            partition=partition,
            account=account,
            signal_lead_s=signal_lead,
            job_name=job_name,
            extra=tuple(sbatch_extra or ()),
            interface=interface,
        )
        folder = (_workspace_of(command) / "slurm").resolve()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        script = folder / f"{job_name}-{command[0]}-{stamp}.sbatch"
        text = batch_script(options, command, folder, Path.cwd())
        write_script(script, text)
        if dry_run:
            print(text, end="")
            err_console.print(f"written: {script}", highlight=False)
            return
        job = submit(script)
    except SlurmError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(job, highlight=False)
    err_console.print(
        f"script {script}; log {folder / f'{job_name}-{job}.out'}; `squeue -j {job}`",
        highlight=False,
        soft_wrap=True,
    )


@slurm_app.command("run")
def slurm_run(
    command: SlurmCommandArg,
    interface: Annotated[
        str | None,
        typer.Option(
            "--interface",
            help="The network interface the nodes share (ib0); default: the address the "
            "head's host name resolves to. One node: loopback only.",
        ),
    ] = None,
) -> None:
    """Inside an allocation: start Ray on its nodes, run COMMAND against it, stop Ray.

    In a submitted script or in `salloc`. At the time limit's signal the job requeues itself."""
    from orchestrator.slurm import SlurmError, run_in_allocation

    def say(text: str) -> None:
        err_console.print(f"slurm: {text}", highlight=False, markup=False, soft_wrap=True)

    try:
        code = run_in_allocation(command, interface, say)
    except SlurmError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@slurm_app.command("worker", hidden=True)
def slurm_worker(
    address: Annotated[str, typer.Option("--address")],
    temp_dir: Annotated[Path, typer.Option("--temp-dir")],
    interface: Annotated[str | None, typer.Option("--interface")] = None,
) -> None:
    """One Ray worker node of `slurm run` (started by it with srun)."""
    from orchestrator.slurm import run_worker

    raise typer.Exit(run_worker(address, temp_dir, interface))
