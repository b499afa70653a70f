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
from .sites import occupied_sites

__all__ = ["export_run", "render_site_map", "EXPORT_FORMATS"]

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


def _map_axes(shape: tuple[int, int]) -> tuple[Figure, object]:
    """A figure sized to the frame's aspect with one dark axes (fixed margins: fast to draw)."""
    h, w = shape
    left, right, bottom, top = 0.85, 1.45, 0.65, 0.45       # margins [inch]
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


def _intensity_map(run: Run, per_site: pd.DataFrame) -> Figure:
    """Sites coloured by the mean intensity of the columns seen there (ADF STEM: Z contrast), over
    the floor about them where the run measured it (:func:`etem.tracker.diffusion.site_intensity`)."""
    sites = occupied_sites(run.sites)
    mean = sites["site"].map(per_site.set_index("site")["intensity_mean"]).to_numpy(float)
    lo, hi = np.nanpercentile(mean, [1, 99]) if np.isfinite(mean).any() else (None, None)
    cols = run.columns
    floor = "background" in cols and bool(np.isfinite(cols["background"]).any())
    label = "mean intensity of the columns seen" + (", over the floor about them" if floor else "")
    return render_site_map(sites, mean, run.frame_shape, run.sampling, title="Column intensity",
                           cmap="cividis", label=label, vmin=lo, vmax=hi)


def _class_change_map(run: Run) -> Figure:
    """Sites coloured by how often their column changed class (an S2 column losing an atom and
    getting it back: two), per frame the site was seen: where the changes of ``class_changes`` are."""
    sites = occupied_sites(run.sites)
    n = run.stats["class_changes"]["site"].value_counts()
    rate = sites["site"].map(n).fillna(0).to_numpy(float) / np.maximum(sites["n_obs"].to_numpy(float), 1)
    names = run.class_names
    which = f" ({', '.join(names)})" if 1 < len(names) <= 6 else ""
    return render_site_map(sites, rate, run.frame_shape, run.sampling, title=f"Class changes{which}",
                           cmap="inferno", label="class changes per frame seen", vmin=0)


def render_site_map(sites_df: pd.DataFrame, values: np.ndarray | Sequence[float],
                    shape: tuple[int, int], sampling: float | None, *, title: str,
                    cmap: str = "viridis", label: str | None = None,
                    vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Sites as discs coloured by ``values`` on a dark background, with a colour bar.

    Parameters
    ----------
    sites_df
        Sites table with ``y, x`` [px] (reference coordinates).
    values
        One value per site (NaN shown grey).
    shape
        Frame ``(H, W)`` [px]; sets the axes' extent.
    sampling
        Pixel size [Å/px]: axes in Å when given, else in px.
    title, cmap, label, vmin, vmax
        Title, colour map, colour-bar label and colour range (from the finite values if None).

    Returns
    -------
    A matplotlib Figure not attached to any GUI (save it with ``fig.savefig``).
    """
    values = np.asarray(values, dtype=float)
    if len(values) != len(sites_df):
        raise ValueError(f"values has {len(values)} entries for {len(sites_df)} sites.")
    scale, unit = (float(sampling), "Å") if sampling else (1.0, "px")
    h, w = shape
    yx = sites_df[["y", "x"]].to_numpy(dtype=float) * scale
    finite = values[np.isfinite(values)]
    if vmin is None:
        vmin = float(finite.min()) if len(finite) else 0.0
    if vmax is None:
        vmax = float(finite.max()) if len(finite) else 1.0
    if vmax <= vmin:
        vmax = vmin + 1.0

    fig, ax = _map_axes(shape)
    d = _disc_diameter(yx)
    discs = EllipseCollection(np.full(len(yx), d), np.full(len(yx), d), np.zeros(len(yx)),
                              units="xy", offsets=yx[:, ::-1], offset_transform=ax.transData,
                              cmap=colormaps[cmap].with_extremes(bad="#555555"),
                              edgecolors="#5a5a66",
                              # outline discs that are big enough for it to show
                              linewidths=0.6 if d / (w * scale) * _AX_W_IN * 72 > 8 else 0)
    discs.set_array(np.ma.masked_invalid(values))
    discs.set_clim(vmin, vmax)
    ax.add_collection(discs)
    ax.set_xlim(0, w * scale)
    ax.set_ylim(h * scale, 0)
    ax.set_aspect("equal")
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):  # (a few ticks: at 0.2 Å/px a 96² frame's labels ran into each other)
        axis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"x [{unit}]")
    ax.set_ylabel(f"y [{unit}]")
    ax.set_title(title)
    _colorbar(fig, ax, discs, label or "")
    return fig


def _render_map_image(image: np.ndarray, sampling: float | None, *, title: str, cmap: str,
                      label: str, vmin: float | None, vmax: float | None) -> Figure:
    """A stored ``[H, W]`` map (used when the run has no sites table)."""
    scale, unit = (float(sampling), "Å") if sampling else (1.0, "px")
    h, w = image.shape
    fig, ax = _map_axes(image.shape)
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


def _render_counts(frames: pd.DataFrame) -> Figure:
    """Columns found per frame over time (or frame index), untrusted frames marked."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.0, 3.2), layout="constrained")  # (room for the tick labels, however long)
    ax = fig.add_subplot()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole columns
    t = frames["t"].to_numpy(dtype=float)
    use_t = len(t) > 0 and bool(np.isfinite(t).all())
    x = t if use_t else frames["frame"].to_numpy()
    n = frames["n_columns"].to_numpy()
    ax.plot(x, n, lw=1.0, color="C0", label="columns per frame")
    bad = frames["in_range"].to_numpy() == 0
    if bad.any():
        ax.plot(x[bad], n[bad], "o", ms=3, color="C3", label="outside the trusted range")
    if len(x):
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("time [s]" if use_t else "frame")
    ax.set_ylabel("columns")
    ax.set_title("Columns per frame")
    return fig


def _site_map(run: Run, key: Literal["occupancy", "events"]) -> Figure:
    column, title, cmap, label, vrange = {
        "occupancy": ("occupancy", "Occupancy", "viridis", "fraction of frames occupied", (0, 1)),
        "events": ("event_rate", "Events", "inferno", "fraction of frames with a change",
                   (0, None)),
    }[key]
    sites = occupied_sites(run.sites)
    if len(sites):
        return render_site_map(sites, sites[column].to_numpy(), run.frame_shape, run.sampling,
                               title=title, cmap=cmap, label=label, vmin=vrange[0],
                               vmax=vrange[1])
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
               progress: bool = True) -> list[Path]:
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
                     ("counts.png", partial(_save, lambda: _render_counts(run.frames)))]
            changes = run.stats.get("class_changes")
            if changes is not None and len(changes) and len(run.sites) and "n_obs" in run.sites:
                jobs.append(("class_changes.png", partial(_save, lambda: _class_change_map(run))))
            if len(derived["site_intensity"]) and len(run.sites):
                jobs.append(("intensity.png", partial(_save, lambda: _intensity_map(run, derived["site_intensity"]))))
        show = progress and sys.stderr.isatty()
        for filename, write in tqdm(jobs, desc="export", unit="file", disable=not show):
            write(out / filename)
            written.append(out / filename)
    return written
