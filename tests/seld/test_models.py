from __future__ import annotations

import math

import pytest
import torch

from seld.methods.losses import sed_loss
from seld.methods.models import (
    MODELS,
    ConvBlock,
    build_model,
    conv_parameter_names,
    doa_model_from_sed,
)
from seld.methods.registry import stage_loss

TINY = {"channels": (8, 16, 16, 32), "rnn_hidden": 16}
OUTPUTS = ("sed_logits", "azimuth", "elevation")


@pytest.fixture(autouse=True)
def single_thread():
    """These models are small: one thread is faster, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_presets_have_the_seeds_parameter_counts():
    crnn = build_model("CRNN10", in_channels=10, num_classes=11)
    # the seed's README prints 5,890,977 for its CRNN10
    assert count(crnn) == 5_890_977
    assert count(crnn.conv_blocks) == 4_691_328  # bias-free convs + batch norm
    assert count(crnn.gru) == 1_182_720  # bidirectional, hidden 256
    heads = (crnn.event_fc, crnn.azimuth_fc, crnn.elevation_fc)
    assert sum(count(h) for h in heads) == 3 * (512 * 11 + 11)
    # VGG9 in the seed: the same conv blocks and 512 -> 11 heads, no GRU
    vgg = build_model("VGG9", in_channels=10)
    assert vgg.gru is None
    assert count(vgg) == 5_890_977 - 1_182_720 == 4_708_257


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("CRNN10", TINY),
        ("VGG9", TINY),
        ("CRNN10", {"channels": (4, 8), "rnn_hidden": 8, "rnn_layers": 2, "pool": "max"}),
    ],
)
@pytest.mark.parametrize(("frames", "bins"), [(200, 96), (64, 64), (37, 64), (200, 64)])
def test_output_shapes_follow_the_input_frames(name, kwargs, frames, bins):
    torch.manual_seed(0)
    model = build_model(name, in_channels=7, **kwargs).eval()
    x = torch.randn(2, 7, frames, bins)
    with torch.no_grad():
        out = model(x)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, frames, 11) for k in OUTPUTS}
    for key in OUTPUTS:
        torch.testing.assert_close(out[key], fast[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["CRNN10", "VGG9"])
def test_paper_preset_shape_and_channels_last(name):
    model = build_model(name, in_channels=10).eval()
    x = torch.randn(2, 10, 200, 96)
    with torch.no_grad():
        out = model(x)
        fast = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    for key in OUTPUTS:
        assert out[key].shape == (2, 200, 11)
        torch.testing.assert_close(out[key], fast[key], rtol=1e-4, atol=1e-4)


def test_every_frame_reaches_the_output_and_steps_repeat_x16():
    torch.manual_seed(0)
    model = build_model("CRNN10", in_channels=3, **TINY).eval()
    x = torch.randn(1, 3, 200, 16)
    with torch.no_grad():
        out = model(x)["sed_logits"][0]
        x[0, :, 199] += 5.0  # the last frame of a 200-frame window (not a multiple of 16)
        changed = model(x)["sed_logits"][0]
    # frames 192..199 form their own time step (pooled in ceil mode, not dropped)
    assert not torch.allclose(out[192:], changed[192:])
    steps = out.reshape(-1, 11)[:192].reshape(12, 16, 11)
    assert torch.equal(steps, steps[:, :1].expand_as(steps))
    assert torch.equal(out[192:], out[192:193].expand(8, 11))


def test_autocast_bf16_on_cpu():
    torch.manual_seed(0)
    model = build_model("CRNN10", in_channels=4, **TINY).eval()
    x = torch.randn(2, 4, 64, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x.contiguous(memory_format=torch.channels_last))
    for key in OUTPUTS:
        assert low[key].shape == ref[key].shape and torch.isfinite(low[key]).all()
        torch.testing.assert_close(low[key].float(), ref[key], rtol=0.1, atol=0.1)


def test_initialisation_follows_the_seed():
    torch.manual_seed(0)
    model = build_model("CRNN10", in_channels=10)
    block = model.conv_blocks[1]
    assert block.conv1.bias is None and block.conv2.bias is None
    fan_in = 64 * 9
    assert block.conv1.weight.abs().max() <= math.sqrt(6 / fan_in)  # Kaiming, leaky-ReLU gain
    assert block.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert block.bn1.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0.01 < block.bn1.weight.std().item() < 0.03
    assert torch.count_nonzero(block.bn1.bias) == 0
    assert torch.count_nonzero(model.event_fc.bias) == 0
    gru = model.gru
    for suffix in ("", "_reverse"):
        assert torch.count_nonzero(getattr(gru, "bias_ih_l0" + suffix)) == 0
        assert torch.count_nonzero(getattr(gru, "bias_hh_l0" + suffix)) == 0
        ih = getattr(gru, "weight_ih_l0" + suffix)
        assert ih.abs().max() <= math.sqrt(3 / 512)
        new_gate = getattr(gru, "weight_hh_l0" + suffix)[512:]
        torch.testing.assert_close(new_gate @ new_gate.T, torch.eye(256), atol=1e-4, rtol=0)


def test_same_seed_same_model_and_output():
    def make():
        torch.manual_seed(3)
        return build_model("CRNN10", in_channels=2, **TINY)

    a, b = make(), make()
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
    x = torch.randn(2, 2, 48, 16)
    assert torch.equal(a.eval()(x)["azimuth"], b.eval()(x)["azimuth"])


def test_rebuild_from_config_and_registry_errors():
    for name in MODELS:
        model = build_model(name, in_channels=10, dropout=0.1, **TINY)
        config = dict(model.config)
        assert config["name"] == name and config["channels"] == list(TINY["channels"])
        rebuilt = build_model(**config)
        assert type(rebuilt) is type(model) and rebuilt.config == config
        assert count(rebuilt) == count(model)
        rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="unknown model 'ResNet'; choose one of CRNN10, VGG9"):
        build_model("ResNet")
    with pytest.raises(ValueError, match="unknown pool 'frac'; choose one of avg, max"):
        build_model("CRNN10", pool="frac")
    with pytest.raises(ValueError, match="VGG9 has no GRU"):
        build_model("VGG9", rnn_layers=1)


def test_conv_block_pools_in_ceil_mode():
    block = ConvBlock(3, 5, pool="max")
    assert block(torch.randn(2, 3, 25, 9)).shape == (2, 5, 13, 5)


def test_doa_model_copies_only_the_convolutional_blocks():
    torch.manual_seed(0)
    sed = build_model("CRNN10", in_channels=10, **TINY)
    sed(torch.randn(4, 10, 32, 16))  # a training-mode pass moves the batch-norm running stats
    state = {k: v.clone() for k, v in sed.state_dict().items()}
    doa = doa_model_from_sed(sed.state_dict(), sed.config)
    assert type(doa) is type(sed) and doa is not sed
    new = doa.state_dict()
    conv = conv_parameter_names(sed)
    assert len(conv) == 4 * 2 * (1 + 5)  # 4 blocks x 2 x (conv weight + 5 batch-norm entries)
    assert all(torch.equal(new[k], state[k]) for k in conv)
    assert any("running_mean" in k for k in conv)
    others = [k for k in state if k not in conv]
    assert any(k.startswith("gru.") for k in others) and any("_fc." in k for k in others)
    weights = [k for k in others if "weight" in k]  # biases start at zero in both models
    assert weights and all(not torch.equal(new[k], state[k]) for k in weights)
    with torch.no_grad():  # the copy is independent of the SED model and its state dict
        for name in conv:
            new[name].add_(1)
    for name, value in sed.state_dict().items():
        assert torch.equal(value, state[name]), name
    # nothing is frozen: the copied blocks are fine-tuned
    assert all(p.requires_grad for p in doa.parameters())


def test_doa_model_rejects_a_mismatched_sed_state():
    sed = build_model("CRNN10", in_channels=10, **TINY)
    with pytest.raises(ValueError, match="lacks"):
        doa_model_from_sed({}, sed.config)
    with pytest.raises(ValueError, match="differ in shape"):
        doa_model_from_sed(sed.state_dict(), {**sed.config, "in_channels": 4})


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("CRNN10", in_channels=2, **TINY)
    batch = {
        "activity": (torch.rand(2, 40, 11) > 0.5).float(),
        "azimuth": torch.full((2, 40, 11), 30.0),
        "elevation": torch.full((2, 40, 11), -10.0),
        "mask": torch.ones(2, 40),
    }
    stage_loss("joint", model(torch.randn(2, 2, 40, 16)), batch).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) > 0, name


def test_tiny_crnn_learns_a_synthetic_detection_task():
    """Class activity shows as a shift of one input channel's mean: 50 Adam steps must learn it."""
    torch.manual_seed(0)
    model = build_model("CRNN10", in_channels=2, channels=(16, 32, 64, 64), rnn_hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    activity = torch.zeros(8, 64, 11)
    events = (torch.rand(8, 4, 2, generator=g) > 0.5).float()  # classes 0 and 1, 16-frame events
    activity[..., :2] = events.repeat_interleave(16, dim=1)
    x = 0.1 * torch.randn(8, 2, 64, 16, generator=g)
    x += 2.0 * activity[..., :2].permute(0, 2, 1)[..., None]  # channel c carries class c
    mask = torch.ones(8, 64)
    losses = []
    for _ in range(50):
        loss = sed_loss(model(x)["sed_logits"], activity, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_the_multi_accddoa_head_adds_a_non_negative_distance_per_track_and_class():
    model = build_model("CRNN10", in_channels=10, doa_output="accddoa", tracks=3, **TINY)
    out = model.eval()(torch.randn(2, 10, 40, 16))
    assert out["accdoa"].shape == (2, 40, 3, 11, 3) and out["distance"].shape == (2, 40, 33)
    assert (out["distance"] > 0).all()  # softplus
    config = dict(model.config)
    assert config["doa_output"] == "accddoa" and config["tracks"] == 3
    rebuilt = build_model(**config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(torch.zeros(1, 10, 16, 16))["distance"],
                       model(torch.zeros(1, 10, 16, 16))["distance"])  # fmt: skip
    plain = build_model("CRNN10", in_channels=10, doa_output="accdoa", **TINY)
    assert "distance" not in plain(torch.zeros(1, 10, 16, 16))
    assert count(model) - count(plain) == 33 * (2 * TINY["rnn_hidden"] + 1)
