"""Intensity groups on the real images (SrTiO3 ADF and ABF, the Se-implanted MoS2), and the names
the classes are shown by (the dashboard's notes, MoS2's species)."""
from __future__ import annotations

import pytest
from scipy.spatial import cKDTree

from etem.tracker.api import find
from etem.tracker.intensity import group_classes, group_columns
from test_intensity import _intensity_config, vacancy_movie  # noqa: F401 (vacancy_movie: a fixture)


# ------------------------------------------------------------------------------ real images
def test_real_srtio3_adf_sr_and_ti_columns_by_intensity():
    """SrTiO3 [110], annular dark field: the columns form no honeycomb; two groups, the fainter
    the Ti-O columns (atomap's tests count 104 B-site columns in this crop) between Sr ones."""
    from test_files import realdata

    table = find(realdata() / "test_ADF_cropped.hdf5", model="auto:stem", sampling=0.0933)
    out, summary = group_columns(table)
    assert (out["sublattice"] == 0).all() and len(summary) == 1 and len(summary[0]["counts"]) == 2
    assert summary[0]["counts"][0] == 104
    yx = out[["y", "x"]].to_numpy()
    _, j = cKDTree(yx).query(yx, k=2)
    g = out["group"].to_numpy()
    assert (g[j[:, 1]] != g).mean() > 0.95  # each column's nearest neighbour is of the other kind


def test_real_srtio3_abf_dark_columns_by_intensity():
    """The same crop in annular bright field (dark columns, --dark): over the ceiling about them,
    three groups, weakest first: the O columns, then the 104 Ti-O ones and the 117 Sr ones the
    dark-field crop shows."""
    from test_files import realdata

    table = find(realdata() / "test_ABF_cropped.hdf5", dark=True, sampling=0.0933)
    assert (table["intensity"] < table["background"]).mean() > 0.99  # dark columns, under their ceiling
    out, summary = group_columns(table)
    assert len(summary) == 1 and summary[0]["counts"][1:] == [104, 117]
    assert 0 < summary[0]["means"][0] < summary[0]["means"][1] < summary[0]["means"][2]


def test_real_se_implanted_mos2_brighter_s_sites():
    from test_files import realdata

    table = find(realdata() / "example_Se_implanted_MoS2.dm3")  # (its metadata: STEM; the STEM finder)
    out, summary = group_columns(table)
    a, b = (out["sublattice"] == 0).sum(), (out["sublattice"] == 1).sum()
    assert abs(a - b) < 0.05 * (a + b) and (out["sublattice"] < 0).mean() < 0.05
    s = next(x for x in summary if x["sublattice"] == 1)
    assert len(s["counts"]) == 2 and 50 < s["counts"][1] < 300  # the brighter S sites: Se in place of S
    mo = out.loc[out["sublattice"] == 0, "intensity"].median()
    assert s["means"][0] < s["means"][1] < mo


def test_the_dashboard_names_the_learned_classes(vacancy_movie):
    """The live frame's legend: A, B0, B1, not the finder's one class."""
    import json
    import urllib.request

    from etem.tracker import Pipeline
    from etem.tracker.dashboard import Dashboard, DashboardConfig
    from etem.tracker.sources import iter_array

    pipe = Pipeline(_intensity_config())
    src = iter_array(vacancy_movie.frames[:4], sampling=0.1, counters=pipe.counters)
    with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
        with urllib.request.urlopen(dash.url + "api/frame", timeout=10) as r:
            frame = json.loads(r.read())
    assert frame["class_names"] == ["A", "B0", "B1"]
    assert {c[2] for c in frame["columns"]} == {0, 1, 2}


def test_mos2_intensity_classes_are_shown_with_their_species_and_the_species_colours():
    """ADF runs named A/B0/B1 only, and B0 (the single S of the demo) was sky blue, the colour of
    S2 in an HRTEM model's run: the display names give the species (Z^1.7: S2 0.39 of a Mo
    column, S 0.19, SeS 0.89), the stored names stay, and a species has one colour."""
    from etem.tracker.intensity import MOS2_ADF_RATIOS, display_names
    from etem.tracker.plots import class_colours

    assert MOS2_ADF_RATIOS["S2"] == pytest.approx(0.386, abs=0.002)
    assert MOS2_ADF_RATIOS["S"] == pytest.approx(0.193, abs=0.002)
    assert MOS2_ADF_RATIOS["SeS"] == pytest.approx(0.89, abs=0.01)
    # without intensities: the demo's S2 columns losing atoms (its scoring: B0 is S, B1 is S2)
    shown = display_names(["A", "B0", "B1"], "mos2")
    assert shown == ["A (Mo)", "B0 (S)", "B1 (S2)"]
    model = dict(zip(["Mo", "S2", "S"], class_colours(["Mo", "S2", "S"])))
    assert class_colours(shown)[:3] == [model["Mo"], model["S"], model["S2"]]
    assert display_names(["A", "B"], "MoS2") == ["A (Mo)", "B (S2)"]
    # by the groups' intensities (the real Se-implanted image: B0 0.40, B1 0.74 of the Mo columns)
    names = ["A", "B0", "B1", "no sublattice", "faint"]
    assert display_names(names, "mos2", {"A": 1.0, "B0": 0.40, "B1": 0.74}) == [
        "A (Mo)", "B0 (S2)", "B1 (SeS)", "no sublattice", "faint"]
    assert display_names(["A", "B0", "B1"], "mos2", [1.0, 0.38, 0.40]) == ["A (Mo)", "B0", "B1"]  # (one species)
    # other materials, a model's names, no material: as they are
    assert display_names(["A", "B0", "B1"], None) == ["A", "B0", "B1"]
    assert display_names(["A", "B"], "graphene") == ["A", "B"]
    assert display_names(["Mo", "S2", "S"], "mos2") == ["Mo", "S2", "S"]
    assert display_names(["I0", "I1"], "mos2") == ["I0", "I1"]


def test_real_mos2_groups_are_named_s2_and_se_containing():
    """On the real Se-implanted MoS2 image the B sublattice's two groups are S2 (0.40 of the Mo
    columns, Z^1.7 gives 0.39) and the Se-bright columns (a single S against S2 would be 0.19)."""
    from test_files import realdata

    from etem.tracker.intensity import display_names, group_ratios

    table = find(realdata() / "example_Se_implanted_MoS2.dm3")
    out, summary = group_columns(table)
    _, names = group_classes(out)
    ratios = group_ratios(summary, names)
    assert ratios["B0"] == pytest.approx(0.40, abs=0.03)
    assert display_names(names, "mos2", ratios)[:3] == ["A (Mo)", "B0 (S2)", "B1 (SeS)"]
