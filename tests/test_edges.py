"""Columns at the image's border: one whose centre lies less than ``edge_px`` inside is left out,
one further in is kept, alike on all four sides, by either locate method and the classical
locator (a column cut by the edge has no measurable centre)."""
import numpy as np
import pytest
import torch

from etem.tracker.classical import find_columns_classical
from etem.tracker.locate import LocateConfig, inside_edge, locate

H = W = 64


def _columns(d: float) -> list[tuple[float, float]]:
    """One column ``d`` px inside each side (off the pixel grid), and one in the middle."""
    return [(d, 20.3), (20.7, d), (H - 1 - d, 40.7), (40.3, W - 1 - d), (32.0, 32.0)]


def _image(points, sigma=1.5):
    yy, xx = np.indices((H, W))
    return sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2)) for y, x in points)


def _found(df, points, within=1.0):
    yx = df[["y", "x"]].to_numpy()
    return [bool(len(yx)) and float(np.hypot(*(yx - p).T).min()) < within for p in points]


@pytest.mark.parametrize("method", ["peaks", "watershed"])
@pytest.mark.parametrize("d, kept", [(1.6, False), (1.8, False), (2.3, True), (2.6, True)])
def test_a_column_is_kept_by_its_centre_alike_on_every_side(method, d, kept):
    # before: the peaks method judged the peak pixel, and kept centres 1.5 to 2 px inside
    points = _columns(d)
    fg = _image(points)
    probs = torch.from_numpy(np.stack([1 - fg, fg])[None]).float()
    df = locate(probs, LocateConfig(method=method, threshold=0.3, background_max=0.9, discard_t=0.0))[0]
    assert _found(df, points) == [kept] * 4 + [True]
    assert inside_edge(df["y"].to_numpy(), df["x"].to_numpy(), (H, W), 2).all()


@pytest.mark.parametrize("d, kept", [(1.6, False), (3.0, True)])
def test_the_classical_locator_keeps_the_same_columns_on_every_side(d, kept):
    points = _columns(d)
    df = find_columns_classical(_image(points), column_sigma_px=1.5)
    assert _found(df, points) == [kept] * 4 + [True]


def test_edge_px_0_keeps_every_column():
    points = _columns(0.7)
    fg = _image(points)
    probs = torch.from_numpy(np.stack([1 - fg, fg])[None]).float()
    df = locate(probs, LocateConfig(threshold=0.3, edge_px=0))[0]
    assert _found(df, points) == [True] * 5


def test_inside_edge():
    y = np.array([1.99, 2.0, 61.0, 61.01, np.nan])
    assert inside_edge(y, np.full(5, 30.0), (64, 64), 2).tolist() == [False, True, True, False, False]


@pytest.mark.parametrize("name, kw", [
    ("example_Se_implanted_MoS2.dm3", {"classical": True}),
    ("example_Se_implanted_MoS2.dm3", {}),
    ("test_ADF_cropped.hdf5", {"sampling": 0.0933, "classical": True}),
])
def test_no_column_of_a_real_image_lies_in_its_border(name, kw):
    """On the real MoS2 ADF image the classical locator put a column 1.25 px inside the bottom
    edge and one 1.98 px inside the left one (cut by the edge, their centres pulled inwards), and
    left out others 2.4 px inside."""
    from etem.tracker import find
    from etem.tracker.files import open_recording

    from test_files import realdata

    path = realdata() / name
    h, w = open_recording(path).shape
    df = find(path, **kw)
    assert len(df) > 200
    assert inside_edge(df["y"].to_numpy(), df["x"].to_numpy(), (h, w), LocateConfig().edge_px).all()


@pytest.mark.parametrize("sampling, margin", [(0.127, 2 / 0.635 + 1), (0.26, 3.0)])
def test_the_sites_view_margin_is_the_detectors_in_the_frames_pixels(sampling, margin):
    """A network that shrinks the frames to its pixel size (``haadf-stem``, 0.2 Å/px: frames of
    0.127 by 0.635) locates ``edge_px`` of its own pixels inside the edge: 3.15 of the frame's.
    The sites took ``edge_px`` + 1 = 3 px as the detector's view whatever the resampling, so a site
    3-4 px inside counted in view where no column could be found there (an empty site). Frames
    it takes as they are (0.26 Å/px: 1.3x, inside its card's as-is range) keep 3 px."""
    from etem.tracker.config import config_from_dict
    from etem.tracker.pipeline import Pipeline, PipelineConfig
    from etem.tracker.sources import iter_array
    from etem.simulate import make_movie

    movie = make_movie(n_frames=2, shape=(96, 96), sampling=sampling, seed=0)
    pipe = Pipeline(config_from_dict({"engine": {"model": "haadf-stem"}}, PipelineConfig()))
    for _ in pipe.run_iter(iter_array(movie.frames, sampling=sampling, counters=pipe.counters)):
        pass
    assert pipe.sites.view_margin_px == pytest.approx(margin, rel=1e-6)
