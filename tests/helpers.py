"""Test data builders shared by several test modules."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def official_state_dict(num_classes: int = 7, seed: int = 0) -> dict:
    """Random tensors under exactly the keys and shapes of an official DeepGlobe checkpoint,
    with the shallow-net aliases holding the same values as ``features.N`` (as official
    checkpoints do)."""
    import re

    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for line in (DATA / "official_keys.tsv").read_text().splitlines()[1:]:
        key, shape, dtype, _ = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        if key.endswith("conv_out.weight") or key.endswith("conv_out.bias") or (
                "conv_seg.weight" in key or "conv_seg.bias" in key):
            dims = (num_classes, *dims[1:])
        if dtype == "int64":
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(dims, generator=generator) + 0.5
        else:
            state[key] = torch.randn(dims, generator=generator) * 0.05
    alias = re.compile(r"^refine_head\.stdc_net\.x(?:2|4|8|16)\.0\.(\d+)\.(.*)$")
    for key in list(state):
        m = alias.match(key)
        if m:
            state[key] = state[f"refine_head.stdc_net.features.{m[1]}.{m[2]}"].clone()
    return state
