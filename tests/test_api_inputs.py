"""The Python API (find, track, open_run …) as a notebook user calls it: what it is given that
it cannot use is refused with an etem error that says what it takes, not read as something else
or left to fail in numpy."""
import logging

import numpy as np
import pytest

from etem.simulate.toy import make_movie
from etem.tracker import find, track
from etem.tracker.errors import ConfigError

SAMPLING = 0.2


@pytest.fixture(scope="module")
def frames():
    return make_movie(n_frames=6, shape=(64, 64), particle_radius_A=5.0, seed=2).frames


# ------------------------------------------------------------------------------- array shapes

def test_track_refuses_one_image(frames):
    with pytest.raises(ConfigError, match=r"one image of shape \(64, 64\): pass image\[None\]"):
        track(frames[0], sampling=SAMPLING)


def test_track_refuses_a_nested_list_holding_one_image(frames):
    with pytest.raises(ConfigError, match=r"one image of shape \(64, 64\)"):
        track(frames[0].tolist(), sampling=SAMPLING)


def test_track_refuses_a_1d_array(frames):
    with pytest.raises(ConfigError, match=r"1-D array of shape \(4096,\)"):
        track(frames[0].ravel(), sampling=SAMPLING)


@pytest.mark.parametrize("channels", [3, 4])
def test_track_and_find_refuse_colour_images(frames, channels):
    rgb = np.repeat(frames[0][..., None], channels, axis=2)
    with pytest.raises(ConfigError, match="looks like a colour image"):
        track(rgb, sampling=SAMPLING)
    with pytest.raises(ConfigError, match="looks like a colour image"):
        find(rgb, sampling=SAMPLING)
    with pytest.raises(ConfigError, match="looks like colour frames"):
        track(np.repeat(frames[..., None], channels, axis=3), sampling=SAMPLING)


def test_track_refuses_a_stack_with_its_frames_last(frames):
    with pytest.raises(ConfigError, match=r"\[H, W, N\]\? np.moveaxis"):
        track(np.moveaxis(frames[:5], 0, -1), sampling=SAMPLING)


def test_a_stack_that_may_be_frames_last_is_read_as_given_with_a_warning(frames, caplog):
    hwn = np.ascontiguousarray(np.moveaxis(np.concatenate([frames, frames])[:, :16, :16], 0, -1))  # [16, 16, 12]
    with caplog.at_level(logging.WARNING, logger="etem.api"):
        cols = find(hwn, sampling=SAMPLING)
    assert "if it is 12 frames stored as [H, W, N], pass np.moveaxis" in caplog.text
    assert len(cols.attrs["frames"]) + len(cols.attrs["rejected"]) == 16  # (read as given)


def test_an_extra_leading_axis_is_a_focal_series_said_aloud(frames, caplog):
    # a 4-D array is a stack of focal series [N, F, H, W] (README, find's docstring); frames[None]
    # is one such frame: read so, and said
    with caplog.at_level(logging.WARNING, logger="etem.api"):
        result = track(frames[None], sampling=SAMPLING)
    assert "read as one frame, a focal series of 6 images" in caplog.text
    assert result.counters["received"] == 1


def test_focal_must_match_a_4d_stack(frames):
    with pytest.raises(ConfigError, match="focal series of 6 images"):
        track(frames[None], sampling=SAMPLING, focal=3)


def test_find_refuses_a_tiny_image():
    with pytest.raises(ConfigError, match="no image of at least 8 px a side"):
        find(np.ones((4, 4)))


@pytest.mark.parametrize("call", [find, track])
def test_empty_arrays_are_refused(call):
    with pytest.raises(ConfigError, match="empty array"):
        call(np.zeros((0, 0, 0), np.float32), sampling=SAMPLING)
    with pytest.raises(ConfigError, match="empty list"):
        call([], sampling=SAMPLING)


def test_find_empty_image():
    with pytest.raises(ConfigError, match=r"empty array \(shape \(0, 0\)\)"):
        find(np.zeros((0, 0), np.float32), sampling=SAMPLING)


def test_find_takes_a_nested_list_as_the_image_it_holds(frames):
    as_list = find(frames[0].tolist(), sampling=SAMPLING)
    as_array = find(frames[0].astype(np.float64), sampling=SAMPLING)
    assert len(as_list) == len(as_array) > 0
    np.testing.assert_allclose(as_list[["y", "x"]], as_array[["y", "x"]])


def test_object_and_bool_arrays_are_refused(frames):
    with pytest.raises(ConfigError, match="dtype object is not a real number type"):
        find(np.array([[1, "a"], [2, 3]], dtype=object))
    with pytest.raises(ConfigError, match="dtype bool is not a real number type"):
        track(frames > frames.mean(), sampling=SAMPLING)


def test_a_ragged_list_is_refused():
    with pytest.raises(ConfigError, match=r"item 0 of the list has shape \(2,\)"):
        track([[1.0, 2.0], [3.0]], sampling=SAMPLING)


@pytest.mark.parametrize("call", [find, track])
def test_focal_must_divide_the_stack(frames, call):
    with pytest.raises(ConfigError, match="6 images do not make whole focal series of 4"):
        call(frames, sampling=SAMPLING, focal=4)


@pytest.mark.parametrize("call", [find, track])
@pytest.mark.parametrize("focal", [0, -1, 2.5, True])
def test_focal_must_be_a_positive_integer(frames, call, focal):
    with pytest.raises(ConfigError, match="focal must be a positive integer"):
        call(frames[:4], sampling=SAMPLING, focal=focal)


def test_find_refuses_focal_for_one_image(frames):
    with pytest.raises(ConfigError, match="focal=3 takes a stack of 3 images per frame"):
        find(frames[0], sampling=SAMPLING, focal=3)


# ----------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("call", [find, track])
@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.2"])
def test_sampling_is_checked_and_named(frames, call, bad):
    with pytest.raises(ConfigError, match="^sampling must be") as info:
        call(frames[:2], sampling=bad)
    assert "column_sigma_px" not in str(info.value) and "default_sampling" not in str(info.value)


# ------------------------------------------------------------------------------------- config

def test_track_takes_config_as_a_mapping(frames, tmp_path):
    result = track(frames, sampling=SAMPLING, config={"link": {"search_range_A": 1.5}}, run_path=tmp_path / "r.h5")
    from etem.tracker import open_run

    with open_run(result.run_path) as run:
        assert run.attrs["config"]["link"]["search_range_A"] == 1.5


def test_find_takes_config_as_a_mapping(frames):
    strict = find(frames[0], sampling=SAMPLING, config={"locate": {"threshold": 0.9}})
    loose = find(frames[0], sampling=SAMPLING, config={"locate": {"threshold": 0.2}})
    assert len(strict) < len(loose)


def test_find_takes_config_as_a_toml_file(frames, tmp_path):
    (tmp_path / "c.toml").write_text("[locate]\nthreshold = 0.9\n")
    assert len(find(frames[0], sampling=SAMPLING, config=tmp_path / "c.toml")) == len(
        find(frames[0], sampling=SAMPLING, config={"locate": {"threshold": 0.9}}))


@pytest.mark.parametrize("call", [find, track])
def test_a_config_mapping_is_checked_key_by_key(frames, call):
    with pytest.raises(ConfigError, match="did you mean 'search_range_A'"):
        call(frames, sampling=SAMPLING, config={"link": {"serch_range_A": 1.0}})
    with pytest.raises(ConfigError, match="config must be a PipelineConfig, a mapping"):
        call(frames, sampling=SAMPLING, config=3)


# ---------------------------------------------------------------------------------- run files

@pytest.fixture(scope="module")
def run_file(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.h5"
    track(frames, sampling=SAMPLING, run_path=path)
    return path


def test_open_run_on_a_corrupt_superblock_is_a_file_format_error(tmp_path):
    from etem.tracker import open_run
    from etem.tracker.errors import FileFormatError

    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 5000)  # (h5py: RuntimeError, bad superblock version)
    with pytest.raises(FileFormatError, match="not a readable HDF5 file"):
        open_run(bad)


def test_open_run_on_a_folder_says_it_is_one(tmp_path):
    from etem.tracker import open_run
    from etem.tracker.errors import FileFormatError

    with pytest.raises(FileFormatError, match="is a folder"):
        open_run(tmp_path)


def test_writing_a_run_file_open_in_this_process_says_to_close_it(frames, tmp_path, run_file):
    import shutil

    import h5py

    from etem.tracker import open_run

    path = tmp_path / "nb.h5"
    shutil.copy(run_file, path)
    run = open_run(path)  # (a notebook's habit: no `with`)
    try:
        with pytest.raises(ConfigError, match="open in this process .* close it first"):
            track(frames, sampling=SAMPLING, run_path=path, overwrite=True)
        with pytest.raises(ConfigError, match="open in this process"):
            track(frames, resume=path, force=True)
    finally:
        run.close()
    with h5py.File(path, "r", locking=False):
        with pytest.raises(ConfigError, match="open in this process"):
            track(frames, sampling=SAMPLING, run_path=path, overwrite=True)
    result = track(frames, sampling=SAMPLING, run_path=path, overwrite=True)  # closed: written
    with open_run(result.run_path) as run:
        assert len(run.frames) == len(frames)


@pytest.mark.parametrize("overwrite", [False, True])
def test_run_path_a_folder_is_refused(frames, tmp_path, overwrite):
    with pytest.raises(ConfigError, match="is a folder; name the run file in it"):
        track(frames, sampling=SAMPLING, run_path=tmp_path, overwrite=overwrite)


@pytest.mark.parametrize("call", [find, track])
def test_a_run_file_given_as_the_recording_is_refused(run_file, call):
    from etem.tracker.errors import FileFormatError

    with pytest.raises(FileFormatError, match="is an etem run file .* open_run"):
        call(run_file, sampling=SAMPLING)


# ------------------------------------------------------------------------- a run of no frame

def test_a_run_whose_frames_are_all_rejected_says_so_and_names_no_run_file(tmp_path, caplog):
    path = tmp_path / "allbad.h5"
    with caplog.at_level(logging.WARNING, logger="etem.api"):
        result = track(np.full((3, 64, 64), np.nan, np.float32), sampling=SAMPLING, run_path=path)
    assert "nothing tracked: 3 frame(s) rejected" in caplog.text and "no run file written" in caplog.text
    assert result.run_path is None and not path.exists()
    assert result.counters["processed"] == 0 and result.counters["rejected"] == 3
    # the empty tables keep their columns
    assert {"frame", "t", "drift_y", "drift_x", "n_columns"} <= set(result.frames.columns)
    assert len(result.frames) == 0 and len(result.columns) == 0


def test_a_run_of_no_frame_leaves_an_older_run_file_and_says_so(run_file, tmp_path, caplog):
    import shutil

    path = tmp_path / "old.h5"
    shutil.copy(run_file, path)
    with caplog.at_level(logging.WARNING, logger="etem.api"):
        result = track(np.full((2, 64, 64), np.nan, np.float32), sampling=SAMPLING, run_path=path, overwrite=True)
    assert result.run_path is None and f"{path} is left as it was" in caplog.text


def test_find_on_frames_it_cannot_locate_keeps_its_columns_in_angstrom():
    cols = find(np.full((2, 64, 64), np.nan, np.float32), sampling=SAMPLING)
    assert len(cols) == 0 and {"y_A", "x_A"} <= set(cols.columns) and len(cols.attrs["rejected"]) == 2


# -------------------------------------------------------------------------------- fps and pace

def test_fps_gives_frames_in_memory_their_times_and_rates_per_second(frames, tmp_path):
    from etem.tracker import open_run
    from etem.tracker.report import run_statistics

    path = tmp_path / "f.h5"
    track(frames[:4], sampling=SAMPLING, run_path=path, fps=10.0)
    with open_run(path) as run:
        np.testing.assert_allclose(run.frames["t"], np.arange(4) / 10.0)
        tables, summary = run_statistics(run)
    assert summary["fps"] == 10.0  # (not 9.999999999999991)
    if "D_units" in summary:
        assert summary["D_units"].endswith("/s")
    # a resumed run goes on at the frame rate it was given
    track(frames, resume=path, force=True)
    with open_run(path) as run:
        np.testing.assert_allclose(run.frames["t"], np.arange(len(frames)) / 10.0)


def test_pace_paces_frames_in_memory(frames):
    t0 = __import__("time").perf_counter()
    result = track(frames[:4], sampling=SAMPLING, fps=10.0, pace=1.0)
    assert __import__("time").perf_counter() - t0 >= 0.3  # frames 0 to 3 at 10 /s
    np.testing.assert_allclose(result.frames["t"], np.arange(4) / 10.0)


def test_pace_without_fps_and_bad_rates_are_refused_for_frames_in_memory(frames):
    with pytest.raises(ConfigError, match=r"frames in memory record none: give it \(fps=...\)"):
        track(frames, sampling=SAMPLING, pace=1.0)
    with pytest.raises(ConfigError, match="fps must be a frame rate > 0"):
        track(frames, sampling=SAMPLING, fps=0)
    with pytest.raises(ConfigError, match="pace must be a positive speed factor"):
        track(frames, sampling=SAMPLING, fps=10.0, pace=-1)


def test_fps_is_refused_for_a_stream(frames):
    with pytest.raises(ConfigError, match="is a stream: .* leave out fps and pace"):
        track("tcp://127.0.0.1:1", fps=10.0, idle_timeout_s=0.5)  # (old code: waited, then tracked nothing)


def test_frame_rate_is_rounded_to_what_the_times_say():
    import pandas as pd

    from etem.tracker.diffusion import frame_rate

    assert frame_rate(pd.DataFrame({"frame": np.arange(40), "t": np.arange(40) / 10.0})) == 10.0
    assert frame_rate(pd.DataFrame({"frame": np.arange(5), "t": np.arange(5) * 0.0333333})) == pytest.approx(30.00003)


# ------------------------------------------------------------------ what a notebook shows of it

def test_track_result_repr_is_a_short_summary(frames, tmp_path):
    result = track(frames, sampling=SAMPLING, run_path=tmp_path / "r.h5")
    text = repr(result)
    assert len(text) < 300 and "\n" not in text, text
    assert text.startswith(f"TrackResult(frames={len(frames)}, ") and f"sites={len(result.sites)}" in text
    assert "sampling=0.2" in text and f"run_path={str(tmp_path / 'r.h5')!r}" in text


@pytest.mark.parametrize("call", [find, track])
def test_docstrings_name_every_parameter(call):
    import inspect

    doc = call.__doc__.split("Parameters\n    ----------\n", 1)[1].split("\n    Returns", 1)[0]
    named = {n.strip() for line in doc.splitlines() if line.startswith("    ") and not line.startswith("     ")
             for n in line.split(",")}
    missing = set(inspect.signature(call).parameters) - named
    assert not missing, f"{call.__name__}'s docstring does not name {sorted(missing)}"


def test_the_package_says_its_version():
    from importlib.metadata import version

    import etem.tracker

    assert etem.tracker.__version__ == version("etem-tracker")


# ------------------------------------------------------------------ export and statistics calls

def test_export_run_takes_formats_as_a_string(run_file, tmp_path):
    from etem.tracker.export import export_run

    written = export_run(run_file, tmp_path / "one", formats="csv", progress=False)
    assert written and all(p.suffix == ".csv" for p in written)
    written = export_run(run_file, tmp_path / "two", formats="csv,h5", progress=False)
    assert {p.suffix for p in written} == {".csv", ".h5"}


def test_export_run_to_a_folder_that_cannot_be_made_is_a_config_error(run_file, tmp_path):
    from etem.tracker.export import export_run

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write .*file/out"):
        export_run(run_file, tmp_path / "file" / "out", formats="csv", progress=False)


def test_run_statistics_takes_a_path(run_file):
    from etem.tracker import open_run
    from etem.tracker.report import run_statistics

    tables, summary = run_statistics(run_file)
    with open_run(run_file) as run:
        assert summary == run_statistics(run)[1]
    assert summary["frames"] == 6 and "msd" in tables


def test_a_derived_table_asked_of_run_stats_says_where_it_is(run_file):
    from etem.tracker import open_run

    with open_run(run_file) as run:
        with pytest.raises(KeyError, match="derived from it, by etem.tracker.report.run_statistics"):
            run.stats["msd"]
        with pytest.raises(KeyError, match="statistics tables are .*'flips'"):
            run.stats["flipz"]


# ------------------------------------------------------- messages name the Python spelling too

def test_sampling_auto_without_a_material_names_the_python_spelling(frames):
    for call in (find, track):
        with pytest.raises(ConfigError, match=r"material in view \(--material NAME, material=;"):
            call(frames[:2], sampling="auto")


def test_a_lattice_that_does_not_fit_names_sampling_for_python(frames):
    from etem.tracker.lattice import estimate_sampling

    with pytest.raises(ConfigError, match=r"give .*\(--sampling, sampling=; Å/px\)"):
        estimate_sampling(np.random.default_rng(0).normal(size=(64, 64)), "au")


def test_the_unknown_kind_trust_note_names_the_config_setting():
    from etem.tracker.trust import UNKNOWN_KIND_NOTE

    assert "--imaging hrtem or stem (config.engine.imaging, [engine] imaging)" in UNKNOWN_KIND_NOTE


@pytest.mark.parametrize("call", [find, track])
def test_a_list_of_images_with_focal_is_read_as_focal_series_as_the_stack_is(frames, call):
    """``focal=3`` with a list of 6 images: two frames of three images each, as the same images
    stacked into one array give (the list's focal was ignored: six one-image frames)."""
    as_list = call(list(frames), sampling=SAMPLING, focal=3)
    as_stack = call(np.asarray(frames), sampling=SAMPLING, focal=3)
    if call is find:
        assert sorted(as_list["frame"].unique()) == sorted(as_stack["frame"].unique()) == [0, 1]
        assert len(as_list) == len(as_stack)
    else:
        assert as_list.counters["processed"] == as_stack.counters["processed"] == 2
