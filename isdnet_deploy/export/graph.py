"""The module that is traced into ONNX: ISDNet plus the chosen I/O form.

Kept apart from the exporter so the variants (pyramid inside or outside, float or uint8
input, logits or labels output) are plain, testable PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..profiles import MEAN_RGB, STD_RGB


class DeployGraph(nn.Module):
    def __init__(self, model: nn.Module, *, pyramid: str = "graph", input_kind: str = "float",
                 output_kind: str = "logits", labels_dtype: str = "uint8",
                 mean: tuple[float, ...] = MEAN_RGB, std: tuple[float, ...] = STD_RGB) -> None:
        super().__init__()
        self.model = model
        self.external_pyramid = pyramid == "external"
        self.uint8_input = input_kind == "uint8"
        self.labels = output_kind == "labels"
        self.labels_dtype = torch.uint8 if labels_dtype == "uint8" else torch.int32
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """1xHxWx3 RGB bytes -> normalised 1x3xHxW, as (x - mean) / std in float32."""
        return (image.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std

    def forward(self, image: torch.Tensor,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.uint8_input:
            image = self.normalise(image)
        logits = self.model(image, shallow_input=residual if self.external_pyramid else None)
        if not self.labels:
            return logits
        return logits.argmax(dim=1)[0].to(self.labels_dtype)
