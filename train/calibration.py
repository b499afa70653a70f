"""Calibration images for a model's int8 graph: simulated images of the kind it was trained on.

Drawn as the held-out images are (:func:`etem.train.assess.heldout_images`: the model card's
training optics, pixel size, imaging mode and focal series) from exit waves the model was not
trained on, at doses over the range the tracker meets, and written as a calibration file
(:func:`etem.tracker.engines.quantize.save_calibration`) that the onnxruntime engine measures
the int8 graph's ranges on. ``etem engine calibrate MODEL WAVES [WAVES ...] -o FILE``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from etem.tracker.engines.quantize import calibration_file, save_calibration
from etem.tracker.errors import ConfigError

from .assess import heldout_images

__all__ = ["DOSES", "calibration_images", "write_calibration"]

#: doses of the calibration images [e/Å²]: the held-out tables' range
DOSES = (100.0, 300.0, 1000.0, 3000.0, 10000.0)


def calibration_images(card: dict, wave_sets: Sequence[str | os.PathLike], *, per_dose: int = 2, size: int = 192,
                       doses: Sequence[float] = DOSES, seed: int = 7) -> np.ndarray:
    """``[N, H, W]`` (``[N, F, H, W]`` for a focal series) images as recorded, ``per_dose`` at
    each dose, taken in turn from each wave set."""
    if per_dose < 1 or size < 32:
        raise ConfigError(f"per_dose must be >= 1 and size >= 32 px; got {per_dose} and {size}.")
    if not wave_sets:
        raise ConfigError("give at least one wave set (etem simulate waves) to draw the calibration images from.")
    training = card.get("training", {}).get("config", {})
    sampling = card.get("sampling_A")
    if sampling is None:
        raise ConfigError("the model's card gives no pixel size (sampling_A).")
    from etem.simulate.waves import load_waves

    counts = [len(load_waves(w)) for w in wave_sets]
    want = {}  # (wave set, dose index) -> structure indices, each image a different structure where there are enough
    for d in range(len(doses)):
        for k in range(per_dose):
            i = d * per_dose + k
            w = i % len(wave_sets)
            want.setdefault((w, d), []).append((i // len(wave_sets)) % counts[w])
    out = []
    for (w, d), picks in sorted(want.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        images, _ = heldout_images(wave_sets[w], dose=float(doses[d]), n=max(picks) + 1, size=size,
                                   sampling_A=float(sampling), preset=training.get("preset"),
                                   optics=training.get("optics", {}), imaging=training.get("imaging", "hrtem"),
                                   focal_offsets_A=tuple(card.get("inputs", [0.0])), seed=seed + d,
                                   classes=card.get("classes_by", "species"))
        out.extend(images[j] for j in picks)
    return np.stack(out)


def write_calibration(model: str | os.PathLike, wave_sets: Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                      *, per_dose: int = 2, size: int = 192, doses: Sequence[float] = DOSES, seed: int = 7) -> Path:
    """Draw the calibration images of ``model`` (a bundled name or a bundle path) and write them
    to ``output`` (default: ``NAME.calib.npz`` beside the bundle)."""
    from .bundle import bundle_paths, load_bundle

    _, card = load_bundle(model)
    images = calibration_images(card, wave_sets, per_dose=per_dose, size=size, doses=doses, seed=seed)
    out = Path(output) if output is not None else calibration_file(bundle_paths(model)[1])
    meta = {"model": str(card.get("name") or model), "wave_sets": [Path(w).name for w in wave_sets],
            "doses": list(doses), "per_dose": per_dose, "seed": seed,
            "drawn": "etem engine calibrate: the card's training optics, as the held-out images"}
    return save_calibration(out, images, float(card["sampling_A"]), meta)
