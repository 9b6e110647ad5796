"""The CUDA path: mixed precision and channels-last training steps (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from seld.methods.models import build_model
from seld.methods.registry import stage_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("stage", ["sed", "doa"])
def test_amp_channels_last_step_matches_float32(stage):
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model("CRNN10", in_channels=10).to(device)
    fast = build_model("CRNN10", in_channels=10).to(device).to(memory_format=torch.channels_last)
    fast.load_state_dict(model.state_dict())
    x = torch.randn(4, 10, 200, 96, device=device)
    batch = {
        "activity": (torch.rand(4, 200, 11, device=device) > 0.8).float(),
        "azimuth": torch.randint(-18, 18, (4, 200, 11), device=device).float() * 10,
        "elevation": torch.randint(-4, 5, (4, 200, 11), device=device).float() * 10,
        "mask": torch.ones(4, 200, device=device),
    }
    reference = stage_loss(stage, model(x), batch)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        out = fast(x.contiguous(memory_format=torch.channels_last))
    loss = stage_loss(stage, out, batch)
    loss.backward()
    assert (
        torch.isfinite(loss)
        and abs(loss.item() - reference.item()) < 0.05 * abs(reference.item()) + 1e-3
    )
    # the stage's loss reaches the shared layers and its own head; the other head gets no
    # gradient in this stage (SED trains no direction head, DOA no event head)
    grads = {name: p.grad for name, p in fast.named_parameters()}
    unused = {"sed": ("azimuth_fc", "elevation_fc"), "doa": ("event_fc",)}[stage]
    for name, grad in grads.items():
        if name.startswith(unused):
            assert grad is None, name
        else:
            assert grad is not None and torch.isfinite(grad).all(), name


def test_a_gpu_share_holds_the_process_to_its_part_of_the_memory():
    """A fold job given a quarter of a GPU may allocate up to a quarter of its memory, and
    fails with CUDA's out-of-memory error past that (in a fresh process: the bound is the
    process's)."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from seld.methods.training import gpu_share_device\n"
        "device = gpu_share_device(0.25)\n"
        "total = torch.cuda.get_device_properties(0).total_memory\n"
        "within = torch.empty(int(total * 0.2), dtype=torch.uint8, device=device)\n"
        "try:\n"
        "    torch.empty(int(total * 0.1), dtype=torch.uint8, device=device)\n"
        "    print('unbounded')\n"
        "except torch.OutOfMemoryError:\n"
        "    print('bounded', device)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["bounded", "cuda"], out.stdout + out.stderr
