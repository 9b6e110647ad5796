"""Generate the README's CLI reference from the CLI's own help.

    python scripts/cli_reference.py            # rewrite the section in README.md
    python scripts/cli_reference.py --check    # exit 1 if the README's section is out of date

The section lies between the ``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->``
markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


# typer carries its own copy of click: the commands are duck-typed
def _commands(group, prefix: str):
    ctx = group.context_class(group, info_name=prefix)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if hasattr(command, "list_commands"):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def _option(param) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    return " / ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))


def _default(param) -> str:
    if param.required:
        return "required"
    if param.param_type_name == "option" and param.is_flag:
        return "on" if param.default else "off"
    value = param.default
    if value is None or callable(value):
        return ""
    text = str(value).replace(f"{ROOT}/", "")  # shipped files, relative to the checkout
    return f"`{text}`" if text else "`''`"


def reference() -> str:
    from orchestrator.cli import app

    root = typer.main.get_command(app)
    lines = []
    for name, command in _commands(root, "seld-orch"):
        summary = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"#### `{name}`", "", summary, ""]
        params = [p for p in command.params if p.name != "help"]
        if params:
            lines += ["| option | default | help |", "|---|---|---|"]
            for param in params:
                text = (getattr(param, "help", None) or "").replace("|", "\\|")
                lines.append(f"| {_option(param)} | {_default(param)} | {text} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme}: markers {START} / {END} not found", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{START}\n{reference()}{END}{tail}"
    if "--check" in argv:
        if updated != text:
            print("README.md's CLI reference is out of date: run scripts/cli_reference.py")
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
