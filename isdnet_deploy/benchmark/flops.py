"""FLOPs of one forward of a torch module, for the achieved-GFLOP/s column.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products,
attention), which counts a multiply-add as 2 FLOPs — the same convention as
``measure_matmul_gflops``'s 2*n^3, so the "% of peak" column compares like with like. Note
that many segmentation papers' "GFLOPs" (mmcv / fvcore counters) are multiply-adds, i.e. half
of this figure. torch is imported lazily: the rest of the benchmark package runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import IsdnetError, missing


def _counted(model: Any, input_shape: Sequence[int]) -> Any:
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as exc:
        raise missing("torch", why="counting FLOPs needs the PyTorch model") from exc
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise IsdnetError(f"input shape {tuple(input_shape)} has an empty dimension; "
                          "pass a shape such as (1, 3, 1024, 1024)")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(tuple(int(d) for d in input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()  # count the inference graph (no dropout, BatchNorm in eval form)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: Any, input_shape: Sequence[int]) -> float:
    """FLOPs (2 per multiply-add) of one eval-mode forward of ``model`` on a random input."""
    return float(_counted(model, input_shape).get_total_flops())


def per_module_flops(model: Any, input_shape: Sequence[int], depth: int = 1) -> dict[str, float]:
    """FLOPs per submodule ``depth`` levels below the root, named as in ``named_modules()``.

    Useful to see which branch (e.g. shallow vs deep path) dominates the cost.
    """
    if depth < 1:
        raise IsdnetError(f"depth {depth} is below 1; pass 1 for the model's direct children")
    counts = _counted(model, input_shape).get_flop_counts()
    flops: dict[str, float] = {}
    for name, ops in counts.items():
        parts = name.split(".")
        if len(parts) == depth + 1:
            flops[".".join(parts[1:])] = float(sum(ops.values()))
    return flops
