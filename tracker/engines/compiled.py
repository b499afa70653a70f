"""The compiled engine: the folded network compiled by ``torch.compile`` (TorchInductor).

On CUDA it defaults to float16, channels-last memory and the ``"reduce-overhead"`` mode (CUDA
graphs: one launch per batch instead of one per kernel); ``"max-autotune"`` also tries several
kernels per convolution and takes much longer to compile. On the CPU it compiles in float32 with
the default mode. Compilation happens at the first batch of each new shape (a minute or more on a
small CPU); :meth:`CompiledEngine.warm_up` does it ahead of time. Inductor keeps what it compiled
in its own on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default a folder under the system's
temporary folder), so a second process compiles faster.

With ``aot=True`` the network is instead exported (``torch.export``, dynamic batch, height and
width) and compiled ahead of time by AOTInductor into a package (a shared library with the
weights, plus JSON metadata; no pickle) that is kept in the engine cache under the kind
``"aoti"``: later processes load it in milliseconds. The package is built for this CPU's
instruction set or this GPU, which its cache key records.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch._inductor  # aoti_compile_and_package, aoti_load_package
from torch import nn

from etem.train.networks import fold_batchnorm

from ..errors import ConfigError, EngineUnavailable, choice_error
from .cache import CacheEntry, EngineCache, model_digest
from .eager import EagerEngine

__all__ = ["CompiledEngine", "COMPILE_MODES"]

log = logging.getLogger("etem.engine")

#: ``torch.compile`` modes the engine takes ("default" is inductor's default).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class CompiledEngine(EagerEngine):
    """Run a network compiled by ``torch.compile``.

    Parameters
    ----------
    model, card
        As for :class:`EagerEngine`.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype
        ``"float32"``, ``"float16"`` (CUDA only) or ``"bfloat16"``; default ``"float16"`` on CUDA,
        ``"float32"`` on the CPU. Probabilities are float32 either way.
    channels_last
        NHWC memory format; default True on CUDA, False on the CPU.
    mode
        A ``torch.compile`` mode (see :data:`COMPILE_MODES`); default ``"reduce-overhead"`` (CUDA
        graphs) on CUDA, ``"default"`` on the CPU.
    dynamic
        ``torch.compile``'s ``dynamic``: None (specialize on the first shape, generalize when a
        second one comes), True (one graph for all shapes), False (one graph per shape).
    aot
        True: compile ahead of time with ``torch.export`` + AOTInductor into a cached package
        (built where the cache has none; one build serves all shapes; ``mode`` and ``dynamic``
        then do not apply). None (default): use such a package where the cache has one (built
        by ``etem engine build --engine compiled``), else ``torch.compile``. False: always
        ``torch.compile``.
    cache_dir
        The engine cache's folder for ``aot=True`` (default: ``$ETEM_CACHE_DIR`` or the user
        cache folder).
    """

    name = "compiled"

    def __init__(self, model: nn.Module, card: Mapping[str, Any], *, device: str | torch.device = "auto",
                 dtype: Literal["float32", "float16", "bfloat16"] | None = None,
                 channels_last: bool | None = None, mode: str | None = None, dynamic: bool | None = None,
                 aot: bool | None = None, cache_dir: str | os.PathLike | None = None):
        from . import resolve_device

        cuda = resolve_device(device).type == "cuda"
        dtype = dtype or ("float16" if cuda else "float32")
        channels_last = cuda if channels_last is None else channels_last
        mode = mode or ("reduce-overhead" if cuda else "default")
        if mode not in COMPILE_MODES:
            raise choice_error("mode", mode, COMPILE_MODES)
        if dynamic not in (None, True, False):
            raise ConfigError(f"dynamic must be true, false or left out; got {dynamic!r}.")
        super().__init__(model, card, device=device, dtype=dtype, channels_last=channels_last)
        _check_toolchain(cuda)
        self.card = dict(card)
        self.mode = mode
        self.cuda_graphs = cuda and mode in _CUDA_GRAPH_MODES
        self.eager_model = self.model
        if not isinstance(self.model, type(model)):
            # The eager engine swapped in a hand-written equivalent (FastMSDNet for MSD-nets);
            # compile the plain network, whose operations the compiler knows how to fuse.
            plain = fold_batchnorm(model).to(self.device, self.dtype, memory_format=self.memory_format)
            self.eager_model = plain.requires_grad_(False)
        if aot not in (None, True, False):
            raise ConfigError(f"aot must be true, false or left out; got {aot!r}.")
        self.cache_entry: CacheEntry | None = None
        package = None if aot is False else self._aot_package(model, card, cache_dir, build_missing=bool(aot))
        self.aot = package is not None
        if self.aot:
            self.cuda_graphs = False
            self.model = package
        else:
            self.model = torch.compile(self.eager_model, mode=None if mode == "default" else mode,
                                       dynamic=dynamic, fullgraph=False)

    def _aot_package(self, model: nn.Module, card: Mapping[str, Any], cache_dir,
                     build_missing: bool) -> _AOTIModule | None:
        """The AOTInductor package of this model from the cache; built where missing if ``build_missing``."""
        from .export import model_label

        cache = EngineCache(cache_dir)
        key = {"artifact": "aoti", "model_sha256": model_digest(model, card), "torch": torch.__version__,
               "device": _device_name(self.device), "dtype": str(self.dtype).removeprefix("torch."),
               "channels_last": self.memory_format == torch.channels_last,
               "profile": {"batch": "dynamic", "channels": self.n_inputs, "height": "dynamic",
                           "width": "dynamic"}}

        def build(path: Path) -> None:
            scores = _scores_module(self.eager_model)
            sample = torch.zeros(2, self.n_inputs, 64, 64, device=self.device, dtype=self.dtype)
            sample = sample.contiguous(memory_format=self.memory_format)
            dyn = torch.export.Dim.DYNAMIC
            # torch's exporter emits deprecation notices of its own internals.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                program = torch.export.export(scores, (sample,), dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}})
                torch._inductor.aoti_compile_and_package(program, package_path=str(path))

        def load(path: Path) -> _AOTIModule:
            return _AOTIModule(torch._inductor.aoti_load_package(str(path)))

        label = model_label(card)
        if not build_missing:
            entry = cache.lookup("aoti", label, key)
            if entry is None:
                return None
            try:
                runner = load(entry.path)
            except Exception as exc:  # noqa: BLE001 - an unloadable package: compile instead
                log.warning("cached AOTInductor package %s cannot be loaded (%s); using torch.compile",
                            entry.path, exc)
                return None
            self.cache_entry = entry
            log.info("compiled engine: cached AOTInductor package %s", entry.path)
            return runner
        log.info("compiled engine: torch.export + AOTInductor package (cached; building one takes minutes)")
        runner, self.cache_entry = cache.load_or_build("aoti", label, key, "model.pt2", build, load)
        return runner

    @property
    def fixed_batch(self) -> bool:
        """Whether batches should all have one size: with CUDA graphs each new batch size costs a
        recompilation and a graph recording, seconds to a minute in the middle of a stream (the
        pipeline pads its micro-batches to its largest)."""
        return self.cuda_graphs

    @property
    def cache_path(self) -> Path | None:
        """The cached AOTInductor package (None without ``aot``)."""
        return None if self.cache_entry is None else self.cache_entry.path

    def __repr__(self) -> str:
        how = "aot=True" if self.aot else f"mode={self.mode!r}"
        return super().__repr__().replace("EagerEngine(", "CompiledEngine(", 1)[:-1] + f", {how})"

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Compile for batches of this size now rather than at the first frame."""
        log.info("compiling the network for batches [%d, %d, %d, %d] (mode %s)",
                 batch, self.n_inputs, height, width, self.mode)
        self.predict(torch.zeros(batch, self.n_inputs, height, width))

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities float32 ``[B, K, H, W]`` on ``self.device`` of a batch ``[B, C, H, W]``."""
        if self.cuda_graphs:
            # A new step: the graphs may overwrite the previous batch's outputs (already copied
            # out by the softmax, which runs outside the graph).
            torch.compiler.cudagraph_mark_step_begin()
            with warnings.catch_warnings():
                # torch's CUDA-graph tree manager captures an empty graph when it starts and warns
                # about it (torch 2.11); nothing of ours is captured empty
                warnings.filterwarnings("ignore", message="The CUDA Graph is empty", category=UserWarning)
                return super().predict(batch)
        return super().predict(batch)


def _check_toolchain(cuda: bool) -> None:
    """EngineUnavailable unless torch.compile's code generators can run here."""
    if cuda and importlib.util.find_spec("triton") is None:
        raise EngineUnavailable("the 'compiled' engine on CUDA needs triton, which CUDA builds of torch "
                                "install with them (pip install triton); or use engine 'eager'.")
    if not cuda and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise EngineUnavailable("the 'compiled' engine on the CPU needs a C++ compiler for torch.compile "
                                "(e.g. apt install g++); or use engine 'onnxruntime' or 'eager'.")


class _AOTIModule:
    """An AOTInductor package called like a network: ``module(x, logits=True)`` -> scores."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, x: torch.Tensor, logits: bool = True) -> torch.Tensor:
        out = self.runner(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _scores_module(network: nn.Module) -> nn.Module:
    """``network(x, logits=True)`` as a one-argument module, for torch.export."""

    class Scores(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.network(x, logits=True)

    return Scores().eval()


def _device_name(device: torch.device) -> str:
    """What compiled code depends on: the GPU and its compute capability, or the CPU model."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} (sm_{props.major}{props.minor}, CUDA {torch.version.cuda})"
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu {platform.machine()} {model}".strip()
