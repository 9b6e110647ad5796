"""CRNN10 and VGG9 of the two-stage method, configurable for small presets, with a registry.

Input (batch, channels, frames, bins); output per frame: SED logits, azimuth and elevation in
radians, each (batch, frames, classes). Four 2x2 poolings divide time by 16; the outputs are
repeated x16 and cut (or edge-padded) to the input's frame count, so every input frame has an
output (the seed truncates to a multiple of 16 instead).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seld.dcase import NUM_CLASSES


def _init_layer(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def _init_gru(gru: nn.GRU) -> None:
    """Xavier-uniform input and recurrent weights per gate, orthogonal-free and zero biases."""
    for name, param in gru.named_parameters():
        if "bias" in name:
            nn.init.zeros_(param)
        else:
            for gate in param.chunk(3, dim=0):
                nn.init.xavier_uniform_(gate)


class ConvBlock(nn.Module):
    """2 x (3x3 convolution without bias, batch norm, ReLU), then 2x2 pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        for conv in (self.conv1, self.conv2):
            _init_layer(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        pool = F.avg_pool2d if self.pool == "avg" else F.max_pool2d
        return pool(x, kernel_size=2)


class SeldNet(nn.Module):
    """Convolutional blocks, optional bidirectional GRU, three linear heads.

    ``channels``: widths of the conv blocks; ``rnn_layers`` 0 makes a CNN-only model.
    """

    name = "SeldNet"

    def __init__(
        self,
        in_channels: int = 10,
        num_classes: int = NUM_CLASSES,
        channels: Sequence[int] = (64, 128, 256, 512),
        rnn_hidden: int = 256,
        rnn_layers: int = 1,
        dropout: float = 0.0,
        pool: str = "avg",
    ):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        self.config: dict[str, Any] = {
            "name": self.name,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "channels": list(channels),
            "rnn_hidden": rnn_hidden,
            "rnn_layers": rnn_layers,
            "dropout": dropout,
            "pool": pool,
        }
        widths = [in_channels, *channels]
        self.conv_blocks = nn.ModuleList(
            ConvBlock(a, b, pool) for a, b in itertools.pairwise(widths)
        )
        self.time_ratio = 2 ** len(channels)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        features = channels[-1]
        self.gru = None
        if rnn_layers > 0:
            self.gru = nn.GRU(
                features,
                rnn_hidden,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if rnn_layers > 1 else 0.0,
            )
            _init_gru(self.gru)
            features = 2 * rnn_hidden
        self.event_fc = nn.Linear(features, num_classes)
        self.azimuth_fc = nn.Linear(features, num_classes)
        self.elevation_fc = nn.Linear(features, num_classes)
        for head in (self.event_fc, self.azimuth_fc, self.elevation_fc):
            _init_layer(head)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = x.shape[2]
        for block in self.conv_blocks:
            x = block(x)
        x = x.mean(dim=3) if self.pool == "avg" else x.amax(dim=3)  # over frequency
        x = self.dropout(x.transpose(1, 2))  # (batch, frames / 16, features)
        if self.gru is not None:
            x, _ = self.gru(x)
            x = self.dropout(x)
        outputs = {
            "sed_logits": self.event_fc(x),
            "azimuth": self.azimuth_fc(x),
            "elevation": self.elevation_fc(x),
        }
        return {k: _to_frames(v, self.time_ratio, frames) for k, v in outputs.items()}


def _to_frames(x: torch.Tensor, ratio: int, frames: int) -> torch.Tensor:
    """(batch, steps, classes) -> (batch, frames, classes): repeat each step ``ratio`` times, then
    cut, or repeat the last step, to exactly ``frames``."""
    x = x.repeat_interleave(ratio, dim=1)
    if x.shape[1] >= frames:
        return x[:, :frames]
    return torch.cat([x, x[:, -1:].expand(-1, frames - x.shape[1], -1)], dim=1)


class CRNN10(SeldNet):
    """The paper's CRNN: 4 conv blocks (64-512), a bidirectional GRU (256), 3 heads.
    5,890,977 parameters for 10 input channels and 11 classes."""

    name = "CRNN10"


class VGG9(SeldNet):
    """The CNN-only variant: the same conv blocks, no GRU."""

    name = "VGG9"

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("rnn_layers", 0)
        super().__init__(**kwargs)


MODELS: dict[str, type[SeldNet]] = {"CRNN10": CRNN10, "VGG9": VGG9}


def build_model(name: str, **kwargs: Any) -> SeldNet:
    """A model by name; ``build_model(**model.config)`` rebuilds the same architecture."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def conv_parameter_names(model: nn.Module) -> list[str]:
    """State-dict keys of the convolutional blocks (weights, batch-norm parameters and stats)."""
    return [k for k in model.state_dict() if k.startswith("conv_blocks.")]


def doa_model_from_sed(sed_state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> SeldNet:
    """The stage-2 model: a fresh model whose convolutional blocks are copied from the stage-1
    (SED) model's state; the GRU and heads keep their fresh initialisation. Nothing is frozen."""
    kwargs = dict(config)
    model = build_model(kwargs.pop("name"), **kwargs)
    conv = {k: v.detach().clone() for k, v in sed_state.items() if k.startswith("conv_blocks.")}
    missing = set(conv_parameter_names(model)) - conv.keys()
    if missing:
        raise ValueError(f"SED state lacks convolutional entries: {sorted(missing)[:3]}")
    model.load_state_dict(conv, strict=False)
    return model
