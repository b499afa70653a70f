"""Diffusion statistics of a run as tables, a one-page report and an overlay movie.

:func:`run_statistics` derives the tables of :mod:`etem.tracker.diffusion` from a run file;
:func:`render_report` draws one page (maps, residence-time histograms, counts over time, the
headline figures) for PNG or PDF; :func:`~etem.tracker.movie.write_movie` (re-exported here)
writes a movie of the tracked frames with the columns drawn on them.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import diffusion as D
from .plots import class_colours
from .runfile import Run
from .sites import occupied_sites, seen_too_little
from .movie import write_movie  # noqa: F401 (re-exported)

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
    msd, tracks = D.track_msd(run.columns, run.sampling, fps=fps, sites=sites)
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
    # what came in and what became of it (received = processed + rejected + dropped; missing:
    # seq gaps), with the reasons that occurred
    counts = run.counters or {}
    summ["messages"] = {k: int(v) for k, v in counts.items() if "/" not in k or v}
    if as_of is not None:
        summ["stats_as_of_frame"] = as_of["last_frame"]
        summ["stats_note"] = f"as of frame {as_of['last_frame']} ({as_of['why']})"
    if run.attrs.get("error"):
        summ["run_error"] = str(run.attrs["error"])
    if len(tracks):
        summ.update(motion_summary(tracks, run.sampling, fps))
    names = list(run.class_names)
    labels = run.class_labels
    if labels != names:  # (the names as shown, beside those in the tables: B0 -> B0 (S))
        summ["class_labels"] = dict(zip(names, labels))
    return tables, summ


def motion_summary(tracks: pd.DataFrame, sampling: float | None, fps: float | None) -> dict[str, Any]:
    """The tracks' motion as ``summary.json`` says it: ``tracks_fitted``, ``tracks_mobile`` (the
    MSD above the localisation noise, :func:`etem.tracker.diffusion.noise_test`), the median D
    of the mobile ones with its error (``median_D_mobile``, ``median_D_mobile_err``), the
    median localisation noise of the others (``localisation_sigma``, per axis, in
    ``length_units``) and the median of their bounds on D (``D_upper_still``): for them no D, as
    none was measured. Lattice columns that stay put have D about 0, the fit's slope over
    noise; their median over many tracks can come out "significant" (a few hundredths of an Å
    of wander as a column changes class) and is no diffusion coefficient."""
    mobile = tracks[tracks["mobile"].astype(bool)]
    still = tracks[~tracks["mobile"].astype(bool)]
    sigma = "sigma_A" if "sigma_A" in tracks else "sigma_px"
    out: dict[str, Any] = {"tracks_fitted": int(len(tracks)), "tracks_mobile": int(len(mobile)),
                           "D_units": ("Å²" if sampling else "px²") + ("/s" if fps else "/frame"),
                           "length_units": "Å" if sampling else "px"}
    med = D.median_d(mobile["D"].to_numpy(float)) if len(mobile) else {}
    out["median_D_mobile"] = float(mobile["D"].median()) if len(mobile) else None
    out["median_D_mobile_err"] = med.get("median_D_err")
    if len(still):
        out["tracks_still"] = int(len(still))
        out["localisation_sigma"] = float(still[sigma].median())
        bound = still["D_upper"].to_numpy(float)
        out["D_upper_still"] = float(np.nanmedian(bound)) if np.isfinite(bound).any() else None
    if len(mobile):
        out["localisation_sigma_mobile"] = float(mobile[sigma].median())
    return out


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


def draw_counts(ax, frames: pd.DataFrame, class_counts: pd.DataFrame | None,
                class_names: Sequence[str] = (), labels: dict[str, str] | None = None) -> None:
    """Columns found per frame on ``ax``: all of them (dark), each class's where the run has
    several (in the class colours, outlined so that a light colour shows on white), the frames
    outside the trust ranges as red markers on the line of all columns; x in frames with the time
    [s] on top where the run knows its frame rate, y from 0. The legend lies outside the axes,
    to their right; ``labels``: the classes' names as shown, by name (summary's
    ``class_labels``: ``B0 (S)`` for ``B0``). (The report's panel and ``counts.png``.)"""
    from matplotlib import patheffects
    from matplotlib.ticker import MaxNLocator

    names = list(class_names)
    colours = class_colours(names)
    f = frames["frame"].to_numpy()
    total = frames["n_columns"].to_numpy(dtype=float)
    per_class = [] if class_counts is None else [c for c in class_counts.columns if c != "frame"]
    one_class = per_class[0].removeprefix("n_") if len(per_class) == 1 else None
    if one_class in ("column", "columns"):  # (a model's one generic class: no name to say)
        one_class = None
    marker = "o" if len(frames) < 30 else None
    ax.plot(f, total, lw=1.2, color="0.15", marker=marker, ms=3,
            label=f"all columns ({_class_name(one_class)})" if one_class else "all columns")
    if len(per_class) > 1:
        stroke = [patheffects.withStroke(linewidth=2.2, foreground="0.25")]
        for c in per_class:  # (n_Mo, n_class3: Mo, class 3)
            name = c.removeprefix("n_")
            k = names.index(name) if name in names else (int(name[5:]) if name[5:].isdigit() else None)
            ax.plot(class_counts["frame"], class_counts[c], lw=1.2, marker=marker, ms=3,
                    color=None if k is None else colours[k % len(colours)],  # (as the overlay and movie draw them)
                    path_effects=stroke, label=(labels or {}).get(name) or _class_name(name))
    if "in_range" in frames and (frames["in_range"] == 0).any():
        bad = (frames["in_range"] == 0).to_numpy()
        ax.plot(f[bad], total[bad], "o", ms=3.5, color="C3", zorder=3, label="outside the trust ranges")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # (counts of columns)
    if len(f):
        lo, hi = float(np.min(f)), float(np.max(f))
        if hi - lo < 2:  # (one frame: not an axis of -0.045 … 0.045)
            ax.set_xlim(lo - 1, hi + 1)
        top = float(np.nanmax(total)) if np.isfinite(total).any() else 1.0
        ax.set_ylim(0, max(top * 1.08, 1))
    ax.set_xlabel("frame")
    ax.set_ylabel("columns")
    fps = D.frame_rate(frames)
    if fps and len(f):
        f0 = float(np.min(f))
        sec = ax.secondary_xaxis("top", functions=(lambda x: (x - f0) / fps, lambda t: t * fps + f0))
        sec.set_xlabel("time [s]", fontsize="small")
        sec.tick_params(labelsize="small")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize="small", frameon=False)


def _class_name(name: str) -> str:
    return f"class {name[5:]}" if name.startswith("class") and name[5:].isdigit() else name


def _map_panel(ax, run: Run, sites: pd.DataFrame, values: np.ndarray, *, title: str, cmap: str, label: str,
               vmin: float, vmax: float | None) -> None:
    """A site map drawn as the separate PNGs draw it, shown in ``ax`` (the report's panels)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .export import render_site_map

    with matplotlib.rc_context({"font.size": 17}):  # (drawn at twice and more the size it is shown at)
        sub = render_site_map(sites, values, run.frame_shape, run.sampling, title="", cmap=cmap, label=label,
                              vmin=vmin, vmax=vmax, faint=seen_too_little(sites, len(run.frames)),
                              n_frames=len(run.frames))
    canvas = FigureCanvasAgg(sub)
    canvas.draw()
    ax.imshow(np.asarray(canvas.buffer_rgba()))
    ax.set_title(title)
    ax.set_axis_off()


def _say(ax, text: str, title: str) -> None:
    """A panel that says why it shows nothing."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3", wrap=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


# fewer residences seen to begin and end than this: listed, not drawn as a histogram
_FEW_RESIDENCES = 10


def _residence_panel(ax, hist: pd.DataFrame, n_frames: int) -> None:
    """Residence times of the runs seen to begin and end, the two states side by side; a few
    listed rather than drawn as a histogram of one or two bars; the runs cut by the movie's start
    or end, or by the site leaving the view (censored: a site occupied throughout), counted below."""
    title = "Residence times"
    if n_frames < 2:
        return _say(ax, "one frame: no residence times\ncan be measured", title)
    done = hist[hist["completed"] > 0]
    censored = int(hist["censored"].sum()) if "censored" in hist else 0
    cut = (f"{censored} more run{'s' if censored != 1 else ''} cut by the movie's start or end\n"
           "or by the site leaving the view (a site occupied or empty\nthroughout: no residence time)") \
        if censored else ""
    n_done = int(done["completed"].sum()) if len(done) else 0
    if n_done == 0:
        return _say(ax, "no residence seen to begin and end:\na site must change state twice"
                    + (f"\n\n{cut}" if cut else ""), title)
    if n_done < _FEW_RESIDENCES:
        lines = [f"only {n_done} residence{'s' if n_done != 1 else ''} seen to begin and end,",
                 "too few for a histogram:"]
        for state in ("occupied", "empty"):
            h = done[done["state"] == state]
            if len(h):
                said = ", ".join(f"{int(fr)}" + (f" (×{int(n)})" if n > 1 else "")
                                 for fr, n in zip(h["frames"], h["completed"]))
                lines.append(f"  {state}: {said} frames")
        return _say(ax, "\n".join(lines) + (f"\n\n{cut}" if cut else ""), title)
    from matplotlib.ticker import MaxNLocator

    top = int(done["frames"].max())   # completed runs in up to 25 bins of whole frames
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
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # (counts of runs)
    ax.set_xlabel("residence [frames]" + (f"\n(not shown: {censored} run{'s' if censored != 1 else ''} cut by\n"
                                          "the movie's start or end, or the view's edge)" if censored else ""))
    ax.set_ylabel("runs")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="best")


def render_report(run: Run, tables: dict[str, pd.DataFrame], summ: dict[str, Any]) -> Figure:
    """One A4-landscape page: occupancy and event maps (and the class-change map where sites
    changed class), residence times, counts, figures."""
    from .export import class_change_rate, has_class_changes

    fig = Figure(figsize=(11.7, 8.3))
    status = summ.get("run_status")
    partial = {"running": " (still running, or its tracker died: the frames so far)",
               "interrupted": " (interrupted: the frames until then)", "stopped": " (stopped: the frames until then)",
               "failed": " (failed: the frames until then)"}.get(str(status), "")
    if summ.get("stats_note"):
        partial += f"\nstatistics {summ['stats_note']}"
    n_frames = int(summ["frames"])
    fig.suptitle(f"etem-tracker run {Path(run.path).name}: {n_frames} frame{'s' if n_frames != 1 else ''}, "
                 f"{summ['sites']} sites{partial}", fontsize=13, color="C3" if partial else "black")
    changes = has_class_changes(run)
    outer = fig.add_gridspec(2, 1, left=0.07, right=0.98, top=0.9, bottom=0.08, hspace=0.38)
    top = outer[0].subgridspec(1, 4 if changes else 3, wspace=0.3)
    bottom = outer[1].subgridspec(1, 3, width_ratios=[2.0, 0.55, 1.1], wspace=0.05)
    sites = occupied_sites(run.sites)
    panels = [("occupancy", "viridis", "occupied (0–1)", 1.0, "Occupancy"),
              ("event_rate", "inferno", "changes [1/frame]", None, "Events per frame")]
    for i, (col, cmap, label, vmax, title) in enumerate(panels):
        ax = fig.add_subplot(top[0, i])
        if col == "event_rate" and n_frames < 2:
            _say(ax, "one frame: no events\ncan be measured", title)
        elif len(sites):
            _map_panel(ax, run, sites, sites[col].to_numpy(), title=title, cmap=cmap, label=label, vmin=0, vmax=vmax)
        else:
            _say(ax, "no sites", title)
    if changes:
        ax = fig.add_subplot(top[0, 2])
        _map_panel(ax, run, sites, class_change_rate(run, sites), title="Class changes", cmap="inferno",
                   label="changes [1/frame]", vmin=0, vmax=None)
    _residence_panel(fig.add_subplot(top[0, -1]), tables["residence_histogram"], n_frames)
    ax = fig.add_subplot(bottom[0, 0])
    draw_counts(ax, run.frames, tables["class_counts"], run.class_names, summ.get("class_labels"))
    ax.set_title("Columns per class over time")
    ax = fig.add_subplot(bottom[0, 2])
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
        shown = g("class_labels") or {}
        kinds = [(" -> ".join(shown.get(c, c) for c in k.split(" -> ")), v)
                 for k, v in (g("class_changes_by_kind") or {}).items()]
        said = ", ".join(f"{k} {v}" for k, v in kinds[:3]) + (", …" if len(kinds) > 3 else "")
        lines.append(f"class changes: {g('class_changes')}, {pm('class_changes_per_frame')} /frame"
                     + (f"\n  ({said})" if said else ""))
    if g("frames_judged"):
        lines.append(f"trust: {g('frames_in_range')} of {g('frames_judged')} frames in range")
    lines += motion_lines(summ)
    if g("stats_note"):
        lines.append(f"events as of frame {g('stats_as_of_frame')}\n  (the run was not closed)")
    return lines


def motion_lines(summ: dict[str, Any]) -> list[str]:
    """The tracks' motion (:func:`motion_summary`) in words: the D of the tracks that move above
    their localisation noise, and for the others no D but "no motion above localisation noise"
    with the noise and a bound."""
    g = summ.get
    if not g("tracks_fitted"):
        return []

    def num(v: Any) -> str:
        return f"{v:.2g}" if isinstance(v, float) else str(v)

    units, length = g("D_units") or "", g("length_units") or ""
    n, moving = g("tracks_fitted"), g("tracks_mobile") or 0
    lines = [f"tracks fitted (MSD = 4 D t + c): {n}"]
    if moving:
        err = g("median_D_mobile_err")
        lines.append(f"  {moving} move above localisation noise:\n    D = {num(g('median_D_mobile'))}"
                     + (f" ± {num(err)}" if err is not None else "") + f" {units} (median)")
    still = g("tracks_still") or 0
    if still:
        who = "all" if still == n else f"the other {still}"
        bound = g("D_upper_still")
        lines.append(f"  {who}: no motion above localisation\n    noise (σ = {num(g('localisation_sigma'))} {length})"
                     + (f"\n    D < {num(bound)} {units} (median bound)" if bound is not None else ""))
    return lines
