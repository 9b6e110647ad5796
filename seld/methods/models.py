"""CRNN10 and VGG9 of the two-stage method, configurable for small presets, with a registry.

Input ``(batch, channels, frames, bins)``: standardised features at 100 frames per second. Output
per input frame, each ``(batch, frames, classes)``: ``sed_logits`` (pre-sigmoid), ``azimuth`` and
``elevation`` in radians.

Architecture (as in the seed): conv blocks of 2 x [3x3 conv without bias, batch norm, ReLU] then
2x2 pooling (average, or max); mean (max with max pooling) over the remaining frequency bins; an
optional bidirectional GRU; three linear heads. The seed's event head applies a sigmoid; ours
returns logits so that the loss can use the stable ``binary_cross_entropy_with_logits``.

Time resolution: each block halves time, so n blocks divide it by ``2**n`` (16 for four). The
pooling uses ``ceil_mode``: a last, incomplete pair of frames is pooled on its own rather than
dropped, so every input frame reaches the network. Each output step is then repeated ``2**n``
times and cut to the input's frame count: output frame t comes from step ``t // 2**n``. For frame
counts that are multiples of ``2**n`` this is exactly the seed's x16 repetition; for others (e.g.
2 s = 200 frames) the seed dropped the trailing frames, we keep them.

Initialisation (as in the seed): conv and linear weights Kaiming-uniform for leaky ReLU (bound
``sqrt(6 / fan_in)``), biases 0; batch-norm weights N(1, 0.02), biases 0; GRU input weights and
the reset/update recurrent weights uniform +-sqrt(3 / fan_in) per gate, the new-gate recurrent
weights orthogonal, biases 0. The seed's GRU initialiser reached only the forward direction; here
both directions get it.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from seld.data.dcase import NUM_CLASSES

POOLS = ("avg", "max")
#: Forms of the direction output: the seed's azimuth and elevation (radians) per class, a
#: Cartesian vector per class (tanh, read back with atan2), which has no azimuth discontinuity,
#: or multi-ACCDOA: a Cartesian vector per track and class whose length is the activity
#: (:mod:`seld.methods.accdoa`), with no separate event head; multi-ACCDDOA (``accddoa``): the
#: same vectors and, per track and class, a distance in metres (a softplus head).
DOA_OUTPUTS = ("angles", "xyz", "accdoa", "accddoa")
#: the outputs of several tracks per class (multi-ACCDOA vectors)
TRACK_OUTPUTS = ("accdoa", "accddoa")
#: State-dict prefix of the convolutional blocks, the part stage 2 inherits from stage 1.
CONV_PREFIX = "conv_blocks."


def init_layer(layer: nn.Module) -> None:
    """Conv / linear: Kaiming-uniform (leaky ReLU gain), zero bias. Batch norm: N(1, 0.02), 0."""
    if isinstance(layer, nn.Conv2d | nn.Linear):
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="leaky_relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif isinstance(layer, nn.BatchNorm2d):
        nn.init.normal_(layer.weight, 1.0, 0.02)
        nn.init.zeros_(layer.bias)
    else:
        raise TypeError(f"no initialisation for {type(layer).__name__}")


def _uniform_fan_in(weight: torch.Tensor) -> None:
    bound = math.sqrt(3.0 / weight.shape[1])
    nn.init.uniform_(weight, -bound, bound)


def init_gru(gru: nn.GRU) -> None:
    """Per gate (reset, update, new): input weights uniform +-sqrt(3 / fan_in); recurrent weights
    the same for reset and update, orthogonal for the new gate; all biases zero."""
    with torch.no_grad():
        for name, param in gru.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(param)
                continue
            reset, update, new = param.chunk(3, dim=0)
            _uniform_fan_in(reset)
            _uniform_fan_in(update)
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(new)
            else:
                _uniform_fan_in(new)


class ConvBlock(nn.Module):
    """2 x [3x3 convolution without bias, batch norm, ReLU], then 2x2 pooling (ceil mode).

    ``(batch, in_channels, frames, bins)`` -> ``(batch, out_channels, ceil(frames / 2),
    ceil(bins / 2))``.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: str = "avg"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        for layer in (self.conv1, self.bn1, self.conv2, self.bn2):
            init_layer(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool == "avg":
            return F.avg_pool2d(x, kernel_size=2, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=2, ceil_mode=True)


class SeldNet(nn.Module):
    """Conv blocks, an optional bidirectional GRU and three linear heads (see the module doc).

    Args:
        in_channels: input feature maps (10 in the paper: 4 log-mel + 6 GCC-PHAT).
        num_classes: event classes (11 in DCASE 2019).
        channels: widths of the conv blocks, one block each; time is divided by ``2**len``.
        rnn_hidden: GRU hidden size per direction.
        rnn_layers: GRU layers; 0 feeds the conv features straight to the heads.
        dropout: dropout on the heads' and GRU's inputs (0 in the paper).
        pool: ``"avg"`` (paper) or ``"max"``, for the blocks and the frequency reduction.
        freq_slots: 0 (paper): average (max with max pooling) the conv features over the
            remaining frequency bins, which makes the model blind to where along the bin axis a
            pattern lies: for GCC-PHAT the bin axis is the lag, i.e. the direction. k > 0 keeps
            k slots along it (adaptive average pooling) and flattens them into the GRU's input
            (beyond the seed).
        doa_output: ``"angles"`` (paper: an azimuth and an elevation head) or ``"xyz"`` (one
            head of 3 values per class, tanh; ``azimuth`` and ``elevation`` are read back with
            atan2 and the outputs gain ``xyz`` (batch, frames, classes, 3)), or ``"accdoa"``:
            one head of ``tracks`` x classes x 3 values (tanh), output as ``accdoa`` (batch,
            frames, tracks, classes, 3); instead of ``sed_logits`` the outputs then hold each
            vector's length as ``activity``, and ``azimuth`` / ``elevation`` its direction,
            each (batch, frames, tracks * classes), track-major. ``"accddoa"``: the same, and a
            second head of ``tracks`` x classes distances in metres (softplus, so never
            negative), output as ``distance`` (batch, frames, tracks * classes), track-major.
        tracks: the multi-ACCDOA tracks (``doa_output`` ``"accdoa"`` or ``"accddoa"`` only).

    ``config`` holds these arguments and the registry ``name``: ``build_model(**model.config)``
    rebuilds the architecture. The base class itself is not in the registry.
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
        doa_output: str = "angles",
        freq_slots: int = 0,
        tracks: int = 3,
    ):
        super().__init__()
        if freq_slots < 0:
            raise ValueError(f"freq_slots must be >= 0, got {freq_slots}")
        if doa_output not in DOA_OUTPUTS:
            raise ValueError(
                f"unknown doa_output {doa_output!r}; choose one of {', '.join(DOA_OUTPUTS)}"
            )
        if not channels:
            raise ValueError("channels needs at least one conv block width")
        if rnn_layers < 0:
            raise ValueError(f"rnn_layers must be >= 0, got {rnn_layers}")
        self.config: dict[str, Any] = {
            "name": self.name,
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "channels": [int(c) for c in channels],
            "rnn_hidden": int(rnn_hidden),
            "rnn_layers": int(rnn_layers),
            "dropout": float(dropout),
            "pool": pool,
        }
        if doa_output != "angles":  # the paper's configs (and old checkpoints) stay as they were
            self.config["doa_output"] = doa_output
        if doa_output in TRACK_OUTPUTS:
            if tracks < 1:
                raise ValueError(f"tracks must be >= 1, got {tracks}")
            self.config["tracks"] = int(tracks)
        self.doa_output = doa_output
        self.tracks = tracks
        if freq_slots:
            self.config["freq_slots"] = int(freq_slots)
        self.freq_slots = freq_slots
        widths = [in_channels, *channels]
        self.conv_blocks = nn.ModuleList(
            ConvBlock(a, b, pool) for a, b in itertools.pairwise(widths)
        )
        self.time_ratio = 2 ** len(channels)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        features = channels[-1] * max(freq_slots, 1)
        self.gru: nn.GRU | None = None
        if rnn_layers > 0:
            self.gru = nn.GRU(
                features,
                rnn_hidden,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if rnn_layers > 1 else 0.0,
            )
            init_gru(self.gru)
            features = 2 * rnn_hidden
        self.num_classes = num_classes
        heads = []
        if doa_output in TRACK_OUTPUTS:
            self.accdoa_fc = nn.Linear(features, tracks * num_classes * 3)
            heads.append(self.accdoa_fc)
            if doa_output == "accddoa":
                self.distance_fc = nn.Linear(features, tracks * num_classes)
                heads.append(self.distance_fc)
        else:
            self.event_fc = nn.Linear(features, num_classes)
            heads.append(self.event_fc)
        if doa_output == "angles":
            self.azimuth_fc = nn.Linear(features, num_classes)
            self.elevation_fc = nn.Linear(features, num_classes)
            heads += [self.azimuth_fc, self.elevation_fc]
        elif doa_output == "xyz":
            self.xyz_fc = nn.Linear(features, 3 * num_classes)
            heads.append(self.xyz_fc)
        for head in heads:
            init_layer(head)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(batch, channels, frames, bins)`` -> ``sed_logits``, ``azimuth``, ``elevation`` (rad),
        each ``(batch, frames, classes)``."""
        frames = x.shape[2]
        for block in self.conv_blocks:
            x = block(x)
        if self.freq_slots:  # (batch, channels, steps, slots) -> (batch, steps, channels * slots)
            x = F.adaptive_avg_pool2d(x, (x.shape[2], self.freq_slots))
            x = x.permute(0, 2, 1, 3).flatten(2)
        else:  # over frequency
            x = x.mean(dim=3) if self.pool == "avg" else x.amax(dim=3)
            x = x.transpose(1, 2)  # (batch, steps, features)
        x = self.dropout(x)
        if self.gru is not None:
            x, _ = self.gru(x)
            x = self.dropout(x)
        if self.doa_output in TRACK_OUTPUTS:
            vectors = torch.tanh(self.accdoa_fc(x)).unflatten(
                -1, (self.tracks, self.num_classes, 3)
            )
            flat = vectors.flatten(2, 3)  # (batch, steps, tracks * classes, 3)
            outputs = {"accdoa": vectors, "activity": flat.norm(dim=-1)}
            outputs |= _angles_of(flat)
            if self.doa_output == "accddoa":  # metres, track-major like the activity
                outputs["distance"] = F.softplus(self.distance_fc(x))
        else:
            outputs = {"sed_logits": self.event_fc(x)}
            if self.doa_output == "angles":
                outputs["azimuth"] = self.azimuth_fc(x)
                outputs["elevation"] = self.elevation_fc(x)
            else:
                xyz = torch.tanh(self.xyz_fc(x)).unflatten(-1, (self.num_classes, 3))
                outputs["xyz"] = xyz
                outputs |= _angles_of(xyz)
        return {
            k: v.repeat_interleave(self.time_ratio, dim=1)[:, :frames] for k, v in outputs.items()
        }


def _angles_of(xyz: torch.Tensor) -> dict[str, torch.Tensor]:
    """Azimuth and elevation (radians) of vectors (..., 3), by atan2."""
    return {
        "azimuth": torch.atan2(xyz[..., 1], xyz[..., 0]),
        "elevation": torch.atan2(xyz[..., 2], torch.hypot(xyz[..., 0], xyz[..., 1])),
    }


class CRNN10(SeldNet):
    """The paper's CRNN: 4 conv blocks (64, 128, 256, 512), a bidirectional GRU (256), 3 heads.
    5,890,977 parameters for 10 input channels and 11 classes."""

    name = "CRNN10"


class VGG9(SeldNet):
    """The CNN-only variant: the same conv blocks and heads, no GRU (4,708,257 parameters for the
    paper preset). ``rnn_hidden`` is accepted, so presets can share kwargs, and unused."""

    name = "VGG9"

    def __init__(self, *args: Any, rnn_layers: int = 0, **kwargs: Any):
        if rnn_layers != 0:
            raise ValueError(f"VGG9 has no GRU; got rnn_layers={rnn_layers} (use CRNN10)")
        super().__init__(*args, rnn_layers=0, **kwargs)


MODELS: dict[str, type[SeldNet]] = {"CRNN10": CRNN10, "VGG9": VGG9}


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section of an experiment config: a registered architecture and its
    arguments (see :class:`SeldNet`). ``width`` multiplies the conv widths and the GRU size
    (at least 4 each), so a search can scale a model without listing every width.
    ``rnn_layers`` ``None`` is the architecture's own (1 for CRNN10, none for VGG9)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    name: str = "CRNN10"
    channels: tuple[Annotated[int, Field(ge=1)], ...] = (64, 128, 256, 512)
    rnn_hidden: Annotated[int, Field(ge=1)] = 256
    rnn_layers: Annotated[int, Field(ge=0)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    pool: Literal["avg", "max"] = "avg"
    doa_output: Literal["angles", "xyz", "accdoa", "accddoa"] = "angles"
    freq_slots: Annotated[int, Field(ge=0)] = 0
    width: Annotated[float, Field(gt=0, le=8)] = 1.0

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"model.name {self.name!r} is not one of {', '.join(MODELS)}")
        if not self.channels:
            raise ValueError("model.channels needs at least one conv block width")
        if self.name == "VGG9" and self.rnn_layers:
            raise ValueError("model.rnn_layers: VGG9 has no GRU (use CRNN10, or leave it unset)")

    def kwargs(self) -> dict[str, Any]:
        """:func:`build_model` keyword arguments (all but ``name`` and ``in_channels``)."""
        out: dict[str, Any] = {
            "channels": [max(4, round(c * self.width)) for c in self.channels],
            "rnn_hidden": max(4, round(self.rnn_hidden * self.width)),
            "dropout": self.dropout,
            "pool": self.pool,
            "doa_output": self.doa_output,
            "freq_slots": self.freq_slots,
        }
        if self.rnn_layers is not None:
            out["rnn_layers"] = self.rnn_layers
        return out


def build_model(name: str, **kwargs: Any) -> SeldNet:
    """A model by registry name; ``build_model(**model.config)`` rebuilds the same architecture."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def conv_parameter_names(model: nn.Module) -> list[str]:
    """State-dict keys of the conv blocks: conv weights, batch-norm weights, biases and stats."""
    return [k for k in model.state_dict() if k.startswith(CONV_PREFIX)]


def doa_model_from_sed(sed_state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> SeldNet:
    """The stage-2 (DOA) model: a freshly initialised model of ``config``'s architecture whose conv
    blocks are copies of the stage-1 (SED) model's; GRU and heads keep their fresh initialisation.
    Nothing is frozen: the copied blocks are fine-tuned, as in the paper.

    Raises ``ValueError`` when ``sed_state`` lacks a conv entry or has one of another shape.
    """
    kwargs = dict(config)
    model = build_model(kwargs.pop("name"), **kwargs)
    own = model.state_dict()
    names = conv_parameter_names(model)
    missing = [k for k in names if k not in sed_state]
    if missing:
        raise ValueError(f"SED state lacks {len(missing)} conv entries, e.g. {missing[:3]}")
    wrong = [k for k in names if sed_state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"SED conv entries differ in shape from {config!r}, e.g. {wrong[:3]}")
    conv = {k: sed_state[k].detach().clone() for k in names}
    model.load_state_dict(conv, strict=False)
    return model


class _FusedBlock(nn.Module):
    """A :class:`ConvBlock` for prediction: batch norms folded into the convolutions, ReLU in
    place (see :func:`inference_model`)."""

    def __init__(self, block: ConvBlock):
        super().__init__()
        self.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
        self.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
        self.pool = block.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x), inplace=True)
        x = F.relu(self.conv2(x), inplace=True)
        if self.pool == "avg":
            return F.avg_pool2d(x, kernel_size=2, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=2, ceil_mode=True)


class _ChannelsLast(nn.Module):
    """Feeds a model its input in channels-last memory order (see :func:`inference_model`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def inference_model(model: SeldNet) -> nn.Module:
    """A copy of a trained model for prediction only, about twice as fast on a CPU core: each
    batch norm folded into the convolution before it (``fuse_conv_bn_eval``: an eval-mode batch
    norm is an affine map per channel, so it becomes the convolution's weight scale and bias),
    ReLU in place, and channels-last memory order, which oneDNN's convolutions prefer. Outputs
    match the model's to float rounding (about 1e-7 in probability). The original is left
    untouched: its state dict is what checkpoints and exported models hold."""
    fast = copy.deepcopy(model).eval()
    fast.conv_blocks = nn.ModuleList(_FusedBlock(block) for block in fast.conv_blocks)
    return _ChannelsLast(fast.to(memory_format=torch.channels_last)).eval()
