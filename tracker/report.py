"""Diffusion statistics of a run as tables, a one-page report and an overlay movie.

:func:`run_statistics` derives the tables of :mod:`etem.tracker.diffusion` from a run file;
:func:`render_report` draws one page (maps, residence-time histograms, counts over time, the
headline figures) for PNG or PDF; :func:`write_movie` writes an animated image of the tracked
frames with the columns drawn on them (GIF or APNG by suffix), from the recording the run came from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import diffusion as D
from .runfile import Run
from .sites import occupied_sites

__all__ = ["run_statistics", "render_report", "write_statistics_h5", "write_movie"]


def run_statistics(run: Run) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The derived tables (``site_kinetics``, ``residence_histogram``, ``hop_jumps``, ``msd``,
    ``tracks``, ``class_counts``, ``site_intensity``) and the summary of a run."""
    frames, sites, stats = run.frames, run.sites, run.stats
    fps = D.frame_rate(frames)
    residence = stats.get("residence")
    if residence is None or not {"site", "frames", "occupied", "censored"} <= set(residence.columns):
        residence = pd.DataFrame({"site": pd.Series(dtype="int64"), "start": pd.Series(dtype="int64"),
                                  "frames": pd.Series(dtype="int64"), "occupied": pd.Series(dtype=bool),
                                  "censored": pd.Series(dtype=bool)})
    msd, tracks = D.track_msd(run.columns, run.sampling, fps=fps)
    tables = {
        "site_kinetics": D.site_kinetics(sites, residence) if len(sites) else pd.DataFrame(),
        "residence_histogram": D.residence_histogram(residence),
        "hop_jumps": D.hop_jumps(stats.get("hops"), sites, run.sampling),
        "msd": msd,
        "tracks": tracks,
        "class_counts": D.class_counts(run.columns),
        "site_intensity": D.site_intensity(run.columns),
    }
    summ = D.summary(frames, sites, stats, run.sampling)
    if len(tracks):
        summ["tracks_fitted"] = int(len(tracks))
        summ["median_D"] = float(tracks["D"].median())
        summ["D_units"] = ("Å²" if run.sampling else "px²") + ("/s" if fps else "/frame")
    return tables, summ


def write_statistics_h5(path: Path, tables: dict[str, pd.DataFrame], summ: dict[str, Any]) -> None:
    """All statistics tables in one HDF5 file (a group per table, a dataset per column)."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "etem-statistics"
        f.attrs["summary"] = json.dumps(summ, default=_json)
        for name, df in tables.items():
            g = f.create_group(name)
            g.attrs["columns"] = json.dumps([str(c) for c in df.columns])
            for c in df.columns:
                v = df[c].to_numpy()
                g[str(c)] = v.astype("S") if v.dtype == object else v


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def render_report(run: Run, tables: dict[str, pd.DataFrame], summ: dict[str, Any]) -> Figure:
    """One A4-landscape page: occupancy and event maps, residence times, counts, figures."""
    from .export import render_site_map

    fig = Figure(figsize=(11.7, 8.3))
    gs = fig.add_gridspec(2, 3, left=0.05, right=0.97, top=0.9, bottom=0.07, wspace=0.35, hspace=0.35)
    fig.suptitle(f"etem-tracker run {Path(run.path).name}: {summ['frames']} frames, {summ['sites']} sites",
                 fontsize=13)
    sites = occupied_sites(run.sites)
    for i, (col, title, cmap, vmax) in enumerate((("occupancy", "Occupancy", "viridis", 1.0),
                                                  ("event_rate", "Events per frame", "inferno", None))):
        ax = fig.add_subplot(gs[0, i])
        if len(sites):
            sub = render_site_map(sites, sites[col].to_numpy(), run.frame_shape, run.sampling, title="",
                                  cmap=cmap, label="", vmin=0, vmax=vmax)
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            canvas = FigureCanvasAgg(sub)
            canvas.draw()
            ax.imshow(np.asarray(canvas.buffer_rgba()))
        ax.set_title(title)
        ax.set_axis_off()
    ax = fig.add_subplot(gs[0, 2])
    hist = tables["residence_histogram"]
    for state, color in (("occupied", "C0"), ("empty", "C1")):
        h = hist[(hist["state"] == state) & (hist["completed"] > 0)]
        if len(h):
            ax.bar(h["frames"] + (0.2 if state == "empty" else -0.2), h["completed"], width=0.4, color=color,
                   label=f"{state} (completed)")
    ax.set_xlabel("residence [frames]")
    ax.set_ylabel("runs")
    ax.set_title("Residence times")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:  # (one frame, or no site changed state twice)
        ax.text(0.5, 0.5, "no completed residence yet:\na site must change state twice", ha="center",
                va="center", transform=ax.transAxes, fontsize=9, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[1, 0:2])
    counts = tables["class_counts"]
    names = run.class_names

    def label(c: str) -> str:
        k = c.replace("cls_", "")
        return names[int(k)] if k.isdigit() and int(k) < len(names) else f"class {k}"

    for c in [c for c in counts.columns if c != "frame"]:
        ax.plot(counts["frame"], counts[c], lw=1, marker="o" if len(counts) < 30 else None, ms=3, label=label(c))
    frames = run.frames
    if "in_range" in frames and (frames["in_range"] == 0).any():
        bad = frames[frames["in_range"] == 0]
        ax.plot(bad["frame"], bad["n_columns"], "o", ms=3, color="C3", label="outside the trust ranges")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame")
    ax.set_ylabel("columns")
    ax.set_title("Columns per class over time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax = fig.add_subplot(gs[1, 2])
    ax.set_axis_off()
    lines = [f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in summ.items() if v is not None]
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8.5, transform=ax.transAxes)
    ax.set_title("Figures", loc="left")
    return fig


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_movie(run: Run, source: str | Path, path: str | Path, *, fps: float = 10.0, max_frames: int = 300,
                max_side: int = 512) -> Path:
    """An animated image of the recording with the run's columns drawn on each frame.

    ``source`` is the recording the run tracked (any file ``etem replay`` reads); the suffix of
    ``path`` chooses GIF or APNG (``.png``). Frames are scaled to ``max_side`` px at most.
    """
    from PIL import Image, ImageDraw

    from .files import open_recording

    rec = open_recording(source)
    cols = run.columns
    by_frame = {int(k): g for k, g in cols.groupby("frame")}
    images = []
    for f in rec.iter_frames():
        if len(images) >= max_frames:
            break
        img = np.asarray(f.image, float)
        img = img.reshape(-1, *img.shape[-2:])[0]
        lo, hi = np.percentile(img, (0.5, 99.5))
        g = np.clip((img - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        scale = min(1.0, max_side / max(g.shape))
        im = Image.fromarray(g).convert("RGB")
        if scale < 1:
            im = im.resize((int(g.shape[1] * scale), int(g.shape[0] * scale)))
        d = ImageDraw.Draw(im)
        c = by_frame.get(int(f.frame))
        if c is not None:
            r = 2
            for y, x in zip(c["y"].to_numpy() * scale, c["x"].to_numpy() * scale):
                d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 60, 60))
        d.text((4, 4), f"frame {f.frame}", fill=(255, 255, 0))
        images.append(im)
    if not images:
        raise ValueError(f"{source} holds no frames")
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   format="PNG" if path.suffix.lower() == ".png" else "GIF")
    return path
