"""The TensorRT engine: the ONNX graph built into an fp16 TensorRT plan, run on torch CUDA tensors.

One plan per frame size ``H x W``, with an optimization profile for batches of 1 to ``max_batch``
frames (tuned for ``opt_batch``). Plans are kept in the engine cache, keyed by the ONNX graph, the
GPU (name and compute capability), the TensorRT and CUDA versions, the shape profile and the
precision; building one takes from seconds to minutes, so build them ahead of a session
(``etem engine build MODEL --engine tensorrt --shape H W``). Written against the TensorRT 10
Python API (``set_tensor_address`` / ``execute_async_v3``; TensorRT 8.6 works too).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, EngineUnavailable
from . import resolve_device
from .base import check_batch, model_fields
from .cache import CacheEntry, EngineCache, key_digest, model_digest
from .export import INPUT, OPSET, OUTPUT, cached_onnx, model_label

__all__ = ["TensorRTEngine", "import_tensorrt"]

log = logging.getLogger("etem.engine")

INSTALL_HINT = ("the 'tensorrt' engine needs a CUDA GPU with NVIDIA TensorRT and its Python bindings: "
                "pip install tensorrt (the wheels on pypi.nvidia.com match CUDA 12), or NVIDIA's "
                "TensorRT packages for your CUDA version. Meanwhile use --engine auto (kind='auto': "
                "'compiled' on a GPU, 'onnxruntime', the fastest, on a CPU).")


def import_tensorrt():
    """The ``tensorrt`` module, or EngineUnavailable saying what to install."""
    try:
        import tensorrt
    except ImportError as exc:  # also an OSError-like failure to load its libraries
        raise EngineUnavailable(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise EngineUnavailable(f"{INSTALL_HINT} (the tensorrt libraries do not load: {exc})") from exc
    return tensorrt


class _Plan:
    """A deserialized plan with its execution context (the runtime must outlive the engine)."""

    def __init__(self, runtime, engine, entry: CacheEntry):
        self.runtime, self.engine, self.entry = runtime, engine, entry
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")


class TensorRTEngine:
    """Run a network as a TensorRT plan.

    Parameters
    ----------
    model, card
        A network from ``etem.train.networks`` and its model card.
    device
        ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (a CUDA GPU is required).
    max_batch
        Largest batch of one plan's profile; larger batches are run in parts.
    opt_batch
        The batch size TensorRT tunes for (default: ``max_batch``).
    shape
        ``(H, W)`` of a plan to build (or load) now; others are built at their first batch.
    fp16
        Let TensorRT run layers in float16 (inputs, outputs and the softmax stay float32).
    workspace_gb
        Most GPU memory TensorRT may use while choosing kernels.
    cache_dir
        The engine cache's folder (default: ``$ETEM_CACHE_DIR`` or the user cache folder).
    """

    name = "tensorrt"

    def __init__(self, model: nn.Module, card: Mapping[str, Any], *, device: str | torch.device = "cuda",
                 max_batch: int = 8, opt_batch: int | None = None, shape: tuple[int, int] | None = None,
                 fp16: bool = True, workspace_gb: float = 4.0, cache_dir: str | os.PathLike | None = None,
                 opset: int = OPSET):
        trt = import_tensorrt()
        self.device = resolve_device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise EngineUnavailable(f"the tensorrt engine needs a CUDA GPU; got device {str(self.device)!r}"
                                    f"{'' if torch.cuda.is_available() else ' and torch sees no CUDA GPU'}. "
                                    "Use engine 'onnxruntime' or 'eager' on the CPU.")
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        for name, value in (("max_batch", max_batch), ("opt_batch", opt_batch or max_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}.")
        if (opt_batch or max_batch) > max_batch:
            raise ConfigError(f"opt_batch ({opt_batch}) must not exceed max_batch ({max_batch}).")
        if not workspace_gb > 0:
            raise ConfigError(f"workspace_gb must be positive; got {workspace_gb!r}.")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch, self.opt_batch = max_batch, opt_batch or max_batch
        self.fp16, self.workspace_gb = bool(fp16), float(workspace_gb)

        self.n_inputs, self.class_names, self.sampling = model_fields(model, card)
        self.card = dict(card)
        self.cache = EngineCache(cache_dir)
        self._label = model_label(card)
        digest = model_digest(model, card)
        # The ONNX graph (cached too) is what TensorRT parses.
        self.onnx_entry = cached_onnx(model, card, self.cache, n_inputs=self.n_inputs, opset=opset, digest=digest)
        self._plans: dict[tuple[int, int], _Plan] = {}
        if shape is not None:
            self.plan_for(*_shape(shape))

    def __repr__(self) -> str:
        return (f"TensorRTEngine({self._label!r}, device={str(self.device)!r}, max_batch={self.max_batch}, "
                f"fp16={self.fp16}, shapes={sorted(self._plans)})")

    # --- plans ------------------------------------------------------------------------------

    def _key(self, height: int, width: int) -> dict[str, Any]:
        props = torch.cuda.get_device_properties(self.device)
        return {"artifact": "tensorrt", "onnx": key_digest(self.onnx_entry.key),
                "tensorrt": self._trt.__version__, "cuda": torch.version.cuda,
                "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "precision": "float16" if self.fp16 else "float32", "workspace_gb": self.workspace_gb,
                "profile": {"batch": [1, self.opt_batch, self.max_batch], "channels": self.n_inputs,
                            "height": height, "width": width}}

    def plan_for(self, height: int, width: int) -> _Plan:
        """The plan for frames of ``height x width``, from the cache or built now."""
        plan = self._plans.get((height, width))
        if plan is None:
            key = self._key(height, width)
            (runtime, engine), entry = self.cache.load_or_build(
                "tensorrt", f"{self._label}-{height}x{width}", key, "model.plan",
                lambda path: self._build(path, height, width), self._deserialize)
            plan = self._plans[(height, width)] = _Plan(runtime, engine, entry)
            log.info("tensorrt engine: %s plan for %dx%d: %s", "cached" if entry.hit else "new",
                     height, width, entry.path)
        return plan

    def _build(self, path: Path, height: int, width: int) -> None:
        trt = self._trt
        builder = trt.Builder(self._logger)
        major = int(trt.__version__.split(".")[0])
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.onnx_entry.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse the ONNX graph {self.onnx_entry.path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gb * (1 << 30)))
        if self.fp16:
            if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in TensorRT 10
                log.warning("this GPU has no fast float16; the tensorrt plan is built in float32")
            else:
                config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        c = self.n_inputs
        profile.set_shape(INPUT, (1, c, height, width), (self.opt_batch, c, height, width),
                          (self.max_batch, c, height, width))
        config.add_optimization_profile(profile)
        log.warning("building a TensorRT plan for %dx%d frames, batches up to %d (this takes a while)",
                    height, width, self.max_batch)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT could not build a plan for this network (see its log above).")
        with open(path, "wb") as f:
            f.write(memoryview(serialized))

    def _deserialize(self, path: Path):
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ValueError("TensorRT cannot deserialize the plan (built by another version or GPU?)")
        return runtime, engine

    # --- running ----------------------------------------------------------------------------

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Build (or load) the plan for this frame size and run one batch of zeros."""
        self.predict(torch.zeros(min(batch, self.max_batch), self.n_inputs, height, width))

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities float32 ``[B, K, H, W]`` on ``self.device`` of a batch ``[B, C, H, W]``."""
        check_batch(batch, self.n_inputs)
        b, _, h, w = batch.shape
        out = torch.empty((b, len(self.class_names) + 1, h, w), device=self.device, dtype=torch.float32)
        if b == 0:
            return out
        plan = self.plan_for(h, w)
        stream = torch.cuda.current_stream(self.device)
        with torch.no_grad():
            x = batch.detach().to(self.device, torch.float32, non_blocking=True).contiguous()
            for start in range(0, b, self.max_batch):
                part, scores = x[start:start + self.max_batch], out[start:start + self.max_batch]
                ctx = plan.context
                ctx.set_input_shape(INPUT, tuple(part.shape))
                ctx.set_tensor_address(INPUT, part.data_ptr())
                ctx.set_tensor_address(OUTPUT, scores.data_ptr())
                if not ctx.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError(f"TensorRT failed to run a batch of shape {list(part.shape)}")
            # Same stream: the softmax waits for the plan.
            return torch.softmax(out, dim=1).contiguous()

    @property
    def cache_path(self) -> Path | None:
        """The plan file of the last frame size built or loaded (None before the first)."""
        return next(reversed(self._plans.values())).entry.path if self._plans else None


def _shape(shape: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be (height, width) in pixels; got {shape!r}.") from None
    if h < 1 or w < 1:
        raise ConfigError(f"shape must be positive; got {shape!r}.")
    return h, w
