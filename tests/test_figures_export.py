"""The exported figures say what they show: a movie file whose content matches its suffix,
trust markers on a drawn line, sites seen in too few frames not drawn as measured, whole
discs, titles that name the run, labelled colour bars and reference lines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from etem.tracker import export
from etem.tracker.errors import ConfigError
from etem.tracker.export import export_run
from etem.tracker.runfile import RunWriter, open_run

SHAPE = (48, 64)


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(export, "_DPI", 40)


def _sites(n_obs_edge: int = 1) -> pd.DataFrame:
    yy, xx = np.mgrid[8:44:8, 8:60:8]
    n = yy.size
    sites = pd.DataFrame({"site": np.arange(n + 2), "y": np.r_[yy.ravel(), -1.0, 47.5].astype(float),
                          "x": np.r_[xx.ravel(), 20.0, 30.0].astype(float), "cls": np.zeros(n + 2, "int16"),
                          "n_obs": np.r_[np.full(n, 20), 20, n_obs_edge], "n_occupied": np.r_[np.full(n, 18), 18, 1],
                          "n_events": np.ones(n + 2, int), "occupancy": np.r_[np.full(n, 0.9), 0.9, 1.0],
                          "event_rate": np.full(n + 2, 0.05)})
    return sites


def make_run(path, *, n_frames=20, classes=("Mo", "S2"), status="complete", changes=True, sites=None):
    rng = np.random.default_rng(1)
    with RunWriter(path, attrs={"engine": {"kind": "test", "class_names": list(classes)}},
                   counter_names=["received", "processed"]) as w:
        w.begin(SHAPE, 0.2)
        for i in range(n_frames):
            n = 30
            w.append("frames", {"frame": i, "seq": i, "t": 0.04 * i, "n_columns": n, "in_range": int(i % 4 != 1)})
            w.append("columns", {"frame": i, "y": rng.random(n) * SHAPE[0], "x": rng.random(n) * SHAPE[1],
                                 "cls": np.arange(n) % len(classes), "prob": rng.random(n),
                                 "particle": np.arange(n)})
        w.replace("sites", _sites() if sites is None else sites)
        w.write_maps(rng.random(SHAPE), rng.random(SHAPE) * 0.1)
        w.write_counters({"received": n_frames, "processed": n_frames})
        extra = {}
        if changes:
            extra["class_changes"] = pd.DataFrame({"frame": [3, 5, 9], "site": [1, 2, 2], "from_cls": [1, 1, 0],
                                                   "to_cls": [0, 0, 1]})
        if status == "complete":
            w.close(extra_tables=extra)
        else:
            w.close(status=status, extra_tables=extra)


def _report(path):
    from etem.tracker.report import render_report, run_statistics

    with open_run(path) as run:
        tables, summ = run_statistics(run)
        fig = render_report(run, tables, summ)
        FigureCanvasAgg(fig).draw()
    return fig


# ------------------------------------------------------------------------------------- 1: the movie

def _movie_run(tmp_path, n_frames=4, shape=(64, 96)):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "movie.npy", (rng.random((n_frames, *shape)) * 0.1
                                     + np.linspace(0, 1, n_frames)[:, None, None]).astype(np.float32))
    yy, xx = np.mgrid[8:60:12, 8:90:12]
    with RunWriter(tmp_path / "run.h5", attrs={"engine": {"kind": "test", "class_names": ["Mo", "S2"]}},
                   counter_names=["received", "processed"]) as w:
        w.begin(shape, 0.2)
        for i in range(n_frames):
            w.append("frames", {"frame": i, "seq": i, "t": 0.04 * i, "n_columns": yy.size})
            w.append("columns", {"frame": i, "y": yy.ravel().astype(float), "x": xx.ravel().astype(float),
                                 "cls": np.arange(yy.size) % 2, "particle": np.arange(yy.size)})
    return tmp_path / "run.h5", tmp_path / "movie.npy"


def test_mp4_is_a_real_mp4_or_refused_up_front(tmp_path, monkeypatch, capsys):
    """`etem export run.h5 --movie talk.mp4` wrote a GIF named .mp4; now an MP4 (ISO media: 'ftyp'
    at byte 4) where ffmpeg is there, else a one-line error before any other output is written."""
    from etem.tracker import movie as movie_module, report
    from etem.tracker.cli import main

    run, movie = _movie_run(tmp_path)
    if movie_module.mp4_encoder() is not None:
        out = tmp_path / "out"
        assert main(["export", str(run), "-o", str(out), "--formats", "csv", "--movie", str(tmp_path / "t.mp4"),
                     "--source", str(movie)]) == 0
        head = (tmp_path / "t.mp4").read_bytes()[:12]
        assert head[4:8] == b"ftyp", head
    monkeypatch.setattr(movie_module, "mp4_encoder", lambda: None)
    out = tmp_path / "out2"
    capsys.readouterr()
    assert main(["export", str(run), "-o", str(out), "--formats", "csv", "--movie", str(tmp_path / "u.mp4"),
                 "--source", str(movie)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "etem-tracker[movie]" in err and ".gif" in err, err
    assert not (tmp_path / "u.mp4").exists() and not out.exists()  # (nothing written before the refusal)
    with pytest.raises(ConfigError, match=r"\.gif, \.png"):
        movie_module.check_movie_path(tmp_path / "talk.avi")


def test_gif_and_apng_are_what_their_suffix_says(tmp_path):
    from etem.tracker.movie import write_movie

    run_path, movie = _movie_run(tmp_path)
    with open_run(run_path) as run:
        gif = write_movie(run, movie, tmp_path / "m.gif")
        png = write_movie(run, movie, tmp_path / "m.png")
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- 4: the movie's content

def test_movie_is_enlarged_timed_real_time_and_says_its_cut(tmp_path):
    """A 64x96 movie gave a 96-px-wide GIF at 10 frames/s whatever the recording, 'frame N' over the
    columns, each frame stretched to its own range, and stopped at the frame cap without a word."""
    from PIL import Image

    from etem.tracker.movie import movie_fps, write_movie

    run_path, movie = _movie_run(tmp_path, n_frames=6)
    said = []
    with open_run(run_path) as run:
        gif = write_movie(run, movie, tmp_path / "m.gif", max_frames=4, say=said.append)
        write_movie(run, movie, tmp_path / "own.gif", contrast="frame")
    with Image.open(gif) as im:
        assert im.n_frames == 4
        assert max(im.size) >= 512                       # enlarged (96 px -> 576)
        assert im.info["duration"] == 40                 # 25 frames/s: the recording's own
        im.seek(0)
        first = np.asarray(im.convert("L"), float)
        im.seek(3)
        last = np.asarray(im.convert("L"), float)
    assert said and "4" in said[0] and "6" in said[0]   # the cut is said, with the run's frames
    # one grey range for the movie: the movie gets brighter frame by frame, and so does the GIF
    h = first.shape[0]
    mid = slice(h // 3, 2 * h // 3)
    assert last[mid].mean() > first[mid].mean() + 40
    with Image.open(tmp_path / "own.gif") as im:
        im.seek(0)
        a = np.asarray(im.convert("L"), float)[mid].mean()
        im.seek(5)
        b = np.asarray(im.convert("L"), float)[mid].mean()
    assert abs(a - b) < 20                               # (each frame its own range: the change flattened)
    assert movie_fps(25.0, None) == (25.0, "real time (25 frames/s)")
    play, said_pace = movie_fps(1000.0, None)
    assert play == 30.0 and "33.3× slower" in said_pace          # (capped at 30 frames/s)
    assert "2× faster" in movie_fps(5.0, 10.0)[1]
    assert "2.5× slower" in movie_fps(25.0, 10.0)[1]


def test_movie_stamp_and_scale_bar_lie_in_a_band_off_the_image(tmp_path):
    """The 'frame N' stamp lay over the image's top-left columns; now a band above holds it (and the
    time, and a scale bar): the image's pixels are untouched there."""
    from PIL import Image

    from etem.tracker.movie import _movie_header, _font

    band = _movie_header(576, "frame 3   t = 0.120 s", 0.2, 6.0, _font(14))
    rgb = np.asarray(band)
    assert (rgb.max(axis=-1) > 200).sum() > 50           # text and a white bar drawn in the band
    bar_row = rgb[17, :, 0]
    assert (bar_row > 200).sum() > 40                    # the scale bar: 1 nm at 0.2 Å/px x 6 = 300 px? (at least a bar)
    run_path, movie = _movie_run(tmp_path, n_frames=1)
    with open_run(run_path) as run:
        gif = write_movie_plain(run, movie, tmp_path / "m.gif")
    with Image.open(gif) as im:
        assert im.size[1] == band.height + 64 * 6 + (im.size[1] - band.height - 64 * 6)
        assert im.size[0] == 96 * 6


def write_movie_plain(run, movie, path):
    from etem.tracker.movie import write_movie

    return write_movie(run, movie, path)


# -------------------------------------------------------------------------- 2, 5: the report's panels

def test_trust_markers_lie_on_a_drawn_line_and_the_legend_is_outside(tmp_path):
    """Per-class lines at about 15 each, the red markers at the total (30) where no line was drawn,
    and the legend box over the markers of the first frames."""
    make_run(tmp_path / "run.h5")
    fig = _report(tmp_path / "run.h5")
    [ax] = [a for a in fig.axes if a.get_title() == "Columns per class over time"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    marks = lines["outside the trust ranges"]
    mx, my = marks.get_xdata(), marks.get_ydata()
    on = [ln for k, ln in lines.items() if k != "outside the trust ranges"
          and np.allclose(np.interp(mx, ln.get_xdata(), ln.get_ydata()), my)]
    assert on, list(lines)
    assert ax.get_ylim()[0] == 0
    legend = ax.get_legend().get_window_extent()
    box = ax.get_window_extent()
    assert legend.x0 >= box.x1 - 1                      # beside the axes, over no data


def test_report_shows_the_class_change_map_and_a_one_frame_run_is_sane(tmp_path):
    make_run(tmp_path / "run.h5")
    titles = [a.get_title() for a in _report(tmp_path / "run.h5").axes]
    assert "Class changes" in titles
    make_run(tmp_path / "plain.h5", classes=("Au",), changes=False)
    assert "Class changes" not in [a.get_title() for a in _report(tmp_path / "plain.h5").axes]
    make_run(tmp_path / "one.h5", n_frames=1, changes=False)
    fig = _report(tmp_path / "one.h5")
    texts = " ".join(t.get_text() for a in fig.axes for t in a.texts)
    assert "one frame: no events" in texts and "one frame: no residence" in texts
    [ax] = [a for a in fig.axes if a.get_title() == "Columns per class over time"]
    lo, hi = ax.get_xlim()
    assert hi - lo >= 1.5                                # (was -0.045 ... 0.045)
    assert "1 frame," in fig.texts[0].get_text() if fig.texts else fig._suptitle.get_text()


def test_a_few_residences_are_listed_not_drawn_as_one_bar():
    from matplotlib.figure import Figure

    from etem.tracker.report import _residence_panel

    hist = pd.DataFrame({"state": ["empty", "occupied"], "frames": [34, 1], "completed": [1, 0],
                         "censored": [0, 196]})
    ax = Figure().add_subplot()
    _residence_panel(ax, hist, 60)
    text = " ".join(t.get_text() for t in ax.texts)
    assert not ax.patches and "only 1 residence" in text and "196 more runs cut by the movie's start or end" in text
    assert "or by the site leaving the view" in text  # (runs cut at the view's edge are counted too)


# ------------------------------------------------------------------ 3, 6, 7: the maps and their titles

def test_sites_seen_in_too_few_frames_are_hollow_and_discs_whole(tmp_path):
    """Site in view 1 frame (occupancy 1.0) was a full yellow disc, one at y < 0 a half disc."""
    from etem.tracker.sites import min_frames_in_view, seen_too_little

    assert min_frames_in_view(60) == 6 and min_frames_in_view(10) == 3 and min_frames_in_view(1) == 1
    make_run(tmp_path / "run.h5", n_frames=20)
    with open_run(tmp_path / "run.h5") as run:
        fig = export._site_map(run, "occupancy")
        FigureCanvasAgg(fig).draw()
        sites = run.sites
    ax = fig.axes[0]
    rings = [c for c in ax.collections if c.get_gid() == "seen-too-little"]
    assert len(rings) == 1 and len(rings[0].get_offsets()) == 1
    assert seen_too_little(sites, 20).sum() == 1
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "in view < 3 frames" in legend
    discs = ax.collections[0]
    d = 0.8 * 8 * 0.2                                       # 0.8 x spacing [Å]
    (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
    for x, y in discs.get_offsets():
        assert x0 <= x - d / 2 + 1e-6 and x + d / 2 <= x1 + 1e-6 and y0 <= y - d / 2 + 1e-6 and y + d / 2 <= y1 + 1e-6
    assert "edge of the frame" in legend


def test_map_titles_name_the_run_and_its_end_and_colour_bars_are_labelled(tmp_path):
    make_run(tmp_path / "stopped.h5", n_frames=12, status="interrupted")
    out = tmp_path / "out"
    export_run(tmp_path / "stopped.h5", out, formats=("png",), progress=False)
    with open_run(tmp_path / "stopped.h5") as run:
        figs = {"occupancy": export._site_map(run, "occupancy"), "events": export._site_map(run, "events"),
                "class_changes": export._class_change_map(run)}
    for name, fig in figs.items():
        title = fig.axes[0].get_title()
        assert "stopped.h5" in title and "interrupted after 12 frames" in title, (name, title)
        assert fig.axes[0].child_axes[0].get_ylabel(), name              # the colour bar says what it counts
    assert "[1/frame]" in figs["events"].axes[0].child_axes[0].get_ylabel()


def test_intensity_colour_bar_says_its_unit(tmp_path):
    from etem.tracker.report import run_statistics

    make_run(tmp_path / "run.h5", classes=("column",), changes=False)
    with open_run(tmp_path / "run.h5") as run:
        sites = run.sites
        per = pd.DataFrame({"site": sites["site"], "intensity_mean": np.linspace(1, 2, len(sites))})
        fig = export._intensity_map(run, per)
        run_statistics(run)
    assert "pixel units" in fig.axes[0].child_axes[0].get_ylabel()


def test_counts_png_starts_at_zero_in_frames_with_classes_and_the_report_words(tmp_path):
    from etem.tracker.report import run_statistics

    make_run(tmp_path / "run.h5")
    with open_run(tmp_path / "run.h5") as run:
        tables, _ = run_statistics(run)
        fig = export._render_counts(run.frames, tables["class_counts"], run.class_names, caption="x")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_xlabel() == "frame"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Mo" in labels and "S2" in labels and "outside the trust ranges" in labels
    assert any(a.get_xlabel() == "time [s]" for a in ax.child_axes)  # seconds on top: the run knows its fps


def test_dashboard_maps_leave_out_sites_seen_in_too_few_frames():
    """The dashboard's maps drew the one-frame edge site at full occupancy too; they follow the
    exported maps' rule (etem.tracker.sites.seen_too_little), leaving such sites out."""
    from PIL import Image
    import io

    from etem.tracker.dashboard import Dashboard, DashboardConfig

    sites = _sites()
    dash = Dashboard(DashboardConfig(port=0))
    dash._sites = {"table": sites, "shape": SHAPE, "radius_px": 3.0, "n_frames": 20, "version": 1}
    maps = dash.maps()
    assert maps["sites_left_out"] == 1 and maps["min_frames_in_view"] == 3
    occ = np.asarray(Image.open(io.BytesIO(maps["occupancy"])))
    k = maps["scale"]
    y, x = (np.array([47.5, 30.0]) + 0.5) * k - 0.5
    y = min(int(round(y)), occ.shape[0] - 1)
    assert occ[y, int(round(x))] == 255                   # (the off-site colour: not drawn)


# ------------------------------------------------------------------------------------ 9: evaluate

def test_f1_vs_dose_labels_its_reference_lines_and_says_its_set():
    from etem.train.assess import dose_figure

    rows = [{"method": m, "dose": d, "tp": 9, "fp": 1, "fn": 1, "rms_A": 0.2, "frame": k}
            for m in ("a", "b") for d in (300.0, 3000.0) for k in range(2)]
    per = pd.DataFrame(rows)
    per.attrs.update(wave_set="au.h5", n=2, radius_A=1.0)
    fig = dose_figure(per)
    a1, a2 = fig.axes[:2]
    assert "target F1 0.98" in [t.get_text() for t in a1.get_legend().get_texts()]
    assert "cut-off 0.3 Å" in [t.get_text() for t in a2.get_legend().get_texts()]
    title = fig._suptitle.get_text()
    assert "au.h5" in title and "2 images per dose" in title and "1 Å" in title


def test_movie_text_font_draws_the_signs_its_captions_use():
    """'2.5× slower' and 'Å' came out as empty boxes: Pillow's own default font has neither glyph."""
    from etem.tracker.movie import _font

    font = _font(14)
    missing = np.asarray(font.getmask("\ue000"))  # a private-use code point: no font draws it
    for sign in ("×", "Å", "µ"):
        drawn = np.asarray(font.getmask(sign))
        assert drawn.size and drawn.any(), sign
        assert drawn.shape != missing.shape or (drawn != missing).any(), sign
