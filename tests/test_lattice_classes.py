"""Metal or chalcogen from the sublattice (`[locate] lattice_classes`): synthetic honeycombs
with a network's confusions, the choice's resolution against model cards, and the MoS2 demo."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from etem.tracker.errors import ConfigError
from etem.tracker.lattice_classes import lattice_classes, lattice_species, resolve
from etem.tracker.locate import LocateConfig
from etem.train.bundle import bundled_models

MO, S2, S = 0, 1, 2


def _card(name):
    return json.loads(bundled_models()[name].with_suffix(".json").read_text())


def _honeycomb(twin: bool, rng, size_A=70.0, sampling=0.1, a=3.16):
    """Projected MoS2 [001]: Mo on one sublattice of a honeycomb, S2 (a fifth of them S) on
    the other. With ``twin`` the right half is a mirror twin: its metal sits where the left
    half's chalcogen would."""
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    shift = (a1 + a2) / 3
    rows = []
    n = int(size_A / a) + 4
    for i in range(-n, n):
        for j in range(-n, n):
            p = i * a1 + j * a2
            for sub, off in ((0, 0.0), (1, 1.0)):
                q = p + off * shift
                if not (0 <= q[0] < size_A and 0 <= q[1] < size_A):
                    continue
                metal = (sub == 0) != (twin and q[0] >= size_A / 2)
                rows.append((q[1] / sampling, q[0] / sampling, MO if metal else (S if rng.random() < 0.2 else S2)))
    t = pd.DataFrame(rows, columns=["y", "x", "true"])
    # the network: Mo and S2 given each other's class in 30 % of the columns, S called Mo in 40 %
    flip = rng.random(len(t)) < 0.3
    said = np.where(flip & (t["true"] == MO), S2, np.where(flip & (t["true"] == S2), MO, t["true"]))
    said = np.where((t["true"] == S) & (rng.random(len(t)) < 0.4), MO, said)
    return t.assign(cls=said)


@pytest.mark.parametrize("twin", [False, True], ids=["one grain", "mirror twin"])
def test_the_sublattice_decides_metal_or_chalcogen(twin):
    rng = np.random.default_rng(1)
    t = _honeycomb(twin, rng)
    species = lattice_species(_card("mos2-unet"))
    got = lattice_classes(t, species)
    assert (t["cls"] == t["true"]).mean() < 0.8  # (the network's own)
    # away from the field's edges (and the twin boundary), where a column has all its neighbours
    inner = t["x"].between(40, 660) & t["y"].between(40, 660)
    if twin:  # (within 3 Å of the twin boundary a column may be given the other grain's species)
        inner &= ~t["x"].between(315, 385)
    metal = t["true"] == MO
    ok = (got == MO)[inner] == metal[inner]  # metal or chalcogen: right everywhere
    assert ok.all(), ok.mean()
    # a chalcogen column keeps the network's S2 or S; one it called Mo becomes S2
    chal = inner & ~metal
    assert (got[chal & (t["cls"] == S)] == S).all() and (got[chal & (t["cls"] == MO)] == S2).all()
    assert (got[chal & (t["true"] == S)] == S).mean() == pytest.approx(0.6, abs=0.1)


def test_which_models_it_applies_to():
    metal, fallback = lattice_species(_card("mos2-unet"))
    assert metal.tolist() == [True, False, False] and fallback == S2
    assert lattice_species(_card("mos2-msdnet")) is not None
    for name in ("au-hrtem", "haadf-stem", "graphene-hrtem"):
        assert lattice_species(_card(name)) is None
    assert resolve("auto", _card("au-hrtem")) is None and resolve("auto", None) is None
    assert resolve("off", _card("mos2-unet")) is None
    assert resolve("on", _card("mos2-unet")) is not None
    with pytest.raises(ConfigError, match="needs a model that classes the species"):
        resolve("on", None)
    with pytest.raises(ConfigError, match="lattice_classes"):
        LocateConfig(lattice_classes="yes")
    # a table of no columns, and columns of no honeycomb (too few): the classes as they came
    empty = pd.DataFrame({"y": [], "x": [], "cls": []})
    assert lattice_classes(empty, (metal, fallback)).size == 0
    few = pd.DataFrame({"y": [0.0, 10.0, 20.0], "x": [0.0, 0.0, 0.0], "cls": [S2, MO, S]})
    assert lattice_classes(few, (metal, fallback)).tolist() == [S2, MO, S]


def test_the_mos2_demo_classes_by_sublattice_and_replay_can_turn_it_off(tmp_path):
    def etem(*args):
        r = subprocess.run([sys.executable, "-m", "etem.tracker.cli", *map(str, args)], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    said = etem("demo", "--movie", "mos2", "--frames", 8, "--size", 192, "--out", tmp_path / "demo", "--quiet")
    acc = float(said.split("class accuracy ")[1].split()[0])
    assert acc > 0.9, said  # measured 0.960 on the 60-frame, 256² movie (0.691 without)
    movie = tmp_path / "demo" / "movie.h5"
    off = tmp_path / "off.h5"
    said = etem("replay", movie, "--model", "mos2-unet", "--lattice-classes", "off", "-o", off, "--quiet")
    assert "sublattice" not in said.split("columns located by")[1].split("\n")[0]
    plain = float(etem("evaluate", off, movie).split("class accuracy ")[1].split(")")[0])
    assert plain < acc - 0.1, (plain, acc)
    # etem find says so, and how many columns of each class it found
    said = etem("find", movie, "--model", "mos2-unet", "-o", tmp_path / "cols.csv")
    assert "metal or chalcogen from each column's sublattice" in said
    counts = dict(item.rsplit(" ", 1) for item in said.split("classes (all 8 frames): ")[1].split("\n")[0].split(", "))
    table = pd.read_csv(tmp_path / "cols.csv")
    assert {k: int(v) for k, v in counts.items()} == {
        name: int((table["cls"] == i).sum()) for i, name in enumerate(["Mo", "S2", "S"]) if (table["cls"] == i).any()}
