"""etem.train: the networks, their training on simulated exit waves, and model bundles.

The public API::

    from etem.train import TrainConfig, train, load_bundle
    train("waves.h5", "my-model", TrainConfig(arch="fusionnet", max_minutes=20))  # my-model.json, .safetensors
    model, card = load_bundle("my-model")          # or a bundled model by name: load_bundle("au-hrtem")
    net = build_network("msdnet", depth=100)       # FusionNet, UNet, MSDNet

The names are imported when first used (torch takes seconds to load).
"""
from __future__ import annotations

from etem.tracker.lazy import lazy_names

_WHERE = {
    "TrainConfig": ".loop", "train": ".loop", "checkpoint_paths": ".loop",
    "load_bundle": ".bundle", "save_bundle": ".bundle", "bundled_models": ".bundle", "choose_model": ".bundle",
    "FusionNet": ".networks", "UNet": ".networks", "MSDNet": ".networks", "build_network": ".networks",
    "fold_batchnorm": ".networks",
    "wave_sweep": ".sweep", "run_sweep": ".sweep", "trust_ranges": ".sweep",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
