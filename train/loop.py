"""Training a column-segmentation network on simulated images, and packing it as a model bundle.

Data are made on the fly (Madsen et al. 2018): exit waves computed once per structure
(:mod:`etem.simulate.waves`) go through randomized optics, dose noise and geometry for every
sample (:func:`etem.simulate.augment.training_batch`); the labels are Gaussian maps per class
plus a background channel. Inputs are normalized exactly as the tracker will normalize frames
(:class:`etem.tracker.preprocess.Preprocessor`, the card's ``normalization``), so what the
network sees at training and at run time is the same.

Loss: cross-entropy between the softmax output and the soft label maps. Validation: a fixed
held-out set (other structures, fixed draws) scored as the tracker would score it — columns
located on the probability maps and matched to the true ones within 1 Å (F1, ID-precision,
ID-recall, RMS). The best validation F1 is kept and written as a bundle (safetensors + card with
how it was made and what it scored).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

log = logging.getLogger("etem.train")

__all__ = ["TrainConfig", "train", "evaluate_model"]


@dataclass
class TrainConfig:
    """How a model is trained (everything else comes from the wave set and the optics preset)."""

    arch: str = "fusionnet"
    arch_args: dict[str, Any] = field(default_factory=lambda: {"width": 16, "depth": 3})
    size: int = 128                 #: training image side [px]
    sampling_A: float = 0.2         #: image pixel size [Å/px]
    label_sigma_A: float = 0.5      #: label Gaussian width [Å]
    preset: str | None = "au"       #: optics preset (etem.simulate.optics.PRESETS)
    #: overrides of the preset's ranges, e.g. {"defocus_A": [-150, 50]} (OpticsRanges.from_dict)
    optics: dict[str, Any] = field(default_factory=dict)
    imaging: str = "hrtem"          #: "hrtem" or "haadf"
    batch: int = 8
    steps: int = 600
    lr: float = 2e-3
    foreground_weight: float = 5.0  #: weight of foreground pixels in the loss (columns are few)
    n_validation: int = 16
    validate_every: int = 100
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


def _batch(waves, idx: Sequence[int], cfg: TrainConfig, gen: torch.Generator, n_classes: int):
    """One augmented batch from the waves ``idx`` (all waves of a batch share their size)."""
    from etem.simulate.augment import AugmentConfig, training_batch
    from etem.simulate.labels import pad_columns
    from etem.simulate.optics import OpticsRanges, haadf_object

    ranges = OpticsRanges.from_dict({**({"preset": cfg.preset} if cfg.preset else {}), **cfg.optics})
    aug = AugmentConfig(out_shape=(cfg.size, cfg.size), out_sampling_A=cfg.sampling_A, n_classes=n_classes,
                        sigma_A=cfg.label_sigma_A)
    images, labels, tables = [], [], []
    for i in idx:  # waves differ in size: one at a time, then stacked
        w = waves[i]
        src = torch.from_numpy(w.wave)[None].to(cfg.device)
        if cfg.imaging == "haadf":
            pts = torch.tensor(w.columns_px()[["y", "x"]].to_numpy())[None]
            src = haadf_object(pts, torch.tensor(w.columns["n_atoms"].to_numpy(), dtype=torch.float32)[None],
                               shape=w.wave.shape, sampling_A=w.sampling_A[0]).to(cfg.device)
        pts, cls = pad_columns([w.columns], sampling_A=w.sampling_A, device=cfg.device)
        b = training_batch(src, pts, cls, sampling_A=w.sampling_A, energy_eV=w.energy_eV, generator=gen,
                           ranges=ranges, config=aug, mode=cfg.imaging)
        images.append(b.images)
        labels.append(b.labels)
        tables.append(b.positions_table().assign(frame=len(tables)))
    return torch.cat(images), torch.cat(labels), pd.concat(tables, ignore_index=True)


def _normalize(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    from etem.tracker.preprocess import PreprocessConfig, Preprocessor

    pre = Preprocessor(PreprocessConfig(target_sampling=cfg.sampling_A, normalize="local"), device=images.device)
    out, _ = pre([im.cpu().numpy() for im in images], [cfg.sampling_A] * len(images))
    return out


@torch.no_grad()
def evaluate_model(model: nn.Module, images: torch.Tensor, truth: pd.DataFrame, sampling_A: float,
                   threshold: float = 0.5) -> dict[str, float]:
    """Columns located on the model's maps, scored against the truth within 1 Å."""
    from etem.tracker.evaluate import score_columns
    from etem.tracker.locate import LocateConfig, locate

    model.eval()
    probs = torch.softmax(model(images), dim=1)
    cols = locate(probs, LocateConfig(threshold=threshold, min_distance_px=max(1, int(1.2 / sampling_A))))
    found = pd.concat([c.assign(frame=i) for i, c in enumerate(cols)], ignore_index=True)
    s = score_columns(found, truth, radius_px=1.0 / sampling_A, sampling=sampling_A)
    return {k: float(s[k]) for k in ("f1", "precision", "recall", "rms_A")}


def train(wave_set: str | Path, out: str | Path, cfg: TrainConfig | None = None, *,
          name: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Train on a wave set and write the bundle ``out`` (``out.safetensors`` + ``out.json``).

    The waves are split: the last ``n_validation`` / 4 structures (at least one) are held out
    for validation. Returns the card written.
    """
    from etem.simulate.waves import load_waves

    from .bundle import save_bundle
    from .networks import build_network, count_parameters

    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    waves = load_waves(wave_set)
    classes = list(waves[0].classes) or ["column"]
    n_hold = max(1, len(waves) // 4)
    train_idx, val_idx = list(range(len(waves) - n_hold)), list(range(len(waves) - n_hold, len(waves)))
    if not train_idx:
        raise ValueError("the wave set needs at least two structures (one is held out for validation)")
    n_classes = len(classes)
    model = build_network(cfg.arch, n_inputs=1, n_classes=n_classes + 1, **cfg.arch_args).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)

    gval = torch.Generator(device=cfg.device).manual_seed(10_000 + cfg.seed)
    val_idx_rep = [val_idx[i % len(val_idx)] for i in range(cfg.n_validation)]
    v_img, _, v_truth = _batch(waves, val_idx_rep, cfg, gval, n_classes)
    v_img = _normalize(v_img[:, :1], cfg)

    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    history, best, best_state, losses = [], -1.0, None, []
    t0 = time.perf_counter()
    it = range(1, cfg.steps + 1)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, unit="step", desc="train")
    for step in it:
        model.train()
        img, lab, _ = _batch(waves, rng.choice(train_idx, cfg.batch), cfg, gen, n_classes)
        x = _normalize(img[:, :1], cfg)
        logp = torch.log_softmax(model(x), dim=1)
        w = 1.0 + (cfg.foreground_weight - 1.0) * (1.0 - lab[:, :1])
        loss = -(w * (lab * logp).sum(1, keepdim=True)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % cfg.validate_every == 0 or step == cfg.steps:
            scores = evaluate_model(model, v_img, v_truth, cfg.sampling_A)
            # the loss is the mean over the steps since the last validation
            history.append({"step": step, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0,
                            **scores})
            log.info("step %d loss %.4f val F1 %.3f", step, history[-1]["loss"], scores["f1"])
            losses = []
            if scores["f1"] > best:
                best, best_state = scores["f1"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    final = evaluate_model(model, v_img, v_truth, cfg.sampling_A)
    out = Path(out)
    card = {
        "name": name or out.name,
        "arch": cfg.arch,
        "arch_args": {"n_inputs": 1, "n_classes": n_classes + 1, **cfg.arch_args},
        "inputs": [0.0],
        "class_names": classes,
        "sampling_A": cfg.sampling_A,
        "normalization": {"method": "local", "sigma_A": 12.0},
        "training": {
            "data": f"exit waves of {len(train_idx)} simulated structures ({waves[0].meta.get('material', '')}), "
                    f"abTEM multislice at {waves[0].sampling_A[0]:.3f} Å/px, {waves[0].energy_eV / 1e3:g} kV; "
                    f"randomized optics (preset {cfg.preset!r}, overrides {cfg.optics}), dose noise and "
                    "geometry per sample",
            "imaging": cfg.imaging, "config": asdict(cfg), "steps": cfg.steps,
            "seconds": round(time.perf_counter() - t0, 1), "parameters": count_parameters(model),
            "machine": f"{platform.machine()}, torch {torch.__version__}, {cfg.device}",
            "date": _dt.date.today().isoformat(), "history": history,
        },
        "evaluation": {"held_out_structures": len(val_idx), "images": cfg.n_validation, "match_radius_A": 1.0,
                       **final},
    }
    card = _finite(card)
    save_bundle(model, out, card)
    return card


def _finite(obj: Any) -> Any:
    """NaN and infinities (an empty score) as None, so the card is valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
