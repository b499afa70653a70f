"""The eager engine: a network from ``etem.train.networks`` run by plain PyTorch, on CPU or GPU.

It is the reference every other engine is checked against.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from etem.train.networks import MSDNet, fold_batchnorm

from ..errors import ConfigError, EngineUnavailable, ModelError, choice_error
from . import resolve_device

__all__ = ["EagerEngine"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class EagerEngine:
    """Run a network with PyTorch.

    Parameters
    ----------
    model
        A network from ``etem.train.networks`` (its ``forward`` takes ``logits=True``); it is
        copied with its batch norms folded, so the caller's module is left as it was.
    card
        The model card (see ``etem.train.bundle``): ``inputs``, ``class_names``, ``sampling_A``.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ..., or ``"auto"`` (CUDA when available).
    dtype
        Precision of the computation. ``"float16"`` needs a CUDA device; ``"bfloat16"`` works on
        both. Probabilities are always returned as float32 (the softmax runs in float32).
    channels_last
        Run the convolutions in NHWC memory format (often faster with float16 on GPUs).
    """

    name = "eager"

    def __init__(self, model: nn.Module, card: Mapping[str, Any], *, device: str | torch.device = "cpu",
                 dtype: Literal["float32", "float16", "bfloat16"] = "float32",
                 channels_last: bool = False):
        if dtype not in _DTYPES:
            raise choice_error("dtype", dtype, _DTYPES)
        self.device = resolve_device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailable("the eager engine was asked for a CUDA device but this torch "
                                    "has no CUDA GPU available; use the CPU (--device cpu, device='cpu'), or install a CUDA "
                                    "build of torch on a machine with an NVIDIA GPU.")
        if dtype == "float16" and self.device.type != "cuda":
            raise ConfigError("dtype='float16' needs a CUDA device; on CPU use 'float32' or 'bfloat16'.")

        for key in ("inputs", "class_names"):
            if key not in card:
                raise ModelError(f"the model card lacks {key!r}.")
        self.n_inputs = len(card["inputs"])
        self.class_names = tuple(card["class_names"])
        sampling = card.get("sampling_A")
        self.sampling = None if sampling is None else float(sampling)
        for attr, want in (("n_inputs", self.n_inputs), ("n_classes", len(self.class_names) + 1)):
            have = getattr(model, attr, want)
            if have != want:
                raise ModelError(f"the model card implies {attr}={want} but the network has {have}.")

        self.dtype = _DTYPES[dtype]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = fold_batchnorm(model).to(self.device, self.dtype, memory_format=self.memory_format)
        if isinstance(model, MSDNet):
            # The same scores without one single-output convolution per layer (etem.train.msd_fast):
            # grouped matrix products on the CPU, a Triton kernel on CUDA where Triton is installed.
            from etem.train.msd_fast import FastMSDNet

            model = FastMSDNet(model)
        self.model = model.requires_grad_(False)

    def __repr__(self) -> str:
        return (f"EagerEngine({type(self.model).__name__}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r}, n_inputs={self.n_inputs}, "
                f"class_names={self.class_names!r})")

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities float32 ``[B, K, H, W]`` on ``self.device`` of a batch ``[B, C, H, W]``."""
        if batch.ndim != 4 or batch.shape[1] != self.n_inputs:
            raise ValueError(f"batch must have shape [B, {self.n_inputs}, H, W] "
                             f"(one channel per focal image); got {list(batch.shape)}.")
        with torch.inference_mode():
            # Asynchronous only host -> GPU; a GPU -> host copy must be complete before use.
            x = batch.to(self.device, self.dtype, non_blocking=self.device.type == "cuda")
            x = x.contiguous(memory_format=self.memory_format)
            scores = self.model(x, logits=True)
        # The softmax runs outside inference mode so that the result is an ordinary tensor
        # (later stages may edit it in place).
        with torch.no_grad():
            return torch.softmax(scores.float(), dim=1).contiguous()
