"""Thermal vibrations: stored tables, per-atom amplitudes, frozen-phonon displacements, MD."""
import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Octahedron
from scipy.stats import spearmanr

from etem.simulate.structures import au_nanoparticle, mos2
from etem.simulate.vibrations import amplitudes, coordination, displace, load_table, md_amplitudes
from etem.tracker.errors import ConfigError


def by_coordination(entry, species):
    table = entry["sigma_A"][species]
    cn = np.array(sorted(int(k) for k in table))
    return cn, np.array([table[str(k)] for k in cn])


def surface_and_bulk(entry, species="Au"):
    """RMS amplitude of the atoms with coordination <= 9 (weighted by count), and of 12."""
    cn, sigma = by_coordination(entry, species)
    n = np.array([entry["n_atoms"][species][str(k)] for k in cn])
    low = cn <= 9
    return np.sqrt(np.sum(n[low] * sigma[low] ** 2) / n[low].sum()), sigma[cn == 12][0]


def test_stored_au_table_grows_as_coordination_falls():
    au = load_table("Au")
    assert au["temperature_K"] == 300.0 and au["date"] and "EMT" in au["method"]
    assert au["md"]["n_atoms"] == sum(au["n_atoms"]["Au"].values()) > 100
    cn, sigma = by_coordination(au, "Au")
    assert cn.min() <= 4 and cn.max() == 12
    surface, bulk = surface_and_bulk(au)
    print(dict(zip(cn.tolist(), sigma.round(4).tolist())), f"surface {surface:.4f} Å, bulk {bulk:.4f} Å")
    assert surface > 1.1 * bulk
    assert spearmanr(cn, sigma).statistic < -0.8
    assert 0.06 < bulk < 0.12  # Au at 300 K: B of about 0.6 Å², sigma = sqrt(B / 8 pi²) = 0.09 Å


def test_stored_mos2_table():
    t = load_table("MoS2")
    assert "not computed" in t["method"]
    for species, bulk in (("Mo", 6), ("S", 3)):
        cn, sigma = by_coordination(t, species)
        assert np.all(np.diff(sigma) < 0)  # fewer bonds, larger amplitude
        assert cn.max() == bulk
    assert t["sigma_A"]["S"]["3"] > t["sigma_A"]["Mo"]["6"]
    np.testing.assert_allclose([t["sigma_A"]["Mo"]["6"], t["sigma_A"]["S"]["3"]], [0.06, 0.08], atol=0.005)


def test_unknown_material_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'Au', 'MoS2'"):
        load_table("Pt")


def test_au_amplitudes_are_larger_at_the_surface():
    atoms = au_nanoparticle(3, radius_A=10.0, growth=0.1, roughness_T=2.0)
    sigma = amplitudes(atoms)
    cn = coordination(atoms, {"Au-Au": 3.4})
    assert cn.max() == 12 and cn.min() < 9
    assert sigma[cn <= 9].mean() > sigma[cn == 12].mean()
    np.testing.assert_allclose(sigma[cn == 12], load_table("Au")["sigma_A"]["Au"]["12"])
    hot = amplitudes(atoms, temperature_K=600.0)
    np.testing.assert_allclose(hot, sigma * np.sqrt(2))


def test_mos2_amplitudes_near_vacancies():
    atoms = mos2(2, size_A=30.0, vacancy_fraction={"Mo": 0.05})
    sigma = amplitudes(atoms)
    symbols = np.array(atoms.get_chemical_symbols())
    cn = coordination(atoms, {"Mo-S": 2.9})
    s_bulk = (symbols == "S") & (cn == 3)
    s_low = (symbols == "S") & (cn < 3)
    assert s_low.any() and s_bulk.any()
    assert sigma[s_low].min() > sigma[s_bulk].max()
    assert sigma[(symbols == "S") & (cn == 3)].mean() > sigma[(symbols == "Mo") & (cn == 6)].mean()


def test_support_atoms_need_a_default():
    atoms = au_nanoparticle(0, radius_A=6.0, support="amorphous_carbon")
    with pytest.raises(ConfigError, match="default_A"):
        amplitudes(atoms)
    sigma = amplitudes(atoms, default_A=0.08)
    np.testing.assert_array_equal(sigma[atoms.numbers == 6], 0.08)
    assert (sigma[atoms.numbers == 79] > 0.08).all()


def test_displace_gives_the_asked_rms():
    n = 6000
    atoms = Atoms("Au" * n, positions=np.zeros((n, 3)))
    atoms.set_array("column", np.arange(n))
    sigma = np.where(np.arange(n) < n // 2, 0.05, 0.2)
    moved = displace(atoms, np.random.default_rng(0), sigma)
    d = moved.positions - atoms.positions
    for s in (0.05, 0.2):
        rms = np.sqrt(np.mean(d[sigma == s] ** 2, axis=0))  # per direction
        np.testing.assert_allclose(rms, s, rtol=0.05)
    assert np.abs(d.mean(axis=0)).max() < 0.01
    assert (atoms.positions == 0).all()  # the input is left alone
    np.testing.assert_array_equal(moved.arrays["column"], atoms.arrays["column"])
    again = displace(atoms, np.random.default_rng(0), sigma)
    np.testing.assert_array_equal(again.positions, moved.positions)
    assert not np.array_equal(displace(atoms, 1, sigma).positions, moved.positions)
    np.testing.assert_array_equal(displace(atoms, 0, 0.0).positions, atoms.positions)


def test_displace_bad_sigma():
    atoms = Atoms("Au" * 3, positions=np.zeros((3, 3)))
    with pytest.raises(ConfigError, match=r"\[n\]"):
        displace(atoms, 0, np.ones(4))
    with pytest.raises(ConfigError, match="not negative"):
        displace(atoms, 0, -0.1)


def test_short_md_surface_vibrates_more_than_bulk():
    particle = Octahedron("Au", 5, cutoff=1, latticeconstant=4.08)  # 79 atoms, 19 of them inside
    entry = md_amplitudes(particle, equilibration_ps=0.2, duration_ps=0.8, seed=1)
    assert set(entry["sigma_A"]["Au"]) == {"6", "7", "9", "12"}
    assert entry["n_atoms"]["Au"]["12"] == 19 and entry["md"]["n_atoms"] == 79
    surface, bulk = surface_and_bulk(entry)
    print(entry["sigma_A"]["Au"], f"wall {entry['md']['wall_s']} s")
    assert surface > 1.03 * bulk
    # Usable as a table.
    sigma = amplitudes(particle, table=entry)
    assert sigma.shape == (79,) and (sigma > 0).all()


def test_md_needs_one_element():
    with pytest.raises(ConfigError, match="one element"):
        md_amplitudes(Atoms("AuPt", positions=[(0, 0, 0), (2.8, 0, 0)]))


@pytest.mark.slow
def test_full_md_reproduces_the_stored_au_table():
    stored = load_table("Au")
    entry = md_amplitudes()
    print(entry["sigma_A"]["Au"], f"wall {entry['md']['wall_s']} s")
    assert entry["n_atoms"] == stored["n_atoms"]
    for k, n in stored["n_atoms"]["Au"].items():
        if n >= 10:
            np.testing.assert_allclose(entry["sigma_A"]["Au"][k], stored["sigma_A"]["Au"][k], rtol=0.1)
