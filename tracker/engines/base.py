"""The engine protocol: a batch of preprocessed images in, class probability maps out."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Engine(Protocol):
    """What every engine provides.

    ``predict`` takes a float32 batch ``[B, C, H, W]`` (C = number of focal images the model
    takes, already normalized) on any device and returns probabilities ``[B, K, H, W]`` on
    ``device``. Channel 0 is the background class; channels ``1..K-1`` are the column classes
    named by ``class_names`` (so ``len(class_names) == K - 1``).
    """

    name: str
    device: torch.device
    n_inputs: int
    class_names: tuple[str, ...]
    sampling: float | None  # Å/px the model was trained at; None: any sampling

    def predict(self, batch: torch.Tensor) -> torch.Tensor: ...
