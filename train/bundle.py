"""Model bundles: the weights of a network (safetensors, never a pickle) plus a JSON model card.

A bundle named ``gold`` is two files side by side::

    gold.safetensors   the state dict
    gold.json          the card

The card holds everything needed to rebuild and use the network::

    {
      "format": "etem-model/1",
      "name": "gold",
      "arch": "fusionnet",                      # a name known to etem.train.networks
      "arch_args": {"n_inputs": 1, "n_classes": 2, "width": 32, "depth": 3},
      "inputs": [0.0],                          # focal offset of each input image [Å]
      "class_names": ["column"],                # foreground classes (K - 1 of them)
      "sampling_A": 0.1,                        # pixel size the model was trained at [Å/px]
      "normalization": {"method": "local", "sigma_A": 12.0},
      "training": {...},                        # free: data, augmentation, optimizer, epochs
      "evaluation": {...},                      # free: F1, recall, precision, RMS [Å] ...
      "sha256": "..."                           # of the .safetensors file
    }

Bundled default models live in the package folder ``etem/tracker/models/``; :func:`load_bundle`
resolves a bare name there and anything that looks like a path to that file.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from etem.tracker.errors import ConfigError, ModelError

from .networks import build_network

__all__ = ["FORMAT", "save_bundle", "load_bundle", "bundled_models", "bundle_base", "bundle_paths", "choose_model", "heldout_f1",
           "is_bundled", "refuse_bundled_card", "missing_trust_note", "say_missing_trust"]

#: Value of the card's ``"format"`` field this code writes and reads.
FORMAT = "etem-model/1"

_SUFFIXES = (".safetensors", ".json")
_REQUIRED = ("inputs", "class_names", "sampling_A", "normalization")


def _models_folder() -> Path | None:
    """The package folder of bundled models, or None where it does not exist."""
    folder = resources.files("etem.tracker") / "models"
    if not folder.is_dir():
        return None
    # Installed from a wheel or in editable mode the package is a folder on disk.
    return Path(str(folder))


def bundled_models() -> dict[str, Path]:
    """The models that ship with the package: name -> path of its card (may be empty)."""
    folder = _models_folder()
    if folder is None:
        return {}
    return {card.stem: card for card in sorted(folder.glob("*.json"))}


def choose_model(material: str | None = None, imaging: str | None = None, task: str = "columns",
                 n_inputs: int | None = None) -> str | None:
    """The bundled model made for ``material`` and ``imaging`` (``hrtem`` or ``stem``), or None.

    A card says what it is for in ``"use": {"materials": [...], "imaging": "hrtem"|"stem",
    "task": "columns"|"heights"}`` (material names as :data:`etem.tracker.lattice.MATERIALS`,
    or a family such as ``au``; no task: ``columns``). A STEM model that lists no material fits
    any material; an HRTEM model must list it, since HRTEM contrast depends on the material.
    ``n_inputs``: only models that take that many images per frame (a focal series of three
    needs a three-image model; a single image a single-image one). Where several fit, the one
    with the best held-out F1 (:func:`heldout_f1`).
    """
    imaging = {"haadf": "stem", "adf": "stem", "tem": "hrtem"}.get(imaging or "hrtem", imaging or "hrtem")
    family = (material or "").lower()
    for prefix in ("au", "srtio3"):
        if family.startswith(prefix):
            family = prefix
    named, generic = [], []  # (held-out F1, name) of the models made for the material / for any
    for name, card_path in bundled_models().items():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        use = card.get("use", {})
        if use.get("imaging") != imaging or use.get("task", "columns") != task:
            continue
        if n_inputs is not None and len(card.get("inputs", [0.0])) != n_inputs:
            continue
        materials = [m.lower() for m in use.get("materials", [])]
        if family and family in materials:
            named.append((heldout_f1(card), name))
        elif not materials and imaging == "stem":
            generic.append((heldout_f1(card), name))
    # several fit: the one that scored best on its held-out images (ties: the first by name)
    best = max(named or generic, key=lambda c: c[0], default=None)
    return best and best[1]


def heldout_f1(card: dict) -> float:
    """A card's mean F1 over the doses of its held-out table (``etem evaluate --write-card``),
    else its training-time held-out F1, else 0."""
    rows = [r for r in card.get("heldout", {}).get("table", [])
            if r.get("method") == card.get("name") and r.get("dose") is not None and r.get("f1") is not None]
    if rows:
        return sum(r["f1"] for r in rows) / len(rows)
    return card.get("evaluation", {}).get("f1") or 0.0


def bundle_base(path: str | os.PathLike) -> Path:
    """A bundle's path without its suffix: ``m``, ``m.json`` and ``m.safetensors`` all give ``m``."""
    base = Path(path)
    return base.with_suffix("") if base.suffix in _SUFFIXES else base


def bundle_paths(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """The (weights, card) file paths a bundle name or path refers to.

    A ``Path`` or a string with a folder separator or a ``.json``/``.safetensors`` suffix is a
    path (the suffix may be left off); any other string is the name of a bundled model.
    """
    is_path = (isinstance(name_or_path, os.PathLike) or "/" in name_or_path or os.sep in name_or_path
               or name_or_path.endswith(_SUFFIXES))
    if is_path:
        base = bundle_base(name_or_path)
    else:
        models = bundled_models()
        if name_or_path not in models:
            have = ", ".join(map(repr, models)) or "none"
            raise ModelError(f"no bundled model named {name_or_path!r} (bundled: {have}); "
                             "give the path of a bundle's .json or .safetensors file instead.")
        base = models[name_or_path].with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_card(card: Mapping[str, Any], n_inputs: int, n_classes: int, where: str) -> None:
    missing = [key for key in _REQUIRED if key not in card]
    if missing:
        raise ModelError(f"{where}: the model card lacks {', '.join(missing)}.")
    inputs, names = card["inputs"], card["class_names"]
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(v, (int, float)) for v in inputs):
        raise ModelError(f"{where}: inputs must be a list of focal offsets [Å]; got {inputs!r}.")
    if not isinstance(names, (list, tuple)) or not all(isinstance(v, str) for v in names):
        raise ModelError(f"{where}: class_names must be a list of strings; got {names!r}.")
    if len(card["inputs"]) != n_inputs:
        raise ModelError(f"{where}: the card lists {len(card['inputs'])} inputs (focal offsets) "
                         f"but the network takes {n_inputs}.")
    if len(card["class_names"]) != n_classes - 1:
        raise ModelError(f"{where}: the card names {len(card['class_names'])} foreground classes "
                         f"but the network has {n_classes} classes including the background "
                         f"(expected {n_classes - 1} names).")


def readable_as_umask(path: str | os.PathLike) -> None:
    """Give a written file the mode the user's umask gives new files (safetensors writes its
    files readable by their owner only: a model on a shared microscope PC is for everyone)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        readable_as_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_bundle(model: nn.Module, path: str | os.PathLike, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``model`` as the bundle ``<path>.safetensors`` + ``<path>.json``.

    Parameters
    ----------
    model
        A network from :mod:`etem.train.networks` (it knows its ``arch`` and ``arch_args``).
    path
        Bundle path without suffix (a ``.json`` or ``.safetensors`` suffix is dropped).
    card
        The model card: ``inputs``, ``class_names``, ``sampling_A`` and ``normalization`` are
        required; ``name`` defaults to the file name; ``training`` and ``evaluation`` to ``{}``.
        ``arch``, ``arch_args``, ``sha256`` and ``format`` are filled in here.

    Returns
    -------
    The paths of the weights and the card.
    """
    base = Path(path)
    if base.suffix in _SUFFIXES:
        base = base.with_suffix("")
    weights_path = base.with_name(base.name + ".safetensors")
    card_path = base.with_name(base.name + ".json")

    arch, arch_args = getattr(model, "arch", None), getattr(model, "arch_args", None)
    if not arch or arch_args is None:
        raise ModelError(f"{type(model).__name__} is not a network from etem.train.networks "
                         "(it has no arch and arch_args); build it with build_network().")
    for key, value in (("arch", arch), ("arch_args", arch_args)):
        if key in card and card[key] != value:
            raise ModelError(f"the card says {key}={card[key]!r} but the model has {value!r}; "
                             f"leave {key} out of the card.")
    _check_card(card, model.n_inputs, model.n_classes, str(card_path))

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    base.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(weights_path, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))

    full = {"name": base.name, "training": {}, "evaluation": {}, **card,
            "arch": arch, "arch_args": arch_args, "sha256": _sha256(weights_path), "format": FORMAT}
    full["inputs"] = [float(v) for v in full["inputs"]]
    full["class_names"] = list(full["class_names"])
    try:
        text = json.dumps(full, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the model card cannot be written as JSON: {exc}") from exc
    _write_atomic(card_path, lambda p: p.write_text(text, encoding="utf-8"))
    return weights_path, card_path


def is_bundled(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` is a model that ships with the package (its card lies in the
    package's models folder), by name or by path."""
    folder = _models_folder()
    if folder is None:
        return False
    try:
        card_path = bundle_paths(name_or_path)[1]
    except ModelError:
        return False
    return card_path.resolve().parent == folder.resolve()


def refuse_bundled_card(name_or_path: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` where ``name_or_path`` is a bundled model: its card is shared by
    everyone on the install (``--model auto`` ranks the models by it), so it is never rewritten;
    the message says how to get a card of one's own."""
    if not is_bundled(name_or_path):
        return
    weights, card = bundle_paths(name_or_path)
    raise ConfigError(f"{card.stem} is a bundled model: its card is shared by everyone on this install and "
                      f"`--model auto` ranks models by it, so etem does not write into it; copy {weights.name} "
                      f"and {card.name} from {card.parent} into a folder of yours and evaluate the copy "
                      f"(etem evaluate ./{card.name} WAVES.h5 --write-card)")


def missing_trust_note(model: str | os.PathLike | None) -> str | None:
    """What to say where a user's model (a bundle path) has no trust ranges in its card: frames
    are then judged by nothing, and a model fed images far from its training (another pixel size,
    dose) finds columns in noise without a word. None for bundled models, the classical locator,
    no model, a card that has them, or one that cannot be read (the engine says why)."""
    if model is None or str(model) in ("auto", "classical", "classical-dark") or is_bundled(model):
        return None
    try:
        card = json.loads(bundle_paths(model)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError, ModelError):
        return None
    if not isinstance(card, dict) or isinstance(card.get("trust"), dict):
        return None
    return (f"no trust ranges in the card of {model}, so no frame is judged out of range: "
            f"etem evaluate {model} WAVES.h5 --sweep --write-card measures them")


def say_missing_trust(model: str | os.PathLike | None, out) -> None:
    """Print :func:`missing_trust_note` (indented, as the tracker's other lines about a result)
    to ``out`` where there is one; the tracker calls it once per command."""
    note = missing_trust_note(model)
    if note:
        print(f"  {note}", file=out)


def update_card(name_or_path: str | os.PathLike, changes: Mapping[str, Any]) -> Path:
    """Set top-level fields of a bundle's card (held-out tables, the threshold …) in place.

    The weights, and so the card's ``sha256``, stay; the card is rewritten atomically. A bundled
    model's card (one in the package) is refused (:func:`refuse_bundled_card`).
    """
    refuse_bundled_card(name_or_path)
    card_path = bundle_paths(name_or_path)[1]
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.update(changes)
    text = json.dumps(card, indent=2, allow_nan=False) + "\n"
    _write_atomic(card_path, lambda p: p.write_text(text, encoding="utf-8"))
    return card_path


def load_bundle(name_or_path: str | os.PathLike, *,
                device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a model bundle: the network in eval mode on ``device`` and its card.

    Parameters
    ----------
    name_or_path
        The name of a bundled model (see :func:`bundled_models`) or the path of a bundle, with
        or without the ``.json``/``.safetensors`` suffix.
    device
        Where to put the network.

    Raises
    ------
    ModelError
        When a file is missing, the card is malformed, the weights do not match the card's hash
        (modified or corrupt), the architecture is unknown or the weights do not fit it.
    """
    weights_path, card_path = bundle_paths(name_or_path)
    for p in (card_path, weights_path):
        if not p.is_file():
            raise ModelError(f"model bundle file not found: {p}")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path}: not a readable JSON model card ({exc}).") from exc
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ModelError(f"{card_path}: not a model card of format {FORMAT!r} (format: {got!r}).")
    for key in ("arch", "arch_args", "sha256"):
        if key not in card:
            raise ModelError(f"{card_path}: the model card lacks {key}.")

    digest = _sha256(weights_path)
    if digest != card["sha256"]:
        raise ModelError(f"{weights_path}: the weights do not match the sha256 in {card_path.name}; "
                         "the file was modified or is corrupt. Restore it or re-export the bundle.")

    if not isinstance(card["arch_args"], dict):
        raise ModelError(f"{card_path}: arch_args must be a JSON object; got {card['arch_args']!r}.")
    try:
        model = build_network(card["arch"], **card["arch_args"])
    except ConfigError as exc:
        raise ModelError(f"{card_path}: cannot build the network: {exc}") from exc
    _check_card(card, model.n_inputs, model.n_classes, str(card_path))

    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights_path}: not a readable safetensors file ({exc}).") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{weights_path}: the weights do not fit a {card['arch']!r} network with "
                         f"{card['arch_args']}: {exc}") from exc
    return model.to(device).eval(), card
