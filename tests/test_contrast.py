"""Dark columns (annular bright-field STEM) and the networks: a STEM model, trained on bright
columns, is shown such frames negated; an HRTEM model refuses ``dark``."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from etem.tracker import find, track
from etem.tracker.errors import ConfigError

from _images import lattice, render

SAMPLING = 0.2  # Å/px, the bundled STEM model's own
SHAPE = (160, 160)


def stem_pair(seed: int = 0):
    """The same lattice (3 Å apart, columns 0.4 Å wide) as an annular dark-field image (bright
    columns on a dark ground) and an annular bright-field one (dark columns on a bright ground),
    both with shot noise; and the true positions [px]. A bright-field image's noise is that of
    its bright ground, so it is given 400 e/px there (at 80 the negated frame scores F1 0.90, as
    does an ADF frame over the same 80 e/px ground)."""
    truth = lattice(SHAPE, 3.0 / SAMPLING, 10, seed)
    col = render(truth, SHAPE, 0.4 / SAMPLING)
    rng = np.random.default_rng(seed)
    adf = rng.poisson(2.0 + 60.0 * col).astype(np.float32)
    abf = rng.poisson(400.0 - 250.0 * col).astype(np.float32)
    return adf, abf, truth


def f1_and_median(found, truth, tol_px=1.0 / SAMPLING):
    """F1 (one-to-one within ``tol_px``) and the median distance [px] of each found column to
    the nearest true one."""
    yx = found[["y", "x"]].to_numpy()
    if not len(yx):
        return 0.0, np.inf
    d, i = cKDTree(truth).query(yx)
    tp = len(set(i[d <= tol_px]))
    return 2 * tp / (len(yx) + len(truth)), float(np.median(d))


def test_stem_model_finds_dark_columns_when_told_and_the_gaps_when_not():
    adf, abf, truth = stem_pair()
    f1_bright, _ = f1_and_median(find(adf, sampling=SAMPLING, model="haadf-stem", device="cpu"), truth)
    dark = find(abf, sampling=SAMPLING, model="haadf-stem", dark=True, device="cpu")
    f1_dark, med_dark = f1_and_median(dark, truth)
    f1_as_is, med_as_is = f1_and_median(find(abf, sampling=SAMPLING, model="haadf-stem", device="cpu"), truth)
    print(f"\nhaadf-stem F1: ADF {f1_bright:.3f}, ABF negated {f1_dark:.3f} (median {med_dark:.2f} px), "
          f"ABF as is {f1_as_is:.3f} (median {med_as_is:.2f} px)")
    assert f1_bright >= 0.95
    assert f1_dark >= 0.95 and med_dark < 1.0
    assert f1_as_is < 0.5 and med_as_is > 3  # the bright gaps between the columns
    # the trust verdict is measured on the frame as recorded, whichever way the network saw it
    assert dark.attrs["frames"][0]["snr"] > 0


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_dark_in_a_tracked_stream(detection):
    """Through the pipeline, with the eager engine, the detector in this process or its own."""
    from etem.tracker.pipeline import PipelineConfig

    adf, abf, truth = stem_pair(1)
    result = track([abf, abf], sampling=SAMPLING, model="haadf-stem", dark=True, device="cpu", engine="eager",
                   config=PipelineConfig(detection=detection))
    cols = result.columns
    assert sorted(set(cols["frame"])) == [0, 1]
    f1, med = f1_and_median(cols[cols["frame"] == 1], truth)
    assert f1 >= 0.95 and med < 1.0


def test_hrtem_model_refuses_dark():
    _, abf, _ = stem_pair()
    with pytest.raises(ConfigError, match="HRTEM model 'au-hrtem'.*leave out --dark"):
        find(abf, sampling=SAMPLING, model="au-hrtem", dark=True, device="cpu")
    # the classical locator takes it as before
    assert len(find(abf, sampling=SAMPLING, classical=True, dark=True)) > 0.9 * len(stem_pair()[2])


@pytest.mark.parametrize("locator", ["classical", "haadf-stem"])
def test_a_frame_whose_contrast_is_the_other_way_is_warned_about(caplog, locator):
    """A bright-field frame read as bright columns finds the gaps, and the trust flags do not
    tell (above): its intensities, skewed to the dark side, are warned about; so is an
    annular dark-field frame with ``dark``. The frames as they should be read get no warning."""
    adf, abf, _ = stem_pair(seed=4)
    kw = {"classical": True} if locator == "classical" else {"model": locator}
    said = {}
    for name, image, dark in (("abf", abf, False), ("adf dark", adf, True), ("abf dark", abf, True),
                              ("adf", adf, False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="etem.detect"):
            find(image, sampling=SAMPLING, dark=dark, **kw)
        said[name] = " ".join(r.getMessage() for r in caplog.records if r.name == "etem.detect")
    assert "skewed to the dark side" in said["abf"] and "add --dark" in said["abf"]
    assert "skewed to the bright side" in said["adf dark"] and "leave out --dark" in said["adf dark"]
    assert "skewed" not in said["abf dark"] and "skewed" not in said["adf"]
