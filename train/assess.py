"""How good a model is: held-out simulated images swept over dose, scored as the tracker scores.

The images come from a wave set the model never saw (other structures, other seeds), through
the same randomized optics as training (the card's preset and overrides, or given ranges) but
with the dose fixed per row of the sweep. Each image goes through :func:`etem.tracker.find`
exactly as a user's image would (the model's engine, or the classical locator as the
baseline), and the columns found are matched to the true ones within ``radius_A`` (Wei et al.:
ID-precision, ID-recall, position RMS; F1).

``assess`` gives one row per image and method; :func:`summary` the table per method and dose
(with the mean F1 over doses); :func:`plot` F1 and RMS against dose and the F1 histograms of
Larsen et al. (Fig. 2). ``etem evaluate MODEL WAVES`` runs all three.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from etem.tracker.errors import ConfigError
from etem.tracker.evaluate import MISCOUNT

#: How the miscount columns are headed: atoms off by …
_OFF_BY = dict(zip(MISCOUNT, ("1", "2", "3+")))

__all__ = ["DEFAULT_DOSES", "heldout_images", "assess", "summary", "plot", "CLASSICAL"]

#: Doses of the sweep [e/Å²]: Madsen's 10²–10⁴ range, log-spaced.
DEFAULT_DOSES = (1e2, 3e2, 1e3, 3e3, 1e4)
#: Method names of the classical baseline (bright and dark contrast).
CLASSICAL = ("classical", "classical-dark")


def heldout_images(wave_set: str | Path, *, dose: float, n: int, size: int, sampling_A: float,
                   preset: str | None, optics: dict[str, Any] | None = None, imaging: str = "hrtem",
                   focal_offsets_A: Sequence[float] = (0.0,), seed: int = 0,
                   classes: str = "species", noise: bool = True, microscopes: bool = False):
    """``n`` images ``[n, size, size]`` (``[n, F, size, size]`` for a focal series of F) at
    ``dose`` e/Å² each, and their true columns (frame, y, x, cls; ``classes="height"``: cls is
    the column height class, atoms - 1). ``noise=False``: the images before the shot noise
    (the dose then changes nothing). ``microscopes=True``: also the microscope each image was
    drawn with (a table indexed by frame: defocus_A, Cs_A, focal_spread_A, blur_A, ...; the
    same at every dose for the same seed)."""
    from etem.simulate.waves import load_waves, relabel

    from .loop import TrainConfig, _batch

    waves = relabel(load_waves(wave_set), classes)
    n_classes = len(waves[0].classes) or 1
    cfg = TrainConfig(size=size, sampling_A=sampling_A, preset=preset, imaging=imaging,
                      optics={**(optics or {}), "dose_e_per_A2": [dose, dose]},
                      focal_offsets_A=tuple(focal_offsets_A))
    gen = torch.Generator().manual_seed(seed)
    idx = [i % len(waves) for i in range(n)]
    drawn: list = []
    images, _, truth = _batch(waves, idx, cfg, gen, n_classes, noise=noise, drawn=drawn)
    images = (images[:, 0] if len(focal_offsets_A) == 1 else images).numpy()
    if not microscopes:
        return images, truth
    optics = pd.DataFrame(drawn).drop(columns="dose_e_per_A2").rename_axis("frame")
    return images, truth, optics


def _method_kwargs(method: str) -> dict[str, Any]:
    if method == "classical":
        return {"classical": True}
    if method == "classical-dark":
        return {"classical": True, "dark": True}
    return {"model": method}


def assess(methods: Sequence[str], wave_set: str | Path, *, doses: Sequence[float] = DEFAULT_DOSES,
           n: int = 8, size: int = 256, sampling_A: float | None = None, preset: str | None = None,
           optics: dict[str, Any] | None = None, imaging: str | None = None, radius_A: float = 1.0,
           seed: int = 0, device: str = "cpu", bond_A: float | None = None, border_A: float = 0.0,
           int8: bool = False) -> pd.DataFrame:
    """Score each method on ``n`` held-out images per dose; one row per image and method.

    ``methods``: model names or bundle paths, and ``"classical"`` / ``"classical-dark"``. The
    sampling, optics preset and imaging mode default to the first model's card (its training
    conditions); with only classical methods they must be given. ``bond_A``: also measure, per
    image, the lengths of the bonds (pairs within ±25 % of ``bond_A``) between the found
    columns (``bonds``, ``bond_mean_A``, ``bond_std_A``) and between the true ones
    (``true_bond_std_A``: the floor, 0 on a pristine sheet). ``border_A``: columns, true or found,
    closer than this to the image's edge are not scored (:func:`etem.tracker.evaluate.score_columns`).
    ``int8``: the models run as the onnxruntime engine's int8 graphs (CPU), named "NAME int8".
    """
    from etem.tracker import find
    from etem.tracker.evaluate import score_columns

    card = _first_card(methods)
    training = (card or {}).get("training", {}).get("config", {})
    sampling_A = sampling_A or (card or {}).get("sampling_A")
    if sampling_A is None:
        raise ConfigError("give sampling_A (Å/px): no model card to take it from")
    preset = preset if preset is not None else training.get("preset")
    optics = optics if optics is not None else training.get("optics", {})
    imaging = imaging or training.get("imaging", "hrtem")
    focal = tuple((card or {}).get("inputs", [0.0]))
    classes_by = (card or {}).get("classes_by", "species")
    labels = method_labels(methods)
    run_as: dict[str, Any] = {}
    if int8:
        labels = {m: v if m in CLASSICAL else f"{v} int8" for m, v in labels.items()}
        run_as = {"engine": "onnxruntime", "config": {"engine": {"options": {"int8": True}}}}
    rows = []
    with _no_contrast_advice():  # (advice on --dark is for a user's frames, not held-out ones)
        for dose in doses:
            images, truth, drawn = heldout_images(wave_set, dose=float(dose), n=n, size=size, sampling_A=sampling_A,
                                                  preset=preset, optics=optics, imaging=imaging, focal_offsets_A=focal,
                                                  seed=seed, classes=classes_by, microscopes=True)
            if bond_A is not None:  # the floor, the same for every method
                true_bonds = _bond_stats(truth, sorted(set(truth["frame"])), bond_A, sampling_A)[
                    ["bond_std_A"]].rename(columns={"bond_std_A": "true_bond_std_A"})
            for method in methods:
                # the classical locator looks at the first image of a focal series
                im = images[:, 0] if images.ndim == 4 and method in CLASSICAL else images
                found = find(im, sampling=sampling_A, device=device, focal=1 if im.ndim == 3 else im.shape[1],
                             **_method_kwargs(method), **({} if method in CLASSICAL else run_as))
                # the classical locator finds columns but knows no heights: it is scored as a finder
                per = score_columns(found, truth if method not in CLASSICAL else truth.drop(columns="cls"),
                                    radius_px=radius_A / sampling_A, sampling=sampling_A, per_frame=True,
                                    frame_shape=(size, size), border_px=border_A / sampling_A,
                                    ordinal=classes_by == "height").reset_index()
                if bond_A is not None:
                    per = per.join(_bond_stats(found, per["frame"], bond_A, sampling_A), on="frame")
                    per = per.join(true_bonds, on="frame")
                per = per.join(drawn, on="frame")  # the microscope each image was drawn with
                rows.append(per.assign(method=labels[method], dose=float(dose)))
    out = pd.concat(rows, ignore_index=True)
    shown = _structures(wave_set, n)
    out = out.join(shown.drop(columns=[c for c in shown.columns if c in out.columns]), on="frame")
    out.attrs.update({"sampling_A": sampling_A, "preset": preset, "optics": optics, "imaging": imaging,
                      "classes_by": classes_by,
                      "radius_A": radius_A, "border_A": border_A, "size": size, "n": n, "wave_set": Path(wave_set).name})
    return out



@contextlib.contextmanager
def _no_contrast_advice():
    """Leave out the detector's advice on --dark (a contrast that looks the other way): it is for
    a user's own frames; on held-out images the classical locator runs both ways on purpose."""
    def keep(record: logging.LogRecord) -> bool:
        return "--dark" not in record.getMessage()

    logger = logging.getLogger("etem.detect")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)

def _structures(wave_set: str | Path, n: int) -> pd.DataFrame:
    """Per held-out image (frame): the structure it shows (``structure``, its index in the wave
    set) and that structure's drawn parameters (material, zone axis, tilt, radius …), so the
    scores can be split by them."""
    from etem.simulate.waves import wave_metas

    params = []
    for meta in wave_metas(wave_set):
        p = {"material": meta.get("material", "")}
        p.update({k: ("none" if v is None else v) for k, v in (meta.get("params") or {}).items()
                  if v is None or isinstance(v, (str, int, float, bool))})
        params.append(p)
    return pd.DataFrame([{"structure": i % len(params), **params[i % len(params)]} for i in range(n)])


def _bond_stats(columns: pd.DataFrame, frames: Sequence[int], bond_A: float, sampling_A: float) -> pd.DataFrame:
    """Per frame: number, mean and spread of the bond lengths [Å] between the columns."""
    from etem.tracker.evaluate import bond_lengths

    by_frame = {f: g[["y", "x"]].to_numpy() * sampling_A for f, g in columns.groupby("frame")}
    rows = {}
    for f in frames:
        d = bond_lengths(by_frame.get(f, np.zeros((0, 2))), bond_A)
        rows[f] = {"bonds": d.size, "bond_mean_A": d.mean() if d.size else np.nan,
                   "bond_std_A": d.std() if d.size > 1 else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def _label(method: str) -> str:
    return method if method in CLASSICAL else Path(str(method)).name.removesuffix(".json")


def method_labels(methods: Sequence[str]) -> dict[str, str]:
    """Each method's name in the tables: a model's bundle name, or, where two bundles share a
    name (a fine-tuned copy beside the bundled model), the path as given. The same method
    named twice is refused."""
    methods = [str(m) for m in methods]
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ConfigError(f"{', '.join(twice)} named twice; name each model once")
    short = [_label(m) for m in methods]
    labels = {m: (m.removesuffix(".json") if short.count(s) > 1 else s) for m, s in zip(methods, short)}
    clash = sorted({v for v in labels.values() if list(labels.values()).count(v) > 1})
    if clash:
        raise ConfigError(f"{', '.join(clash)}: two of the models would have the same name in the tables; "
                          "name them by distinct paths")
    return labels


def _first_card(methods: Sequence[str]) -> dict[str, Any] | None:
    from .bundle import bundle_paths

    for m in methods:
        if m not in CLASSICAL:
            return json.loads(bundle_paths(m)[1].read_text())
    return None


def _trained_on(card: dict[str, Any]) -> tuple[set[float] | None, set[str] | None]:
    """The beam energies [eV] and materials of the waves a card's model was trained on (None:
    not recorded): from ``training.wave_sets``, or for cards written before it, the energies in
    ``training.data``'s words and the materials of ``use``."""
    import re

    training = card.get("training") or {}
    sets = training.get("wave_sets")
    if sets:
        return ({float(e) for s in sets for e in s.get("energy_eV", [])} or None,
                {m for s in sets for m in s.get("materials", [])} or None)
    found = re.search(r"(\d[\d.]*(?: and \d[\d.]*)*) kV", training.get("data") or "")
    energies = {float(v) * 1e3 for v in found.group(1).split(" and ")} if found else None
    return energies, {m.lower() for m in (card.get("use") or {}).get("materials", [])} or None


def training_mismatches(methods: Sequence[str], wave_set: str | Path) -> list[str]:
    """One warning line per model that the held-out images of ``wave_set`` do not suit: waves of
    another beam energy or material than it was trained on, other classes than it tells apart,
    or (after the first model, whose card draws the images) another imaging mode. A model that
    takes another number of images per frame than the first is refused (:class:`ConfigError`)."""
    import h5py

    from etem.simulate.waves import height_classes

    from .bundle import bundle_paths
    from .wave_sets import wave_set_summary

    have = wave_set_summary(wave_set)
    with h5py.File(wave_set, "r") as f:
        first = next((f[k] for k in sorted((k for k in f if k.isdigit()), key=int)), None)
        stored = tuple(json.loads(first.attrs["classes"])) if first is not None else ()
        stored_by = json.loads(first.attrs["meta"]).get("classes_by", "species") if first is not None else "species"
    name = Path(wave_set).name
    kv = " and ".join(f"{e / 1e3:g}" for e in have["energy_eV"])
    lines, images = [], None
    for m in methods:
        if m in CLASSICAL:
            continue
        card = json.loads(bundle_paths(m)[1].read_text(encoding="utf-8"))
        label = card.get("name", str(m))
        energies, materials = _trained_on(card)
        stem = (card.get("use") or {}).get("imaging") == "stem"  # images drawn from the atoms: no wave
        by = card.get("classes_by", "species")
        classes = {"column": ("column",), "height": height_classes(len(card["class_names"]))}.get(
            by, stored if stored_by == "species" else None)
        parts, hint = [], ""
        if energies and not stem and set(have["energy_eV"]) - energies:
            mine = " and ".join(f"{e / 1e3:g}" for e in sorted(energies))
            parts.append(f"{kv} kV waves, the model's {mine} kV")
            hint = f" (etem simulate waves --energy {min(energies) / 1e3:g}e3 makes waves like its own)"
        if materials and set(have["materials"]) - materials:
            parts.append(f"{', '.join(have['materials'])}, the model's {', '.join(sorted(materials))}")
            hint = f" (score it on {' or '.join(sorted(materials))} waves)"
        elif classes is not None and list(classes) != list(card["class_names"]):
            parts.append(f"classes {', '.join(classes)}, the model's {', '.join(card['class_names'])}")
        # the held-out images are drawn as the first model's card says (imaging, images per frame)
        n, kind = len(card.get("inputs", [0.0])), (card.get("use") or {}).get("imaging", "hrtem")
        if images is None:
            images = (n, kind)
        else:
            if kind != images[1]:
                parts.append(f"{images[1]} images (drawn for the first model), the model's {kind}")
            if n != images[0]:  # the network cannot take them at all
                raise ConfigError(f"{label} takes {n} image(s) per frame and the held-out images are drawn "
                                  f"as the first model's card says, {images[0]} per frame: evaluate it on its own")
        if parts:
            lines.append(f"warning: {name} is not what {label} was trained on: {'; '.join(parts)}; its scores "
                         f"here do not say how it does on its own kind of images{hint}")
    return lines


def summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per method and dose: mean F1, precision, recall (pooled counts) and RMS; plus the mean over doses.

    Precision, recall and F1 of a row are from the pooled TP/FP/FN of its images (so an image
    with nothing found does not count as NaN); ``f1_mean_image`` is the mean per-image F1, as
    Larsen et al. report it.
    """
    def agg(g: pd.DataFrame) -> pd.Series:
        tp, fp, fn = g["tp"].sum(), g["fp"].sum(), g["fn"].sum()
        p = tp / (tp + fp) if tp + fp else np.nan
        r = tp / (tp + fn) if tp + fn else np.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        # RMS pooled over all matched columns of the group
        se = (g["rms_A"] ** 2 * g["tp"]).sum()
        rms = float(np.sqrt(se / tp)) if tp else np.nan
        f1_img = (2 * g["tp"] / (2 * g["tp"] + g["fp"] + g["fn"]).replace(0, np.nan)).mean()
        out = {"images": len(g), "f1": f1, "precision": p, "recall": r, "rms_A": rms, "f1_mean_image": f1_img}
        for m in miscount:  # pooled over the matched columns of the group
            out[m] = (g[m] * g["tp"]).sum(min_count=1) / tp if tp else np.nan
        if bonds:  # the spread within each image (a scale jitter moves whole images), pooled
            ok = g["bond_std_A"].notna()
            w = g.loc[ok, "bonds"]
            out["bond_std_A"] = float(np.sqrt((g.loc[ok, "bond_std_A"] ** 2 * w).sum() / w.sum())) if w.sum() else np.nan
            out["true_bond_std_A"] = float(np.sqrt((g["true_bond_std_A"] ** 2).mean()))
        return pd.Series(out)

    miscount = [m for m in MISCOUNT if m in per_image.columns]
    bonds = ["bond_std_A", "true_bond_std_A"] if "bond_std_A" in per_image.columns else []
    cols = ["tp", "fp", "fn", "rms_A", *miscount, *(["bonds", *bonds] if bonds else [])]
    table = (per_image.groupby(["method", "dose"], sort=False)[cols].apply(agg).reset_index())
    means = table.groupby("method", sort=False)[["f1", "f1_mean_image"]].mean().reset_index()
    means["dose"] = np.nan
    means["images"] = table.groupby("method", sort=False)["images"].sum().to_numpy()
    return pd.concat([table, means.assign(precision=np.nan, recall=np.nan, rms_A=np.nan,
                                          **{m: np.nan for m in miscount + bonds})],
                     ignore_index=True)[table.columns]


def format_summary(table: pd.DataFrame) -> str:
    """The summary as a text table (the last row per method: mean over doses)."""
    miscount = [m for m in MISCOUNT if m in table.columns]
    bonds = [m for m in ("bond_std_A", "true_bond_std_A") if m in table.columns]
    head = " ".join([f"{'off ' + _OFF_BY[m]:>6}" for m in miscount] + [f"{h:>9}" for h in ("bond σ Å", "true σ Å")[:len(bonds)]])
    lines = [f"{'method':<22} {'dose e/Å²':>10} {'images':>6} {'F1':>6} {'prec':>6} {'recall':>6} {'RMS Å':>6} {head}".rstrip()]
    for _, r in table.iterrows():
        dose = "mean" if not np.isfinite(r["dose"]) else f"{r['dose']:.0f}"
        fmt = lambda v, f="{:.3f}": "–" if not np.isfinite(v) else f.format(v)  # noqa: E731
        extra = " ".join([f"{fmt(r[m]):>6}" for m in miscount] + [f"{fmt(r[m]):>9}" for m in bonds])
        lines.append(f"{r['method']:<22} {dose:>10} {int(r['images']):>6} {fmt(r['f1']):>6} "
                     f"{fmt(r['precision']):>6} {fmt(r['recall']):>6} {fmt(r['rms_A']):>6} {extra}".rstrip())
    return "\n".join(lines)


F1_TARGET = 0.98      # the F1 a model should reach (docs/models.md)
RMS_CUT_A = 0.3       # the position error a model should stay under [Å]


def dose_figure(per_image: pd.DataFrame):
    """F1 and position RMS against dose, per method, with the target F1 and the RMS cut-off drawn
    and labelled, and a title that says the wave set, the images per dose and the match radius
    (from ``per_image.attrs``, as :func:`assess` leaves them, where it has them)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter

    table = summary(per_image)
    table = table[np.isfinite(table["dose"])]
    fig = Figure(figsize=(9, 4.0), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    for method, g in table.groupby("method", sort=False):
        a1.semilogx(g["dose"], g["f1"], "o-", label=method)
        a2.semilogx(g["dose"], g["rms_A"], "o-", label=method)
    a1.axhline(F1_TARGET, color="0.5", lw=0.8, ls="--", label=f"target F1 {F1_TARGET:g}")
    cut = a2.axhline(RMS_CUT_A, color="0.5", lw=0.8, ls="--", label=f"cut-off {RMS_CUT_A:g} Å")
    a1.set(xlabel="dose [e/Å²]", ylabel="F1", ylim=(0, 1.02))
    a2.set(xlabel="dose [e/Å²]", ylabel="position RMS [Å]")
    doses = np.unique(table["dose"].to_numpy())
    if 0 < len(doses) <= 8:  # the doses as ticks, without the log axis's minor labels (300 and 3000 overlapped)
        for a in (a1, a2):
            a.xaxis.set_major_locator(FixedLocator(doses))
            a.xaxis.set_minor_formatter(NullFormatter())
            a.set_xticklabels([f"{d:g}" for d in doses])
    a1.legend(fontsize=8, loc="lower right")
    a2.legend(handles=[cut], fontsize=8, loc="best")  # (the methods: in the legend beside)
    attrs = per_image.attrs
    counts = per_image[np.isfinite(per_image["dose"])].groupby(["method", "dose"]).size() if len(per_image) else []
    n = sorted(set(int(c) for c in counts)) if len(counts) else [attrs.get("n")]
    per_dose = "/".join(str(k) for k in n if k is not None)
    parts = [f"wave set {attrs['wave_set']}" if attrs.get("wave_set") else None,
             f"{per_dose} image{'s' if per_dose != '1' else ''} per dose" if per_dose else None,
             f"match radius {attrs['radius_A']:g} Å" if attrs.get("radius_A") is not None else None]
    fig.suptitle(", ".join(p for p in parts if p), fontsize=10)
    return fig


def plot(per_image: pd.DataFrame, out: str | Path) -> list[Path]:
    """``f1_vs_dose.png`` (F1 and RMS against dose, per method) and ``f1_histogram.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summary(per_image)
    table = table[np.isfinite(table["dose"])]
    fig = dose_figure(per_image)
    p1 = out / "f1_vs_dose.png"
    fig.savefig(p1, dpi=110)

    f1 = 2 * per_image["tp"] / (2 * per_image["tp"] + per_image["fp"] + per_image["fn"]).replace(0, np.nan)
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    bins = np.linspace(0, 1, 26)
    for k, method in enumerate(per_image["method"].unique()):  # (outlines that would lie on one another: apart)
        ax.hist(f1[per_image["method"] == method].dropna(), bins=bins, histtype="step", lw=2.2 - 0.4 * min(k, 3),
                ls=("-", "--", ":", "-.")[k % 4], label=method)
    ax.set(xlabel="F1 per image", ylabel="images")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # (whole images)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    p2 = out / "f1_histogram.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    paths = [p1, p2]
    miscount = [m for m in MISCOUNT if m in table.columns]
    heights = table.dropna(subset=miscount[:1]) if miscount else table.iloc[:0]
    if len(heights):  # Madsen et al. 2018, Fig. 12: columns miscounted by 1, 2, 3+ atoms vs dose
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        for method, g in heights.groupby("method", sort=False):
            for m, style in zip(miscount, ("o-", "s--", "^:")):
                ax.semilogx(g["dose"], 100 * g[m], style, label=f"{method}: off by {_OFF_BY[m]}")
        ax.set(xlabel="dose [e/Å²]", ylabel="matched columns [%]", ylim=(0, None))
        ax.legend(fontsize=7)
        fig.tight_layout()
        p3 = out / "heights_vs_dose.png"
        fig.savefig(p3, dpi=110)
        plt.close(fig)
        paths.append(p3)
    return paths
