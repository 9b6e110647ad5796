"""The documentation site (``docs/``, ``mkdocs.yml``): its generated reference pages are up to
date, it builds with ``mkdocs build --strict`` (no broken link, missing page or missing anchor),
and every ``seld-orch`` command in its code blocks is one the CLI accepts."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")


def test_generated_reference_pages_are_up_to_date():
    check = subprocess.run(
        [sys.executable, "scripts/docs_reference.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_site_builds_strict(tmp_path: Path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    site = tmp_path / "site"
    for page in ("index.html", "guides/paper-reproduction/index.html", "reference/cli/index.html"):
        assert (site / page).is_file(), page
    # the API page is rendered from the docstrings, not left as ::: directives
    api = (site / "reference/api/index.html").read_text()
    assert "read_archive" in api and ":::" not in api


def test_the_readme_links_into_the_site_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def _commands(text: str) -> list[str]:
    """``seld-orch ...`` command lines in the fenced code blocks of a Markdown text (continuation
    lines joined, ``.venv/bin/`` and a ``$ `` prompt dropped)."""
    found = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
            if line.startswith("seld-orch "):
                found.append(line)
    return found


def _check(tokens: list[str], root, where: str) -> None:
    """Each command in ``tokens`` exists and takes each option given (values are not checked;
    ``...`` and placeholders are fine)."""
    command, path = root, []
    while hasattr(command, "list_commands") and tokens and not tokens[0].startswith("-"):
        name = tokens.pop(0)
        ctx = command.context_class(command, info_name=name)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{where}: no command `seld-orch {' '.join([*path, name])}`"
        command, path = sub, [*path, name]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    passes_on = command.context_settings.get("allow_extra_args", False)
    for i, token in enumerate(tokens):
        if token == "--":  # `slurm submit ... -- cv ...`: the rest is a command of its own
            _check(tokens[i + 1 :], root, where)
            return
        if not token.startswith("-") or token == "-":
            continue
        if token.split("=", 1)[0] in options:
            continue
        assert passes_on, f"{where}: `seld-orch {' '.join(path)}` has no option {token}"
        # `submit cv ARGS` runs `cv ARGS`: the rest goes to the command it submits
        rest = [t for t in tokens if t.split("=", 1)[0] not in options]
        _check([path[-1], *rest], root, where)
        return


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_documented_command_is_one_the_cli_accepts(page: Path):
    import typer.main

    from orchestrator.cli import app

    root = typer.main.get_command(app)
    for line in _commands(page.read_text()):
        tokens = shlex.split(line, comments=True)[1:]
        _check(tokens, root, f"{page.relative_to(ROOT)}: {line}")
