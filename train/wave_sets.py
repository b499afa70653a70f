"""Wave sets for training: the waves of one set or several, which structures train and which
validate, and what a set holds as a model card records it."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

from etem.tracker.errors import ConfigError

__all__ = ["training_waves", "wave_set_summary"]


def _split(n_waves: int) -> tuple[list[int], list[int]]:
    """Training and validation structures of a wave set: the last quarter validates."""
    n_hold = max(1, n_waves // 4)
    return list(range(n_waves - n_hold)), list(range(n_waves - n_hold, n_waves))


def training_waves(wave_sets: str | os.PathLike | Sequence[str | os.PathLike], classes: str):
    """The waves of one wave set or several, classed by ``classes``, with the training and the
    validation structures (indices into the waves): the last quarter of each set (at least one)
    validates, the sets' validation structures taken in turn, so that the validation images show
    every set. Sets of different classes (materials) train together only as one class
    (``classes="column"``)."""
    from etem.simulate.waves import load_waves, relabel

    paths = [wave_sets] if isinstance(wave_sets, (str, os.PathLike)) else list(wave_sets)
    if not paths:
        raise ConfigError("give at least one wave set")
    waves, train_idx, val_by_set = [], [], []
    for path in paths:
        these = relabel(load_waves(path), classes)
        if not these:
            raise ConfigError(f"{path}: the wave set holds no waves")
        if waves and tuple(these[0].classes) != tuple(waves[0].classes):
            raise ConfigError(f"{path}: its classes {list(these[0].classes)} differ from those of {paths[0]} "
                              f"{list(waves[0].classes)}; wave sets of different materials train together "
                              "only as one class (--classes column: a finder for any material)")
        tr, va = _split(len(these))
        train_idx += [len(waves) + i for i in tr]
        val_by_set.append([len(waves) + i for i in va])
        waves += these
    val_idx = [i for turn in itertools.zip_longest(*val_by_set) for i in turn if i is not None]
    return waves, train_idx, val_idx


def wave_set_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What a wave-set file holds, as a card records it: file name, structures, materials, beam
    energies [eV] and the seed it was made with (None where it cannot be told), read from the
    file's attributes without its waves."""
    import h5py

    from etem.simulate.waves import wave_metas

    metas = wave_metas(path)
    with h5py.File(path, "r") as f:
        energies = sorted({float(f[k].attrs["energy_eV"]) for k in f if k.isdigit()})
    # `etem simulate waves --seed S` gives structure i the wave seed S * 1_000_003 + i
    first = metas[0].get("seed") if metas else None
    seed = first // 1_000_003 if isinstance(first, int) and first >= 0 and first % 1_000_003 == 0 else None
    return {"file": Path(path).name, "structures": len(metas),
            "materials": sorted({str(m.get("material", "")).lower() for m in metas} - {""}),
            "energy_eV": energies, "seed": seed}
