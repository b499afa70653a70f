"""The napari reader: a run file into image, Points and Tracks layers (no display needed)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import track
from etem.tracker.cli import main
from etem.tracker.napari_reader import napari_get_reader, read_image, read_run

MANIFEST = Path(__file__).resolve().parents[1] / "tracker" / "napari.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("napari")
    movie = make_movie(n_frames=10, shape=(128, 128), particle_radius_A=8.0, seed=2)
    save_movie(movie, d / "movie.h5")
    res = track(d / "movie.h5", run_path=d / "run.h5", classical=True)
    return d, res


def test_the_manifest_is_valid_and_points_at_the_reader():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManifest.from_file(MANIFEST)
    (reader,) = pm.contributions.readers
    (command,) = pm.contributions.commands
    assert reader.command == command.id
    module, func = command.python_name.split(":")
    assert getattr(importlib.import_module(module), func) is napari_get_reader


def test_a_run_file_opens_as_image_points_and_tracks(run):
    d, res = run
    assert napari_get_reader(str(d / "run.h5")) is read_run
    assert napari_get_reader(str(d / "movie.h5")) is read_image  # an HDF5 stack, not a run
    assert napari_get_reader(str(d / "notes.txt")) is None
    layers = read_run(d / "run.h5")
    kinds = [k for _, _, k in layers]
    assert kinds == ["image", "points", "tracks"]
    image, points, tracks = (data for data, _, _ in layers)
    assert image.shape == (10, 128, 128)
    assert len(points) == len(res.columns)  # one point per column found
    linked = res.columns[res.columns["particle"] >= 0]
    assert len(tracks) == len(linked) and len(np.unique(tracks[:, 0])) == linked["particle"].nunique()
    # points sit on their frames, in pixels (scale carries Å)
    np.testing.assert_array_equal(np.unique(points[:, 0]), np.arange(10))
    assert layers[1][1]["scale"][1] == pytest.approx(res.sampling)
    props = layers[1][1]["properties"]  # what napari shows for a point under the cursor
    assert set(props) == {"prob", "site", "intensity"} and np.isfinite(props["intensity"]).all()
    assert layers[1][1]["name"] == "columns: column"  # the class named as the run's locator names it


def test_without_the_recording_the_layers_come_without_an_image(run, tmp_path):
    d, _ = run
    import shutil

    shutil.copy(d / "run.h5", tmp_path / "moved.h5")
    (tmp_path / "elsewhere").mkdir()
    kinds = [k for _, _, k in read_run(tmp_path / "moved.h5")]
    assert "points" in kinds and "tracks" in kinds


def test_view_says_how_to_get_napari(run, capsys):
    if importlib.util.find_spec("napari") is not None:
        pytest.skip("napari is installed here; the viewer itself is not started in tests")
    d, _ = run
    assert main(["view", str(d / "run.h5")]) == 2
    assert "etem-tracker[napari]" in capsys.readouterr().err


def test_napari_opens_a_run_through_the_plugin(run):
    pytest.importorskip("napari")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    d, res = run
    viewer = ViewerModel()  # the viewer's model: layers without a window or OpenGL
    viewer.open(str(d / "run.h5"), plugin="etem-tracker")
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Points", "Tracks"]
    assert viewer.layers[1].data.shape[0] == len(res.columns)
