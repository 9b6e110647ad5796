"""Methods as plug-ins: the registry, what a method says about its stages, and that nothing
outside a method's own module branches on a method's or a stage's name."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from seld.config import load_config
from seld.errors import ConfigError
from seld.methods.inference import Prediction
from seld.methods.registry import METHODS, STAGES, get_method, get_stage

ROOT = Path(__file__).resolve().parents[2]
#: where a method may name itself and its stages: its own module and the registry
METHOD_MODULES = {
    "seld/methods/two_stage.py",
    "seld/methods/joint.py",
    "seld/methods/multi_accdoa.py",
    "seld/methods/registry.py",
}


def _names() -> set[str]:
    return set(METHODS) | set(STAGES)


def _branches_on_names(path: Path) -> list[str]:
    """Comparisons (``==``, ``!=``, ``in``, ``not in``) and ``match`` cases with a method or stage
    name as a literal operand, in one source file."""
    names = _names()
    found = []
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    def literal(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(literal(e) for e in node.elts)
        return False

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            if literal(node.left) or any(literal(c) for c in node.comparators):
                found.append(f"{shown}:{node.lineno}")
        if isinstance(node, ast.MatchValue) and literal(node.value):
            found.append(f"{shown}:{node.lineno}")
    return found


def test_nothing_branches_on_a_method_or_stage_name():
    sources = sorted((ROOT / "orchestrator").rglob("*.py")) + sorted((ROOT / "seld").rglob("*.py"))
    found = [
        hit
        for path in sources
        if str(path.relative_to(ROOT)) not in METHOD_MODULES
        for hit in _branches_on_names(path)
    ]
    assert not found, f"branches on a method or stage name: {found}"


def test_the_check_finds_a_branch(tmp_path: Path):
    bad = tmp_path / "branchy.py"
    bad.write_text('def f(stage):\n    return stage == "doa" or stage in ("joint",)\n')
    assert len(_branches_on_names(bad)) == 2


def test_the_registered_methods_and_their_stages():
    two, joint = get_method("two-stage"), get_method("joint")
    assert two.stage_names == ("sed", "doa") and joint.stage_names == ("joint",)
    assert get_stage("doa").starts_from == "sed" and get_stage("doa").oracle_activity
    assert get_stage("sed").selects_on_detection and not get_stage("joint").selects_on_detection
    assert load_config("paper-joint-mic").stages == ("joint",)
    assert [m.name for m in METHODS.values() if m.distances] == ["multi-accddoa"]
    assert get_stage("multi-accddoa").model["doa_output"] == "accddoa"
    assert load_config("multi-accddoa-mic").stages == ("multi-accddoa",)
    with pytest.raises(ConfigError, match="unknown method 'three-stage'; choose one of two-stage"):
        get_method("three-stage")
    with pytest.raises(ValueError, match="unknown stage 'both'"):
        get_stage("both")


def test_a_method_combines_its_detecting_and_localizing_stages():
    sed = Prediction("r", np.full((3, 2), 0.9, np.float32), np.zeros((3, 2)), np.zeros((3, 2)))
    doa = Prediction("r", np.zeros((3, 2), np.float32), np.full((3, 2), 30.0), np.ones((3, 2)))
    both = get_method("two-stage").combine({"sed": sed, "doa": doa})
    assert both.sed is sed.sed and both.azimuth is doa.azimuth and both.elevation is doa.elevation
    alone = get_method("joint").combine({"joint": doa})
    assert alone.sed is doa.sed and alone.azimuth is doa.azimuth
    with pytest.raises(ValueError, match="do not match"):
        get_method("two-stage").combine({"sed": sed, "doa": Prediction("x", *[doa.sed] * 3)})


def test_a_method_must_name_its_own_stages():
    from seld.methods.method import Method, Stage

    stage = Stage("a", "", lambda o, b, c: o["x"], starts_from=None)
    with pytest.raises(ValueError, match="localizes 'b' is not one of"):
        Method("m", "", (stage,), detects="a", localizes="b")
    later = Stage("c", "", lambda o, b, c: o["x"], starts_from="d")
    with pytest.raises(ValueError, match="starts from 'd', which is not an earlier stage"):
        Method("m", "", (stage, later), detects="a", localizes="c")


def test_a_method_of_several_tracks_writes_dcase2019_rows_with_several_per_class():
    """On the 2019 grid, a multi-ACCDOA prediction's rows may hold one class twice in a frame;
    a one-direction method's rows are exactly the class-by-class submission rows."""
    from seld.methods.inference import grid_rows, submission_rows

    tracks, classes = 3, 11
    length = np.zeros((2, tracks * classes), np.float32)
    azimuth, elevation = np.zeros_like(length), np.zeros_like(length)
    length[0, [4, classes + 4]] = 0.9  # class 4 on tracks 0 and 1
    azimuth[0, [4, classes + 4]] = [21.0, -94.0]
    elevation[0, [4, classes + 4]] = [12.0, -38.0]
    rows = grid_rows(
        Prediction("r", length, azimuth, elevation), 0.5, 1, get_method("multi-accdoa").decode
    )
    assert rows.tolist() == [[0, 4, 20, 10], [0, 4, -90, -40]] and rows.dtype == np.int64
    rng = np.random.default_rng(0)
    one = Prediction(
        "r",
        rng.random((50, classes)).astype(np.float32),
        rng.uniform(-180, 180, (50, classes)),
        rng.uniform(-40, 40, (50, classes)),
    )
    expected = submission_rows(one, 0.4, median_frames=3)
    for name in ("two-stage", "joint"):
        np.testing.assert_array_equal(grid_rows(one, 0.4, 3, get_method(name).decode), expected)


def test_distances_pass_through_combining_ensembles_and_the_prediction_cache(tmp_path: Path):
    """A multi-ACCDDOA prediction's distances: kept by its method's combination, averaged by a
    fold ensemble, cached and read back; decoded into a sixth column of its rows."""
    from seld.methods.inference import ensemble, load_predictions, save_predictions

    tracks, classes = 3, 13
    length = np.zeros((2, tracks * classes), np.float32)
    length[0, [4, classes + 4]] = 0.9  # class 4 on tracks 0 and 1, far apart
    azimuth = np.zeros_like(length)
    azimuth[0, classes + 4] = 120.0
    distance = np.full_like(length, 2.0)
    distance[0, classes + 4] = 3.0
    one = Prediction("r", length, azimuth, np.zeros_like(length), distance)
    method = get_method("multi-accddoa")
    assert method.combine({"multi-accddoa": one}).distance is distance
    other = Prediction("r", length, azimuth, np.zeros_like(length), distance + 1.0)
    np.testing.assert_allclose(ensemble([one, other]).distance, distance + 0.5)
    with pytest.raises(ValueError, match="some with distances"):
        ensemble([one, Prediction("r", length, azimuth, np.zeros_like(length))])
    save_predictions(tmp_path / "p.npz", [one, Prediction("s", length, azimuth, azimuth)])
    loaded = load_predictions(tmp_path / "p.npz")
    assert np.array_equal(loaded["r"].distance, distance) and loaded["s"].distance is None
    rows = method.decode(one, 0.5, 1, rounded=False)
    assert rows.shape == (2, 6) and rows[:, [1, 2, 5]].tolist() == [[4, 0, 2.0], [4, 1, 3.0]]
    assert get_method("multi-accdoa").decode(one, 0.5, 1, rounded=False).shape == (2, 6)
    no_distance = Prediction("r", length, azimuth, np.zeros_like(length))
    assert get_method("multi-accdoa").decode(no_distance, 0.5, 1, rounded=False).shape == (2, 5)
