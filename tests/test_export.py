"""``etem export``: Parquet / CSV tables equal to the run file's, PNG figures that load."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from matplotlib.figure import Figure

from etem.tracker import export
from etem.tracker.errors import ConfigError
from etem.tracker.export import export_run, render_site_map
from etem.tracker.runfile import RunWriter, open_run

SHAPE = (40, 60)


def lattice_sites(spacing: float = 5.0) -> pd.DataFrame:
    yy, xx = np.mgrid[spacing:SHAPE[0]:spacing, spacing:SHAPE[1]:spacing]
    n = yy.size
    rng = np.random.default_rng(0)
    occupancy = rng.random(n)
    occupancy[3] = np.nan                      # a site never observed
    return pd.DataFrame({"site": np.arange(n), "y": yy.ravel(), "x": xx.ravel(),
                         "cls": np.ones(n, dtype="int16"), "n_obs": np.full(n, 20),
                         "occupancy": occupancy, "event_rate": rng.random(n) * 0.2})


def make_run(path, *, n_frames: int = 20, sampling: float | None = 0.2, with_sites=True):
    rng = np.random.default_rng(1)
    sites = lattice_sites()
    with RunWriter(path, attrs={"config": {"source": "synthetic"}},
                   counter_names=["received", "processed"]) as w:
        w.begin(SHAPE, sampling)
        for i in range(n_frames):
            n = int(rng.integers(30, 40))
            w.append("frames", {"frame": i, "seq": i, "t": 0.1 * i, "n_columns": n,
                                "in_range": int(i % 7 != 3)})
            w.append("columns", {"frame": i, "y": rng.random(n) * SHAPE[0],
                                 "x": rng.random(n) * SHAPE[1], "cls": 1,
                                 "prob": rng.random(n), "particle": np.arange(n)})
        if with_sites:
            w.replace("sites", sites)
        w.write_maps(rng.random(SHAPE), rng.random(SHAPE) * 0.1)
        w.write_counters({"received": n_frames, "processed": n_frames})
        w.close(extra_tables={"diffusion": pd.DataFrame({
            "cls": ["Au", "C"], "D_A2_per_s": [0.3, 1.2], "n_tracks": [12, 4]})})


TABLE_NAMES = ["frames", "columns", "sites", "diffusion"]


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(export, "_DPI", 50)       # the figures stay readable, tests stay fast


def test_export_writes_every_table_and_figure(tmp_path):
    make_run(tmp_path / "run.h5")
    paths = export_run(tmp_path / "run.h5", tmp_path / "out", progress=False)
    names = sorted(p.name for p in paths)
    derived = ("site_kinetics", "residence_histogram", "hop_jumps", "msd", "tracks", "class_counts", "site_intensity")
    assert names == sorted([f"{t}.{ext}" for t in (*TABLE_NAMES, *derived) for ext in ("parquet", "csv")]
                           + ["occupancy.png", "events.png", "counts.png", "statistics.h5", "summary.json",
                              "report.png", "report.pdf"])
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)

    with open_run(tmp_path / "run.h5") as run:
        stored = {"frames": run.frames, "columns": run.columns, "sites": run.sites,
                  **run.stats}
    for name, table in stored.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / f"{name}.parquet"),
                                      table, check_dtype=name != "diffusion")
        from_csv = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        if name != "diffusion":
            from_csv = from_csv.astype(table.dtypes.to_dict())
        pd.testing.assert_frame_equal(from_csv, table, check_dtype=name != "diffusion")

    for name in ("occupancy", "events", "counts"):
        image = mpimg.imread(tmp_path / "out" / f"{name}.png")
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert min(image.shape[:2]) > 100
        assert image.std() > 0


def test_long_columns_table_is_written_in_blocks(tmp_path, monkeypatch):
    make_run(tmp_path / "run.h5")
    monkeypatch.setattr(export, "_BLOCK_ROWS", 64)
    export_run(tmp_path / "run.h5", tmp_path / "out", formats=("parquet", "csv"),
               progress=False)
    meta = pq.ParquetFile(tmp_path / "out" / "columns.parquet").metadata
    assert meta.num_row_groups > 1
    with open_run(tmp_path / "run.h5") as run:
        columns = run.columns
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "columns.parquet"), columns)
    from_csv = pd.read_csv(tmp_path / "out" / "columns.csv").astype(columns.dtypes.to_dict())
    pd.testing.assert_frame_equal(from_csv, columns)


def test_export_without_sites_draws_the_stored_maps(tmp_path):
    make_run(tmp_path / "run.h5", with_sites=False, sampling=None)
    paths = export_run(tmp_path / "run.h5", tmp_path / "out", formats=["png"], progress=False)
    assert [p.name for p in paths] == ["occupancy.png", "events.png", "counts.png"]
    assert mpimg.imread(paths[0]).std() > 0


def test_export_of_an_empty_run(tmp_path):
    with RunWriter(tmp_path / "run.h5", attrs={}, counter_names=[]) as w:
        w.begin(SHAPE, 0.1)
    paths = export_run(tmp_path / "run.h5", tmp_path / "out", progress=False)
    assert len(pd.read_parquet(tmp_path / "out" / "columns.parquet")) == 0
    assert all(p.stat().st_size > 0 for p in paths)


def test_unknown_format_is_rejected(tmp_path):
    make_run(tmp_path / "run.h5", n_frames=2)
    with pytest.raises(ConfigError, match="'csv', 'h5', 'parquet', 'png', 'report'"):
        export_run(tmp_path / "run.h5", tmp_path / "out", formats=("xlsx",))


@pytest.mark.parametrize("sampling, unit", [(0.2, "Å"), (None, "px")])
def test_render_site_map_axes_units(sampling, unit):
    sites = lattice_sites()
    fig = render_site_map(sites, sites["occupancy"], SHAPE, sampling, title="Occupancy",
                          cmap="viridis", vmin=0, vmax=1)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == f"x [{unit}]"
    assert ax.get_xlim() == pytest.approx((0, SHAPE[1] * (sampling or 1)))
    assert ax.collections[0].colorbar is not None
    with pytest.raises(ValueError, match="values"):
        render_site_map(sites, [0.5], SHAPE, sampling, title="x", cmap="viridis")


def test_a_run_that_did_not_end_says_so_in_its_summary_and_report(tmp_path):
    import json

    from etem.simulate.toy import make_movie
    from etem.tracker import Pipeline, PipelineConfig
    from etem.tracker.sources import iter_array

    m = make_movie(n_frames=12, shape=(96, 96), particle_radius_A=6.0, seed=1)
    path = tmp_path / "run.h5"
    pipe = Pipeline(PipelineConfig(), run_path=path)
    it = pipe.run_iter(iter_array(m.frames, counters=pipe.counters, sampling=m.sampling))
    for res in it:
        if res.frame == 5:
            break
    it.close()  # (stopped from outside, as a program stops it)
    export_run(path, tmp_path / "out", formats=("report",), progress=False)
    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summ["run_status"] == "stopped" and summ["frames"] == 6


def test_counts_plot_has_whole_column_ticks_and_its_label_fits():
    """counts.png with 113-114 columns per frame: the y ticks are whole numbers (they were 113.25,
    113.5 …) and the y label lies inside the figure (it was cut off by the long tick labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = 10
    frames = pd.DataFrame({"frame": np.arange(n), "t": 0.1 * np.arange(n),
                           "n_columns": 113 + np.arange(n) % 2, "in_range": np.ones(n, int)})
    fig = export._render_counts(frames)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    label = ax.yaxis.label.get_window_extent()
    labels = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()]
    assert label.x0 >= 0 and min(b.x0 for b in labels) >= 0, (label, labels)


def test_the_report_labels_of_large_counts_fit(tmp_path):
    """report.png of the real MoS2 ADF image (about 2000 columns per class): the y label
    "columns" of the counts over time was cut off at the page's edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from etem.tracker.report import render_report, run_statistics

    make_run(tmp_path / "run.h5")
    with open_run(tmp_path / "run.h5") as run:
        tables, summ = run_statistics(run)
        tables["class_counts"] = pd.DataFrame({"frame": [0], "n_A0": [2088], "n_B0": [1960], "n_B1": [99]})
        fig = render_report(run, tables, summ)
        FigureCanvasAgg(fig).draw()
    [ax] = [a for a in fig.axes if a.get_title() == "Columns per class over time"]
    label = ax.yaxis.label.get_window_extent()
    ticks = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()]
    assert label.x0 >= 0 and min(b.x0 for b in ticks) >= 0, (label, ticks)


def test_the_movie_draws_each_class_in_its_colour_with_a_legend(tmp_path):
    """`etem export --movie`: every column was one red circle, no legend; now each class is
    drawn in its name's colour (as the overlay), with a legend in a band below the frames."""
    from PIL import Image

    from etem.tracker.plots import class_colours
    from etem.tracker.report import write_movie

    shape, n_frames = (96, 128), 3
    rng = np.random.default_rng(0)
    np.save(tmp_path / "movie.npy", rng.random((n_frames, *shape)).astype(np.float32) * 0.1)
    yy, xx = np.mgrid[10:90:16, 10:120:16]
    n = yy.size
    with RunWriter(tmp_path / "run.h5", attrs={"engine": {"kind": "test", "class_names": ["Mo", "S2"]}},
                   counter_names=["received", "processed"]) as w:
        w.begin(shape, 0.2)
        for i in range(n_frames):
            w.append("frames", {"frame": i, "seq": i, "n_columns": n})
            w.append("columns", {"frame": i, "y": yy.ravel().astype(float), "x": xx.ravel().astype(float),
                                 "cls": np.arange(n) % 2, "particle": np.arange(n)})
    run = open_run(tmp_path / "run.h5")
    gif = write_movie(run, tmp_path / "movie.npy", tmp_path / "m.gif")
    run.close()
    with Image.open(gif) as im:
        assert im.n_frames == n_frames
        w_px, h_px = im.size
        rgb = np.asarray(im.convert("RGB")).astype(int)
    k = 512 // shape[1]                              # (small frames are enlarged, pixel for pixel)
    top = 26                                         # (the band above: frame, time, scale bar)
    assert w_px == shape[1] * k and h_px > top + shape[0] * k + 8  # the frame, and the legend's band below it

    def near(colour: str, part: np.ndarray) -> int:
        want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(part - want).sum(axis=-1) < 60).sum())

    mo, s2 = class_colours(["Mo", "S2"])[:2]
    frame, band = rgb[top: top + shape[0] * k], rgb[top + shape[0] * k:]
    assert near(mo, frame) > 4 * (n // 2) and near(s2, frame) > 4 * (n // 2)  # every column circled in its colour
    assert near(mo, band) > 0 and near(s2, band) > 0  # ... and said in the legend
    assert near("#FF3C3C", frame) == 0  # (no column red)


def test_the_summary_accounts_for_every_message(tmp_path):
    """summary.json says what came in and what became of it (it held no message counts: a
    camera integrator had only frames.csv's seq to go by)."""
    import json

    from etem.simulate import make_movie
    from etem.tracker import track

    frames = make_movie(n_frames=6, shape=(64, 64), seed=0).frames.astype(np.float32)
    frames[2, 5, 5] = np.nan  # one frame that cannot be located
    track(frames, sampling=0.2, classical=True, run_path=tmp_path / "run.h5")
    export_run(tmp_path / "run.h5", tmp_path / "out", formats="csv,report", progress=False)
    messages = json.loads((tmp_path / "out" / "summary.json").read_text())["messages"]
    assert messages["received"] == 6 and messages["processed"] == 5
    assert messages["rejected"] == 1 and messages["rejected/nan"] == 1 and messages["dropped"] == 0
    assert "rejected/dtype" not in messages  # (reasons that did not occur are left out)
