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

import contextlib
import datetime as _dt
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from etem.tracker.errors import ConfigError

from .checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from .validation import THRESHOLDS, choose_threshold, evaluate_model, movie_validation  # noqa: F401 (re-exported)
from .wave_sets import training_waves, wave_set_summary  # noqa: F401 (re-exported)

log = logging.getLogger("etem.train")

__all__ = ["TrainConfig", "train", "evaluate_model", "checkpoint_paths"]


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
    #: defocus offsets of the input images [Å]: one per network input (a focal series)
    focal_offsets_A: tuple[float, ...] = (0.0,)
    weight_decay: float = 1e-4
    #: mixed precision: "auto" (bf16 on CUDA, off on the CPU), "off", "bf16", "fp16"
    amp: str = "auto"
    #: write the whole training state every this many steps (0: never) for resume
    checkpoint_every: int = 0
    #: what the classes are: "species" (as the wave set stores them) or "height" (atoms per
    #: column, "1" .. "10"; Madsen et al. 2018, §4.3)
    classes: str = "species"
    #: a time budget [min]: train until it is spent (``steps`` stays an upper bound) with the
    #: learning-rate schedule spread over it; None: exactly ``steps`` steps
    max_minutes: float | None = None
    #: samples drawn from each wave of a batch (each its own microscope and geometry): fewer
    #: waves per step, much less per-sample work on a GPU; ``batch`` must be a multiple of it
    samples_per_wave: int = 1
    #: fraction of the training waves drawn (each with its ``samples_per_wave`` samples) that are
    #: replaced by vacuum: a flat exit wave (HRTEM) or an empty object (HAADF) with no columns,
    #: imaged with the same random optics and shot noise. The structures' cells hold only a few
    #: Å of vacuum around each particle or flake, so without these a network never sees a crop
    #: of noise alone. 0: none (as every bundled model was trained; on the MSD-net 0.15 did not
    #: remove its false columns in a resampled movie's vacuum, docs/models.md).
    vacuum_fraction: float = 0.0
    #: fraction of the drawn waves whose samples are taken by a camera with pixels
    #: ``coarse_factor`` (a uniform range) times ``sampling_A`` and enlarged onto the training
    #: grid by bilinear interpolation, as the tracker enlarges frames taken coarser than its
    #: model (AugmentConfig.coarse_fraction). 0: none.
    coarse_fraction: float = 0.0
    coarse_factor: tuple[float, float] = (1.5, 2.5)
    #: start from this trained model's weights (a bundled name or a bundle path) instead of
    #: random ones: fine-tuning. Its network, inputs and classes must be the run's; its own
    #: validation F1 on the run's validation images is the score the bundle must beat.
    init: str | None = None
    #: simulated movies (``etem simulate movie``: frames and their true columns) that choose the
    #: weights kept and the threshold, in place of the wave sets' validation images: validation
    #: on frames like the experiment's (its microscope, particle size, dose). Up to
    #: ``n_validation`` frames in all, spread over each movie. (): the wave sets' images.
    validate_movies: tuple[str, ...] = ()
    #: what chooses the weights kept: "f1", the validation F1 (the movies' with
    #: ``validate_movies``); "classes", that F1 times the class accuracy of the columns found
    #: (for models whose classes matter as much as finding, e.g. column heights)
    select: str = "f1"


#: What ``TrainConfig.select`` may name.
SELECT = ("f1", "classes")


def selected(scores: dict[str, Any]) -> float:
    """The score that chooses the weights kept, from one validation's scores (a history row):
    ``select_score`` where the run chose by classes too, else the movies' F1 (``select_f1``)
    where it validated on movies, else the F1."""
    return scores.get("select_score", scores.get("select_f1", scores["f1"]))


def _one_cycle(p: float, pct_start: float = 0.15, div: float = 25.0, final_div: float = 1e4) -> float:
    """The learning-rate factor of a one-cycle schedule (as torch's OneCycleLR: cosine up from
    1/div over the first ``pct_start``, then cosine down to 1/(div * final_div)) at progress ``p``
    in [0, 1] of the run."""
    import math

    lo, end = 1.0 / div, 1.0 / (div * final_div)
    if p < pct_start:
        return lo + (1.0 - lo) * (1 - math.cos(math.pi * p / pct_start)) / 2
    q = min(1.0, (p - pct_start) / (1.0 - pct_start))
    return end + (1.0 - end) * (1 + math.cos(math.pi * q)) / 2


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a torch device that this torch can
    use, or a :class:`ConfigError` saying why not (as ``etem find --device`` says it)."""
    from etem.tracker.engines import resolve_device

    dev = resolve_device(device)  # the tracker's parsing and its message for a bad name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: this torch ({torch.__version__}) has no CUDA GPU available; use "
                              "--device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: there are {torch.cuda.device_count()} CUDA GPUs "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"--device {device}: this torch cannot use it ({exc}); use --device cpu or cuda") from None
    return dev


def _stop_all(mine: bool, world: int, device: torch.device) -> bool:
    """Under torchrun every process stops at the same step: when any of them has spent the budget."""
    if world == 1:
        return mine
    import torch.distributed as dist

    flag = torch.tensor([1.0 if mine else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _batch(waves, idx: Sequence[int], cfg: TrainConfig, gen: torch.Generator, n_classes: int, *,
           noise: bool = True, per_wave: int = 1, cache: dict | None = None, tables: bool = True,
           vacuum: Sequence[bool] | None = None, drawn: list | None = None):
    """One augmented batch from the waves ``idx``, ``per_wave`` samples of each (each its own
    microscope and geometry); ``noise=False``: the images before the shot noise (intensity, mean
    about 1). ``cache`` keeps each wave's source and columns on the device between calls;
    ``tables=False`` skips the table of true columns (training does not read it). ``vacuum``:
    per entry of ``idx``, whether to image vacuum instead of that wave (a flat wave or an empty
    object of its size and sampling, no columns; see ``TrainConfig.vacuum_fraction``). ``drawn``:
    a list that gets each sample's microscope (one dict of optics parameters per sample)."""
    from etem.simulate.augment import AugmentConfig, training_batch
    from etem.simulate.optics import OpticsRanges

    ranges = OpticsRanges.from_dict({**({"preset": cfg.preset} if cfg.preset else {}), **cfg.optics})
    aug = AugmentConfig(out_shape=(cfg.size, cfg.size), out_sampling_A=cfg.sampling_A, n_classes=n_classes,
                        sigma_A=cfg.label_sigma_A, focal_offsets_A=tuple(cfg.focal_offsets_A), noise=noise,
                        coarse_fraction=cfg.coarse_fraction, coarse_factor=tuple(cfg.coarse_factor))
    cache = {} if cache is None else cache
    images, labels, found = [], [], []
    for j, i in enumerate(idx):  # waves differ in size: one at a time, then stacked
        w = waves[i]
        if i not in cache:
            cache[i] = _source(w, cfg)
        src, pts, cls = cache[i]
        if vacuum is not None and vacuum[j]:
            src = torch.ones_like(src) if cfg.imaging != "haadf" else torch.zeros_like(src)
            cls = torch.full_like(cls, -1)
        if per_wave > 1:
            src, pts, cls = (t.expand(per_wave, *t.shape[1:]) for t in (src, pts, cls))
        b = training_batch(src, pts, cls, sampling_A=w.sampling_A, energy_eV=w.energy_eV, generator=gen,
                           ranges=ranges, config=aug, mode=cfg.imaging)
        images.append(b.images)
        labels.append(b.labels)
        if drawn is not None:
            from dataclasses import fields as _fields

            values = {f.name: getattr(b.params, f.name).cpu().numpy() for f in _fields(b.params)}
            drawn += [{k: float(v[i]) for k, v in values.items()} for i in range(len(b.images))]
        if tables:  # samples numbered through the batch
            t = b.positions_table()
            found.append(t.assign(frame=t["frame"] + per_wave * len(found)))
    return torch.cat(images), torch.cat(labels), pd.concat(found, ignore_index=True) if tables else None


def _source(w, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A wave's imaging source on the device (the exit wave, or the HAADF object made from its
    atoms) and its padded columns: ``[1, H, W]``, ``[1, P, 2]``, ``[1, P]``."""
    from etem.simulate.labels import pad_columns

    src = w.haadf_object(cfg.device) if cfg.imaging == "haadf" else torch.from_numpy(w.wave)[None].to(cfg.device)
    pts, cls = pad_columns([w.columns], sampling_A=w.sampling_A, device=cfg.device)
    return src, pts, cls


def _normalize(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    from etem.tracker.preprocess import PreprocessConfig, Preprocessor

    pre = Preprocessor(PreprocessConfig(target_sampling=cfg.sampling_A, normalize="local"), device=images.device)
    out, _ = pre([im.cpu().numpy() for im in images], [cfg.sampling_A] * len(images))
    return out


def _validation_images(waves, val_idx: list[int], cfg: TrainConfig, n_classes: int):
    """The fixed validation images (normalized) and their true columns, drawn from their own seed."""
    gval = torch.Generator(device=cfg.device).manual_seed(10_000 + cfg.seed)
    val_idx_rep = [val_idx[i % len(val_idx)] for i in range(cfg.n_validation)]
    v_img, _, v_truth = _batch(waves, val_idx_rep, cfg, gval, n_classes)
    return _normalize(v_img, cfg), v_truth


def retune_threshold(bundle: str | os.PathLike, wave_set: str | os.PathLike | Sequence[str | os.PathLike]) -> float:
    """Choose a trained bundle's threshold again on the validation images its training used
    (``wave_set`` must be the one it was trained on, or the same sets in the same order), and
    store it in the card.

    For bundles made before training chose thresholds; the weights do not change.
    """
    from .bundle import load_bundle, update_card

    model, card = load_bundle(bundle)
    cfg = replace(TrainConfig(**card["training"]["config"]), device="cpu")
    waves, _, val_idx = training_waves(wave_set, cfg.classes)
    images, truth = _validation_images(waves, val_idx, cfg, len(waves[0].classes) or 1)
    threshold, scores, scan = choose_threshold(model, images, truth, cfg.sampling_A)
    update_card(bundle, _finite({"threshold": threshold,
                                 "evaluation": {**card.get("evaluation", {}), **scores, "threshold_scan": scan}}))
    return threshold


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _autocast(cfg: TrainConfig, device: torch.device):
    """The autocast context of ``cfg.amp`` ("auto": bf16 on CUDA, off on the CPU)."""
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext(), None
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"amp must be 'auto', 'off', 'bf16' or 'fp16'; got {cfg.amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


def train(wave_set: str | Path | Sequence[str | Path], out: str | Path, cfg: TrainConfig | None = None, *,
          name: str | None = None, progress: bool = False, resume: bool = False,
          on_step: Callable[[int, float], None] | None = None, overwrite: bool = True) -> dict[str, Any] | None:
    """Train on a wave set (or several: :func:`training_waves`) and write the bundle ``out``
    (``out.safetensors`` + ``out.json``).

    The waves are split: the last quarter of the structures of each set (at least one) is held
    out for validation. Every ``cfg.checkpoint_every`` steps the whole state (weights, optimizer,
    schedule, random streams, history) is written to ``out.ckpt.*``; ``resume=True`` goes on
    from there and gives the same model as an uninterrupted run. Under ``torchrun`` each process
    trains on its own random samples and gradients are averaged (DistributedDataParallel);
    process 0 validates, writes checkpoints and the bundle. ``on_step(step, loss)`` is called
    after every step. ``overwrite=False`` refuses to start where a bundle or checkpoint is
    already at ``out`` (unless resuming); with ``overwrite=True`` an old checkpoint there is
    removed before the first step. Returns the card written (``None`` on processes other than 0).
    """
    from etem.simulate.augment import AugmentConfig

    from .bundle import bundle_base, save_bundle
    from .networks import build_network, count_parameters

    out = bundle_base(out)  # -o m.json: the bundle m.json + m.safetensors and the checkpoint m.ckpt.*
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, local_rank = _distributed()
    device = usable_device(cfg.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dcfg = cfg if str(device) == cfg.device else replace(cfg, device=str(device))
    torch.manual_seed(cfg.seed)
    paths = [wave_set] if isinstance(wave_set, (str, os.PathLike)) else list(wave_set)
    waves, train_idx, val_idx = training_waves(paths, cfg.classes)
    classes = list(waves[0].classes) or ["column"]
    if not train_idx:
        names = ", ".join(Path(p).name for p in paths)
        raise ConfigError(f"{names}: {len(waves)} structure{'s' if len(waves) != 1 else ''}, all held out for "
                          "validation; training needs at least two per wave set (make more with "
                          "`etem simulate waves -n 8`)")
    materials = sorted({str(w.meta.get("material", "")).lower() for w in waves} - {""})
    n_classes = len(classes)
    n_inputs = len(cfg.focal_offsets_A)
    model = build_network(cfg.arch, n_inputs=n_inputs, n_classes=n_classes + 1, **cfg.arch_args).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget_s = None if cfg.max_minutes is None else 60.0 * float(cfg.max_minutes)
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"max_minutes must be a positive time, got {cfg.max_minutes!r}")
    spent = [0.0]  # fraction of the time budget, where there is one (read by its schedule)
    per_wave = int(cfg.samples_per_wave)
    if per_wave < 1 or cfg.batch % per_wave:
        raise ConfigError(f"samples_per_wave must divide the batch ({cfg.batch}); got {cfg.samples_per_wave!r}")
    p_vac = float(cfg.vacuum_fraction)
    if not 0.0 <= p_vac < 1.0:
        raise ConfigError(f"vacuum_fraction must be at least 0 and below 1; got {cfg.vacuum_fraction!r}")
    AugmentConfig(coarse_fraction=cfg.coarse_fraction, coarse_factor=tuple(cfg.coarse_factor))  # checked first
    if cfg.select not in SELECT:
        raise ConfigError(f"select must be one of {', '.join(SELECT)}; got {cfg.select!r}")
    if cfg.select == "classes" and n_classes < 2:
        raise ConfigError(f"select 'classes' chooses the weights by class accuracy too, but the model has one class "
                          f"({classes[0]}); use 'f1', or train classes (--classes species or height)")
    if cfg.n_validation < 1:
        raise ConfigError(f"n_validation must be at least 1; got {cfg.n_validation!r}")
    if not resume:
        _clear_output(out, overwrite, rank)
    cache: dict = {}  # each training wave's source and columns, on the device once
    if budget_s is None:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: _one_cycle(spent[0]))
    autocast, scaler = _autocast(cfg, device)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    if rank == 0:
        v_img, v_truth = _validation_images(waves, val_idx, dcfg, n_classes)
        # what chooses the weights kept and the threshold: the wave sets' validation images, or
        # frames of simulated movies like the experiment (--validate)
        s_img, s_truth = (movie_validation(cfg.validate_movies, dcfg) if cfg.validate_movies
                          else (v_img, v_truth))

    def validate() -> dict[str, float]:
        scores = evaluate_model(model, v_img, v_truth, cfg.sampling_A)
        if cfg.validate_movies:  # the movies' F1 chooses; the wave sets' is kept beside it
            m = evaluate_model(model, s_img, s_truth, cfg.sampling_A)
            scores = {**{f"movie_{k}": v for k, v in m.items()}, **scores, "select_f1": m["f1"]}
        if cfg.select == "classes":  # finding and classing together: F1 x class accuracy
            pre = "movie_" if cfg.validate_movies else ""
            acc = scores.get(f"{pre}cls_accuracy", float("nan"))
            # (no column matched: no class right either)
            scores["select_score"] = scores[f"{pre}f1"] * acc if math.isfinite(acc) else 0.0
        return scores

    # each process draws its own samples
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * rank)
    rng = np.random.default_rng([cfg.seed, rank])
    history, best, best_state, losses, first = [], -1.0, None, [], 1
    start = None
    if cfg.init:
        start = _init_weights(model, cfg, classes)
        if rank == 0 and not resume:  # the starting model's score is the one to beat
            scores = validate()
            history.append({"step": 0, "loss": None, "seconds": 0.0, **scores})
            best, best_state = selected(scores), {
                k: v.detach().clone() for k, v in model.state_dict().items()}
            log.info("starting from %s: val F1 %.3f%s", cfg.init, scores["f1"],
                     f", chosen by {best:.3f}" if best != scores["f1"] else "")
    before = 0.0  # training time spent before this process started (a resumed run's)
    resumed: list[dict[str, Any]] = []  # each resume: the checkpoint's step and the time spent by then
    if resume:
        st = load_checkpoint(out, model, opt, sched, gen, rng, cfg)
        history, best, best_state, losses, first = (st["history"], st["best"], st["best_state"], st["losses"],
                                                    st["step"] + 1)
        # checkpoints written before the time was stored: that of the last validation
        before = st["seconds"] if st["seconds"] is not None else (history[-1]["seconds"] if history else 0.0)
        resumed = [*st["resumed"], {"step": st["step"], "seconds": round(before, 1)}]
        log.info("resumed from the checkpoint at step %d (%.0f s of training before it)", st["step"], before)
    t0 = time.perf_counter() - before
    if budget_s is not None:
        spent[0] = min(1.0, (time.perf_counter() - t0) / budget_s)
    it = range(first, cfg.steps + 1)
    if progress and rank == 0:
        from tqdm import tqdm

        it = tqdm(it, unit="step", desc="train", initial=first - 1, total=cfg.steps if budget_s is None else None)
    last = False
    for step in it:
        last = step == cfg.steps
        if budget_s is not None:  # the schedule follows the time spent; the budget ends the run
            spent[0] = max(step / cfg.steps, min(1.0, (time.perf_counter() - t0) / budget_s))
            last = _stop_all(spent[0] >= 1.0, world, device) or last
        net.train()
        idx = rng.choice(train_idx, cfg.batch // per_wave)
        vac = rng.random(len(idx)) < p_vac if p_vac > 0 else None  # no draw without: older runs unchanged
        img, lab, _ = _batch(waves, idx, dcfg, gen, n_classes, per_wave=per_wave, cache=cache, tables=False,
                             vacuum=vac)
        x = _normalize(img, dcfg)
        with autocast:
            logits = net(x, logits=True)
        logp = torch.log_softmax(logits.float(), dim=1)
        w = 1.0 + (cfg.foreground_weight - 1.0) * (1.0 - lab[:, :1])
        loss = -(w * (lab * logp).sum(1, keepdim=True)).mean()
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sched.step()
        losses.append(loss.item())
        if rank == 0 and (step % cfg.validate_every == 0 or last):
            scores = validate()
            # the loss is the mean over the steps since the last validation
            history.append({"step": step, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0,
                            **scores})
            chosen = selected(scores)
            log.info("step %d loss %.4f val F1 %.3f%s", step, history[-1]["loss"], scores["f1"],
                     f", chosen by {chosen:.3f}" if chosen != scores["f1"] else "")
            losses = []
            if chosen > best:
                best, best_state = chosen, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if rank == 0 and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or last):
            save_checkpoint(out, step, model, best_state, opt, sched, gen, rng, history, best, losses, cfg,
                            seconds=time.perf_counter() - t0, resumed=resumed)
        if on_step is not None:
            on_step(step, losses[-1] if losses else float("nan"))
        if last:
            break
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            return None
    model.load_state_dict(best_state)
    model.eval()
    threshold, final, scan = choose_threshold(model, s_img, s_truth, cfg.sampling_A)
    movies = None
    if cfg.validate_movies:  # the threshold was chosen on the movies' frames; the wave sets' images at it
        movies = {"movies": [Path(p).name for p in cfg.validate_movies], "frames": int(s_img.shape[0]),
                  **final, "threshold_scan": scan}
        final = evaluate_model(model, v_img, v_truth, cfg.sampling_A, threshold)
        scan = None
    card = {
        "name": name or out.name,
        "arch": cfg.arch,
        "arch_args": model.arch_args,  # as the network has them (defaults it filled in too)
        "inputs": list(cfg.focal_offsets_A),
        "class_names": classes,
        "classes_by": cfg.classes,
        "threshold": threshold,
        "sampling_A": cfg.sampling_A,
        "normalization": {"method": "local", "sigma_A": 12.0},
        # what etem.train.bundle.choose_model matches: incoherent (STEM) images look alike across
        # materials, HRTEM images do not
        "use": {"imaging": "stem" if cfg.imaging == "haadf" else "hrtem",
                "materials": [] if cfg.imaging == "haadf" else materials,
                "task": "heights" if cfg.classes == "height" else "columns"},
        "training": {
            "data": (f"fine-tuned from {start['model']} (weights sha256 {start['sha256'][:12]}); " if start else "")
                    + f"exit waves of {len(train_idx)} simulated structures ({_counted(waves, train_idx)}), "
                    f"abTEM multislice at {waves[0].sampling_A[0]:.3f} Å/px, "
                    f"{' and '.join(f'{e / 1e3:g}' for e in sorted({w.energy_eV for w in waves}))} kV; "
                    f"randomized optics (preset {cfg.preset!r}, overrides {cfg.optics}), dose noise and "
                    "geometry per sample"
                    + ("; a flat background of {:g}-{:g} of the brightest column under the noise (HAADF)"
                       .format(*AugmentConfig().haadf_background) if cfg.imaging == "haadf" else "")
                    + _coarse_words(cfg),
            "imaging": cfg.imaging, "config": {**asdict(cfg), "validate_movies": [Path(p).name for p in cfg.validate_movies]}, "steps": history[-1]["step"] if history else cfg.steps,
            "seconds": round(time.perf_counter() - t0, 1), "parameters": count_parameters(model),
            "machine": f"{platform.machine()}, torch {torch.__version__}, {device}"
                       + (f" x {world} processes" if world > 1 else ""),
            "date": _dt.date.today().isoformat(), "history": history,
            # the step whose weights the bundle holds: the best validation score (``select_score``
            # with select="classes", ``select_f1`` with --validate movies), the first to reach it
            "kept_step": next((h["step"] for h in history if selected(h) == best), None),
            "wave_sets": [wave_set_summary(p) for p in paths],
            # a resumed run: the step of each checkpoint it went on from and the training time by
            # then (``seconds`` counts it; the steps redone after a checkpoint count once)
            **({"resumed": resumed} if resumed else {}),
            **({"initialized_from": {**start, "validation_f1": history[0]["f1"]}} if start else {}),
        },
        "evaluation": {"held_out_structures": len(val_idx), "images": cfg.n_validation, "match_radius_A": 1.0,
                       **final, **({"threshold_scan": scan} if scan is not None else {}),
                       **({"movie_validation": movies} if movies else {})},
    }
    card = _finite(card)
    save_bundle(model, out, card)
    return card


def _clear_output(out: Path, overwrite: bool, rank: int = 0) -> None:
    """A run that does not resume starts on a clear ``out``: an existing bundle or checkpoint
    there is refused unless ``overwrite``, and then the old checkpoint is removed (a later
    resume must not go on from the run this one replaces; the bundle is replaced at the end)."""
    from .bundle import bundle_paths

    bundle = [p for p in bundle_paths(out) if p.exists()]
    ckpt = [p for p in checkpoint_paths(out) if p.exists()]
    if not (bundle or ckpt):
        return
    if not overwrite:
        raise ConfigError(f"-o {out}: {', '.join(p.name for p in bundle + ckpt)} already there; give another -o, "
                          f"--overwrite to replace {'them' if len(bundle + ckpt) > 1 else 'it'}"
                          + (", or --resume to go on from the checkpoint" if ckpt else ""))
    if rank == 0:
        for p in ckpt:
            p.unlink(missing_ok=True)


def _init_weights(model: nn.Module, cfg: TrainConfig, classes: list[str]) -> dict[str, Any]:
    """Load ``cfg.init``'s weights into ``model``; what the card records of the starting model."""
    from .bundle import load_bundle

    start, card = load_bundle(cfg.init)
    theirs = (card["arch"], start.arch_args, [float(v) for v in card["inputs"]], list(card["class_names"]))
    ours = (cfg.arch, model.arch_args, [float(v) for v in cfg.focal_offsets_A], list(classes))
    if theirs != ours:
        what = [n for n, a, b in zip(("network", "arch_args", "inputs", "classes"), theirs, ours) if a != b]
        raise ConfigError(f"cannot start from {cfg.init}: its {', '.join(what)} "
                          f"({'; '.join(str(a) for a, b in zip(theirs, ours) if a != b)}) differ from this run's "
                          f"({'; '.join(str(b) for a, b in zip(theirs, ours) if a != b)})")
    model.load_state_dict(start.state_dict())
    t = card.get("training") or {}
    # (a model that was itself fine-tuned: where it started, and so on back to random weights)
    return {"model": card.get("name", str(cfg.init)), "sha256": card["sha256"], "steps": t.get("steps"),
            "date": t.get("date"), **({"initialized_from": t["initialized_from"]} if t.get("initialized_from") else {})}


def _counted(waves, idx: Sequence[int]) -> str:
    """``"au"`` for one material, ``"48 au, 48 mos2"`` for several."""
    from collections import Counter

    n = Counter(str(waves[i].meta.get("material", "")) for i in idx)
    return next(iter(n)) if len(n) == 1 else ", ".join(f"{k} {m}" for m, k in sorted(n.items()))


def _coarse_words(cfg: TrainConfig) -> str:
    """The card's words for ``coarse_fraction`` (none when it is 0)."""
    if not cfg.coarse_fraction > 0:
        return ""
    lo, hi = cfg.coarse_factor
    return (f"; {cfg.coarse_fraction:g} of the waves imaged with pixels {lo:g}-{hi:g} times "
            f"{cfg.sampling_A:g} Å and enlarged bilinearly onto the training grid")


def _finite(obj: Any) -> Any:
    """NaN and infinities (an empty score) as None, so the card is valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
