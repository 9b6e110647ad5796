from __future__ import annotations

import math

import pytest
import torch

from seld.losses import doa_loss, joint_loss, sed_loss, stage_loss
from seld.models import build_model, conv_parameter_names, doa_model_from_sed

TINY = {"channels": (8, 16, 16, 32), "rnn_hidden": 16}


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_crnn10_paper_preset_has_the_seeds_parameter_count():
    assert count(build_model("CRNN10", in_channels=10)) == 5_890_977
    # VGG9 = the same without the GRU (1,182,720 parameters); its heads read the 512 conv maps
    assert count(build_model("VGG9", in_channels=10)) == 5_890_977 - 1_182_720


@pytest.mark.parametrize("name", ["CRNN10", "VGG9"])
@pytest.mark.parametrize(("frames", "bins"), [(200, 96), (64, 64), (37, 64)])
def test_output_shapes_follow_the_input_frames(name, frames, bins):
    model = build_model(name, in_channels=7, **TINY).eval()
    x = torch.randn(2, 7, frames, bins)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, frames, 11) for k in ("sed_logits", "azimuth", "elevation")
    }
    fast = model(x.contiguous(memory_format=torch.channels_last))
    for key in out:
        torch.testing.assert_close(out[key], fast[key], rtol=1e-4, atol=1e-5)


def test_rebuild_from_config_and_registry_errors():
    model = build_model("CRNN10", in_channels=10, **TINY)
    config = dict(model.config)
    assert count(build_model(**config)) == count(model)
    with pytest.raises(ValueError, match="unknown model 'ResNet'; choose one of CRNN10, VGG9"):
        build_model("ResNet")


def test_doa_model_copies_only_the_convolutional_blocks():
    torch.manual_seed(0)
    sed = build_model("CRNN10", in_channels=10, **TINY)
    for module in sed.modules():  # make running stats non-default so copying them shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
    state = sed.state_dict()
    doa = doa_model_from_sed(state, sed.config)
    new = doa.state_dict()
    conv = conv_parameter_names(sed)
    assert conv and all(torch.equal(new[k], state[k]) for k in conv)
    others = [k for k in state if k not in conv and state[k].dtype.is_floating_point]
    assert others and all(not torch.equal(new[k], state[k]) for k in others if "bias" not in k)
    with torch.no_grad():
        next(doa.parameters()).add_(1.0)  # the copy is independent of the SED state
    assert not torch.equal(next(doa.parameters()), state[conv[0]])


def batch(frames=4, active=((0, 1, 3),)):
    activity = torch.zeros(1, frames, 11)
    azimuth = torch.zeros(1, frames, 11)
    elevation = torch.zeros(1, frames, 11)
    for t, c, _ in active:
        activity[0, t, c] = 1
    return {
        "activity": activity,
        "azimuth": azimuth,
        "elevation": elevation,
        "mask": torch.ones(1, frames),
    }


def test_sed_loss_values_and_mask():
    b = batch()
    logits = torch.zeros(1, 4, 11)
    assert sed_loss(logits, b["activity"], b["mask"]).item() == pytest.approx(math.log(2))
    b["mask"][0, 2:] = 0  # padded frames are ignored
    logits[0, 2:] = 50.0
    assert sed_loss(logits, b["activity"], b["mask"]).item() == pytest.approx(math.log(2))


def test_doa_loss_where_active_only():
    b = batch(active=((0, 1, 0), (2, 5, 0)))
    b["azimuth"][0, 0, 1], b["elevation"][0, 0, 1] = 90.0, 10.0
    b["azimuth"][0, 2, 5], b["elevation"][0, 2, 5] = -30.0, 0.0
    azi = torch.zeros(1, 4, 11, requires_grad=True)
    ele = torch.zeros(1, 4, 11)
    with torch.no_grad():
        azi[0, 3, 7] = 99.0  # an inactive class: ignored
    expected = (math.radians(90) + math.radians(30)) / 2 + math.radians(10) / 2
    loss = doa_loss(azi, ele, b["azimuth"], b["elevation"], b["activity"], b["mask"], "mae")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert azi.grad[0, 0, 1] < 0 and azi.grad[0, 3, 7] == 0
    mse = doa_loss(azi, ele, b["azimuth"], b["elevation"], b["activity"], b["mask"], "mse")
    assert mse.item() == pytest.approx(
        math.sqrt((math.radians(90) ** 2 + math.radians(30) ** 2) / 2)
        + math.radians(10) / math.sqrt(2),
        rel=1e-5,
    )
    silent = batch(active=())
    zero = doa_loss(
        azi, ele, silent["azimuth"], silent["elevation"], silent["activity"], silent["mask"]
    )
    assert zero.item() == 0 and zero.requires_grad
    with pytest.raises(ValueError, match="unknown DOA loss"):
        doa_loss(azi, ele, b["azimuth"], b["elevation"], b["activity"], b["mask"], "huber")


def test_joint_and_stage_dispatch():
    b = batch()
    out = {
        "sed_logits": torch.zeros(1, 4, 11),
        "azimuth": torch.zeros(1, 4, 11),
        "elevation": torch.zeros(1, 4, 11),
    }
    assert joint_loss(out, b).item() == pytest.approx(0.8 * math.log(2))
    assert stage_loss("sed", out, b).item() == pytest.approx(math.log(2))
    assert stage_loss("doa", out, b).item() == 0
    with pytest.raises(ValueError, match="unknown stage 'both'"):
        stage_loss("both", out, b)


def test_tiny_model_learns_a_detection_task_deterministically():
    def run():
        torch.manual_seed(0)
        model = build_model("CRNN10", in_channels=2, **TINY)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        activity = (torch.rand(8, 64, 11, generator=g) > 0.7).float()
        activity = activity.repeat_interleave(16, dim=1)[:, :64]  # events last 16 frames
        x = torch.randn(8, 2, 64, 16, generator=g) * 0.1
        x[:, 0] += activity[..., :1] * 2  # class 0 activity is visible in channel 0
        x[:, 1] += activity[..., 1:2] * 2
        b = {"activity": activity, "mask": torch.ones(8, 64)}
        losses = []
        for _ in range(40):
            loss = sed_loss(model(x)["sed_logits"][..., :2], activity[..., :2], b["mask"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    first, second = run(), run()
    assert first == second
    assert first[-1] < 0.3 * first[0]
