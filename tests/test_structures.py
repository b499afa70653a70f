"""Structures: graphene bonds and holes, Au particles along their zone axis, MoS2 classes, columns."""
import numpy as np
import pytest
from ase import Atoms
from scipy import ndimage
from scipy.spatial import cKDTree

from etem.simulate.structures import au_nanoparticle, columns, graphene, mos2, pristine_graphene
from etem.tracker.errors import ConfigError

A_AU = 4.08
A_MOS2 = 3.16


def bond_lengths(atoms, cutoff_A=1.8):
    """All C-C distances below cutoff (each bond once)."""
    pairs = cKDTree(atoms.positions).query_pairs(cutoff_A, output_type="ndarray")
    return np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1)


def count_holes(atoms, empty_A=2.5, min_area_A2=2.0, step_A=0.25):
    """Enclosed empty regions of a sheet: connected areas farther than ``empty_A`` from every
    atom that do not reach the outside and are larger than ``min_area_A2`` (not a wide ring)."""
    xy = atoms.positions[:, :2]
    lo, hi = xy.min(axis=0) - 2 * step_A, xy.max(axis=0) + 2 * step_A
    gx, gy = np.meshgrid(*(np.arange(a, b, step_A) for a, b in zip(lo, hi)), indexing="ij")
    d, _ = cKDTree(xy).query(np.column_stack([gx.ravel(), gy.ravel()]))
    empty = np.pad((d > empty_A).reshape(gx.shape), 1, constant_values=True)
    labels, n = ndimage.label(empty)
    outside = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    area = np.bincount(labels.ravel(), minlength=n + 1) * step_A**2
    return len({k for k in range(1, n + 1) if area[k] >= min_area_A2} - outside)


# --------------------------------------------------------------------------------------------
# Graphene


@pytest.fixture(scope="module", params=[0, 2, 4])
def sheet(request):
    return request.param, graphene(np.random.default_rng(10 + request.param), n_holes=request.param)


def test_graphene_bonds_are_1_42(sheet):
    _, atoms = sheet
    b = bond_lengths(atoms)
    q25, q50, q75 = np.percentile(b, [25, 50, 75])
    print(f"{len(atoms)} atoms, {len(b)} bonds: median {q50:.4f} Å, IQR {q75 - q25:.4f} Å")
    assert abs(q50 - 1.42) < 0.03
    assert q75 - q25 < 0.1
    nearest, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    assert abs(np.median(nearest[:, 1]) - 1.42) < 0.03


def test_pristine_graphene_is_a_perfect_periodic_honeycomb():
    atoms = pristine_graphene((20.0, 30.0))
    box = atoms.cell.lengths()[:2]
    assert np.all(box >= [20, 30]) and atoms.pbc[:2].all()
    d, _ = cKDTree(atoms.positions[:, :2], boxsize=box).query(atoms.positions[:, :2], k=5)
    # across the periodic boundary too: three bonds of 1.42 Å, the next atom 2.46 Å away
    np.testing.assert_allclose(d[:, 1:4], 1.42, atol=1e-9)
    np.testing.assert_allclose(d[:, 4], 1.42 * np.sqrt(3), atol=1e-9)
    cols = columns(atoms)
    assert len(cols) == len(atoms) and set(cols["cls"]) == {0} and atoms.info["classes"] == ("C",)


def test_graphene_holes_edges_and_labels(sheet):
    n_holes, atoms = sheet
    assert atoms.info["params"]["n_holes"] == n_holes
    assert count_holes(atoms) == n_holes
    # Pruned: every atom keeps at least two neighbours; every atom is one column of class "C".
    degree = np.bincount(cKDTree(atoms.positions).query_pairs(1.8, output_type="ndarray").ravel(),
                         minlength=len(atoms))
    assert degree.min() >= 2 and degree.max() <= 3
    assert atoms.info["classes"] == ("C",)
    np.testing.assert_array_equal(atoms.arrays["column"], np.arange(len(atoms)))
    np.testing.assert_array_equal(atoms.arrays["cls"], 0)
    cols = columns(atoms)
    assert len(cols) == len(atoms) and set(cols["label"]) == {"C"} and (cols["n_atoms"] == 1).all()
    # Centred with the padding around it.
    np.testing.assert_allclose(atoms.positions.min(axis=0), 5.0, atol=1e-9)
    np.testing.assert_allclose(atoms.cell.lengths() - atoms.positions.max(axis=0), 5.0, atol=1e-9)


def test_graphene_without_relaxation_has_a_wide_bond_spread():
    raw = graphene(3, size_A=20.0, n_holes=0, relax=False)
    nearest, _ = cKDTree(raw.positions).query(raw.positions, k=2)
    q25, q75 = np.percentile(nearest[:, 1], [25, 75])
    assert q75 - q25 > 0.3  # the raw Voronoi network; the bond test above would catch it


def test_graphene_reproducible_from_seed():
    a = graphene(np.random.default_rng(5), size_A=20.0, n_holes=1)
    b = graphene(np.random.default_rng(5), size_A=20.0, n_holes=1)
    c = graphene(np.random.default_rng(6), size_A=20.0, n_holes=1)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert len(a) != len(c) or not np.array_equal(a.positions, c.positions)


def test_graphene_too_many_holes_is_an_error():
    with pytest.raises(ConfigError, match="cannot fit 6 holes"):
        graphene(0, size_A=20.0, n_holes=6, hole_radius_A=6.0)


# --------------------------------------------------------------------------------------------
# Au nanoparticles

# Nearest distance between projected columns: [110] a centred 2.885 x 4.08 Å rectangle; [111] a
# triangular lattice of a / sqrt(6).
PROJECTED = {"110": np.hypot(A_AU / np.sqrt(8), A_AU / 2), "111": A_AU / np.sqrt(6)}


@pytest.mark.parametrize("zone_axis", ["110", "111"])
@pytest.mark.parametrize("tilt", [0.0, 5.0])
def test_au_no_close_atoms(zone_axis, tilt):
    for seed in range(3):
        atoms = au_nanoparticle(seed, zone_axis=zone_axis, tilt_deg=tilt, growth=0.2, roughness_T=3.0)
        d, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
        assert d[:, 1].min() > 2.5
        assert atoms.info["params"]["tilt_deg"] == tilt and atoms.info["params"]["zone_axis"] == zone_axis


@pytest.mark.parametrize("zone_axis", ["110", "111"])
def test_au_zone_axis_is_along_z(zone_axis):
    atoms = au_nanoparticle(1, zone_axis=zone_axis, radius_A=12.0, tilt_deg=0.0)
    cols = columns(atoms)
    in_columns = cols.loc[cols["n_atoms"] > 1, "n_atoms"].sum() / len(atoms)
    assert in_columns > 0.85
    xy = cols.loc[cols["n_atoms"] > 1, ["x_A", "y_A"]].to_numpy()
    d, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(np.median(d[:, 1]), PROJECTED[zone_axis], atol=0.02)
    # The generator's columns are the same.
    np.testing.assert_array_equal(columns(atoms, by="label")["n_atoms"], cols["n_atoms"])


def test_au_tilt_breaks_the_columns_apart():
    tilted = au_nanoparticle(1, zone_axis="111", radius_A=12.0, tilt_deg=5.0)
    cols = columns(tilted)
    assert cols.loc[cols["n_atoms"] > 1, "n_atoms"].sum() / len(tilted) < 0.3
    by_label = columns(tilted, by="label")  # the columns of the untilted particle
    assert by_label["n_atoms"].max() > 3


def test_au_roughening_and_reproducibility():
    smooth = au_nanoparticle(4, radius_A=10.0, growth=0.0, zone_axis="110")
    rough = au_nanoparticle(4, radius_A=10.0, growth=0.2, roughness_T=3.0, zone_axis="110")
    n0 = len(smooth)
    assert len(rough) == n0 + round(0.2 * n0)
    again = au_nanoparticle(4, radius_A=10.0, growth=0.2, roughness_T=3.0, zone_axis="110")
    np.testing.assert_array_equal(rough.positions, again.positions)


@pytest.mark.parametrize("support", ["amorphous_carbon", "graphene"])
def test_au_support_is_unlabelled_and_below(support):
    atoms = au_nanoparticle(2, radius_A=7.0, support=support, tilt_deg=3.0)
    au = atoms.numbers == 79
    c = atoms.numbers == 6
    assert c.sum() > 100 and set(atoms.get_chemical_symbols()) == {"Au", "C"}
    np.testing.assert_array_equal(atoms.arrays["column"][c], -1)
    np.testing.assert_array_equal(atoms.arrays["cls"][c], -1)
    assert (atoms.arrays["column"][au] >= 0).all()
    assert columns(atoms)["n_atoms"].sum() == au.sum()
    assert atoms.positions[c, 2].min() > atoms.positions[au, 2].max() + 2.0
    assert cKDTree(atoms.positions[c]).query(atoms.positions[au])[0].min() > 2.0
    d, _ = cKDTree(atoms.positions[au]).query(atoms.positions[au], k=2)
    assert d[:, 1].min() > 2.5
    pos = atoms.positions
    assert (pos >= -1e-9).all() and (pos <= atoms.cell.lengths() + 1e-9).all()


def test_au_bad_options():
    with pytest.raises(ConfigError, match="zone_axis"):
        au_nanoparticle(0, zone_axis="100")
    with pytest.raises(ConfigError, match="support"):
        au_nanoparticle(0, support="gold")
    with pytest.raises(ConfigError, match="radius_A"):
        au_nanoparticle(0, radius_A=(12.0, 8.0))


# --------------------------------------------------------------------------------------------
# MoS2


def test_mos2_classes_follow_the_vacancies():
    atoms = mos2(3, vacancy_fraction={"S": 0.15, "S2": 0.03, "Mo": 0.03})
    cols = columns(atoms)
    assert atoms.info["classes"] == ("Mo", "S2", "S")
    heights = cols.groupby("label")["n_atoms"].unique()
    assert list(heights["Mo"]) == [1] and list(heights["S2"]) == [2] and list(heights["S"]) == [1]
    counts = cols["label"].value_counts()
    p = atoms.info["params"]
    assert counts["S"] == p["n_S"] > 0 and counts["S2"] == p["n_S2"] and counts["Mo"] == p["n_Mo"]
    assert atoms.get_chemical_symbols().count("S") == 2 * counts["S2"] + counts["S"]
    # The stored columns are the projected ones, and the classes match the atoms in them.
    np.testing.assert_array_equal(columns(atoms, by="label")["label"], cols["label"])
    symbols = np.array(atoms.get_chemical_symbols())
    assert (symbols[atoms.arrays["cls"] == 0] == "Mo").all() and (symbols[atoms.arrays["cls"] > 0] == "S").all()

    perfect = columns(mos2(3, vacancy_fraction={}))
    assert "S" not in set(perfect["label"])


def test_mos2_geometry():
    atoms = mos2(0, vacancy_fraction={})
    cols = columns(atoms)
    mo = cols.loc[cols["label"] == "Mo", ["x_A", "y_A"]].to_numpy()
    s2 = cols.loc[cols["label"] == "S2", ["x_A", "y_A"]].to_numpy()
    d, _ = cKDTree(s2).query(mo)
    np.testing.assert_allclose(np.median(d), A_MOS2 / np.sqrt(3), atol=0.01)
    d_mo, _ = cKDTree(mo).query(mo, k=2)
    np.testing.assert_allclose(np.median(d_mo[:, 1]), A_MOS2, atol=0.01)
    z = atoms.positions[:, 2]
    sym = np.array(atoms.get_chemical_symbols())
    np.testing.assert_allclose(np.ptp(z[sym == "S"]), 2 * np.sqrt(2.41**2 - A_MOS2**2 / 3), atol=1e-6)
    bond, _ = cKDTree(atoms.positions[sym == "S"]).query(atoms.positions[sym == "Mo"])
    np.testing.assert_allclose(bond, 2.41, atol=1e-6)


def test_mos2_on_graphene_with_substitution():
    atoms = mos2(1, size_A=24.0, on_graphene=True, substitution={"Mo": ("W", 0.3)})
    c = atoms.numbers == 6
    np.testing.assert_array_equal(atoms.arrays["column"][c], -1)
    flake = ~c
    gap = atoms.positions[c, 2].min() - atoms.positions[flake, 2].max()
    np.testing.assert_allclose(gap, 3.4, atol=1e-6)
    assert "W" in atoms.get_chemical_symbols()
    cols = columns(atoms)
    assert set(cols["label"]) <= {"Mo", "S2", "S"}
    w = np.array(atoms.get_chemical_symbols()) == "W"
    np.testing.assert_array_equal(atoms.arrays["cls"][w], 0)  # a W atom sits in a "Mo" column
    assert cols["n_atoms"].sum() == flake.sum()


# --------------------------------------------------------------------------------------------
# Columns


def stacks(heights, spacing_A=3.0):
    """Columns of the given heights on a row along x, atoms 2.9 Å apart along z."""
    pos = [(5 + spacing_A * k, 5.0, 2.9 * i) for k, h in enumerate(heights) for i in range(h)]
    return Atoms("Au" * len(pos), positions=pos)


def test_column_heights_on_a_handmade_structure():
    atoms = stacks([1, 2, 3, 5, 12, 4])
    atoms.positions[4] += (0.2, -0.1, 0)  # within the tolerance of its column
    cols = columns(atoms, classes="height", max_height=10)
    assert list(cols["n_atoms"]) == [1, 2, 3, 5, 12, 4]
    assert list(cols["label"]) == ["1", "2", "3", "5", "10", "4"]
    assert list(cols["cls"]) == [0, 1, 2, 4, 9, 3]
    np.testing.assert_allclose(cols["x_A"], 5 + 3.0 * np.arange(6) + [0, 0, 0.2 / 3, 0, 0, 0], atol=1e-12)
    # Unlabelled atoms do not count towards a height.
    atoms.set_array("column", np.where(np.arange(len(atoms)) == 0, -1, 1))
    cols = columns(atoms, classes="height")
    assert list(cols["n_atoms"]) == [2, 3, 5, 12, 4]


def test_columns_without_labels_use_the_species():
    atoms = stacks([2, 1]) + Atoms("C", positions=[(20.0, 5.0, 0.0)])
    cols = columns(atoms)
    assert list(cols["label"]) == ["Au", "Au", "C"] and list(cols["cls"]) == [0, 0, 1]
    assert len(columns(atoms, tolerance_A=3.5)) == 2  # neighbours closer than the tolerance merge
    with pytest.raises(ConfigError, match="by='label'"):
        columns(atoms, by="label")
    with pytest.raises(ConfigError, match="classes"):
        columns(atoms, classes="mass")
