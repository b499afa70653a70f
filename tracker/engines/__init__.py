"""Engines turn a batch of preprocessed images into class probability maps.

All follow one protocol (:class:`Engine`); :func:`make_engine` picks and builds one, importing a
backend only when it is chosen.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from ..errors import ConfigError, EngineUnavailable, choice_error
from .base import Engine

__all__ = ["Engine", "EngineKind", "ENGINE_KINDS", "make_engine", "resolve_device"]

log = logging.getLogger("etem.engine")

EngineKind = Literal["auto", "eager", "classical", "compiled", "onnxruntime", "tensorrt"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)

#: Keyword options each buildable kind takes (besides ``device``).
_OPTIONS = {
    "classical": ("column_sigma_px", "contrast"),
    "eager": ("dtype", "channels_last"),
}

#: Why each kind that this version cannot build is unavailable, and what it will need.
_UNAVAILABLE = {
    "compiled": "The 'compiled' engine (torch.export + AOTInductor with CUDA graphs) needs a CUDA GPU "
                "and is not yet available in this version of etem-tracker.",
    "onnxruntime": "The 'onnxruntime' engine is not yet available in this version of etem-tracker; "
                   "it will need the onnx and onnxruntime packages (pip install onnx onnxruntime, "
                   "or onnxruntime-gpu for CUDA).",
    "tensorrt": "The 'tensorrt' engine is not yet available in this version of etem-tracker; it "
                "will need a CUDA GPU with NVIDIA TensorRT and its Python bindings "
                "(pip install tensorrt, or NVIDIA's TensorRT packages for your CUDA version).",
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when a CUDA GPU is available, else ``cpu``; other values as given."""
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


def _classical(device: torch.device, options: dict[str, Any]) -> Engine:
    _check_options("classical", options)
    try:
        from ..classical import ClassicalEngine
    except ImportError as exc:
        raise EngineUnavailable(f"the classical engine cannot be imported: {exc}") from exc
    return ClassicalEngine(device=str(device), **options)


def _eager(model: str | Path, device: torch.device, options: dict[str, Any]) -> Engine:
    _check_options("eager", options)
    from etem.train.bundle import load_bundle

    from .eager import EagerEngine

    # Loaded on the CPU: the engine folds the batch norms into a copy, which it moves to the device.
    network, card = load_bundle(model, device="cpu")
    return EagerEngine(network, card, device=device, **options)


def make_engine(kind: EngineKind = "auto", model: str | Path | None = None, *,
                device: str | torch.device = "auto", **options: Any) -> Engine:
    """Build an engine.

    Parameters
    ----------
    kind
        ``"auto"``: the best that works here — today ``"eager"`` when a model is given, else
        ``"classical"`` (the choice is logged on the ``etem.engine`` logger). ``"classical"``: a
        model-free column finder. ``"eager"``: the model run by PyTorch. ``"compiled"``,
        ``"onnxruntime"`` and ``"tensorrt"`` are planned and raise :class:`EngineUnavailable`.
    model
        A bundled model's name or a bundle's path (see ``etem.train.bundle.load_bundle``);
        ``None`` for the classical engine.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    **options
        Options of the chosen engine: ``column_sigma_px``, ``contrast`` (classical);
        ``dtype``, ``channels_last`` (eager).

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

    if kind == "auto":
        kind = "eager" if model is not None else "classical"
        log.info("engine 'auto' chose %r on %s (%s)", kind, device,
                 "a model was given" if model is not None else "no model was given")
    if kind in _UNAVAILABLE:
        raise EngineUnavailable(_UNAVAILABLE[kind] + " Use kind='eager' (or 'auto') meanwhile.")
    if kind == "classical":
        if model is not None:
            raise ConfigError(f"the classical engine uses no model; got model={model!r}. "
                              "Leave model out, or choose kind='eager' or 'auto'.")
        return _classical(device, options)
    if model is None:
        raise ConfigError(f"the {kind} engine needs a model: a bundled model's name or a bundle path.")
    return _eager(model, device, options)
