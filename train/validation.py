"""Validation frames from simulated movies like the experiment (``etem train --validate``):
they choose the weights a training run keeps and its threshold (:mod:`etem.train.loop`)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from etem.tracker.errors import ConfigError

if TYPE_CHECKING:
    from .loop import TrainConfig

__all__ = ["movie_validation"]


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
