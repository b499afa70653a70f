"""``etem export``: a run file as Parquet / CSV / HDF5 tables, PNG figures and a report.

Tables go out one file each (``frames``, ``columns``, ``sites``, every stats table of the run,
and the diffusion statistics derived from them — ``site_kinetics``, ``residence_histogram``,
``hop_jumps``, ``msd``, ``tracks``, ``class_counts``, ``site_intensity``; see
:mod:`etem.tracker.diffusion` —
as ``<table>.parquet`` / ``<table>.csv``); the columns table, which can be long, is streamed in
blocks. ``h5``: the statistics in one ``statistics.h5``. Figures: ``occupancy.png``,
``events.png``, ``class_changes.png`` where sites changed class, and ``intensity.png`` where
the columns have intensities (sites as coloured discs on a dark background, after Madsen et
al. 2018, Fig. 10), and ``counts.png`` (columns found per frame). ``report``: one page, ``report.png`` and
``report.pdf``, with ``summary.json``.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from tqdm import tqdm

from .errors import ConfigError, choice_error
from .frames import class_label
from .runfile import TABLES, Run, open_run
from .sites import occupied_sites, seen_too_little

__all__ = ["export_run", "render_site_map", "run_caption", "EXPORT_FORMATS"]

ExportFormat = Literal["parquet", "csv", "png", "h5", "report"]
EXPORT_FORMATS: tuple[str, ...] = ("parquet", "csv", "png", "h5", "report")
_BLOCK_ROWS = 1_000_000
_DPI = 150
_AX_W_IN = 4.2      # width of a map's axes [inch]


# --------------------------------------------------------------------------------------- figures

def _disc_diameter(yx: np.ndarray) -> float:
    """0.8 x the median nearest-neighbour distance of the sites [same units as ``yx``]."""
    if len(yx) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    yx = yx[np.isfinite(yx).all(axis=1)]
    if len(yx) < 2:
        return 1.0
    dist, _ = cKDTree(yx).query(yx, k=2)
    nn = dist[:, 1][(dist[:, 1] > 0) & np.isfinite(dist[:, 1])]
    return 0.8 * float(np.median(nn)) if len(nn) else 1.0


def _map_axes(shape: tuple[int, int], *, title_lines: int = 1, notes: int = 0) -> tuple[Figure, object]:
    """A figure sized to the frame's aspect with one dark axes (fixed margins: fast to draw);
    room above for ``title_lines`` lines of title, and below for ``notes`` lines of notes."""
    h, w = shape
    left, right = 0.85, 1.45                                # margins [inch]
    bottom = 0.65 + 0.3 * notes
    top = 0.2 + 0.25 * max(title_lines, 1)
    ax_w = _AX_W_IN
    ax_h = float(np.clip(ax_w * h / w, 1.5, 9.0))
    fig_w, fig_h = left + ax_w + right, bottom + ax_h + top
    fig = Figure(figsize=(fig_w, fig_h))
    fig.subplots_adjust(left=left / fig_w, right=1 - right / fig_w,
                        bottom=bottom / fig_h, top=1 - top / fig_h)
    ax = fig.add_subplot()
    ax.set_facecolor("#0b0b12")
    return fig, ax


def _colorbar(fig: Figure, ax, mappable, label: str) -> None:
    """A colour bar as tall as the (equal-aspect) axes beside it."""
    cax = ax.inset_axes((1.03, 0.0, 0.04, 1.0))
    fig.colorbar(mappable, cax=cax, label=label)


def run_caption(run: Run) -> str:
    """Which run a figure shows: its file's name, its frames, and how it ended where it did not
    complete (``run.h5: interrupted after 43 frames``)."""
    n = len(run.frames)
    frames = f"{n} frame{'s' if n != 1 else ''}"
    status = run.status
    if status in ("complete", "None", ""):
        return f"{Path(run.path).name}: {frames}"
    if status == "running":
        return f"{Path(run.path).name}: {frames} so far (still running, or its tracker died)"
    return f"{Path(run.path).name}: {status} after {frames}"


# the intensities are the mean pixel value in a small disc about each column (intensity_measure),
# less the floor about it: in the recording's own units (detector counts where the file holds them)
INTENSITY_UNIT = "recording's pixel units"


def _intensity_map(run: Run, per_site: pd.DataFrame) -> Figure:
    """Sites coloured by the mean intensity of the columns seen there (ADF STEM: Z contrast), over
    the floor about them where the run measured it (:func:`etem.tracker.diffusion.site_intensity`)."""
    sites = occupied_sites(run.sites)
    mean = sites["site"].map(per_site.set_index("site")["intensity_mean"]).to_numpy(float)
    lo, hi = np.nanpercentile(mean, [1, 99]) if np.isfinite(mean).any() else (None, None)
    cols = run.columns
    floor = "background" in cols and bool(np.isfinite(cols["background"]).any())
    label = ("mean intensity of the columns seen" + (", over the floor about them" if floor else "")
             + f"\n[{INTENSITY_UNIT}, e.g. detector counts]")
    return render_site_map(sites, mean, run.frame_shape, run.sampling,
                           title=f"Column intensity\n{run_caption(run)}", cmap="cividis", label=label,
                           vmin=lo, vmax=hi, faint=seen_too_little(sites, len(run.frames)),
                           n_frames=len(run.frames))


def class_change_rate(run: Run, sites: pd.DataFrame) -> np.ndarray:
    """Per row of ``sites``: its class changes per frame it was in view."""
    n = run.stats["class_changes"]["site"].value_counts()
    return sites["site"].map(n).fillna(0).to_numpy(float) / np.maximum(sites["n_obs"].to_numpy(float), 1)


def has_class_changes(run: Run) -> bool:
    changes = run.stats.get("class_changes")
    return changes is not None and len(changes) > 0 and len(run.sites) > 0 and "n_obs" in run.sites


def _class_change_map(run: Run) -> Figure:
    """Sites coloured by how often their column changed class (an S2 column losing an atom and
    getting it back: two), per frame the site was seen: where the changes of ``class_changes`` are."""
    sites = occupied_sites(run.sites)
    rate = class_change_rate(run, sites)
    names = run.class_names
    which = f" ({', '.join(names)})" if 1 < len(names) <= 6 else ""
    return render_site_map(sites, rate, run.frame_shape, run.sampling,
                           title=f"Class changes{which}\n{run_caption(run)}", cmap="inferno",
                           label="class changes per frame seen [1/frame]", vmin=0,
                           faint=seen_too_little(sites, len(run.frames)), n_frames=len(run.frames))


def render_site_map(sites_df: pd.DataFrame, values: np.ndarray | Sequence[float],
                    shape: tuple[int, int], sampling: float | None, *, title: str,
                    cmap: str = "viridis", label: str | None = None,
                    vmin: float | None = None, vmax: float | None = None,
                    faint: np.ndarray | None = None, n_frames: int | None = None) -> Figure:
    """Sites as discs coloured by ``values`` on a dark background, with a colour bar.

    Parameters
    ----------
    sites_df
        Sites table with ``y, x`` [px] (reference coordinates).
    values
        One value per site (NaN shown grey).
    shape
        Frame ``(H, W)`` [px]; sets the axes' extent (widened to hold sites beyond the frame,
        whose edge is then drawn dashed).
    sampling
        Pixel size [Å/px]: axes in Å when given, else in px.
    title, cmap, label, vmin, vmax
        Title, colour map, colour-bar label and colour range (from the finite values if None).
    faint
        Per site, True where it was in view in too few frames for its value to mean much
        (:func:`etem.tracker.sites.seen_too_little`): drawn as hollow grey rings, not coloured,
        and said under the map (with ``n_frames``, the run's frames, to give the rule).

    Returns
    -------
    A matplotlib Figure not attached to any GUI (save it with ``fig.savefig``).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=float)
    if len(values) != len(sites_df):
        raise ValueError(f"values has {len(values)} entries for {len(sites_df)} sites.")
    faint = np.zeros(len(values), bool) if faint is None else np.asarray(faint, bool)
    scale, unit = (float(sampling), "Å") if sampling else (1.0, "px")
    h, w = shape
    yx = sites_df[["y", "x"]].to_numpy(dtype=float) * scale
    finite = values[np.isfinite(values) & ~faint]
    if vmin is None:
        vmin = float(finite.min()) if len(finite) else 0.0
    if vmax is None:
        vmax = float(finite.max()) if len(finite) else 1.0
    if vmax <= vmin:
        vmax = vmin + 1.0

    d = _disc_diameter(yx)
    # limits: the frame, widened to hold every disc whole (a site at y < 0 was a half disc)
    ok = np.isfinite(yx).all(axis=1)
    xlo, xhi, ylo, yhi = 0.0, w * scale, 0.0, h * scale
    if ok.any():
        xlo, xhi = min(xlo, yx[ok, 1].min() - d / 2), max(xhi, yx[ok, 1].max() + d / 2)
        ylo, yhi = min(ylo, yx[ok, 0].min() - d / 2), max(yhi, yx[ok, 0].max() + d / 2)
    beyond = (xlo, xhi, ylo, yhi) != (0.0, w * scale, 0.0, h * scale)
    notes = int(faint.any()) + int(beyond)
    fig, ax = _map_axes((yhi - ylo, xhi - xlo), title_lines=title.count("\n") + 1, notes=notes)
    lw = 0.6 if d / (xhi - xlo) * _AX_W_IN * 72 > 8 else 0   # outline discs that are big enough for it to show
    solid = ~faint
    discs = EllipseCollection(np.full(solid.sum(), d), np.full(solid.sum(), d), np.zeros(solid.sum()),
                              units="xy", offsets=yx[solid, ::-1], offset_transform=ax.transData,
                              cmap=colormaps[cmap].with_extremes(bad="#555555"),
                              edgecolors="#5a5a66", linewidths=lw)
    discs.set_array(np.ma.masked_invalid(values[solid]))
    discs.set_clim(vmin, vmax)
    ax.add_collection(discs)
    handles = []
    if faint.any():
        k = int(faint.sum())
        rings = EllipseCollection(np.full(k, d * 0.8), np.full(k, d * 0.8), np.zeros(k), units="xy",
                                  offsets=yx[faint, ::-1], offset_transform=ax.transData,
                                  facecolors="none", edgecolors="#a0a0b0", linewidths=0.8)
        rings.set_gid("seen-too-little")
        ax.add_collection(rings)
        from .sites import min_frames_in_view

        rule = f"< {min_frames_in_view(n_frames)} frames" if n_frames else "too few frames"
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="#707080",
                              label=f"in view {rule}: not coloured ({k} site{'s' if k != 1 else ''})"))
    if beyond:
        ax.add_patch(Rectangle((0, 0), w * scale, h * scale, fill=False, ls="--", lw=0.7, ec="#8a8a99"))
        handles.append(Line2D([], [], ls="--", color="#8a8a99", label="edge of the frame"))
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(yhi, ylo)
    ax.set_aspect("equal")
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):  # (a few ticks: at 0.2 Å/px a 96² frame's labels ran into each other)
        axis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"x [{unit}]")
    ax.set_ylabel(f"y [{unit}]")
    ax.set_title(title)
    _colorbar(fig, ax, discs, label or "")
    if handles:
        fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.01, 0.0), ncol=1, frameon=False,
                   fontsize="small", handlelength=1.5)
    return fig


def _render_map_image(image: np.ndarray, sampling: float | None, *, title: str, cmap: str,
                      label: str, vmin: float | None, vmax: float | None) -> Figure:
    """A stored ``[H, W]`` map (used when the run has no sites table)."""
    scale, unit = (float(sampling), "Å") if sampling else (1.0, "px")
    h, w = image.shape
    fig, ax = _map_axes(image.shape, title_lines=title.count("\n") + 1)
    im = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, extent=(0, w * scale, h * scale, 0),
                   interpolation="nearest")
    finite = image[np.isfinite(image)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    im.set_clim(lo, hi if hi > lo else lo + 1.0)
    ax.set_xlabel(f"x [{unit}]")
    ax.set_ylabel(f"y [{unit}]")
    ax.set_title(title)
    _colorbar(fig, ax, im, label)
    return fig


def _render_counts(frames: pd.DataFrame, class_counts: pd.DataFrame | None = None,
                   class_names: Sequence[str] = (), *, caption: str | None = None,
                   labels: dict[str, str] | None = None) -> Figure:
    """Columns found per frame (per class where the run has several), frames outside the trust
    ranges marked: the report's panel (:func:`etem.tracker.report.draw_counts`) as a figure."""
    from .report import draw_counts

    fig = Figure(figsize=(8.0, 3.4), layout="constrained")  # (room for the tick labels, however long)
    ax = fig.add_subplot()
    draw_counts(ax, frames, class_counts, class_names, labels)
    ax.set_title("Columns per frame" + (f"\n{caption}" if caption else ""))
    return fig


# what each map shows: its column in the sites table, title, colour map, colour-bar label, range
MAPS = {
    "occupancy": ("occupancy", "Occupancy", "viridis", "fraction of the frames in view occupied (0–1)", (0, 1)),
    "events": ("event_rate", "Events", "inferno", "fraction of frames with a change [1/frame]", (0, None)),
}


def _site_map(run: Run, key: Literal["occupancy", "events"]) -> Figure:
    column, title, cmap, label, vrange = MAPS[key]
    title = f"{title}\n{run_caption(run)}"
    sites = occupied_sites(run.sites)
    if len(sites):
        return render_site_map(sites, sites[column].to_numpy(), run.frame_shape, run.sampling,
                               title=title, cmap=cmap, label=label, vmin=vrange[0],
                               vmax=vrange[1], faint=seen_too_little(sites, len(run.frames)),
                               n_frames=len(run.frames))
    return _render_map_image(run.maps[key], run.sampling, title=title, cmap=cmap, label=label,
                             vmin=vrange[0], vmax=vrange[1])


# ---------------------------------------------------------------------------------------- tables

def _blocks(run: Run, name: str) -> Iterable[pd.DataFrame]:
    if name in TABLES:
        return run.iter_table(name, _BLOCK_ROWS)
    table = run.stats[name]
    names = run.class_names if name == "class_changes" and len(table) else []
    if names:  # beside the class numbers, their names (S2, S; B0, B1), as class_counts and the report say them
        table = table.assign(**{f"{end}_name": [class_label(names, c) for c in table[f"{end}_cls"]]
                                for end in ("from", "to")})
    return [table]


def _write_parquet(blocks: Iterable[pd.DataFrame], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for df in blocks:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _write_csv(blocks: Iterable[pd.DataFrame], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        for i, df in enumerate(blocks):
            df.to_csv(fh, header=i == 0, index=False)


_TABLE_WRITERS = {"parquet": _write_parquet, "csv": _write_csv}


def _save(render: Callable[[], Figure], path: Path) -> None:
    render().savefig(path, dpi=_DPI)


def export_run(run_path: str | Path, out_dir: str | Path, *,
               formats: Sequence[ExportFormat] | str = EXPORT_FORMATS,
               progress: bool = True, say: Callable[[str], None] | None = None) -> list[Path]:
    """Write a run's tables and figures into ``out_dir``.

    Parameters
    ----------
    run_path
        The run's HDF5 file (a run still being written, or left by a killed tracker, is exported
        as it stands: its statistics as of its latest resume snapshot, which the report and
        ``summary.json`` say; :attr:`etem.tracker.run.Run.stats_as_of`).
    out_dir
        Folder for the output; created if missing. Existing files of the same names are replaced.
    formats
        Any of ``"parquet"``, ``"csv"`` (one file per table), ``"png"`` (occupancy, event and
        counts figures), ``"h5"`` (``statistics.h5``) and ``"report"`` (``report.png``,
        ``report.pdf``, ``summary.json``): a list, or a string of one or several separated by
        commas (``"csv"``, ``"csv,png"``).
    progress
        Show a progress bar (only on a terminal).
    say
        Where to say the run's headline figures, the report's "Figures" panel line by line
        (:func:`etem.tracker.report.figure_lines`; ``print`` on the command line), before the
        files are written.

    Returns
    -------
    The paths written, in order.
    """
    if isinstance(formats, str):  # one format, or several as the command line takes them ("csv,png")
        formats = [f.strip() for f in formats.split(",")]
    formats = tuple(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in EXPORT_FORMATS:
            raise choice_error("format", fmt, EXPORT_FORMATS)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from .cli_outputs import _why_not

        where = next((p for p in out.parents if p.exists()), Path("."))
        raise ConfigError(f"cannot write {out}: {_why_not(exc, where)}") from None
    written: list[Path] = []

    with open_run(run_path) as run:
        from .report import render_report, run_statistics, write_statistics_h5

        derived, summ = run_statistics(run)
        if say is not None:
            from .report import figure_lines

            say(f"{run_caption(run)}:")
            for line in figure_lines(summ):
                say("  " + line.replace("\n", "\n  "))
        names = [*TABLES, *run.stats]
        jobs: list[tuple[str, Callable[[Path], None]]] = [
            (f"{name}.{fmt}", partial(_TABLE_WRITERS[fmt], _blocks(run, name)))
            for fmt in ("parquet", "csv") if fmt in formats for name in names]
        jobs += [(f"{name}.{fmt}", partial(_TABLE_WRITERS[fmt], [df]))
                 for fmt in ("parquet", "csv") if fmt in formats for name, df in derived.items()]
        if "h5" in formats:
            jobs.append(("statistics.h5", partial(write_statistics_h5, tables={**run.stats, **derived}, summ=summ)))
        if "report" in formats:
            jobs += [("summary.json", lambda p: p.write_text(json.dumps(summ, indent=1, default=str) + "\n")),
                     ("report.png", partial(_save, lambda: render_report(run, derived, summ))),
                     ("report.pdf", lambda p: render_report(run, derived, summ).savefig(p))]
        if "png" in formats:
            jobs += [("occupancy.png", partial(_save, lambda: _site_map(run, "occupancy"))),
                     ("events.png", partial(_save, lambda: _site_map(run, "events"))),
                     ("counts.png", partial(_save, lambda: _render_counts(
                         run.frames, derived["class_counts"], run.class_names, caption=run_caption(run),
                         labels=summ.get("class_labels"))))]
            if has_class_changes(run):
                jobs.append(("class_changes.png", partial(_save, lambda: _class_change_map(run))))
            if len(derived["site_intensity"]) and len(run.sites):
                jobs.append(("intensity.png", partial(_save, lambda: _intensity_map(run, derived["site_intensity"]))))
        show = progress and sys.stderr.isatty()
        for filename, write in tqdm(jobs, desc="export", unit="file", disable=not show):
            write(out / filename)
            written.append(out / filename)
    return written
