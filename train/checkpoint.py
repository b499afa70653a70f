"""A training run's checkpoint: everything needed to go on exactly where it stopped.

Tensors (weights, the best weights so far, optimizer moments, the torch random stream) go to
``out.ckpt.safetensors``, the rest (step, settings, history, schedule, numpy random stream) to
``out.ckpt.json``; nothing is pickled. :func:`etem.train.loop.train` writes and reads them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from etem.tracker.errors import ConfigError

__all__ = ["checkpoint_paths", "save_checkpoint", "load_checkpoint"]


def checkpoint_paths(out: str | Path) -> tuple[Path, Path]:
    """(tensors, state) files of a run's checkpoint: ``out.ckpt.safetensors`` and ``out.ckpt.json``,
    ``out`` named with or without the bundle's suffix (``m.json``, ``m.safetensors`` and ``m``
    are one bundle, whose checkpoint is ``m.ckpt.*``, as :func:`etem.train.loop.train` writes it)."""
    from .bundle import bundle_base

    out = bundle_base(out)
    return out.with_name(out.name + ".ckpt.safetensors"), out.with_name(out.name + ".ckpt.json")


def save_checkpoint(out: Path, step: int, model: nn.Module, best_state: dict | None, opt, sched,
                     gen: torch.Generator, rng: np.random.Generator, history: list, best: float,
                     losses: list, cfg, *, seconds: float | None = None, resumed: list | None = None) -> None:
    """Write ``out``'s checkpoint: to temporary files, then renamed, so a run killed while
    writing keeps the previous one. ``seconds``: the training time spent up to ``step`` (a
    resumed run goes on counting from it); ``resumed``: the earlier resumes of the run
    (``{"step", "seconds"}`` each)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_state.items()})
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).cpu().contiguous()
    tensors["rng.torch"] = gen.get_state().cpu()
    state = {"step": step, "config": asdict(cfg), "history": history, "best": best, "losses": losses,
             "optimizer_groups": opt_state["param_groups"], "scheduler": sched.state_dict(),
             "numpy_rng": rng.bit_generator.state, "seconds": seconds, "resumed": resumed or []}
    t_path, s_path = checkpoint_paths(out)
    save_file(tensors, str(t_path) + ".tmp")
    from .bundle import readable_as_umask

    readable_as_umask(str(t_path) + ".tmp")
    Path(str(s_path) + ".tmp").write_text(json.dumps(state, default=float))
    os.replace(str(t_path) + ".tmp", t_path)
    os.replace(str(s_path) + ".tmp", s_path)


def load_checkpoint(out: Path, model: nn.Module, opt, sched, gen: torch.Generator, rng: np.random.Generator,
                     cfg) -> dict[str, Any]:
    """Restore the model, optimizer, schedule and random streams in place from ``out``'s
    checkpoint, refusing one made with other settings; returns the step, history, best score,
    losses and best weights to go on with, the training time spent up to the checkpoint
    (``seconds``: None in checkpoints written before it was stored) and the earlier resumes."""
    from safetensors.torch import load_file

    t_path, s_path = checkpoint_paths(out)
    if not (t_path.is_file() and s_path.is_file()):
        raise ConfigError(f"no checkpoint to resume from: {t_path.name} and {s_path.name} are not both there")
    state = json.loads(s_path.read_text())

    def as_json(c) -> dict:  # as the checkpoint stores it (tuples as lists)
        return json.loads(json.dumps(asdict(c), default=float))

    now = as_json(cfg)
    # settings added since the checkpoint was written count as their defaults
    then = {**as_json(type(cfg)()), **state["config"]}
    if then != now:
        changed = sorted(k for k, v in now.items() if then.get(k) != v)
        raise ConfigError(f"the checkpoint was made with other settings ({', '.join(changed)}); "
                          "resume with the settings it was started with")
    tensors = load_file(str(t_path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state["optimizer_groups"]})
    sched.load_state_dict(state["scheduler"])
    gen.set_state(tensors["rng.torch"])
    rng.bit_generator.state = state["numpy_rng"]
    return {"step": state["step"], "history": state["history"], "best": state["best"],
            "losses": state["losses"], "best_state": best_state, "seconds": state.get("seconds"),
            "resumed": state.get("resumed", [])}
