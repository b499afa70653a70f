"""ONNX export of a network, shared by the onnxruntime and TensorRT engines.

The graph takes ``images`` float32 ``[B, C, H, W]`` and gives the class scores (logits)
``scores`` float32 ``[B, K, H, W]``; batch, height and width are all dynamic (the encoder-decoder
networks pad to a multiple of ``2**depth`` inside the graph). The softmax is left to the engine,
which runs it in float32 in torch, as the eager engine does. Batch norms are folded first.

Exported graphs are kept in the engine cache (:mod:`.cache`) under the kind ``"onnx"``, keyed by
the model's digest, the torch version and the opset.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from etem.train.networks import fold_batchnorm

from ..errors import EngineUnavailable, ModelError
from .cache import CacheEntry, EngineCache, model_digest

__all__ = ["INPUT", "OUTPUT", "OPSET", "export_onnx", "onnx_key", "cached_onnx", "model_label",
           "import_onnxruntime"]

log = logging.getLogger("etem.engine")

INPUT, OUTPUT = "images", "scores"
#: ONNX opset written (supported by onnxruntime >= 1.14 and TensorRT >= 8.6).
OPSET = 17


class _Scores(nn.Module):
    """The network's pre-softmax scores as a plain one-argument module (what the exporter traces)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x, logits=True)


def _folded_scores(model: nn.Module) -> nn.Module:
    return _Scores(fold_batchnorm(model).to("cpu", torch.float32)).eval().requires_grad_(False)


def export_onnx(model: nn.Module, n_inputs: int, path: str | Path, *, opset: int = OPSET) -> None:
    """Write ``model`` (batch norms folded, float32) as an ONNX graph with dynamic B, H and W.

    Uses the TorchScript-based exporter of ``torch.onnx`` (``dynamo=False``): it needs no extra
    package and exports the data-dependent padding of the encoder-decoder networks with dynamic
    height and width.
    """
    scores = _folded_scores(model)
    sample = torch.zeros(2, n_inputs, 64, 64)
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The exporter warns that it is the legacy one and about traced shape arithmetic.
            warnings.simplefilter("ignore")
            torch.onnx.export(scores, (sample,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: axes}, do_constant_folding=True)
    except (TypeError, RuntimeError) as exc:
        raise EngineUnavailable(f"this torch ({torch.__version__}) cannot export the network to ONNX: "
                                f"{exc}. Use the 'eager' or 'compiled' engine.") from exc
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the network's ONNX export is not a valid ONNX graph: {exc}") from exc


def verify_onnx(session: Any, model: nn.Module, n_inputs: int, *, atol: float = 1e-3) -> None:
    """Check an onnxruntime session of an exported graph against the network on a random batch.

    Raises
    ------
    ModelError
        When the scores differ by more than ``atol`` (relative to their largest magnitude).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, n_inputs, 37, 45, generator=g)
    with torch.no_grad():
        want = _folded_scores(model)(x)
    got = torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])
    err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if not err <= atol * max(1.0, float(want.abs().max())):
        raise ModelError(f"the ONNX export of this network does not reproduce it (largest score "
                         f"difference {err:.3g}, shape {list(got.shape)} vs {list(want.shape)}); "
                         "use the 'eager' engine and report the model's architecture.")


def model_label(card: Mapping[str, Any]) -> str:
    """A readable name for cache folders: the card's name, else its architecture."""
    return str(card.get("name") or card.get("arch") or "model")


def onnx_key(digest: str, n_inputs: int, *, opset: int = OPSET) -> dict[str, Any]:
    """The cache key of an exported graph: what the ONNX file depends on."""
    return {"artifact": "onnx", "model_sha256": digest, "torch": torch.__version__, "opset": opset,
            "exporter": "torchscript", "precision": "float32",
            "profile": {"batch": "dynamic", "channels": n_inputs, "height": "dynamic", "width": "dynamic"}}


def cached_onnx(model: nn.Module, card: Mapping[str, Any], cache: EngineCache, *, n_inputs: int,
                opset: int = OPSET, digest: str | None = None) -> CacheEntry:
    """The cache entry of the model's ONNX graph, exported first where there is none."""
    digest = digest or model_digest(model, card)
    key = onnx_key(digest, n_inputs, opset=opset)

    def build(path: Path) -> None:
        export_onnx(model, n_inputs, path, opset=opset)

    _, entry = cache.load_or_build("onnx", model_label(card), key, "model.onnx", build, lambda p: p)
    return entry


def import_onnxruntime():
    """The ``onnxruntime`` module, or EngineUnavailable saying what to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailable(
            "the 'onnxruntime' engine needs the onnxruntime package: pip install onnx onnxruntime "
            "(or onnxruntime-gpu for CUDA), or pip install 'etem-tracker[onnx]'. "
            f"({type(exc).__name__}: {exc})") from exc
    return onnxruntime
