"""Shadow sites (etem.tracker.site_shadows) and the image at every site as evidence of its
occupancy (etem.tracker.site_evidence)."""
import numpy as np
import pytest
from test_sites import SITES, markov_states, site_states

from etem.tracker.sites import SiteMap, SitesConfig, occupied_sites


# ------------------------------------------------------------------------------ shadow sites
def lattice_with_ghosts(cfg, rng_seed=2, n_frames=120, classes=False):
    """A 6 x 6 lattice of columns 2.5 Å apart (0.1 Å/px), each found in 85 % of the frames; the
    four inner corner columns are surface sites that empty and refill (a few times each); and
    a detector's false peak midway between two columns at six places, each in a third of the
    frames (an HRTEM image's interference at low dose). Returns the site map, the lattice, the
    ghost places and the true occupancy [frames, columns]. ``classes``: the columns are of class
    0 (said 1 in 5 % of the frames), each false peak of either class, the class changing in
    one frame in twenty (as the interference behind it changes with focus and thickness)."""
    rng = np.random.default_rng(rng_seed)
    grid = np.stack(np.meshgrid(np.arange(6) * 25.0 + 20, np.arange(6) * 25.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    ghosts = grid[[7, 9, 14, 20, 22, 27]] + [0.0, 12.5]
    truth = np.ones((n_frames, len(grid)), bool)
    for s in (14, 15, 20, 21):
        for start in rng.choice(np.arange(10, n_frames - 15), 3, replace=False):
            truth[start:start + 8, s] = False
    ghost_cls = np.cumsum(rng.random((n_frames, len(ghosts))) < 1 / 20, axis=0) % 2 if classes else None
    sm = SiteMap(cfg, sampling=0.1)
    for f in range(n_frames):
        found = truth[f] & (rng.random(len(grid)) < 0.85)
        shown = rng.random(len(ghosts)) < 0.33
        peaks = ghosts[shown]
        cls = np.r_[rng.random(int(found.sum())) < 0.05, ghost_cls[f, shown]].astype(int) if classes else None
        sm.update(f, np.vstack([grid[found], peaks]) + rng.normal(0, 0.8, (int(found.sum()) + len(peaks), 2)), cls)
    sm.flush()
    return sm, grid, ghosts, truth


def flips_near(sm, places, radius=5.0):
    t = sm.table()
    yx = t[["y", "x"]].to_numpy()
    near = np.flatnonzero((np.hypot(*(yx[:, None] - places[None]).transpose(2, 0, 1)) < radius).any(1))
    return int(sm.flips_table()["site"].isin(t["site"].to_numpy()[near]).sum()), near


def test_a_peak_between_two_columns_makes_no_events():
    """False peaks midway between two columns come and go: without shadow sites each place is a
    site that flips as its peak comes and goes (the simulated Au HRTEM movie's most common
    false event); with them (the default, 0.7 of the sites' spacing) each is a shadow of the
    columns beside it, never occupied: no flips, no hops, not among the occupied sites, and
    the real vacancies of the surface sites are all still found."""
    off, grid, ghosts, truth = lattice_with_ghosts(SitesConfig(min_separation_A=0))
    on, *_ = lattice_with_ghosts(SitesConfig())
    n_off, _ = flips_near(off, ghosts)
    n_on, at_ghosts = flips_near(on, ghosts)
    assert n_off >= 20 and n_on == 0
    assert on.separation_px * 0.1 == pytest.approx(0.7 * 2.5, abs=0.05)  # (Å: 0.7 of the spacing)
    assert len(occupied_sites(on.table())) == len(grid) == on.n_occupied_sites  # (what the status line counts)
    assert not on.table()["n_occupied"].to_numpy()[at_ghosts].any()
    hops = on.hops_table()
    assert not (hops["from_site"].isin(at_ghosts) | hops["to_site"].isin(at_ghosts)).any()
    # the surface sites' own vacancies: found alike with and without shadows
    true_flips = int(np.abs(np.diff(truth.astype(int), axis=0)).sum())
    (n_real, _), (n_real_off, _) = flips_near(on, grid[[14, 15, 20, 21]]), flips_near(off, grid[[14, 15, 20, 21]])
    assert n_real == n_real_off and abs(n_real - true_flips) <= 4


def test_a_set_separation_and_off():
    """``min_separation_A`` set: sites closer than it are one place, farther ones are not (the
    ghosts, 1.25 Å from their columns, are shadows at 1.5 Å and not at 1.0 Å); 0 turns the rule
    off; a run too short to have a spacing yet has none."""
    for sep, shadowed in ((1.5, True), (1.0, False)):
        sm, _, ghosts, _ = lattice_with_ghosts(SitesConfig(min_separation_A=sep))
        n, _ = flips_near(sm, ghosts)
        assert (n == 0) == shadowed
        assert sm.separation_px == pytest.approx(sep / 0.1)
    sm = SiteMap(SitesConfig(min_separation_A=0), sampling=0.1)
    sm.update(0, SITES)
    sm.flush()
    assert sm._shadows() is None
    sm = SiteMap(SitesConfig(), sampling=0.1)  # three sites: too few to say what the spacing is
    for f in range(20):
        sm.update(f, SITES)
    assert sm._shadows() is None and sm.separation_px == 0


def test_a_shadow_site_makes_no_class_changes():
    """The false peaks between columns said to be of either class, in runs: without shadow
    sites their places change class again and again; with them, no class change is logged
    there, and the columns' own sites make the same few either way."""
    logged = {}
    for sep in (0, None):
        sm, grid, ghosts, _ = lattice_with_ghosts(SitesConfig(min_separation_A=sep), classes=True)
        t = sm.table()
        near = np.hypot(*(t[["y", "x"]].to_numpy()[:, None] - ghosts[None]).transpose(2, 0, 1)).min(1) < 5.0
        changes = sm.class_changes_table()
        logged[sep] = (int(changes["site"].isin(t["site"][near]).sum()), int((~changes["site"].isin(t["site"][near])).sum()))
    assert logged[0][0] >= 3 and logged[None][0] == 0
    assert logged[0][1] == logged[None][1] <= 2


# ------------------------------------------------------------------------------ intensity evidence
def test_disc_means_and_frame_scale():
    from etem.tracker.site_evidence import disc_means, frame_scale

    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 50)).astype(np.float32)
    pts = np.array([[10.3, 12.7], [0.2, 0.1], [39.6, 49.4], [20.0, -8.0], [np.nan, 5.0]])
    yy, xx = np.mgrid[:40, :50]
    for radius, step in ((2.5, 1), (5.0, 3)):  # (a wide disc: every step-th pixel along each axis)
        got = disc_means(img, pts, radius)
        for (y, x), g in zip(pts[:3], got[:3]):
            cy, cx = round(y), round(x)
            dy, dx = yy - cy, xx - cx
            near = (dy**2 + dx**2 <= radius**2) & (dy % step == 0) & (dx % step == 0)
            assert g == pytest.approx(img[near].mean(), rel=1e-6)
        assert np.isnan(got[3]) and np.isnan(got[4])  # (no pixel of the frame in reach; no position)
    med, spread = frame_scale(rng.normal(5.0, 2.0, (512, 512)))
    assert med == pytest.approx(5.0, abs=0.1) and spread == pytest.approx(2.0, rel=0.05)
    assert frame_scale(np.zeros((64, 64))) is None


def blob_movie(rng_seed=4, n_frames=300, k=0.03):
    """40 sites 3 Å apart (0.1 Å/px) switching with probability ``k`` per frame; a detector that
    finds an occupied column in 50 % of the frames and makes false ones at 5 % of the empty
    sites; and each frame's image: a Gaussian spot of height 1 at every occupied site, on
    noise of 0.5 (the frame's scale changing from frame to frame, as a dose would)."""
    rng = np.random.default_rng(rng_seed)
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 25, np.arange(5) * 30.0 + 25, indexing="ij"), -1).reshape(-1, 2)
    truth = markov_states(n_frames, len(grid), k, rng)
    seen = np.where(truth, rng.random(truth.shape) < 0.5, rng.random(truth.shape) < 0.05)
    yy, xx = np.mgrid[:260, :170]
    spots = np.exp(-((yy[None] - grid[:, 0, None, None]) ** 2 + (xx[None] - grid[:, 1, None, None]) ** 2) / (2 * 4.0**2))
    images = [(np.tensordot(occ.astype(float), spots, 1) + rng.normal(0, 0.5, yy.shape)) * rng.uniform(50, 150) + 1000
              for occ in truth]
    return grid, truth, seen, images


def test_the_image_at_each_site_is_evidence_of_its_occupancy():
    """A detector that misses half of the occupied frames, and images that show each column
    faintly: weighing the image at every site (the default) decides the states and finds the
    flips better than the detections alone, which take many misses for vacancies; where the
    image shows nothing (pure noise) it changes little."""
    grid, truth, seen, images = blob_movie()
    true_flips = int(np.abs(np.diff(truth.astype(int), axis=0)).sum())
    results = {}
    for radius in (0.0, 0.5):
        for shown in (True, False):
            sm = SiteMap(SitesConfig(radius_A=0.8, intensity_radius_A=radius), sampling=0.1)
            rng = np.random.default_rng(1)
            for f, det in enumerate(seen):
                img = images[f] if shown else rng.normal(1000, 50, images[f].shape)
                sm.update(f, grid[det], image=img, offset=(0.0, 0.0))
            sm.flush()
            state = site_states(sm, grid, len(truth))
            results[radius, shown] = ((state == truth).mean(), abs(len(sm.flips) - true_flips) / true_flips)
    (acc0, err0), (acc1, err1) = results[0.0, True], results[0.5, True]
    assert acc1 > acc0 + 0.03 and err1 < err0
    assert abs(results[0.5, False][0] - acc0) < 0.02
    assert results[0.0, False] == results[0.0, True]  # (radius 0: the images are not looked at)


def test_intensity_model_waits_for_both_states():
    """No weight from the image before both states have been seen in enough site-frames: a
    run of sites that are always occupied never uses it."""
    sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1)
    img = np.random.default_rng(0).normal(100, 5, (120, 200))
    for f in range(40):
        sm.update(f, SITES, image=img, offset=(0.0, 0.0))
    assert sm.intensity_model() is None
    assert (sm.table()["occupancy"] > 0.7).all() and len(sm.flips) == 0


def test_a_ctrl_c_in_the_middle_of_an_update_leaves_a_map_that_flushes():
    """Ctrl-C lands wherever the run is: one that stops an update while it reads the image at
    the sites leaves the frames before it whole, and the map still flushes at the end."""
    sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1)
    img = np.random.default_rng(0).normal(100, 5, (120, 200))
    for f in range(12):
        sm.update(f, SITES, image=img, offset=(0.0, 0.0))

    def interrupted(*args):
        raise KeyboardInterrupt

    sm._site_values = interrupted
    with pytest.raises(KeyboardInterrupt):
        sm.update(12, SITES, image=img, offset=(0.0, 0.0))
    sm.flush()
    assert sm.n_frames == 12 and (sm.table()["occupancy"] == 1).all()


# ------------------------------------------------------------------------------ hop window
def _hops(pattern, window):
    """Hops of ``pattern`` (frames x the three sites of ``SITES``, occupied?), every frame as
    detected, with emptyings and fillings paired up to ``window`` frames apart; sites named by
    their row in ``SITES``. Also the hops table."""
    sm = SiteMap(SitesConfig(radius_A=0.8, hop_radius_A=4.0, fill_gaps=0, occupancy="gaps", hop_window=window),
                 sampling=0.1)
    for f, occ in enumerate(np.asarray(pattern, bool)):
        sm.update(f, SITES[occ])
    sm.flush()
    pos = sm.table()[["y", "x"]].to_numpy()
    row = {i: int(np.argmin(np.hypot(*(SITES - p).T))) for i, p in enumerate(pos)} | {-1: -1}
    table = sm.hops_table()
    return {(f, row[a], row[b]) for f, a, b in table.to_numpy().tolist()}, table


@pytest.mark.parametrize("window", [0, 1, 2])
def test_a_hop_whose_filling_is_decided_a_frame_early(window):
    """Site 1 fills at frame 2 and site 0 empties at frame 3: one hop 0 -> 1 (at the emptying's
    frame) where the window allows a frame between them, two one-sided rows where it does not."""
    hops, _ = _hops([[1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]], window)
    assert hops == ({(3, 0, 1)} if window >= 1 else {(2, -1, 1), (3, 0, -1)})


def test_hop_window_limits_and_blips():
    """Three frames apart is past a window of 2; a site that fills and empties again (a blip)
    pairs with nothing for its filling, though a neighbour empties as it does; the emptying of
    site 2 and the filling of site 1, two frames apart, make a hop; the hops table is in frame
    order, as the run file stores it."""
    assert _hops([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]], 2)[0] == {(1, 0, -1), (4, -1, 1)}
    assert _hops([[1, 0, 0], [1, 1, 0], [0, 0, 0]], 2)[0] == {(1, -1, 1), (2, 1, -1), (2, 0, -1)}
    assert _hops([[1, 0, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0]], 2)[0] == {(1, 2, 1), (2, 0, -1)}
    # a one-sided row is logged once its window has passed, after a later frame's hop
    hops, table = _hops([[1, 0, 1], [0, 0, 1], [0, 1, 0]], 2)
    assert hops == {(1, 0, -1), (2, 2, 1)} and table["frame"].is_monotonic_increasing


def test_hop_window_is_checked():
    from etem.tracker.errors import ConfigError

    with pytest.raises(ConfigError, match="hop_window"):
        SitesConfig(hop_window=-1)


# ------------------------------------------------------------------------------ class-change hops
def _class_run(names, classes, window=2):
    """The three sites of ``SITES`` (3 Å apart) found in every frame, of the classes ``classes``
    [frames, sites] (as detected: no confusion), with the classes named ``names``."""
    sm = SiteMap(SitesConfig(radius_A=0.8, hop_radius_A=4.0, fill_gaps=0, occupancy="gaps", hop_window=window),
                 sampling=0.1)
    sm.class_names = names
    for f, cls in enumerate(np.asarray(classes)):
        sm.update(f, SITES, cls)
    sm.flush()
    pos = sm.table()[["y", "x"]].to_numpy()
    row = {i: int(np.argmin(np.hypot(*(SITES - p).T))) for i, p in enumerate(pos)} | {-1: -1}
    hops = {(f, row[a], row[b]) for f, a, b in sm.hops_table().to_numpy().tolist()}
    return hops, sm.class_changes_table()


def _s2_moves(lose_at=20, gain_at=20, n=40):
    """Site 0 an S2 column (class 1) that loses an atom at ``lose_at`` (S, class 2); site 1 an
    S column that gains one at ``gain_at``; site 2 Mo (class 0) throughout."""
    cls = np.tile([1, 2, 0], (n, 1))
    cls[lose_at:, 0] = 2
    cls[gain_at:, 1] = 1
    return cls


def test_opposite_class_changes_beside_each_other_are_a_hop():
    """An S2 column turning S beside an S column turning S2 is an S atom that hopped between
    them (the vacancy hopping back): a hop from the site that lost the atom, at its change, as
    the class names say (``S2`` / ``S``, or intensity groups ``B1`` / ``B0``, faintest first);
    the changes stay in the class-change table."""
    hops, changes = _class_run(["Mo", "S2", "S"], _s2_moves())
    assert hops == {(20, 0, 1)} and len(changes) == 2
    hops, _ = _class_run(["Mo", "S2", "S"], _s2_moves(lose_at=21, gain_at=20))  # dated a frame apart
    assert hops == {(21, 0, 1)}
    hops, _ = _class_run(["A", "B1", "B0"], _s2_moves())
    assert hops == {(20, 0, 1)}
    # the other way round (S -> S2 at site 0, S2 -> S at site 1): from site 1 to site 0
    hops, _ = _class_run(["Mo", "S", "S2"], _s2_moves())
    assert hops == {(20, 1, 0)}


@pytest.mark.parametrize("names, classes", [
    (None, _s2_moves()),                                     # classes without names
    (["column", "other", "third"], _s2_moves()),             # names that say no amount
    (["Mo", "S2", "S"], _s2_moves(lose_at=20, gain_at=22)),  # dated two frames apart: past one frame
    (["Mo", "S2", "Se2"], _s2_moves()),                      # S2 -> Se2 and back: not one kind
])
def test_class_changes_that_are_no_hop(names, classes):
    hops, changes = _class_run(names, classes)
    assert hops == set() and len(changes) == 2


def test_class_kinds_from_names():
    from etem.tracker.site_classes import class_kinds

    assert class_kinds(("Mo", "S2", "S", "B0", "B1", "column", "I2", "1", "10", "a1")) == (
        ("Mo", 1), ("S", 2), ("S", 1), ("B", 0), ("B", 1), (None, 0), ("I", 2), ("atoms", 1), ("atoms", 10), (None, 0))


def test_column_heights_losing_and_gaining_an_atom_beside_each_other_are_a_hop():
    """A height model's classes ``"1"`` … ``"10"`` are amounts of one kind: a column of 5 atoms
    turning 4 beside one of 3 turning 4 is an atom that moved between them (the amounts need
    not be each other's reverse, as S2 -> S and S -> S2 are); a column turning 4 -> 5 beside
    one turning 3 -> 4 gains twice and is no hop. Heights above 8 keep their own class."""
    names = [str(h) for h in range(1, 11)]
    cls = np.tile([4, 2, 9], (40, 1))  # heights 5, 3 and 10+
    cls[20:, 0], cls[20:, 1] = 3, 3  # 5 -> 4 and 3 -> 4
    hops, changes = _class_run(names, cls)
    assert hops == {(20, 0, 1)} and len(changes) == 2
    cls[20:, 0] = 5  # 5 -> 6 and 3 -> 4: both gain
    hops, changes = _class_run(names, cls)
    assert hops == set() and len(changes) == 2


def test_a_site_keeps_a_height_class_above_eight():
    """Classes 8 and 9 (heights 9 and 10+) are a site's own, not folded into the eighth."""
    sm = SiteMap(SitesConfig(radius_A=0.8, fill_gaps=0, occupancy="gaps"), sampling=0.1)
    sm.class_names = [str(h) for h in range(1, 11)]
    for f in range(6):
        sm.update(f, SITES, np.array([9, 8, 7]))
    sm.flush()
    table = sm.table()
    order = np.argsort([int(np.argmin(np.hypot(*(SITES - p).T))) for p in table[["y", "x"]].to_numpy()])
    assert table["cls"].to_numpy()[order].tolist() == [9, 8, 7]
    assert sm.n_classes == 10


def test_intensity_groups_changing_towards_one_group_are_no_hop():
    """An intensity group's index counts no atoms: B2 -> B1 beside B0 -> B1 (both ending in the
    middle group) is two class changes, not an atom that moved; B1 -> B0 beside B0 -> B1 is."""
    cls = np.tile([2, 0, 0], (40, 1))
    cls[20:, 0], cls[20:, 1] = 1, 1
    hops, changes = _class_run(["B0", "B1", "B2"], cls)
    assert hops == set() and len(changes) == 2
    cls = np.tile([1, 0, 0], (40, 1))
    cls[20:, 0], cls[20:, 1] = 0, 1
    hops, changes = _class_run(["B0", "B1", "B2"], cls)
    assert hops == {(20, 0, 1)} and len(changes) == 2
