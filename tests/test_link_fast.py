"""FastLinker gives trackpy's tracks: property-style comparisons over many random movies.

Every comparison links the same coordinates with plain trackpy (``trackpy.link`` or its
``Linker``) and with :class:`FastLinker`, and asserts that the partitions of (frame, column)
into tracks are identical (labels compared up to renaming). The movies are built so that the
hard cases occur, and each test checks that they did: ambiguous subnetworks solved by
trackpy's solver, columns re-linked through memory, tracks born and lost.
"""
import numpy as np
import pandas as pd
import pytest
import trackpy
from trackpy.linking.utils import SubnetOversizeException

from etem.simulate.toy import make_movie
from etem.tracker import PipelineConfig, track
from etem.tracker.config import config_from_dict
from etem.tracker.errors import ConfigError
from etem.tracker.fastlink import FastLinker
from etem.tracker.link import LinkConfig, StreamLinker

trackpy.quiet()


def lattice_movie(seed, *, n_side=14, n_frames=25):
    """Drift-free lattice (spacing 1) with jitter, hops, blinking, appearing and vanishing columns.

    ``search_range`` is drawn in [0.4, 0.65] and the jitter (per coordinate, about the site)
    in [0.5, 0.7] x ``search_range / 2``, so neighbours often come within reach of each other
    (ambiguous subnetworks, up to dozens of columns a frame).
    """
    rng = np.random.default_rng(seed)
    search_range = rng.uniform(0.4, 0.65)
    jitter = rng.uniform(0.5, 0.7) * search_range / 2
    blink, hop, turnover = rng.uniform(0.02, 0.15), rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.03)
    ij = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij"), -1).reshape(-1, 2)
    occ = rng.random(len(ij)) < 0.85
    steps = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])
    frames = []
    for _ in range(n_frames):
        for s in np.flatnonzero(occ & (rng.random(len(ij)) < hop)):
            n = np.clip(ij[s] + steps[rng.integers(4)], 0, n_side - 1)
            k = n[0] * n_side + n[1]
            if not occ[k]:
                occ[s], occ[k] = False, True
        occ ^= rng.random(len(ij)) < turnover
        seen = np.flatnonzero(occ & (rng.random(len(ij)) >= blink))
        pos = ij[seen] + rng.normal(0, jitter, (len(seen), 2))
        frames.append(pos[rng.permutation(len(pos))])
    return frames, search_range, int(rng.integers(0, 5))


def brownian_movie(seed, *, n=150, n_frames=25, box=12.0):
    """Diffusing particles at random places (no lattice), blinking, appearing and leaving."""
    rng = np.random.default_rng(seed)
    step = rng.uniform(0.05, 0.2)
    search_range = rng.uniform(2.0, 3.0) * step
    pos = rng.uniform(0, box, (n, 2))
    frames = []
    for _ in range(n_frames):
        pos = pos + rng.normal(0, step, pos.shape)
        pos = pos[rng.random(len(pos)) > 0.01]  # leaving for good
        pos = np.vstack([pos, rng.uniform(0, box, (rng.poisson(1.5), 2))])  # arriving
        seen = pos[rng.random(len(pos)) > rng.uniform(0.0, 0.1)]
        frames.append(seen[rng.permutation(len(seen))])
    return frames, search_range, int(rng.integers(0, 4))


def assert_same_tracks(frames, search_range, memory, **kw):
    """trackpy.link and FastLinker agree (or trackpy stops on an oversize subnetwork, and
    FastLinker counts one and goes on); returns counts."""
    try:
        ref = link_trackpy(frames, search_range, memory, **kw)
    except SubnetOversizeException:
        assert link_fast(frames, search_range, memory, **kw)[1]["oversize"] > 0
        return None
    ids, totals = link_fast(frames, search_range, memory, **kw)
    np.testing.assert_array_equal(canonical(ids), canonical(ref))
    return totals


def link_fast(frames, search_range, memory, **kw):
    """Particle ids per frame from FastLinker, plus the summed counters."""
    linker = FastLinker(search_range, memory=memory, **kw)
    ids, totals = [], {"unique": 0, "subnets": 0, "in_subnets": 0, "oversize": 0}
    linker.init_level(frames[0], 0)
    ids.append(linker.particle_ids.copy())
    for t, c in enumerate(frames[1:], 1):
        linker.next_level(c, t)
        ids.append(linker.particle_ids.copy())
        for k in totals:
            totals[k] += linker.counts[k]
    return ids, totals


def link_trackpy(frames, search_range, memory, **kw):
    """Particle ids per frame from ``trackpy.link`` on the frames as one DataFrame."""
    df = pd.concat(
        [pd.DataFrame({"frame": t, "y": c[:, 0], "x": c[:, 1]}) for t, c in enumerate(frames)], ignore_index=True
    )
    out = trackpy.link(df, search_range, memory=memory, **kw).sort_index()
    sizes = np.cumsum([len(c) for c in frames])[:-1]
    return np.split(out["particle"].to_numpy(), sizes)


def link_trackpy_stream(frames, search_range, memory, **kw):
    linker = trackpy.linking.Linker(search_range, memory=memory, **kw)
    linker.init_level(frames[0], 0)
    ids = [np.asarray(linker.particle_ids)]
    for t, c in enumerate(frames[1:], 1):
        linker.next_level(c, t)
        ids.append(np.asarray(linker.particle_ids))
    return ids


def canonical(ids):
    """Labels renamed in order of first appearance: equal arrays <=> equal partitions."""
    return pd.factorize(np.concatenate(ids))[0]


def relinked_after_gap(ids):
    """Number of tracks that skip at least one frame (memory at work)."""
    seen = {}
    n = 0
    for t, frame_ids in enumerate(ids):
        for p in frame_ids.tolist():
            if p in seen and seen[p] < t - 1:
                n += 1
            seen[p] = t
    return n


@pytest.mark.parametrize("seed", range(24))
def test_lattice_movies_link_exactly_like_trackpy(seed):
    frames, search_range, memory = lattice_movie(seed)
    totals = assert_same_tracks(frames, search_range, memory)
    if totals is not None:
        assert totals["subnets"] > 0 and totals["unique"] > 0  # both paths did real work


@pytest.mark.parametrize("seed", range(16))
def test_brownian_movies_link_exactly_like_trackpy(seed):
    frames, search_range, memory = brownian_movie(seed)
    totals = assert_same_tracks(frames, search_range, memory)
    if totals is not None:
        assert totals["subnets"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 400))
def test_many_more_movies_link_exactly_like_trackpy(seed):
    frames, search_range, memory = (lattice_movie if seed % 2 else brownian_movie)(seed)
    assert_same_tracks(frames, search_range, memory)


def test_the_movies_exercise_memory_births_and_large_subnetworks():
    """Guard against the generators drifting into easy cases."""
    relinked = births = biggest = 0
    for seed in range(6):
        frames, search_range, memory = lattice_movie(seed)
        ids, _ = link_fast(frames, search_range, memory)
        if memory:
            relinked += relinked_after_gap(ids)
        births += len(np.unique(np.concatenate(ids))) - len(ids[0])
        linker = FastLinker(search_range, memory=memory)
        linker.init_level(frames[0])
        for c in frames[1:]:
            linker.next_level(c)
            biggest = max(biggest, linker.counts["in_subnets"])
    assert relinked > 100 and births > 100 and biggest > 10


@pytest.mark.parametrize("memory", [0, 1, 3])
def test_blinking_columns_keep_their_track_for_memory_frames(memory):
    """A column missing for g frames keeps its id iff g <= memory, as in trackpy."""
    rng = np.random.default_rng(memory)
    base = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij"), -1).reshape(-1, 2)
    gaps = rng.integers(0, 5, len(base))  # column i vanishes for gaps[i] frames after frame 2
    frames = []
    for t in range(12):
        gone = (t >= 3) & (t < 3 + gaps)
        frames.append(base[~gone] + rng.normal(0, 0.05, (int((~gone).sum()), 2)))
    ids, _ = link_fast(frames, 0.3, memory)
    np.testing.assert_array_equal(canonical(ids), canonical(link_trackpy(frames, 0.3, memory)))
    first, last = dict(zip(range(len(base)), ids[0])), ids[-1]
    kept = np.array([first[i] == p for i, p in enumerate(last)])
    np.testing.assert_array_equal(kept, gaps <= memory)


def test_a_remembered_column_makes_a_pair_ambiguous():
    """Unique in the previous frame is not enough: a remembered column within reach counts."""
    frames = [
        np.array([[0.0, 0.0], [0.0, 1.0]]),
        np.array([[0.0, 0.0]]),  # the column at x=1 blinks: remembered
        np.array([[0.0, 0.62]]),  # now closer to the remembered one (0.38) than to x=0 (0.62)
    ]
    ids, totals = link_fast(frames, 0.7, memory=2)
    assert totals["subnets"] == 1 and totals["unique"] == 1
    np.testing.assert_array_equal(canonical(ids), canonical(link_trackpy(frames, 0.7, 2)))
    assert ids[2][0] == ids[0][1]  # the remembered column won
    ids0, _ = link_fast(frames, 0.7, memory=0)
    assert ids0[2][0] == ids0[0][0]  # without memory, it is the only candidate


@pytest.mark.parametrize("strategy", ["recursive", "nonrecursive", "numba", "drop"])
def test_every_trackpy_subnet_strategy_gives_trackpys_result(strategy):
    frames, search_range, memory = lattice_movie(7, n_frames=12)
    assert assert_same_tracks(frames, search_range, memory, link_strategy=strategy)["subnets"] > 0


def test_streaming_linker_parity_including_empty_frames():
    frames, search_range, memory = brownian_movie(3, n_frames=12)
    empty = np.empty((0, 2))
    frames = [empty] + frames[:4] + [empty, empty] + frames[4:] + [empty]
    ids, _ = link_fast(frames, search_range, max(memory, 2))
    ref = link_trackpy_stream(frames, search_range, max(memory, 2))
    np.testing.assert_array_equal(canonical(ids), canonical(ref))


def clump_movie(seed, n_frames=4):
    """A 9x9 lattice (spacing 3) with a clump of 40 columns jittering within a 1x1 square."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(9.0), np.arange(9.0), indexing="ij"), -1).reshape(-1, 2) * 3
    clump = rng.uniform(13, 14, (40, 2))  # between lattice points, out of their reach
    return [np.vstack([grid + rng.normal(0, 0.05, grid.shape), clump + rng.normal(0, 0.05, clump.shape)])
            for _ in range(n_frames)]


def test_oversize_subnetwork_starts_new_tracks_where_trackpy_stops():
    """Without adaptive search trackpy stops on a clump; FastLinker counts it and goes on: the
    clump's columns start new tracks, every other column keeps its track."""
    frames = clump_movie(0)
    with pytest.raises(SubnetOversizeException):
        link_trackpy(frames, 0.5, 0)
    ids, totals = link_fast(frames, 0.5, 0)
    assert totals["oversize"] == len(frames) - 1
    lattice = [f[:81] for f in ids]
    assert all(np.array_equal(lattice[0], f) for f in lattice)  # the lattice is linked throughout
    clump = [set(f[81:].tolist()) for f in ids]
    assert all(not (a & b) for a, b in zip(clump, clump[1:]))  # the clump is new every frame


@pytest.mark.parametrize("seed", range(4))
def test_adaptive_search_splits_clumps_as_trackpy_does(seed):
    """With adaptive_stop both split the clump by shrinking the search range: the same tracks."""
    frames = clump_movie(seed)
    ref = link_trackpy(frames, 0.5, 0, adaptive_stop=0.01, adaptive_step=0.9)
    ids, totals = link_fast(frames, 0.5, 0, adaptive_stop=0.01, adaptive_step=0.9)
    np.testing.assert_array_equal(canonical(ids), canonical(ref))
    assert totals["oversize"] == 0 and totals["subnets"] > 0


def test_link_config_adaptive_search_options():
    assert LinkConfig().adaptive_stop_A == 0.1
    with pytest.raises(ConfigError, match="adaptive_stop_A"):
        LinkConfig(search_range_A=1.0, adaptive_stop_A=1.0)
    with pytest.raises(ConfigError, match="adaptive_step"):
        LinkConfig(adaptive_step=1.0)
    linker = StreamLinker(LinkConfig(search_range_A=1.0, adaptive_stop_A=None), sampling=0.2)
    frames = clump_movie(1)
    for t, f in enumerate(frames):
        linker.update(t, pd.DataFrame({"y": f[:, 0] * 5, "x": f[:, 1] * 5}))
    assert linker.counts["oversize"] == 1  # without adaptive search: counted, not raised


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="search_range"):
        FastLinker(0.0)
    with pytest.raises(ValueError, match="memory"):
        FastLinker(1.0, memory=-1)
    with pytest.raises(ValueError, match="link_strategy must be one of"):
        FastLinker(1.0, link_strategy="greedy")
    linker = FastLinker(1.0)
    with pytest.raises(RuntimeError, match="init_level"):
        linker.next_level(np.zeros((2, 2)))
    linker.init_level(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        linker.next_level(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        linker.next_level(np.array([[0.0, np.nan]]))


def test_link_config_validates_method_and_strategy():
    assert LinkConfig().method == "fast"
    with pytest.raises(ConfigError, match="'fast', 'trackpy'"):
        LinkConfig(method="tiled")
    with pytest.raises(ConfigError, match="link_strategy"):
        LinkConfig(link_strategy="greedy")
    with pytest.raises(ConfigError, match="memory"):
        LinkConfig(memory=-2)
    with pytest.raises(ConfigError, match="method"):
        config_from_dict({"link": {"method": "gpu"}})
    assert config_from_dict({"link": {"method": "trackpy"}}).link.method == "trackpy"


def test_stream_linker_methods_agree_with_drift():
    frames, _, _ = lattice_movie(5, n_side=20, n_frames=20)
    drift = np.cumsum(np.tile([0.13, -0.07], (len(frames), 1)), axis=0)
    out = {}
    for method in ("trackpy", "fast"):
        sl = StreamLinker(LinkConfig(search_range_A=0.4, max_drift_A=0.5, memory=2, method=method), sampling=1.0)
        parts = [sl.update(t, pd.DataFrame({"y": c[:, 0] + d[0], "x": c[:, 1] + d[1], "cls": 0}))
                 for t, (c, d) in enumerate(zip(frames, drift))]
        out[method] = parts
    for a, b in zip(out["trackpy"], out["fast"]):
        pd.testing.assert_frame_equal(a.drop(columns="particle"), b.drop(columns="particle"))
    np.testing.assert_array_equal(
        canonical([p["particle"].to_numpy() for p in out["fast"]]),
        canonical([p["particle"].to_numpy() for p in out["trackpy"]]),
    )


def test_pipeline_fast_linking_gives_trackpys_particles():
    movie = make_movie(n_frames=12, shape=(128, 128), seed=4, hop_rate=0.3, jitter_A=0.3)
    results, subnets = {}, []

    def count(res, pipe):
        subnets.append(pipe.linker.counts["subnets"])

    for method in ("trackpy", "fast"):
        cfg = PipelineConfig(link=LinkConfig(search_range_A=1.6, memory=2, method=method))
        results[method] = track(
            movie.frames, sampling=movie.sampling, classical=True, config=cfg,
            on_frame=count if method == "fast" else None,
        ).columns
    a, b = results["trackpy"], results["fast"]
    assert len(a) > 100
    pd.testing.assert_frame_equal(a.drop(columns=["particle"]), b.drop(columns=["particle"]))
    np.testing.assert_array_equal(pd.factorize(a["particle"])[0], pd.factorize(b["particle"])[0])
    assert sum(subnets) > 0
