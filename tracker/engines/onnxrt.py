"""The onnxruntime engine: the network exported to ONNX, run by onnxruntime (a fast CPU path).

The graph is exported once per model (and torch version) and kept in the engine cache; batch,
height and width are dynamic, so one graph serves every frame size. On a CUDA device it runs
with onnxruntime-gpu's CUDA execution provider, reading and writing torch CUDA tensors in place.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, EngineUnavailable, ModelError
from . import resolve_device
from .base import check_batch, model_fields
from .cache import CacheEntry, EngineCache, _file_sha256, model_digest
from .export import INPUT, OPSET, OUTPUT, export_onnx, import_onnxruntime, model_label, onnx_key, verify_onnx
from .quantize import (MIN_AGREEMENT, RECIPE, check_int8_options, column_agreement, cpu_has_vnni,
                       load_calibration, network_inputs, quantize_onnx)

__all__ = ["OnnxRuntimeEngine"]

log = logging.getLogger("etem.engine")


class OnnxRuntimeEngine:
    """Run a network with onnxruntime.

    Parameters
    ----------
    model
        A network from ``etem.train.networks``; it is exported with its batch norms folded
        (the caller's module is not changed).
    card
        The model card (see ``etem.train.bundle``).
    device
        ``"cpu"`` (CPUExecutionProvider) or ``"cuda"``/``"cuda:N"`` (CUDAExecutionProvider, which
        needs the onnxruntime-gpu package); ``"auto"``: CUDA when torch sees a GPU.
    threads
        Threads onnxruntime uses inside one convolution (``intra_op_num_threads``); None or 0:
        onnxruntime's choice (one per physical core). The threads sleep between batches rather
        than spin, leaving the cores to the pipeline's other stages.
    cache_dir
        The engine cache's folder (default: ``$ETEM_CACHE_DIR`` or the user cache folder).
    opset
        ONNX opset of the export.
    int8
        Run the network quantized to 8 bits (CPU only; :mod:`.quantize`): about twice as fast
        where the CPU has 8-bit dot-product instructions (VNNI), slower where it has not. The
        int8 graph is built once per model and calibration file, cached beside the float32
        one, and refused where its columns differ from the float32 graph's on the calibration
        images (F1 below ``quantize.MIN_AGREEMENT``).
    calibration
        The calibration file the int8 graph's ranges are measured on (default: the bundle's
        ``NAME.calib.npz``; ``etem engine calibrate`` writes one).

    Attributes
    ----------
    cache_entry
        The cached ONNX graph: ``cache_entry.path`` and whether it came from the cache
        (``cache_entry.hit``) or was just exported.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module, card: Mapping[str, Any], *, device: str | torch.device = "cpu",
                 threads: int | None = None, cache_dir: str | os.PathLike | None = None, opset: int = OPSET,
                 int8: bool = False, calibration: str | os.PathLike | None = None):
        ort = import_onnxruntime()
        check_int8_options(int8, calibration)
        self.device = resolve_device(device)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ConfigError(f"threads must be a non-negative integer (0: onnxruntime's choice); got {threads!r}.")
        if int8 and self.device.type != "cpu":
            raise ConfigError("the int8 graph runs on the CPU (device='cpu'); on a GPU use the compiled or tensorrt engine.")
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise EngineUnavailable("the onnxruntime engine was asked for a CUDA device but torch sees "
                                        "no CUDA GPU; use the CPU (--device cpu, device='cpu').")
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineUnavailable("the onnxruntime engine on CUDA needs onnxruntime-gpu "
                                        "(pip uninstall onnxruntime; pip install onnxruntime-gpu); this "
                                        f"onnxruntime has only {', '.join(ort.get_available_providers())}.")
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", index)
            self._providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        elif self.device.type == "cpu":
            self._providers = ["CPUExecutionProvider"]
        else:
            raise ConfigError(f"the onnxruntime engine runs on 'cpu' or 'cuda'; got device {str(self.device)!r}.")

        self.n_inputs, self.class_names, self.sampling = model_fields(model, card)
        self.card = dict(card)
        self.threads = threads or 0
        self._ort = ort
        self.cache = EngineCache(cache_dir)
        key = onnx_key(model_digest(model, card), self.n_inputs, opset=opset)
        self.int8 = int8
        #: the int8 graph's columns against the float32 graph's on the calibration images (F1),
        #: measured when it was built (None: float32)
        self.agreement: float | None = None

        def build(path: Path) -> None:
            export_onnx(model, self.n_inputs, path, opset=opset)
            verify_onnx(self._session(path, cpu_only=True), model, self.n_inputs)

        self.cache_entry: CacheEntry
        if int8:
            self.session, self.cache_entry = self._int8(card, key, build, calibration)
        else:
            self.session, self.cache_entry = self.cache.load_or_build(
                "onnx", model_label(card), key, "model.onnx", build, self._session)
        log.info("onnxruntime engine: %s %s graph %s (%s)", "cached" if self.cache_entry.hit else "new",
                 "int8" if int8 else "float32", self.cache_entry.path, ", ".join(self.session.get_providers()))

    def _int8(self, card, fp32_key, build_fp32, calibration):
        """The int8 graph's session and cache entry, built from the float32 graph where needed."""
        import onnxruntime

        if calibration is None:
            raise ConfigError("the int8 graph needs calibration images of the kind the model was trained on, and "
                              "this model has none beside it; make them with `etem engine calibrate MODEL WAVES` "
                              "(written beside the bundle as NAME.calib.npz), or give a calibration file as the "
                              "engine option calibration = FILE.")
        calibration = Path(calibration)
        if not calibration.is_file():
            load_calibration(calibration)  # (says what is missing and how to make it)
        label = model_label(card)
        key = {**fp32_key, "precision": "int8", "quantization": RECIPE, "onnxruntime": onnxruntime.__version__,
               "calibration_sha256": _file_sha256(calibration)}
        if cpu_has_vnni() is False:
            log.warning("this CPU has no 8-bit dot-product instructions (VNNI): the int8 graph will likely run "
                        "slower than the float32 one here (94 against 58 ms a 512² frame on an AVX2 machine)")

        def build(path: Path) -> None:
            inputs = network_inputs(*load_calibration(calibration), card, self.n_inputs)
            _, fp32 = self.cache.load_or_build("onnx", label, fp32_key, "model.onnx", build_fp32, self._session)
            quantize_onnx(fp32.path, inputs, path, INPUT)
            agreement = column_agreement(self._session(fp32.path, cpu_only=True), self._session(path, cpu_only=True),
                                         inputs, card, INPUT, OUTPUT)
            path.with_name("int8.json").write_text(json.dumps(
                {"agreement_f1": agreement, "calibration": calibration.name, "images": len(inputs)}) + "\n")
            log.info("int8 graph of %s: its columns match the float32 graph's with F1 %.3f on %d calibration "
                     "images", label, agreement, len(inputs))
            if not agreement >= MIN_AGREEMENT:
                raise ModelError(f"the int8 graph of {label} finds other columns than the float32 one on the "
                                 f"calibration images (F1 {agreement:.3f} < {MIN_AGREEMENT}); run it in float32 "
                                 "(leave out int8), or calibrate it on images closer to its training images.")

        session, entry = self.cache.load_or_build("onnx", label, key, "model.int8.onnx", build, self._session)
        try:
            self.agreement = float(json.loads(entry.path.with_name("int8.json").read_text())["agreement_f1"])
        except (OSError, ValueError, KeyError, TypeError):
            self.agreement = None
        return session, entry

    def _session(self, path: Path, *, cpu_only: bool = False):
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"] if cpu_only else self._providers
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    @property
    def cache_path(self) -> Path:
        """The cached ONNX file this engine runs."""
        return self.cache_entry.path

    def __repr__(self) -> str:
        return (f"OnnxRuntimeEngine({str(self.cache_path)!r}, device={str(self.device)!r}, "
                f"{'int8=True, ' if self.int8 else ''}"
                f"n_inputs={self.n_inputs}, class_names={self.class_names!r})")

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Run one batch of zeros of this size (the first run of a size sets up its buffers)."""
        self.predict(torch.zeros(batch, self.n_inputs, height, width))

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities float32 ``[B, K, H, W]`` on ``self.device`` of a batch ``[B, C, H, W]``."""
        check_batch(batch, self.n_inputs)
        if batch.shape[0] == 0:
            return torch.empty((0, len(self.class_names) + 1, *batch.shape[2:]), device=self.device)
        with torch.no_grad():
            if self.device.type == "cuda":
                scores = self._run_cuda(batch)
            else:
                x = batch.detach().to("cpu", torch.float32).contiguous()
                scores = torch.from_numpy(self.session.run([OUTPUT], {INPUT: x.numpy()})[0])
            return torch.softmax(scores, dim=1).contiguous()

    def _run_cuda(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of a batch with the CUDA execution provider, bound to torch CUDA tensors."""
        x = batch.detach().to(self.device, torch.float32).contiguous()
        b, _, h, w = x.shape
        out = torch.empty((b, len(self.class_names) + 1, h, w), device=self.device, dtype=torch.float32)
        binding = self.session.io_binding()
        index = self.device.index
        binding.bind_input(INPUT, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        # onnxruntime runs on its own stream: the input must be ready before it starts.
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out

    @property
    def cache_hit(self) -> bool:
        """Whether the ONNX graph came from the cache (False: exported when this engine was built)."""
        return self.cache_entry.hit
