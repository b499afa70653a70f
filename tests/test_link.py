import numpy as np
import pandas as pd
import pytest

from etem.tracker.link import LinkConfig, StreamLinker, estimate_shift


def lattice(n=12, a=20.0):
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) * a + 30.0
    return g


def test_estimate_shift_with_missing_and_extra_columns():
    rng = np.random.default_rng(1)
    ref = lattice()
    d_true = np.array([3.3, -2.1])
    cur = ref[rng.random(len(ref)) > 0.15] + d_true + rng.normal(0, 0.1, (1, 2))
    cur = np.vstack([cur, rng.uniform(0, 260, (10, 2))])  # spurious columns
    d, n = estimate_shift(ref, cur, guess=np.zeros(2), radius=8.0)
    assert n > 80
    np.testing.assert_allclose(d, d_true, atol=0.15)


def test_stream_linker_follows_drifting_lattice():
    rng = np.random.default_rng(2)
    ref = lattice()
    linker = StreamLinker(LinkConfig(search_range_A=0.5, max_drift_A=1.0, memory=2), sampling=0.1)
    drift = np.zeros(2)
    ids0 = None
    for f in range(30):
        drift += np.array([0.6, 0.4])  # px per frame: 18 px in total, close to the spacing
        keep = rng.random(len(ref)) > 0.05  # blinking columns
        pos = ref[keep] + drift + rng.normal(0, 0.2, (keep.sum(), 2))
        out = linker.update(f, pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1], "cls": 0, "prob": 1.0}))
        if f == 0:
            ids0 = dict(zip(np.flatnonzero(keep), out["particle"]))
            first = drift.copy()
        else:
            # every column keeps the identity it had in frame 0
            same = [ids0[i] == p for i, p in zip(np.flatnonzero(keep), out["particle"]) if i in ids0]
            assert np.mean(same) > 0.99
    np.testing.assert_allclose(linker.drift, drift - first, atol=0.2)
    np.testing.assert_allclose(out[["y_ref", "x_ref"]].to_numpy(), ref[keep] + first, atol=1.2)


def test_empty_frames_do_not_break_linking():
    linker = StreamLinker(LinkConfig(), sampling=0.1)
    empty = pd.DataFrame({"y": [], "x": [], "cls": [], "prob": []})
    one = pd.DataFrame({"y": [10.0], "x": [10.0], "cls": [0], "prob": [1.0]})
    linker.update(0, empty)
    a = linker.update(1, one)
    linker.update(2, empty)
    b = linker.update(3, one)
    assert a["particle"].iloc[0] == b["particle"].iloc[0]  # memory bridges the gap


def plain_estimate_shift(ref, yx, guess, radius, iterations=4):
    """The estimator with one k-d tree query per pass: what estimate_shift must reproduce."""
    from scipy.spatial import cKDTree

    tree, d, r = cKDTree(ref), np.asarray(guess, float), radius
    for _ in range(iterations):
        dist, idx = tree.query(yx - d, distance_upper_bound=r)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            return np.asarray(guess, float), 0
        d = d + np.median((yx - d)[ok] - ref[idx[ok]], axis=0)
        r = max(radius / 2, 0.5)
    return d, int(ok.sum())


def test_estimate_shift_matches_one_query_per_pass():
    rng = np.random.default_rng(5)
    for trial in range(60):
        ref = lattice(n=int(rng.integers(4, 30)), a=rng.uniform(2.0, 6.0))
        ref = ref + rng.normal(0, 0.3, ref.shape)
        d_true = rng.normal(0, 2.0, 2)
        keep = rng.random(len(ref)) > rng.uniform(0, 0.3)
        cur = ref[keep] + d_true + rng.normal(0, rng.uniform(0.05, 0.8), (keep.sum(), 2))
        cur = np.vstack([cur, rng.uniform(0, ref.max(), (int(rng.integers(0, 20)), 2))])
        guess = d_true + rng.normal(0, 1.0, 2)  # sometimes far off: the passes must move
        radius = rng.uniform(1.0, 4.0)
        got, n = estimate_shift(ref, cur, guess, radius)
        want, n_want = plain_estimate_shift(ref, cur, guess, radius)
        np.testing.assert_allclose(got, want, atol=1e-9)
        assert n == n_want


def test_drift_estimate_on_the_linkers_tree_is_its_own():
    # The stream linker's drift estimate searches the fast linker's tree, whose points after the
    # previous frame's columns are remembered columns (here crowding in, some right on top of
    # columns): the same shift, pairs and two nearest columns as a tree of the columns alone.
    from scipy.spatial import cKDTree

    from etem.tracker.link import _estimate_shift, _two_nearest

    rng = np.random.default_rng(7)
    for trial in range(40):
        ref = lattice(n=int(rng.integers(3, 20)), a=rng.uniform(2.0, 6.0))
        if trial % 4:
            ref = ref + rng.normal(0, 0.3, ref.shape)
        others = np.vstack([ref[rng.random(len(ref)) < 0.2] + rng.normal(0, 0.5, (1, 2)),
                            ref[rng.random(len(ref)) < 0.1],  # on top of columns
                            rng.uniform(0, ref.max(), (int(rng.integers(0, 30)), 2))])
        tree = cKDTree(np.vstack([ref, others]), 15)
        d_true = rng.normal(0, 1.0, 2)
        cur = ref[rng.random(len(ref)) > 0.2] + d_true + rng.normal(0, 0.3, 2)
        if trial % 4 == 0:  # exactly between two columns: two nearest at one distance
            cur = np.vstack([cur, (ref[:-1] + ref[1:]) / 2 + d_true])
        guess, radius = d_true + rng.normal(0, 0.5, 2), rng.uniform(1.0, 4.0)
        got = _estimate_shift(ref, cur, guess, radius, 4, (tree, len(ref)))
        want = estimate_shift(ref, cur, guess, radius)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1]
        d2, n2, _ = _two_nearest((tree, len(ref)), cur - guess, radius)
        dist, idx = cKDTree(ref).query(cur - guess, k=2, distance_upper_bound=radius)
        np.testing.assert_array_equal(d2, dist)
        apart = d2[:, 0] != d2[:, 1]
        np.testing.assert_array_equal(n2[apart], idx[apart])


def test_linking_with_the_drift_estimates_search_is_linking_without():
    # The fast linker takes the drift estimate's search of its tree and queries again only the
    # columns it leaves in doubt: crowded, blinking, drifting columns link as with a full query.
    rng = np.random.default_rng(11)
    ref = np.vstack([lattice(n=14, a=12.0), lattice(n=14, a=12.0)[::3] + rng.uniform(1.5, 5.5, (1, 2))])
    cfg = LinkConfig(search_range_A=0.5, max_drift_A=0.8, memory=3)
    shared, plain = StreamLinker(cfg, sampling=0.1), StreamLinker(cfg, sampling=0.1)
    plain._sources = lambda: None  # a tree of its own for the estimate, a full query for the linker
    drift, subnets = np.zeros(2), 0
    for f in range(40):
        drift += np.array([0.3, -0.2]) + rng.normal(0, 0.1, 2)
        keep = rng.random(len(ref)) > 0.1
        pos = ref[keep] + drift + rng.normal(0, 0.6, (keep.sum(), 2))
        pos = np.vstack([pos, rng.uniform(0, 200, (int(rng.integers(0, 8)), 2))])
        cols = pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1], "cls": 0, "prob": 1.0})
        a, b = shared.update(f, cols), plain.update(f, cols)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        np.testing.assert_array_equal(shared.drift, plain.drift)
        assert shared.counts == plain.counts
        subnets += shared.counts["subnets"]
    assert subnets > 20


def _particle(rng, a=20.0, radius=5.5):
    """The columns of a round particle on a square lattice (its edge breaks the lattice's symmetry)."""
    g = lattice(16, a)
    centre = g.mean(0)
    return g[np.linalg.norm(g - centre, axis=1) < radius * a] + rng.normal(0, 0.3, (1, 2))


def test_find_jump_picks_the_shift_that_pairs_every_column_not_a_lattice_vector():
    from etem.tracker.link import find_jump

    rng = np.random.default_rng(3)
    ref = _particle(rng)
    jump = np.array([47.3, -61.8])  # about 2.4 and 3.1 lattice spacings
    cur = ref + jump + rng.normal(0, 0.3, ref.shape)
    d, n = find_jump(ref, cur, np.zeros(2), reach=100.0, radius=8.0)
    np.testing.assert_allclose(d, jump, atol=0.3)
    assert n == len(ref)
    # the drift estimate alone, from where the last frame was, lands on a lattice vector
    d0, n0 = estimate_shift(ref, cur, np.zeros(2), radius=8.0)
    assert np.abs(d0 - jump).max() > 5 or n0 < 0.85 * len(ref)


def test_a_jump_of_the_view_keeps_every_columns_track():
    """A particle that jumps by a few lattice spacings between two frames (the stage moved, the
    view was re-centred) keeps its tracks: every column its identity, one jump counted; with the
    jump search off, the drift settles on a lattice vector or fails, and identities are lost."""
    rng = np.random.default_rng(4)
    ref = _particle(rng)

    def run(cfg):
        linker = StreamLinker(cfg, sampling=0.1)
        drift, ids = np.zeros(2), []
        for f in range(8):
            drift += np.array([0.5, 0.3]) + (np.array([47.3, -61.8]) if f == 4 else 0.0)
            pos = ref + drift + rng.normal(0, 0.2, ref.shape)
            ids.append(linker.update(f, pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1], "cls": 0, "prob": 1.0}))
                       ["particle"].to_numpy())
        return linker, ids

    linker, ids = run(LinkConfig(search_range_A=0.5, max_drift_A=1.0, max_jump_A=10.0))
    assert linker.jumps == 1 and all(np.array_equal(i, ids[0]) for i in ids)
    off, ids = run(LinkConfig(search_range_A=0.5, max_drift_A=1.0, max_jump_A=0.0))
    assert off.jumps == 0 and np.mean(ids[-1] == ids[0]) < 0.5


def test_the_tracker_follows_a_movie_whose_view_jumps():
    """Through the pipeline: a toy movie whose view jumps by 3 Å at frame 15 gives the sites and
    events of the same movie without the jump; without the jump search it doubled events."""
    from etem.simulate.toy import make_movie
    from etem.tracker import PipelineConfig, track

    m = make_movie(n_frames=30, shape=(192, 192), seed=2)
    frames = np.asarray(m.frames, np.float32)
    jumped = frames.copy()
    jumped[15:] = np.roll(jumped[15:], (15, -8), axis=(1, 2))  # 15 px = 3 Å, past max_drift_A
    plain = track(frames, sampling=m.sampling, classical=True)
    res = track(jumped, sampling=m.sampling, classical=True)
    assert len(res.sites) == len(plain.sites) and len(res.flips) == len(plain.flips)
    assert res.view_jumps == 1 and plain.view_jumps == 0
    np.testing.assert_allclose(res.frames["drift_y"].iloc[15] - res.frames["drift_y"].iloc[14], 15, atol=1.0)
    off = track(jumped, sampling=m.sampling, classical=True,
                config=PipelineConfig(link=LinkConfig(max_jump_A=0.0)))
    assert len(off.flips) > len(plain.flips) + 10


@pytest.mark.parametrize("radius", [7.0, 9.0])
def test_a_jump_near_a_lattice_vector_is_found_though_most_columns_pair_at_the_alias(radius):
    """A view that jumps by a lattice vector and a few pixels: the drift search, from the
    predicted drift, lands on the alias (the particle moved by the offset alone), where all but
    its edge columns pair (88-91 % of a large particle), above the share that started the jump
    search (85 %), and the jump paired too few more to be taken (10 % more were asked). The drift
    far off its prediction now starts the search, and 5 % more pairs take the jump."""
    rng = np.random.default_rng(5)
    ref = _particle(rng, radius=radius)
    jump = np.array([20.0, -20.0]) + np.array([6.0, 4.0])  # a lattice vector + 7.2 px (< max_drift, 10 px)
    linker = StreamLinker(LinkConfig(search_range_A=0.5, max_drift_A=1.0, max_jump_A=10.0), sampling=0.1)
    drift, ids = np.zeros(2), []
    for f in range(8):
        drift += np.array([0.5, 0.3]) + (jump if f == 4 else 0.0)
        pos = ref + drift + rng.normal(0, 0.2, ref.shape)
        ids.append(linker.update(f, pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1], "cls": 0, "prob": 1.0}))
                   ["particle"].to_numpy())
    alias, n_alias = estimate_shift(ref, ref + jump, np.zeros(2), radius=10.0)
    assert np.abs(alias - jump).max() > 5 and n_alias > 0.85 * len(ref)  # (the trap is there)
    assert linker.jumps == 1 and all(np.array_equal(i, ids[0]) for i in ids)
