"""Validation: a model's scores on validation images with columns found as the tracker finds
them, the threshold they choose, and validation frames from simulated movies like the
experiment (``etem train --validate``). They choose the weights a training run keeps and its
threshold (:mod:`etem.train.loop`)."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from etem.tracker.errors import ConfigError

if TYPE_CHECKING:
    from .loop import TrainConfig

__all__ = ["THRESHOLDS", "THRESHOLD_MARGIN", "choose_threshold", "evaluate_model", "movie_validation"]


def movie_validation(paths: Sequence[str | os.PathLike], cfg: TrainConfig) -> tuple[torch.Tensor, pd.DataFrame]:
    """Validation frames from simulated movies: up to ``cfg.n_validation`` frames in all, spread
    evenly over each movie, resampled to ``cfg.sampling_A`` and normalized as the tracker
    prepares them, and their true columns (``frame`` the frame's place in the batch; ``y, x`` in
    the resampled pixels)."""
    from etem.simulate.movie_io import load_movie
    from etem.tracker.preprocess import PreprocessConfig, Preprocessor

    n_in = len(cfg.focal_offsets_A)
    per = max(1, -(-cfg.n_validation // len(paths)))
    pre = Preprocessor(PreprocessConfig(target_sampling=cfg.sampling_A, normalize="local"), device=cfg.device)
    batches, truths, shape = [], [], None
    for path in paths:
        try:
            movie = load_movie(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--validate {path}: not a simulated movie with its truth "
                              f"(etem simulate movie): {exc}") from None
        frames = np.asarray(movie.frames)
        f_in = 1 if frames.ndim == 3 else frames.shape[1]
        if f_in != n_in:
            raise ConfigError(f"--validate {path}: its frames hold {f_in} image(s) each; the network takes {n_in}")
        if (shape or frames.shape[-2:]) != frames.shape[-2:]:
            raise ConfigError(f"--validate {path}: frames of {frames.shape[-2:]} px; the other movies' are {shape}")
        shape = frames.shape[-2:]
        picks = np.unique(np.linspace(0, len(frames) - 1, min(per, len(frames))).round().astype(int))
        batch, scales = pre([frames[i] for i in picks], [movie.sampling] * len(picks))
        pos = movie.truth.positions
        for j, i in enumerate(picks):
            t = pos[pos["frame"] == i]
            yx = (t[["y", "x"]].to_numpy(np.float64) + 0.5) * scales[j] - 0.5  # into the resampled pixels
            truths.append(pd.DataFrame({"frame": len(truths), "y": yx[:, 0], "x": yx[:, 1],
                                        "cls": t["cls"].to_numpy() if "cls" in t else 0}))
        batches.append(batch)
    return torch.cat(batches), pd.concat(truths, ignore_index=True)


@torch.no_grad()
def evaluate_model(model: nn.Module, images: torch.Tensor, truth: pd.DataFrame, sampling_A: float,
                   threshold: float | Sequence[float] = 0.5) -> dict[str, float] | list[dict[str, float]]:
    """Columns located on the model's maps as the tracker locates them (its default
    :class:`~etem.tracker.locate.LocateConfig`), scored against the truth within 1 Å.

    With a sequence of thresholds, one score dict (with its ``threshold``) per threshold, from
    one forward pass.
    """
    from etem.tracker.evaluate import score_columns
    from etem.tracker.locate import LocateConfig, locate

    model.eval()
    probs = model(images)  # probabilities already
    out = []
    for t in ([threshold] if isinstance(threshold, (int, float)) else threshold):
        cols = locate(probs, LocateConfig(threshold=float(t)))
        found = pd.concat([c.assign(frame=i) for i, c in enumerate(cols)], ignore_index=True)
        s = score_columns(found, truth, radius_px=1.0 / sampling_A, sampling=sampling_A)
        out.append({"threshold": float(t), **{k: float(s[k]) for k in ("f1", "precision", "recall", "rms_A")},
                    # (classes: how often a found column's is the true one's; the weights are chosen by F1)
                    **({"cls_accuracy": float(s["cls_accuracy"])} if "cls_accuracy" in s else {})})
    if isinstance(threshold, (int, float)):
        del out[0]["threshold"]
        return out[0]
    return out


#: Column-probability thresholds tried on the validation images after training; the card's
#: ``threshold`` is the one of the best F1 there, and the tracker locates with it.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: How much better in validation F1 a threshold must be than 0.5 to be chosen instead.
THRESHOLD_MARGIN = 0.01


def choose_threshold(model: nn.Module, images: torch.Tensor, truth: pd.DataFrame,
                     sampling_A: float) -> tuple[float, dict[str, float], list[dict[str, float]]]:
    """The threshold of :data:`THRESHOLDS` with the best validation F1, the scores at it, and
    the scores of all of them.

    0.5 stays unless another threshold beats it by at least :data:`THRESHOLD_MARGIN` in F1: a
    few validation images do not tell smaller differences from noise.
    """
    scan = evaluate_model(model, images, truth, sampling_A, THRESHOLDS)
    f1 = np.array([r["f1"] if math.isfinite(r["f1"]) else -1.0 for r in scan])
    i = int(np.argmax(f1))
    best = float(THRESHOLDS[i]) if f1[i] >= f1[THRESHOLDS.index(0.5)] + THRESHOLD_MARGIN else 0.5
    scores = {k: v for k, v in scan[THRESHOLDS.index(best)].items() if k != "threshold"}
    return best, scores, scan
