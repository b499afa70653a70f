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
from .frames import class_label
from .plots import class_colours
from .runfile import Run
from .sites import occupied_sites

__all__ = ["run_statistics", "render_report", "write_statistics_h5", "write_movie"]


def run_statistics(run: Run | str | Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The derived tables (``site_kinetics``, ``residence_histogram``, ``hop_jumps``, ``msd``,
    ``tracks``, ``class_counts``, ``site_intensity``) and the summary of a run: an open
    :class:`~etem.tracker.run.Run`, or a run file's path (opened and closed here)."""
    if isinstance(run, (str, Path)):
        from .run import open_run

        with open_run(run) as opened:
            return run_statistics(opened)
    stats = run.stats  # (first: a run not closed gives those of its latest resume snapshot ...)
    as_of = run.stats_as_of
    frames, sites = run.frames, run.sites  # (... and the tables then as far as it goes)
    if as_of is not None:
        frames = frames.iloc[: as_of["frames"]]  # (the frames they stand for)
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
        "class_counts": D.class_counts(run.columns, run.class_names),
        "site_intensity": D.site_intensity(run.columns),
    }
    summ = D.summary(frames, sites, stats, run.sampling, run.class_names)
    # how the run ended: a run still being written, or stopped, holds only part of the recording
    summ["run_status"] = run.status
    if as_of is not None:
        summ["stats_as_of_frame"] = as_of["last_frame"]
        summ["stats_note"] = f"as of frame {as_of['last_frame']} ({as_of['why']})"
    if run.attrs.get("error"):
        summ["run_error"] = str(run.attrs["error"])
    if len(tracks):
        # most tracks of a lattice are columns that stay put, D about 0: the median over all of
        # them is not a diffusion coefficient; that of the mobile ones (diffusion.track_msd) is said apart
        mobile = tracks[tracks["mobile"].astype(bool)]
        summ["tracks_fitted"] = int(len(tracks))
        summ["tracks_mobile"] = int(len(mobile))
        summ.update(D.median_d(tracks["D"].to_numpy(float)))
        summ["median_D_mobile"] = float(mobile["D"].median()) if len(mobile) else None
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
    gs = fig.add_gridspec(2, 3, left=0.08, right=0.97, top=0.9, bottom=0.07, wspace=0.35, hspace=0.35)
    status = summ.get("run_status")
    partial = {"running": " (still running, or its tracker died: the frames so far)",
               "interrupted": " (interrupted: the frames until then)", "stopped": " (stopped: the frames until then)",
               "failed": " (failed: the frames until then)"}.get(str(status), "")
    if summ.get("stats_note"):
        partial += f"\nstatistics {summ['stats_note']}"
    fig.suptitle(f"etem-tracker run {Path(run.path).name}: {summ['frames']} frames, {summ['sites']} sites{partial}",
                 fontsize=13, color="C3" if partial else "black")
    sites = occupied_sites(run.sites)
    for i, (col, title, cmap, vmax) in enumerate((("occupancy", "Occupancy", "viridis", 1.0),
                                                  ("event_rate", "Events per frame", "inferno", None))):
        ax = fig.add_subplot(gs[0, i])
        if len(sites):
            import matplotlib

            with matplotlib.rc_context({"font.size": 17}):  # (drawn at twice and more the size it is shown at)
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
    done = hist[hist["completed"] > 0]
    if len(done):
        # completed runs in up to 25 bins of whole frames, the two states side by side
        top = int(done["frames"].max())
        width = max(1, int(np.ceil(top / 25)))
        edges = np.arange(0.5, top + width + 0.5, width)
        data, weights, labels = [], [], []
        for state in ("occupied", "empty"):
            h = done[done["state"] == state]
            data.append(h["frames"].to_numpy(float))
            weights.append(h["completed"].to_numpy(float))
            n = int(h["completed"].sum())
            labels.append(f"{state} ({n} run{'s' if n != 1 else ''})")
        ax.hist(data, bins=edges, weights=weights, color=["C0", "C1"], label=labels)
        censored = int(hist["censored"].sum()) if "censored" in hist else 0
        if censored:
            ax.text(0.98, 0.7, f"not shown: {censored} runs\nnot seen to begin or end", ha="right", va="top",
                    transform=ax.transAxes, fontsize=8, color="0.35")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # (counts of runs)
    ax.set_xlabel("residence [frames]")
    ax.set_ylabel("runs")
    ax.set_title("Residence times")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:  # (one frame, or no site changed state twice)
        ax.text(0.5, 0.5, "no residence seen to begin and end:\na site must change state twice", ha="center",
                va="center", transform=ax.transAxes, fontsize=9, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[1, 0:2])
    counts = tables["class_counts"]
    names = list(run.class_names)
    colours = class_colours(names)
    for c in [c for c in counts.columns if c != "frame"]:  # (n_Mo, n_class3: Mo, class 3)
        name = c.removeprefix("n_")
        k = names.index(name) if name in names else (int(name[5:]) if name[5:].isdigit() else None)
        ax.plot(counts["frame"], counts[c], lw=1, marker="o" if len(counts) < 30 else None, ms=3,
                color=None if k is None else colours[k % len(colours)],  # (as the overlay and movie draw them)
                label=f"class {name[5:]}" if name.startswith("class") and name[5:].isdigit() else name)
    frames = run.frames
    if "in_range" in frames and (frames["in_range"] == 0).any():
        bad = frames[frames["in_range"] == 0]
        ax.plot(bad["frame"], bad["n_columns"], "o", ms=3, color="C3", label="outside the trust ranges")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # (counts of columns)
    ax.set_xlabel("frame")
    ax.set_ylabel("columns")
    ax.set_title("Columns per class over time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax = fig.add_subplot(gs[1, 2])
    ax.set_axis_off()
    ax.text(0, 1, "\n".join(figure_lines(summ)), va="top", ha="left", family="monospace", fontsize=8.5,
            transform=ax.transAxes)
    ax.set_title("Figures", loc="left")
    return fig


def figure_lines(summ: dict[str, Any]) -> list[str]:
    """The summary's figures as a reader wants them: named, with their units and errors
    (``summary.json`` holds them one key each)."""
    g = summ.get

    def num(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    def pm(key: str) -> str:
        return f"{num(g(key))} ± {num(g(key + '_err'))}"

    lines = [f"frames: {g('frames')}" + (f" at {num(g('fps'))} /s" if g("fps") else "")]
    if g("sampling_A_per_px"):
        lines.append(f"pixel size: {num(g('sampling_A_per_px'))} Å/px")
    lines.append(f"sites: {g('sites')}, {g('active_sites')} of them ever empty"
                 + (f"\n  (those occupied {num(g('mean_occupancy_active'))} of the time)"
                    if g("mean_occupancy_active") is not None else ""))
    if g("sites_never_occupied"):
        n = g("sites_never_occupied")
        lines.append(f"  {n} more place{'s' if n != 1 else ''} never judged occupied\n  (n_occupied 0 in sites.csv)")
    if g("mean_columns_per_frame") is not None:
        lines.append(f"columns per frame: {num(g('mean_columns_per_frame'))}")
    for name in ("flips", "hops"):
        if g(f"{name}_per_frame") is not None:
            lines.append(f"{name}: {pm(f'{name}_per_frame')} /frame"
                         + (f"\n  ({pm(f'{name}_per_s')} /s)" if g(f"{name}_per_s") is not None else ""))
    if g("hop_length_median") is not None:
        lines.append(f"hop length: {num(g('hop_length_median'))} {g('hop_length_units')} (median)")
    if g("class_changes"):
        kinds = list((g("class_changes_by_kind") or {}).items())
        said = ", ".join(f"{k} {v}" for k, v in kinds[:3]) + (", …" if len(kinds) > 3 else "")
        lines.append(f"class changes: {g('class_changes')}, {pm('class_changes_per_frame')} /frame"
                     + (f"\n  ({said})" if said else ""))
    if g("frames_judged"):
        lines.append(f"trust: {g('frames_in_range')} of {g('frames_judged')} frames in range")
    if g("tracks_fitted"):
        units = g("D_units") or ""
        lines.append(f"tracks fitted (MSD): {g('tracks_fitted')}, mobile {g('tracks_mobile', 0)}")
        if g("median_D_mobile") is not None:
            lines.append(f"  D of the mobile (median): {num(g('median_D_mobile'))} {units}")
        if g("median_D_resolved") is False:  # (the MSDs' noise: a D about 0, below its error)
            bound = g("median_D_upper")
            lines.append("  D of all (median): not resolved" + (f"\n    (< {num(bound)} {units})" if bound is not None else ""))
        else:
            err = g("median_D_err")
            lines.append(f"  D of all (median): {num(g('median_D'))} {units}"
                         + (f"\n    (± {num(err)})" if err is not None else ""))
    if g("stats_note"):
        lines.append(f"events as of frame {g('stats_as_of_frame')}\n  (the run was not closed)")
    return lines


def write_movie(run: Run, source: str | Path, path: str | Path, *, fps: float = 10.0, max_frames: int = 300,
                max_side: int = 512, dataset: str | None = None) -> Path:
    """An animated image of the recording with the run's columns drawn on each frame, in their
    classes' colours (:func:`etem.tracker.plots.class_colours`, as the overlay draws them), with
    a legend in a band below the frames.

    ``source`` is the recording the run tracked (any file ``etem replay`` reads, or a folder of
    frame files, read as the run read it: its ``pattern``); ``dataset``: the file's dataset or
    signal (default: the run's). The suffix of ``path`` chooses GIF or APNG (``.png``). Frames
    are scaled to ``max_side`` px at most.
    """
    from PIL import Image, ImageDraw

    from .errors import FileFormatError
    from .files import open_recording

    options = run.attrs.get("source_options") or {}
    if Path(source).is_dir():
        from .watch import watch_folder

        frames = iter(watch_folder(source, pattern=options.get("pattern"), focal=options.get("focal") or 1,
                                   poll_s=0.01, settle_s=0.0, idle_timeout_s=0.0))
    else:
        frames = open_recording(source, dataset=dataset or options.get("dataset")).iter_frames()
    cols = run.columns
    by_frame = {int(k): g for k, g in cols.groupby("frame")}
    names = list(run.class_names)
    colours = [_rgb(c) for c in class_colours(names)]
    classes = sorted(int(k) for k in np.unique(cols["cls"])) if "cls" in cols and len(cols) else [0]
    legend = None
    images = []
    for f in frames:
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
            cls = c["cls"].to_numpy().astype(int) if "cls" in c else np.zeros(len(c), int)
            for y, x, k in zip(c["y"].to_numpy() * scale, c["x"].to_numpy() * scale, cls):
                d.ellipse((x - r, y - r, x + r, y + r), outline=colours[k % len(colours)])
        d.text((4, 4), f"frame {f.frame}", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        if legend is None or legend.width != im.width:
            legend = _movie_legend(im.width, [(class_label(names, k), colours[k % len(colours)]) for k in classes])
        framed = Image.new("RGB", (im.width, im.height + legend.height))
        framed.paste(im, (0, 0))
        framed.paste(legend, (0, im.height))
        images.append(framed)
    if not images:
        raise FileFormatError(f"{source} holds no frames")
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   format="PNG" if path.suffix.lower() == ".png" else "GIF")
    return path


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _movie_legend(width: int, entries: list[tuple[str, tuple[int, int, int]]]):
    """A dark band ``width`` px wide with a ring and a name per class, in rows as they fit."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_h, pad, ring = 14, 4, 4
    items = [(name, colour, int(probe.textlength(name, font=font)) + 2 * ring + 12) for name, colour in entries]
    rows: list[list] = [[]]
    used = pad
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = pad
        rows[-1].append(item)
        used += item[2]
    band = Image.new("RGB", (width, len(rows) * row_h + 2 * pad), (22, 22, 28))
    d = ImageDraw.Draw(band)
    for i, row in enumerate(rows):
        x, y = pad, pad + i * row_h + row_h // 2
        for name, colour, w in row:
            d.ellipse((x, y - ring, x + 2 * ring, y + ring), outline=colour, width=2)
            d.text((x + 2 * ring + 4, y), name, fill=(255, 255, 255), font=font, anchor="lm")
            x += w
    return band
