"""The PyTorch reference as a backend (imports torch only when opened)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..contract import Contract, TensorSpec
from ..errors import IsdnetError, missing
from ..profiles import MIN_SIZE, profile_for_classes
from .backend import Backend, Device


def reference_contract(num_classes: int, checkpoint_sha256: str | None = None,
                       profile: str | None = None) -> Contract:
    from ..profiles import get_profile

    prof = get_profile(profile) if profile else profile_for_classes(num_classes)
    return Contract(
        inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, num_classes, "height", "width"])],
        min_size=MIN_SIZE, profile=prof.name if prof else None,
        classes=list(prof.classes) if prof else [f"class_{i}" for i in range(num_classes)],
        palette=[list(c) for c in prof.palette] if prof else [],
        test_scale=prof.test_scale if prof else 1.0, checkpoint_sha256=checkpoint_sha256,
        exporter="pytorch-eager", tool_version="")


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", *,
                 model: object | None = None, profile: str | None = None,
                 threads: int | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise missing("torch", why="needed for the PyTorch reference backend") from None
        from ..model.checkpoint import build_model, load_model

        device = Device.parse(device)
        if device.is_cuda and not torch.cuda.is_available():
            raise IsdnetError("device 'cuda' asked for, but torch sees no CUDA GPU; use "
                              "device='cpu'",
                              cli="--device cuda asked for, but torch sees no CUDA GPU; use "
                                  "--device cpu")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        if model is None:
            model = load_model(checkpoint) if checkpoint else build_model()
        self.torch_device = torch.device(str(device))
        self.model = model.to(self.torch_device).eval()
        super().__init__(reference_contract(model.num_classes,
                                            getattr(model, "checkpoint_sha256", None), profile),
                         device)

    def _run(self, feeds: Mapping[str, np.ndarray],
             out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        image = feeds["image"]
        tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(image)
        with torch.inference_mode():
            logits = self.model(tensor.to(self.torch_device))
        result = logits.cpu().numpy()
        if "logits" in out:
            np.copyto(out["logits"], result)
            result = out["logits"]
        return {"logits": result}

    def synchronize(self) -> None:
        if self.device.is_cuda:
            self.torch.cuda.synchronize(self.torch_device)

    def reset_peak_device_memory(self) -> None:
        if self.device.is_cuda:
            self.torch.cuda.reset_peak_memory_stats(self.torch_device)

    def peak_device_memory(self) -> int | None:
        if not self.device.is_cuda:
            return None
        return self.torch.cuda.max_memory_allocated(self.torch_device)

    def _close(self) -> None:
        self.model = None
