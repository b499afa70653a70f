"""Engines turn a batch of preprocessed images into class probability maps.

All follow one protocol (:class:`Engine`); :func:`make_engine` picks and builds one, importing a
backend only when it is chosen.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..errors import ConfigError, EngineUnavailable, ModelError, choice_error
from .base import Engine

if TYPE_CHECKING:
    import torch

__all__ = ["Engine", "EngineKind", "ENGINE_KINDS", "MODEL_KINDS", "available_kinds", "engine_label", "make_engine",
           "resolve_device"]

log = logging.getLogger("etem.engine")

EngineKind = Literal["auto", "eager", "classical", "compiled", "onnxruntime", "tensorrt"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)

#: Keyword options each buildable kind takes (besides ``device``).
_OPTIONS = {
    "classical": ("column_sigma_px", "contrast"),
    "eager": ("dtype", "channels_last"),
    "compiled": ("dtype", "channels_last", "mode", "dynamic", "aot", "cache_dir"),
    "onnxruntime": ("threads", "cache_dir", "opset", "int8", "calibration"),
    "tensorrt": ("max_batch", "opt_batch", "shape", "fp16", "workspace_gb", "cache_dir", "opset"),
}
#: The engines that run a model, the best first (the order ``auto`` tries them in).
MODEL_KINDS = ("tensorrt", "compiled", "onnxruntime", "eager")


def engine_label(engine) -> str | None:
    """An engine's name as said to users: its kind, with " int8" for an int8 graph; None for none."""
    if engine is None:
        return None
    return engine.name + (" int8" if getattr(engine, "int8", False) else "")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when a CUDA GPU is available, else ``cpu``; other values as given."""
    import torch  # (here: ``etem --help`` and the engine commands' parser load no torch)

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc


def _check_options(kind: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        valid = ", ".join(_OPTIONS[kind])
        raise ConfigError(f"the {kind} engine takes no option {', '.join(map(repr, unknown))}; "
                          f"its options are: {valid}.")


def _importable(module: str) -> bool:
    """Whether ``module`` imports (a package that is there but whose libraries fail counts as absent)."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install is an absent one
        return False
    return True


def available_kinds(device: str | torch.device = "auto") -> list[str]:
    """The model engines that can run on ``device`` here, the best first."""
    import torch

    device = resolve_device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    kinds = []
    if cuda and _importable("tensorrt"):
        kinds.append("tensorrt")
    if cuda and _importable("triton"):
        kinds.append("compiled")
    if device.type == "cpu" and _importable("onnxruntime"):
        kinds.append("onnxruntime")
    kinds.append("eager")
    return kinds


def _classical(device: torch.device, options: dict[str, Any]) -> Engine:
    _check_options("classical", options)
    try:
        from ..classical import ClassicalEngine
    except ImportError as exc:
        raise EngineUnavailable(f"the classical engine cannot be imported: {exc}") from exc
    return ClassicalEngine(device=str(device), **options)


def _model_engine(kind: str, network, card: dict[str, Any], device: torch.device,
                  options: dict[str, Any], bundle: str | Path | None = None) -> Engine:
    _check_options(kind, options)
    if kind == "onnxruntime" and options.get("int8") is True and options.get("calibration") is None and bundle:
        from etem.train.bundle import bundle_paths

        from .quantize import calibration_file

        default = calibration_file(bundle_paths(bundle)[1])  # the bundle's own, where it has one
        if default.is_file():
            options = {**options, "calibration": default}
    if kind == "eager":
        from .eager import EagerEngine as cls
    elif kind == "compiled":
        from .compiled import CompiledEngine as cls
    elif kind == "onnxruntime":
        from .onnxrt import OnnxRuntimeEngine as cls
    else:
        from .trt import TensorRTEngine as cls
    engine = cls(network, card, device=device, **options)
    engine.card = card
    return engine


def make_engine(kind: EngineKind = "auto", model: str | Path | None = None, *,
                device: str | torch.device = "auto", **options: Any) -> Engine:
    """Build an engine.

    Parameters
    ----------
    kind
        ``"auto"``: the best that works here (logged on the ``etem.engine`` logger): with a model,
        ``"tensorrt"`` where TensorRT imports and the device is a CUDA GPU, else ``"compiled"`` on
        a CUDA GPU, else ``"onnxruntime"`` on the CPU where onnxruntime imports (an MSD-net:
        ``"eager"``), else ``"eager"``; without a model, ``"classical"``. ``"classical"``: a model-free column
        finder. ``"eager"``: the model run by PyTorch, the reference. ``"compiled"``:
        ``torch.compile`` (float16 and CUDA graphs on a GPU). ``"onnxruntime"``: the model
        exported to ONNX, run by onnxruntime. ``"tensorrt"``: an fp16 TensorRT plan (CUDA).
        ONNX graphs, TensorRT plans and AOTInductor packages are cached on disk (see
        :mod:`.cache`). Every model engine gets the model card as ``engine.card``.
    model
        A bundled model's name or a bundle's path (see ``etem.train.bundle.load_bundle``);
        ``None`` for the classical engine.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    **options
        Options of the chosen engine: ``column_sigma_px``, ``contrast`` (classical);
        ``dtype``, ``channels_last`` (eager); those and ``mode``, ``dynamic``, ``aot``,
        ``cache_dir`` (compiled); ``threads``, ``cache_dir``, ``opset``, ``int8``,
        ``calibration`` (onnxruntime);
        ``max_batch``, ``opt_batch``, ``shape``, ``fp16``, ``workspace_gb``, ``cache_dir``,
        ``opset`` (tensorrt). With ``"auto"``, options the chosen engine does not take are left
        out (and logged).

    Raises
    ------
    ConfigError
        An unknown kind or option, or a kind given a model it cannot use (or none it needs).
    EngineUnavailable
        The requested engine cannot run here; the message says what it needs.
    ModelError
        The model bundle is missing, corrupt or inconsistent.
    """
    if kind not in ENGINE_KINDS:
        raise choice_error("kind", kind, ENGINE_KINDS)
    device = resolve_device(device)
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():  # (the classical locator's pinned buffers failed on it with a traceback)
            raise EngineUnavailable(f"{device} was asked for, but this torch has no CUDA GPU; use the CPU "
                                    "(--device cpu, device='cpu'), or install a CUDA build of torch on a "
                                    "machine with an NVIDIA GPU.")

    if kind == "classical" or (kind == "auto" and model is None):
        if model is not None:
            raise ConfigError(f"the classical engine uses no model; got model={model!r}. "
                              "Leave the model out, or choose another engine (--engine auto or eager; kind='auto').")
        if kind == "auto":
            log.info("engine 'auto' chose 'classical' on %s (no model was given)", device)
        return _classical(device, options)
    if model is None:
        raise ConfigError(f"the {kind} engine needs a model: a bundled model's name or a bundle path.")

    from etem.train.bundle import load_bundle

    # Loaded on the CPU: the engines fold the batch norms into a copy, which they move to the device.
    network, card = load_bundle(model, device="cpu")
    if kind != "auto":
        return _model_engine(kind, network, card, device, options, model)

    unknown = sorted(set(options) - {o for k in MODEL_KINDS for o in _OPTIONS[k]})
    if unknown:
        raise ConfigError(f"no engine takes the option(s) {', '.join(map(repr, unknown))}; the model "
                          "engines' options are: " + "; ".join(f"{k}: {', '.join(_OPTIONS[k])}" for k in MODEL_KINDS))
    candidates = available_kinds(device)
    if card.get("arch") == "msdnet" and resolve_device(device).type == "cpu":
        # on the CPU torch's MSD-net inference (one buffer, each layer's maps written in place) is
        # far faster than the exported graph's concatenations under onnxruntime (depth 100, 256²,
        # 2 cores: 41 against 650 ms; 512²: 212 against 3,298 ms)
        candidates = ["eager"] + [k for k in candidates if k != "eager"]
    for i, choice in enumerate(candidates):
        taken = {k: v for k, v in options.items() if k in _OPTIONS[choice]}
        left = sorted(set(options) - set(taken))
        try:
            engine = _model_engine(choice, network, card, device, taken, model)
        except (EngineUnavailable, ModelError) as exc:  # e.g. an export that does not reproduce the model
            if i == len(candidates) - 1:
                raise
            log.warning("engine 'auto': %r cannot run here (%s); trying %r", choice, exc, candidates[i + 1])
            continue
        log.info("engine 'auto' chose %r on %s (of %s available)%s", choice, device, ", ".join(candidates),
                 f"; options it does not take were left out: {', '.join(left)}" if left else "")
        if options.get("int8") is True and not getattr(engine, "int8", False):
            why = ("an MSD-net runs faster in torch on the CPU than as an onnxruntime graph"
                   if card.get("arch") == "msdnet" and device.type == "cpu" else f"on {device} it is not available")
            log.warning("int8 was asked for, but the engine 'auto' chose %r, which runs the network in float "
                        "(%s); --engine onnxruntime --int8 runs the int8 graph regardless", choice, why)
        return engine
    raise AssertionError("unreachable: 'eager' is always a candidate")
