"""A wheel install (not the editable checkout) runs the CLI and finds its configs, search
spaces, sweeps and published numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import orchestrator, seld
from orchestrator.search_space import load_search_space, shipped_space
from seld.config import load_config, preset_names
assert orchestrator.__file__.startswith(TARGET), orchestrator.__file__
assert seld.__file__.startswith(TARGET), seld.__file__
assert str(shipped_space("hparams.yaml")).startswith(TARGET)
print(sorted(load_search_space(shipped_space(n)).name for n in ("thresholds.yaml", "tiny.yaml")))
print(preset_names(), load_config("paper-joint-mic").method)
from orchestrator.compare import published_table
from orchestrator.sweep_spec import load_sweep, shipped_sweeps
print(shipped_sweeps(), len(load_sweep("paper-table").cells), len(published_table()[1]))
"""


@pytest.mark.slow
def test_a_wheel_install_runs_the_cli_and_finds_its_files(tmp_path: Path):
    dist, target, source = tmp_path / "dist", tmp_path / "site", tmp_path / "source"
    # a copy of the project, so that the build leaves nothing in the checkout
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "seld", "orchestrator", "search_spaces"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": skip} if copy is shutil.copytree else {}))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(dist), str(source)], check=True, cwd=tmp_path)
    (wheel,) = dist.glob("seld_orchestrator-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target"]
    subprocess.run([*install, str(target), str(wheel)], check=True, cwd=tmp_path)
    # the wheel's packages come first; its dependencies come from this environment
    env = os.environ | {"PYTHONPATH": str(target)}
    help_text = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--config" in help_text and "--set" in help_text
    check = f"TARGET = {str(target)!r}\n" + CHECK
    found = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == "['thresholds', 'tiny']"
    assert "paper-foa-iv" in lines[1] and "multi-accdoa-mic" in lines[1]
    assert "multi-accddoa-mic" in lines[1]
    assert lines[1].endswith("joint")
    assert lines[2] == "['methods-starss', 'methods-starss-60', 'paper-table', 'tiny-table'] 18 8"
