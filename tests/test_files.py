"""Recorded files and watched folders: real files written in tmp_path, plus the shared real data."""
from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from etem.tracker.errors import ConfigError, FileFormatError
from etem.tracker.files import SUFFIXES, Recording, open_recording
from etem.tracker.frames import Frame


def stack(n: int = 5, h: int = 24, w: int = 32, dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(n * 1000 + h)
    return rng.integers(0, 4000, size=(n, h, w)).astype(dtype)


def write_imagej(path: Path, data: np.ndarray, *, px_per_unit: float, unit: str, **extra) -> Path:
    tifffile.imwrite(path, data, imagej=True, resolution=(px_per_unit, px_per_unit),
                     metadata={"axes": "TYX" if data.ndim == 3 else "YX", "unit": unit, **extra})
    return path


def realdata() -> Path:
    folder = Path(os.environ.get("ETEM_REALDATA") or Path(__file__).parents[2] / "shared" / "realdata")
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not present (set ETEM_REALDATA to use it)")
    return folder


# ---------------------------------------------------------------- TIFF
@pytest.mark.parametrize("unit, px_per_unit", [("nm", 20.0), ("micron", 2e4), ("\\u00C5", 2.0), ("pm", 0.02)])
def test_imagej_tiff_stack_sampling_in_angstrom(tmp_path, unit, px_per_unit):
    data = stack()
    path = write_imagej(tmp_path / "movie.tif", data, px_per_unit=px_per_unit, unit=unit)
    rec = open_recording(path)
    assert isinstance(rec, Recording)
    assert len(rec) == 5 and rec.shape == (24, 32) and rec.n_focal == 1 and rec.dtype == np.uint16
    assert rec.sampling == pytest.approx(0.5)
    assert rec.meta["source"] == str(path) and rec.meta["reader"] == "rsciio.tiff"
    for i in range(5):
        np.testing.assert_array_equal(rec[i], data[i])
    np.testing.assert_array_equal(rec[-1], data[-1])
    with pytest.raises(IndexError, match="5 frame"):
        rec[5]


def test_imagej_frame_interval_gives_frame_times(tmp_path):
    path = write_imagej(tmp_path / "m.tif", stack(), px_per_unit=20, unit="nm", finterval=0.02)
    rec = open_recording(path)
    np.testing.assert_allclose(rec.frame_times, np.arange(5) * 0.02)
    assert [f.t for f in rec.iter_frames()] == pytest.approx(list(np.arange(5) * 0.02))


def test_tiff_without_calibration_has_no_sampling(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", stack(3), photometric="minisblack")
    rec = open_recording(tmp_path / "plain.tif")
    assert rec.sampling is None and "calibration" in rec.meta["sampling_note"]


def test_single_image_is_one_frame(tmp_path):
    image = stack(1)[0]
    tifffile.imwrite(tmp_path / "one.tif", image)
    rec = open_recording(tmp_path / "one.tif")
    assert len(rec) == 1 and rec[0].shape == (24, 32)
    np.testing.assert_array_equal(rec[0], image)
    frames = list(rec.iter_frames())
    assert len(frames) == 1 and frames[0].image.shape == (24, 32)


# ---------------------------------------------------------------- HDF5 / npy / npz
def test_plain_hdf5_prefers_frames_and_reads_sampling_attr(tmp_path):
    data = stack(4).astype(np.float32)
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        f["aaa_mask"] = np.ones((24, 32), np.uint8)          # found first, but not the preferred name
        f.create_dataset("acq/frames", data=data, chunks=(1, 24, 32)).attrs["sampling"] = 0.3
        f["acq/frames"].attrs["fps"] = 25.0
    with open_recording(path) as rec:
        assert rec.meta["dataset"] == "/acq/frames" and len(rec) == 4
        assert rec.sampling == pytest.approx(0.3) and rec.meta["fps"] == 25.0
        np.testing.assert_array_equal(rec[2], data[2])
        assert [f.t for f in rec.iter_frames()] == pytest.approx([0, 0.04, 0.08, 0.12])
    with open_recording(path, dataset="/acq/frames") as rec:
        assert rec.meta["dataset"] == "/acq/frames"
    with open_recording(path, dataset="aaa_mask") as rec:
        assert len(rec) == 1 and rec.sampling is None and "sampling" in rec.meta["sampling_note"]
    with pytest.raises(FileFormatError, match=r"run\.h5.*nope"):
        open_recording(path, dataset="nope")


def test_hdf5_without_images_or_with_complex_data(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["x"] = np.arange(10)
    with pytest.raises(FileFormatError, match=r"empty\.h5.*no 2-D"):
        open_recording(tmp_path / "empty.h5")
    with h5py.File(tmp_path / "waves.h5", "w") as f:
        f["frames"] = np.ones((2, 8, 8), np.complex64)
    with pytest.raises(FileFormatError, match=r"waves\.h5.*complex"):
        open_recording(tmp_path / "waves.h5")


def test_npy_is_memory_mapped(tmp_path):
    data = stack(6, dtype=np.float32)
    np.save(tmp_path / "m.npy", data)
    rec = open_recording(tmp_path / "m.npy")
    assert isinstance(rec._data, np.memmap)
    assert len(rec) == 6 and rec.sampling is None and rec.dtype == np.float32
    out = rec[3]
    np.testing.assert_array_equal(out, data[3])
    assert not isinstance(out, np.memmap) and out.flags.writeable


def test_npz_with_sampling(tmp_path):
    data = stack(2)
    np.savez(tmp_path / "m.npz", images=data, sampling=np.float64(0.8))
    rec = open_recording(tmp_path / "m.npz")
    assert rec.meta["dataset"] == "images" and rec.sampling == 0.8
    np.testing.assert_array_equal(rec[1], data[1])


def test_non_numeric_npy(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(FileFormatError, match=r"s\.npy.*non-numeric"):
        open_recording(tmp_path / "s.npy")


# ---------------------------------------------------------------- MRC, HyperSpy, EMD
def test_mrc_stack(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    data = stack(3).astype(np.float32)
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(data)
        m.voxel_size = 0.7  # Å
    rec = open_recording(tmp_path / "m.mrc")
    assert len(rec) == 3 and rec.sampling == pytest.approx(0.7)
    np.testing.assert_array_equal(rec[1], data[1])


def test_truncated_mrc_names_file_and_frame(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(stack(4).astype(np.float32))
    raw = (tmp_path / "m.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(FileFormatError, match=r"cut\.mrc.*frame 3 of 4"):
        open_recording(tmp_path / "cut.mrc")


def _signal(data: np.ndarray, *, title: str = "movie", units: str = "nm", scale: float = 0.02,
            dt_s: float | None = None) -> dict:
    """A signal dict as rosettasciio's writers take it; with dt_s, axis 0 is time [s]."""
    axes = []
    for i, size in enumerate(data.shape):
        is_time = dt_s is not None and i == 0
        axes.append({"name": f"axis{i}", "size": size, "scale": dt_s if is_time else scale,
                     "offset": 0.0, "units": "s" if is_time else units, "navigate": is_time})
    return {"data": data, "axes": axes, "metadata": {"General": {"title": title}, "Signal": {}},
            "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
            "learning_results": {}, "package_info": {"name": "", "version": ""}, "models": {}}


@pytest.mark.parametrize("suffix, writer", [(".hspy", "rsciio.hspy"), (".emd", "rsciio.emd")])
def test_rsciio_written_files_with_units_and_time_axis(tmp_path, suffix, writer):
    import importlib

    data = stack(3).astype(np.float32)
    path = tmp_path / f"movie{suffix}"
    importlib.import_module(writer).file_writer(str(path), _signal(data, dt_s=0.5))
    rec = open_recording(path)
    assert len(rec) == 3 and rec.sampling == pytest.approx(0.2) and rec.meta["title"] == "movie"
    np.testing.assert_allclose(rec.frame_times, [0, 0.5, 1.0])
    np.testing.assert_array_equal(rec[2], data[2])


def test_file_with_several_signals_takes_the_first_image(tmp_path):
    import rsciio.hspy

    parts = {"A spectrum": (np.arange(50.0), "eV"), "BF": (np.zeros((8, 9)), "nm"),
             "HAADF": (np.ones((8, 9)), "nm")}
    for title, (data, units) in parts.items():
        rsciio.hspy.file_writer(str(tmp_path / f"{title}.hspy"), _signal(data, title=title, units=units))
    path = tmp_path / "A spectrum.hspy"
    with h5py.File(path, "a") as f:  # one file, three HyperSpy signals
        for title in ("BF", "HAADF"):
            with h5py.File(tmp_path / f"{title}.hspy", "r") as g:
                g.copy(g["Experiments"][title], f["Experiments"], name=title)
    rec = open_recording(path)
    assert rec.meta["signal"] == 1 and rec.meta["title"] == "BF" and rec.meta["n_signals"] == 3
    assert open_recording(path, dataset="HAADF")[0].mean() == 1.0
    with pytest.raises(FileFormatError, match="titled 'A spectrum'; the titles in it: 'BF' \\(8 x 9\\), 'HAADF'"):
        open_recording(path, dataset="A spectrum")
    # a TIFF written page by page: its pages have no titles to choose by, one short line says so
    with tifffile.TiffWriter(tmp_path / "pages.tif") as w:
        for page in stack(12):
            w.write(page)
    with pytest.raises(FileFormatError) as info:
        open_recording(tmp_path / "pages.tif", dataset="movie")
    assert "its 12 images have no titles; leave out --dataset" in str(info.value) and len(str(info.value)) < 200


# ---------------------------------------------------------------- focal series
def test_focal_series_from_flat_stack(tmp_path):
    data = stack(6)
    np.save(tmp_path / "f.npy", data)
    rec = open_recording(tmp_path / "f.npy", focal=3)
    assert len(rec) == 2 and rec.n_focal == 3
    np.testing.assert_array_equal(rec[1], data[3:6])
    frames = list(rec.iter_frames())
    assert [f.n_focal for f in frames] == [3, 3] and frames[0].image.shape == (3, 24, 32)
    with pytest.raises(ConfigError, match="focal=4"):
        open_recording(tmp_path / "f.npy", focal=4)


def test_4d_stack_is_a_focal_series(tmp_path):
    data = stack(6).reshape(2, 3, 24, 32)
    np.save(tmp_path / "f4.npy", data)
    rec = open_recording(tmp_path / "f4.npy")
    assert len(rec) == 2 and rec.n_focal == 3 and rec[0].shape == (3, 24, 32)
    assert open_recording(tmp_path / "f4.npy", focal=3).n_focal == 3
    with pytest.raises(ConfigError):
        open_recording(tmp_path / "f4.npy", focal=2)


# ---------------------------------------------------------------- bad files
@pytest.mark.parametrize("name", ["noise.tif", "noise.dm3", "noise.dm4", "noise.mrc", "noise.emd",
                                  "noise.ser", "noise.emi", "noise.h5", "noise.npy"])
def test_corrupt_file_is_a_clear_error(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(FileFormatError, match=name.replace(".", r"\.")):
        open_recording(tmp_path / name)


@pytest.mark.parametrize("imagej", [False, True])
def test_truncated_tiff(tmp_path, imagej):
    data = stack(5)
    path = tmp_path / "full.tif"
    if imagej:
        write_imagej(path, data, px_per_unit=20, unit="nm")
    else:
        tifffile.imwrite(path, data)
    raw = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    # the frames before the cut are read; the end of them is an error naming file and frame
    rec = open_recording(tmp_path / "cut.tif")
    assert len(rec) == 2 and rec.meta["cut_short"]
    assert rec.sampling == (pytest.approx(0.5) if imagej else None)
    np.testing.assert_array_equal(rec[1], data[1])
    with pytest.raises(FileFormatError, match=r"cut\.tif: cut short: it breaks off in frame 2 of 5"):
        list(rec.iter_frames())
    (tmp_path / "stub.tif").write_bytes(raw[:200])  # not one frame
    with pytest.raises(FileFormatError, match=r"stub\.tif"):
        open_recording(tmp_path / "stub.tif")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileFormatError, match=r"nothing\.tif.*no such file"):
        open_recording(tmp_path / "nothing.tif")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(FileFormatError, match=r"notes\.xyz.*\.xyz.*supported: .*\.dm4.*\.tif"):
        open_recording(tmp_path / "notes.xyz")
    with pytest.raises(FileFormatError, match="watch_folder"):
        open_recording(tmp_path)
    assert ".mrc" in SUFFIXES and ".npy" in SUFFIXES


def test_empty_file(tmp_path):
    (tmp_path / "zero.tif").write_bytes(b"")
    with pytest.raises(FileFormatError, match=r"zero\.tif"):
        open_recording(tmp_path / "zero.tif")


def test_bad_focal_argument(tmp_path):
    np.save(tmp_path / "m.npy", stack(2))
    with pytest.raises(ConfigError, match="focal"):
        open_recording(tmp_path / "m.npy", focal=0)


# ---------------------------------------------------------------- pace
def test_iter_frames_fast_and_range(tmp_path):
    np.save(tmp_path / "m.npy", stack(5))
    rec = open_recording(tmp_path / "m.npy")
    frames = list(rec.iter_frames(1, 4))
    assert [(f.frame, f.seq) for f in frames] == [(1, 1), (2, 2), (3, 3)]
    assert all(isinstance(f, Frame) and f.meta["source"] == str(tmp_path / "m.npy") for f in frames)
    assert frames[0].t is None


def test_iter_frames_at_acquisition_pace(tmp_path):
    np.save(tmp_path / "m.npy", stack(5))
    rec = open_recording(tmp_path / "m.npy", fps=50.0)
    t0 = time.perf_counter()
    frames = list(rec.iter_frames(pace=1.0))
    assert time.perf_counter() - t0 >= 0.075
    assert [f.t for f in frames] == pytest.approx([0, 0.02, 0.04, 0.06, 0.08])
    t0 = time.perf_counter()
    list(rec.iter_frames(pace=2.0))  # twice real time
    assert time.perf_counter() - t0 >= 0.035


def test_pace_needs_a_frame_rate(tmp_path):
    np.save(tmp_path / "m.npy", stack(2))
    rec = open_recording(tmp_path / "m.npy")
    with pytest.raises(ConfigError, match="fps"):
        next(rec.iter_frames(pace=1.0))
    with pytest.raises(ConfigError, match="pace"):
        next(open_recording(tmp_path / "m.npy", fps=10).iter_frames(pace=0))


# ---------------------------------------------------------------- real data
def test_realdata_dm3():
    path = realdata() / "example_Se_implanted_MoS2.dm3"
    rec = open_recording(path)
    assert len(rec) == 1 and rec.shape == (1024, 1024) and rec.dtype == np.uint32
    assert rec.meta["imaging"] == "stem" and rec.meta["detector"] == "adf"  # its Gatan tags: SCANNING, HAADF
    assert next(rec.iter_frames()).meta["imaging"] == "stem"
    assert rec.sampling == pytest.approx(0.127, abs=1e-3)
    assert rec[0].shape == (1024, 1024)


def test_realdata_hyperspy_without_units():
    path = realdata() / "test_ADF_cropped.hdf5"
    rec = open_recording(path)
    assert rec.meta["reader"] == "rsciio.hspy" and rec.shape == (400, 380) and len(rec) == 1
    assert rec.sampling is None and "unit" in rec.meta["sampling_note"]
    assert rec.meta["raw_scale"] == pytest.approx(0.009326, rel=1e-3)
    assert np.isfinite(rec[0].astype(np.float32)).all()


def test_realdata_abf_columns_are_the_adf_ones_when_negated():
    """The annular bright-field crop and its simultaneous dark-field one: the STEM model, shown
    the ABF frame negated (dark=True), finds every ADF column there (and the weaker columns that
    only ABF shows); shown it as recorded, it finds the bright gaps between them."""
    from scipy.spatial import cKDTree

    from etem.tracker import find

    folder = realdata()
    adf = find(folder / "test_ADF_cropped.hdf5", model="auto:stem", sampling=0.0933)
    abf = find(folder / "test_ABF_cropped.hdf5", model="auto:stem", sampling=0.0933, dark=True)
    gaps = find(folder / "test_ABF_cropped.hdf5", model="auto:stem", sampling=0.0933)
    d, _ = cKDTree(abf[["y", "x"]].to_numpy()).query(adf[["y", "x"]].to_numpy())
    assert len(adf) > 200 and (d < 3).all()  # 0.28 Å
    assert len(abf) > len(adf)
    d, _ = cKDTree(adf[["y", "x"]].to_numpy()).query(gaps[["y", "x"]].to_numpy())
    assert np.median(d) > 10


def test_model_auto_on_a_watched_folder_follows_its_first_file(tmp_path, caplog):
    """A folder of HyperSpy files that say STEM is tracked with the STEM model under
    ``--model auto``; ``--pattern`` picks which files, and a file given a pattern is refused."""
    import logging

    import rsciio.hspy

    from etem.tracker import track

    data = stack(2, 64, 64).astype(np.float32)
    for i, image in enumerate(data):
        sig = _signal(image, scale=0.02)
        sig["metadata"]["Acquisition_instrument"] = {"TEM": {"acquisition_mode": "STEM"}}
        rsciio.hspy.file_writer(str(tmp_path / f"frame_{i}.hspy"), sig)
    tifffile.imwrite(tmp_path / "overview.tif", data[0])  # says nothing of how it was taken
    with caplog.at_level(logging.INFO, logger="etem.engine"):
        result = track(tmp_path, model="auto", pattern="*.hspy", idle_timeout_s=0.5)
    assert "'auto:stem'" in caplog.text and "haadf-stem" in caplog.text
    assert result.frames["frame"].tolist() == [0, 1]
    with pytest.raises(ConfigError, match="material"):  # only the TIFF, which says nothing
        track(tmp_path, model="auto", pattern="*.tif", idle_timeout_s=0.5)
    with pytest.raises(ConfigError, match="a pattern chooses the files of a folder"):
        track(tmp_path / "overview.tif", pattern="*.tif", classical=True, sampling=0.2)


def test_how_an_image_was_taken_from_its_metadata():
    from etem.tracker.files import _imaging

    def sig(metadata=None, original=None):
        return {"metadata": metadata or {}, "original_metadata": original or {}}

    tem = {"Acquisition_instrument": {"TEM": {"acquisition_mode": "TEM"}}}
    assert _imaging(sig(tem)) == "hrtem"
    assert _imaging(sig({"Acquisition_instrument": {"TEM": {"acquisition_mode": "STEM"}}})) == "stem"
    gatan = {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {
        "Illumination Mode": "STEM", "Imaging Mode": "IMAGING", "Operation Mode": "SCANNING"}}}}}
    assert _imaging(sig(original=gatan)) == "stem"
    info = gatan["ImageList"]["TagGroup0"]["ImageTags"]["Microscope Info"]
    info.update({"Illumination Mode": "TEM", "Operation Mode": "IMAGING"})
    assert _imaging(sig(original=gatan)) == "hrtem"
    assert _imaging(sig()) is None and _imaging(sig(original={"x": [1, 2], "y": {"z": 3}})) is None

    from etem.tracker.files import _detector

    assert _detector(sig(original={"QuickSaved": {"Temp-Tags": {"Detector": "HAADF"}}})) == "adf"
    assert _detector(sig({"Acquisition_instrument": {"TEM": {"Detector": {"name": "x"}, "detector": "ABF"}}})) == "bf"
    assert _detector(sig(original={"Detector Name": "BF"})) == "bf"
    assert _detector(sig(original={"Detector": "Dark field 2"})) == "adf"
    assert _detector(sig(original={"Camera": "ABF"})) is None and _detector(sig()) is None


def test_model_auto_follows_how_the_file_says_it_was_taken(tmp_path, caplog):
    """``--model auto`` on a file whose metadata say STEM takes the STEM model, in find and in
    track, without --imaging; a file that says nothing still asks which material (HRTEM)."""
    import logging

    import rsciio.hspy

    from etem.tracker import find, track

    data = stack(2, 64, 64).astype(np.float32)
    stem = _signal(data, scale=0.02)
    stem["metadata"]["Acquisition_instrument"] = {"TEM": {"acquisition_mode": "STEM"}}
    rsciio.hspy.file_writer(str(tmp_path / "stem.hspy"), stem)
    rsciio.hspy.file_writer(str(tmp_path / "plain.hspy"), _signal(data, scale=0.02))
    with caplog.at_level(logging.INFO, logger="etem.engine"):
        df = find(tmp_path / "stem.hspy", model="auto")
        assert "'auto:stem'" in caplog.text and "haadf-stem" in caplog.text
        assert df.attrs["engine"] != "classical" and df.attrs["class_names"] == ["column"]
        caplog.clear()
        track(tmp_path / "stem.hspy", model="auto")
        assert "'auto:stem'" in caplog.text and "haadf-stem" in caplog.text
    # a bright-field STEM image (dark columns): the STEM model is shown it negated, as with
    # dark=True (tests/test_contrast.py), and the classical locator looks for dark columns
    abf = _signal(data, scale=0.02)
    abf["metadata"]["Acquisition_instrument"] = {"TEM": {"acquisition_mode": "STEM"}}
    abf["original_metadata"] = {"ImageTags": {"Detector": "ABF"}}
    rsciio.hspy.file_writer(str(tmp_path / "abf.hspy"), abf)
    assert open_recording(tmp_path / "abf.hspy").meta["detector"] == "bf"
    with caplog.at_level(logging.INFO, logger="etem.engine"):
        for run in (find, track):
            caplog.clear()
            run(tmp_path / "abf.hspy", model="auto")
            assert "bright-field STEM: dark columns" in caplog.text and "haadf-stem" in caplog.text
        caplog.clear()
        find(tmp_path / "abf.hspy", classical=True, sampling=0.2)
        assert "bright-field STEM: dark columns" in caplog.text
        caplog.clear()
        find(tmp_path / "stem.hspy", classical=True, sampling=0.2)
        assert "bright-field" not in caplog.text
    with pytest.raises(ConfigError, match="material"):
        find(tmp_path / "plain.hspy", model="auto")
    with pytest.raises(ConfigError, match="material"):
        track(tmp_path / "plain.hspy", model="auto")


# ---------------------------------------------------------------- TIFF written page by page, TIFF cut short
def _tiff_written(how: str, path: Path, frames: np.ndarray) -> Path:
    if how == "TiffWriter.write":
        with tifffile.TiffWriter(path) as tw:
            for f in frames:
                tw.write(f)
    elif how == "imwrite append":
        for f in frames:
            tifffile.imwrite(path, f, append=True)
    elif how == "PIL save_all":
        from PIL import Image

        pages = [Image.fromarray(f) for f in frames]
        pages[0].save(path, save_all=True, append_images=pages[1:])
    else:  # one imwrite of the 3-D stack
        tifffile.imwrite(path, frames)
    return path


@pytest.mark.parametrize("how", ["TiffWriter.write", "imwrite append", "PIL save_all", "imwrite 3-D"])
def test_a_tiff_written_page_by_page_is_a_stack_of_frames(tmp_path, how):
    """30 pages written one by one (30 tifffile series): all 30 are frames, not just the first."""
    frames = stack(30)
    rec = open_recording(_tiff_written(how, tmp_path / "loop.tif", frames))
    assert len(rec) == 30 and rec.shape == (24, 32) and rec.dtype == np.uint16
    for i in (0, 1, 17, 29):
        np.testing.assert_array_equal(rec[i], frames[i])
    assert [f.frame for f in rec.iter_frames()] == list(range(30))


def test_tiff_pages_of_another_size_are_left_out_and_said(tmp_path, caplog):
    frames = stack(6)
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((8, 8), np.uint16))  # a thumbnail first
        for f in frames:
            tw.write(f)
        tw.write(np.zeros((8, 8), np.uint16))
    rec = open_recording(path)
    assert len(rec) == 6
    np.testing.assert_array_equal(rec[0], frames[0])
    assert "2 of its 8 pages" in rec.meta["reader_warnings"][0] and "8x8" in rec.meta["reader_warnings"][0]
    assert "left out" in caplog.text and "mixed.tif" in caplog.text


@pytest.mark.parametrize("how", ["TiffWriter.write", "imwrite append", "PIL save_all", "imwrite 3-D"])
def test_a_tiff_cut_short_gives_its_frames_then_says_where_it_breaks_off(tmp_path, how, caplog):
    frames = stack(30)
    raw = _tiff_written(how, tmp_path / "full.tif", frames).read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    rec = open_recording(tmp_path / "cut.tif")
    assert 10 <= len(rec) <= 16, len(rec)
    got = []
    with pytest.raises(FileFormatError, match=rf"cut\.tif: cut short: it breaks off in frame {len(rec)}"):
        for f in rec.iter_frames():
            got.append(f.image)
    np.testing.assert_array_equal(np.stack(got), frames[: len(rec)])
    assert not [r for r in caplog.records if r.name == "tifffile"]  # its own log lines are not passed on raw


def test_plain_hdf5_reads_the_largest_stack_and_lists_the_others(tmp_path):
    """Dark references (4 frames) beside the movie (30): the movie is read, whatever the order or
    the names; ``meta['datasets']`` lists the candidates, the one read first."""
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as f:
        f["calib/dark"] = np.zeros((4, 24, 32), np.float32)
        f["calib/gain"] = np.ones((24, 32), np.float32)
        f.create_dataset("scan/movie", data=stack(30)).attrs["sampling"] = 0.2
        # tables beside it are no frames to choose (a simulated movie's truth: drift, occupancy)
        f["truth/drift"] = np.zeros((30, 2))
        f["truth/occupancy"] = np.ones((30, 192), bool)
    with open_recording(path) as rec:
        assert rec.meta["dataset"] == "/scan/movie" and len(rec) == 30 and rec.sampling == 0.2
        assert rec.meta["datasets"] == ["/scan/movie (30 x 24 x 32)", "/calib/dark (4 x 24 x 32)",
                                         "/calib/gain (24 x 32)"]
    with open_recording(path, dataset="/calib/dark") as rec:
        assert len(rec) == 4 and "datasets" not in rec.meta
    with open_recording(path, dataset="calib/dark") as rec:
        assert len(rec) == 4
    with pytest.raises(FileFormatError, match=r"no dataset '/truth/drift' of frames; those in it: /calib/dark"):
        open_recording(path, dataset="truth/drift")
    np.savez(tmp_path / "m.npz", dark=np.zeros((2, 8, 8)), frames=stack(3, 8, 8))
    assert open_recording(tmp_path / "m.npz").meta["dataset"] == "frames"


def test_complex_data_beside_the_movie_is_not_offered_as_frames(tmp_path):
    """Exit waves (complex) beside the movie: a --dataset that names nothing lists what could be
    read as frames, the movie, not the waves, which --dataset /waves refuses, saying why."""
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as f:
        f["scan/movie"] = stack(5)
        f["sim/waves"] = np.zeros((3, 24, 32), np.complex64)
    with open_recording(path) as rec:
        assert rec.meta["dataset"] == "/scan/movie" and "datasets" not in rec.meta  # (no choice to say)
    with pytest.raises(FileFormatError) as info:
        open_recording(path, dataset="/nope")
    assert str(info.value) == f"{path}: no dataset '/nope' of frames; those in it: /scan/movie (5 x 24 x 32)"
    with pytest.raises(FileFormatError, match="complex data"):
        open_recording(path, dataset="/sim/waves")


def test_grey_png_and_jpeg_images_are_read_and_colour_is_refused(tmp_path):
    from PIL import Image

    g8 = stack(1, dtype=np.uint8)[0]
    g16 = stack(1)[0]
    Image.fromarray(g8).save(tmp_path / "g8.png")
    Image.fromarray(g16).save(tmp_path / "g16.png")
    Image.fromarray(g8).save(tmp_path / "g8.jpg")
    Image.fromarray(np.stack([g8] * 3, axis=-1)).save(tmp_path / "grey_as_rgb.png")
    Image.fromarray(np.stack([g8, g8[::-1], g8], axis=-1)).save(tmp_path / "colour.png")
    for name, want in (("g8.png", g8), ("g16.png", g16), ("grey_as_rgb.png", g8)):
        rec = open_recording(tmp_path / name)
        assert len(rec) == 1 and rec.sampling is None and rec.meta["reader"] == "pillow"
        np.testing.assert_array_equal(rec[0], want)
        assert rec[0].dtype == want.dtype
    jpg = open_recording(tmp_path / "g8.jpg")[0]
    assert jpg.shape == g8.shape and jpg.dtype == np.uint8 and abs(jpg.astype(float) - g8).mean() < 40
    with pytest.raises(FileFormatError, match=r"colour\.png: a colour image \(RGB\).*greyscale"):
        open_recording(tmp_path / "colour.png")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(FileFormatError, match=r"noise\.png"):
        open_recording(tmp_path / "noise.png")
