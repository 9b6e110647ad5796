"""Experiment configs: shipped presets, extends, overrides, and refusals naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from seld.config import ConfigError, load_config, preset_names, validate_config
from seld.methods.models import build_model
from seld.methods.registry import get_stage
from seld.methods.training import learning_rate_factor

PRESETS = ("paper-mic", "paper-foa", "paper-foa-iv", "paper-joint-mic", "paper-cnn-mic", "tiny")


def test_every_shipped_preset_loads_validates_and_builds_its_models():
    assert set(PRESETS) <= set(preset_names())
    for name in preset_names():
        config = load_config(name)
        assert config.name == name and config.description
        channels = config.features.num_channels()
        for stage in config.stages:
            train = config.train_config(stage)
            kwargs = {**train.model_kwargs, **get_stage(stage).model}  # as training builds it
            model = build_model(train.model, in_channels=channels, **kwargs)
            frames = 64
            out = model(torch.zeros(1, channels, frames, config.features.n_mels))
            if "accdoa" in out:  # 3 tracks x 11 classes x (x, y, z)
                assert out["accdoa"].shape == (1, frames, 3, 11, 3), name
                if get_stage(stage).distances:  # and a distance (m) for each
                    assert out["distance"].shape == (1, frames, 33), name
                    assert (out["distance"] >= 0).all(), name
            else:
                assert out["sed_logits"].shape == (1, frames, 11), name
        # the resolved YAML is itself a config that loads to the same thing
        again = yaml.safe_load(config.to_yaml())
        assert type(config).model_validate(again) == config


def test_the_paper_presets_are_the_seeds_settings():
    mic, foa, iv = load_config("paper-mic"), load_config("paper-foa"), load_config("paper-foa-iv")
    joint, cnn = load_config("paper-joint-mic"), load_config("paper-cnn-mic")
    assert (mic.format, foa.format, iv.format) == ("mic", "foa", "foa")
    # the seed's FOA row is log-mel + GCC-PHAT (10 maps); intensity vectors are beyond it
    assert foa.features.kind == "logmel_gcc" and foa.features.num_channels() == 10
    assert iv.features.kind == "logmel_iv" and iv.features.num_channels() == 7
    assert (joint.method, joint.stages, joint.train.joint_sed_weight) == ("joint", ("joint",), 0.8)
    assert cnn.model.name == "VGG9" and mic.model.name == "CRNN10"
    train = mic.train_config("sed")
    assert train.amsgrad and train.steps == 50_000 and train.batch_size == 32 and not train.amp
    assert (train.lr, train.loss, train.window_s, train.hop_s) == (1e-3, "mae", 2.0, 0.5)
    # main.py multiplies the rate by 0.9 when the batch index is a multiple of 2000 above
    # 30000, before that batch's step: steps 32000..33999 run at 0.9, 34000.. at 0.81
    rates = {s: learning_rate_factor(s, train, train.steps) for s in (31_999, 32_000, 34_000)}
    assert rates == pytest.approx({31_999: 1.0, 32_000: 0.9, 34_000: 0.81})
    assert (mic.features.sample_rate, mic.features.n_fft, mic.features.n_mels) == (32000, 1024, 96)


def test_extends_merges_section_by_section(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: paper-joint-mic\ntrain: {lr: 5.0e-4}\nmodel: {width: 0.5}\n")
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("extends: ../base.yaml\nname: mine\ntrain: {batch_size: 16}\n")
    config = load_config(child, ["train.epochs=3", "train.steps=null"])
    assert config.name == "mine" and config.method == "joint"
    assert (config.train.lr, config.train.batch_size, config.train.amsgrad) == (5e-4, 16, True)
    assert (config.train.epochs, config.train.steps, config.model.width) == (3, None, 0.5)
    assert config.model.kwargs()["channels"] == [32, 64, 128, 256]
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(loop)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1e-3", r"train\.lrr: unknown key \(from --set\); did you mean lr\?"),
        (
            "modle.width=2",
            r"modle: unknown key.*did you mean model\? valid keys: cv, data,",
        ),
        ("train.lr=fast", r"train\.lr: Input should be a valid number"),
        ("train.batch_size=0", r"train\.batch_size: Input should be greater than or equal to 1"),
        (
            "method=three-stage",
            r"method: Input should be 'two-stage', 'joint', 'multi-accdoa' or 'multi-accddoa'",
        ),
        ("model.name=ResNet", r"model\.name 'ResNet' is not one of CRNN10, VGG9"),
        ("features.n_mels=63", r"features\.n_mels: must be even"),
        ("cv.folds=[5]", r"cv\.folds: each fold is 1, 2, 3 or 4"),
        ("features.kind=logmel_iv", r"features\.kind: logmel_iv .* needs data\.format foa"),
        ("selection.checkpoint=first", r"selection\.checkpoint: Input should be 'best' or 'last'"),
        ("selection.suite=dcase2099", r"selection\.suite: unknown metric suite 'dcase2099'"),
    ],
)
def test_a_bad_config_is_refused_naming_the_dotted_key(override: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        load_config("paper-mic", [override])


def test_an_unset_selection_suite_leaves_the_config_and_its_hash_as_before():
    config = load_config("paper-mic")
    assert config.to_dict()["selection"] == {"checkpoint": "best"}
    chosen = load_config("paper-mic", ["selection.suite=dcase2022"])
    assert chosen.to_dict()["selection"] == {"checkpoint": "best", "suite": "dcase2022"}
    assert chosen.hash() != config.hash()
    assert chosen.train_config("doa").selection_suite == "dcase2022"
    assert validate_config(chosen.to_dict(), "round trip") == chosen


def test_a_bad_file_names_the_file_and_key(tmp_path: Path):
    path = tmp_path / "exp.yaml"
    path.write_text("extends: tiny\ntrain:\n  lr: 1.0e-3\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}: train\.epoch: unknown key; did you mean"):
        load_config(path)
    with pytest.raises(
        ConfigError,
        match="no config preset 'tinny'; presets: multi-accddoa-mic, multi-accdoa-mic, paper-cnn",
    ):
        load_config("tinny")
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config("tiny", ["train.lr"])


def test_the_cli_refuses_a_bad_config_before_anything_starts(tmp_path: Path):
    runner = CliRunner()
    ws = tmp_path / "ws"
    result = runner.invoke(
        app,
        [
            "cv",
            "--dataset",
            str(tmp_path / "none"),
            "--workspace",
            str(ws),
            "--config",
            "paper-joint-mic",
            "--set",
            "train.lrr=5e-4",
        ],
    )
    assert result.exit_code == 2
    assert "train.lrr: unknown key (from --set); did you mean lr?" in result.output
    assert not (ws / "runs").exists() and not (ws / "mlflow.db").exists()
    shown = runner.invoke(app, ["config", "show", "paper-cnn-mic", "--set", "model.width=0.5"])
    assert shown.exit_code == 0, shown.output
    body = yaml.safe_load(shown.stdout)
    assert body["model"] == {**body["model"], "name": "VGG9", "width": 0.5}
