"""int8 graphs for the onnxruntime engine on CPUs: the exported network quantized statically.

Weights are quantized per output channel (signed 8 bit) and activations per tensor (unsigned 8
bit), between QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer
convolutions. The first and the last convolution stay in float32: they read the normalized
image and write the class scores, and quantizing them moved the columns found most (on
``au-hrtem``'s calibration images the int8 graph's columns matched the float32 graph's with F1
0.85 with them quantized, 0.98 without, at the same speed). The activations' ranges are those
the calibration images produce (min to max): a *calibration file* (``NAME.calib.npz`` beside a
bundle; ``etem engine calibrate`` writes one from simulated exit waves of the kind the model
was trained on).

Integer convolutions pay where the CPU has 8-bit dot-product instructions (AVX512-VNNI,
AVX-VNNI, ARM's dot product): ``au-hrtem`` at 512² on 2 cores of an AVX-512/VNNI machine took
about 22 ms a frame against 50 in float32. Without them they can be slower than float32 (94
against 58 ms on an AVX2 machine), and :func:`cpu_has_vnni` has the log say so.

Quantizing changes the scores a little; the build checks the int8 graph's columns against the
float32 graph's on the calibration images and refuses a graph whose columns agree by less than
``MIN_AGREEMENT`` (F1 within ``AGREEMENT_RADIUS_A``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ModelError

__all__ = ["CALIBRATION_FORMAT", "MIN_AGREEMENT", "calibration_file", "load_calibration", "save_calibration",
           "network_inputs", "quantize_onnx", "column_agreement", "cpu_has_vnni", "RECIPE"]

log = logging.getLogger("etem.engine")

CALIBRATION_FORMAT = "etem-calibration"
#: the int8 graph's columns must match the float32 graph's at least this well (F1) on the calibration images
MIN_AGREEMENT = 0.9
#: a column of one graph matches the other's within this distance [Å]
AGREEMENT_RADIUS_A = 0.5
#: how the int8 graph is made (part of its cache key)
RECIPE = "qdq: weights s8 per channel, activations u8 min-max; first and last convolution float32"


def calibration_file(card_path: str | os.PathLike) -> Path:
    """Where a bundle's calibration images are: ``NAME.calib.npz`` beside ``NAME.json``."""
    p = Path(card_path)
    return p.with_name(p.name[:-len(p.suffix)] + ".calib.npz" if p.suffix else p.name + ".calib.npz")


def save_calibration(path: str | os.PathLike, images: np.ndarray, sampling_A: float,
                     meta: Mapping[str, Any] | None = None) -> Path:
    """Write calibration images: ``images`` ``[N, H, W]`` or ``[N, F, H, W]`` as recorded
    (counts, before any normalization) at ``sampling_A`` Å/px, and what made them (``meta``)."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[0] < 1:
        raise ConfigError(f"calibration images must be [N, H, W] or [N, F, H, W]; got shape {images.shape}.")
    if not np.isfinite(images).all():
        raise ConfigError("calibration images must be finite.")
    if not sampling_A > 0:
        raise ConfigError(f"sampling_A must be a positive pixel size [Å/px]; got {sampling_A!r}.")
    path = Path(path)
    head = {"format": CALIBRATION_FORMAT, "format_version": 1, "sampling_A": float(sampling_A), **dict(meta or {})}
    with open(path, "wb") as fh:
        np.savez_compressed(fh, images=images.astype(np.float16), header=np.array(json.dumps(head)))
    return path


def load_calibration(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration images ``[N, F, H, W]`` float32 and the file's header.

    Raises
    ------
    ConfigError
        When the file is missing, unreadable or not a calibration file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file not found: {path}. Make one with `etem engine calibrate MODEL WAVES -o {path.name}`.")
    try:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(str(z["header"]))
            images = np.asarray(z["images"], dtype=np.float32)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable calibration file ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(head, dict) or head.get("format") != CALIBRATION_FORMAT:
        raise ConfigError(f"{path}: not an {CALIBRATION_FORMAT} file.")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or not np.isfinite(images).all():
        raise ConfigError(f"{path}: the images must be finite [N, H, W] or [N, F, H, W]; got shape {images.shape}.")
    return images, head


def network_inputs(images: np.ndarray, head: Mapping[str, Any], card: Mapping[str, Any], n_inputs: int) -> list[np.ndarray]:
    """Calibration images turned into what the network sees, normalized as the model's card
    says; one ``[1, C, H, W]`` float32 array each."""
    from ..preprocess import global_normalize, local_normalize

    if images.shape[1] != n_inputs:
        raise ConfigError(f"the calibration images have {images.shape[1]} image(s) per frame, the model {n_inputs}.")
    sampling = float(head["sampling_A"])
    want = card.get("sampling_A")
    if want is not None and abs(sampling / float(want) - 1) > 0.01:
        raise ConfigError(f"the calibration images are at {sampling:g} Å/px, the model's pixel size is {want:g} Å/px.")
    norm = card.get("normalization") or {}
    x = torch.from_numpy(images)
    with torch.no_grad():
        if norm.get("method", "local") == "local":
            x = torch.cat([local_normalize(x[i:i + 1], float(norm.get("sigma_A", 12.0)) / sampling)
                           for i in range(len(x))])
        else:
            x = global_normalize(x)
    return [x[i:i + 1].contiguous().numpy() for i in range(len(x))]


def quantize_onnx(fp32_path: str | os.PathLike, inputs: Sequence[np.ndarray], out_path: str | os.PathLike,
                  input_name: str) -> None:
    """Write the int8 (QDQ) graph of the float32 graph ``fp32_path``, calibrated on ``inputs``."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: x} for x in inputs])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="etem-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # (symbolic shape inference cannot follow the encoder-decoder's data-dependent padding)
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
        if not convs:
            raise ModelError("the network's graph has no convolution to quantize.")
        said = io.StringIO()  # (the calibrator prints its progress; stdout is the commands' output)
        with contextlib.redirect_stdout(said):
            quantize_static(str(pre), str(out_path), _Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=[convs[0], convs[-1]])
        log.debug("onnxruntime's quantizer: %s", said.getvalue().strip())


def column_agreement(reference: Any, candidate: Any, inputs: Sequence[np.ndarray], card: Mapping[str, Any],
                     input_name: str, output_name: str) -> float:
    """F1 of the columns ``candidate`` finds against those ``reference`` finds on ``inputs``
    (two onnxruntime sessions; columns read off the maps as the tracker reads them, matched
    within ``AGREEMENT_RADIUS_A``); 1.0 where neither finds any."""
    from ..locate import LocateConfig, locate
    from ..matching import match_within

    threshold = card.get("threshold")
    cfg = LocateConfig(threshold=float(threshold) if threshold is not None else None)
    radius_px = AGREEMENT_RADIUS_A / float(card.get("sampling_A") or 1.0)
    tp = n_ref = n_cand = 0
    for x in inputs:
        tables = []
        for session in (reference, candidate):
            scores = torch.from_numpy(session.run([output_name], {input_name: x})[0])
            tables.append(locate(torch.softmax(scores, dim=1), cfg)[0])
        a, b = (t[["y", "x"]].to_numpy(float) for t in tables)
        n_ref, n_cand = n_ref + len(a), n_cand + len(b)
        if len(a) and len(b):
            tp += len(match_within(a, b, radius_px)[0])
    return 1.0 if n_ref + n_cand == 0 else 2 * tp / (n_ref + n_cand)


def cpu_has_vnni(cpuinfo: str | None = None, machine: str | None = None) -> bool | None:
    """Whether this CPU has 8-bit dot-product instructions (what makes int8 convolutions pay);
    None where that cannot be read (not Linux, no ``/proc/cpuinfo``, another architecture).
    ``cpuinfo``, ``machine``: the text of ``/proc/cpuinfo`` and ``platform.machine()`` to read
    instead of this machine's."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
            break
    if not flags:
        return None
    if machine in ("x86_64", "amd64"):
        return bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"})
    if machine in ("aarch64", "arm64"):
        return "asimddp" in flags
    return None


def check_int8_options(int8: Any, calibration: Any) -> None:
    """ConfigError for int8/calibration options of the wrong type."""
    if not isinstance(int8, bool):
        raise ConfigError(f"int8 must be true or false; got {int8!r}.")
    if calibration is not None and not int8:
        raise ConfigError("calibration is the int8 graph's: give it with int8 = true.")
    if calibration is not None and not isinstance(calibration, (str, os.PathLike)):
        raise ConfigError(f"calibration must be the path of a calibration file; got {calibration!r}.")
