"""Which engine and model read a run's frames: the one named, else the bundled model made for
what the frames are (their file's or stream's metadata, ``--imaging``, ``--material``, the
number of images per frame), else the classical locator; and the contrast (dark columns of
bright-field STEM)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .detect import EngineConfig
from .errors import ConfigError

__all__ = ["resolve_model"]


def resolve_model(model, material: str | None, focal: int = 1):
    """``"auto"`` (HRTEM) or ``"auto:stem"``: the bundled model made for ``material``, that
    imaging mode and ``focal`` images per frame (:func:`etem.train.bundle.choose_model`), or None
    (the classical locator) when none fits; any other value as given."""
    if not isinstance(model, str) or not (model == "auto" or model.startswith("auto:")):
        return model
    from etem.train.bundle import choose_model

    imaging = model.partition(":")[2] or "hrtem"
    if imaging not in ("hrtem", "stem"):
        raise ConfigError(f"model 'auto:{imaging}': the imaging mode must be 'hrtem' or 'stem'")
    if imaging == "hrtem" and material is None:
        raise ConfigError("model 'auto' picks the bundled HRTEM model for the material in view; name it "
                          "(material='au', 'graphene' … / --material); for STEM frames, say so (--imaging stem, "
                          "config.engine.imaging = 'stem'; or model 'auto:stem')")
    chosen = choose_model(material, imaging, n_inputs=focal)
    other = None if chosen else choose_model(material, imaging)
    if other:  # made for these frames but for focal series of another length: say why it is not used
        import json

        from etem.train.bundle import bundle_paths

        n = len(json.loads(bundle_paths(other)[1].read_text(encoding="utf-8")).get("inputs", [0.0]))
        logging.getLogger("etem.engine").warning(
            "the bundled %s model for %s, %s, takes %d image%s per frame; these frames have %d: the classical "
            "locator finds the columns", imaging.upper(), material, other, n, "s" if n != 1 else "", focal)
    logging.getLogger("etem.engine").info("model %r for material %r, %d image(s) per frame: %s", model, material,
                                          focal, chosen or "no bundled model fits; the classical locator")
    return chosen


def _engine_cfg(base: EngineConfig, model, classical: bool, dark: bool, device: str | None, engine: str | None,
                material: str | None = None, focal: int = 1, data: dict | None = None) -> EngineConfig:
    changes: dict[str, Any] = {}
    # what the frames are: as the run says (--imaging), else as the file's metadata say (``data``:
    # its frames' "imaging" and, for STEM, "detector")
    data = data or {}
    if material is None:
        from .files import known_material

        material = known_material(data.get("material"))  # the material in view, as a file or a stream says
    said_by_data = data.get("imaging") if data.get("imaging") in ("hrtem", "stem") else None
    imaging = base.imaging or said_by_data
    if base.imaging and said_by_data and base.imaging != said_by_data:
        logging.getLogger("etem.engine").warning(
            "--imaging %s, but the data say the frames are %s: taken as --imaging (config.engine.imaging) says "
            "(leave it out to go by the data)", base.imaging, said_by_data.upper())
    if model == "auto" and imaging:
        model = f"auto:{imaging}"
    # nothing chosen: the bundled model made for what the frames are (the run's --imaging or the
    # file's metadata) and, for HRTEM, the material; the classical locator where none fits or
    # where the frames' kind is not known
    unchosen = (model is None and not classical and base.model is None and base.kind != "classical"
                and engine != "classical")  # (an engine named without a model runs the model chosen)
    said = "as the run says" if base.imaging else "as the data say"
    if unchosen and (imaging == "stem" or (imaging == "hrtem" and material is not None)):
        model = f"auto:{imaging}"
        logging.getLogger("etem.engine").info("no model given; the frames are %s (%s)", imaging.upper(), said)
    elif unchosen and imaging == "hrtem":
        logging.getLogger("etem.engine").warning(
            "the frames are HRTEM (%s) but no material is named, so the classical locator finds the columns; "
            "--material NAME (material=: au, graphene, mos2 …) takes the bundled HRTEM model made for it", said)
    if data.get("detector") == "bf" and not dark and (
            classical or model == "auto:stem" or (model is None and base.model is None)):
        # bright-field STEM: dark columns. The classical locator looks for them; the bundled STEM
        # model, trained on bright (annular dark-field) columns, is shown the frames negated
        dark = True
        logging.getLogger("etem.engine").info("the file says its frames are bright-field STEM: dark columns")
    if model is not None and not classical:
        model = resolve_model(model, material, focal)
        if model is None:
            classical = True
    if classical and model is not None:
        raise ConfigError("pass either model=... or classical=True, not both")
    if classical:
        changes["kind"] = "classical"
    elif model is not None:
        changes["model"] = str(model)
        if base.kind == "classical":
            changes["kind"] = "auto"
    if engine is not None:
        changes["kind"] = engine
    if dark:
        changes["contrast"] = "dark"
    if device is not None:
        changes["device"] = device
    return dataclasses.replace(base, **changes)
