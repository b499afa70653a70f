"""Motion above localisation noise on simulated movies whose truth says which atoms move: a
lattice of columns that stay put beside adatoms that wander (each tracked atom's D against
the walk it was given), and an ADF MoS2 flake whose columns stay on their sites while its
atoms hop by swapping classes (no D for any track)."""
import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from etem.simulate.toy import _render_columns
from etem.tracker import track
from etem.tracker.report import figure_lines, run_statistics
from etem.tracker.run import open_run

SAMPLING = 0.2  # Å/px


def _walkers_beside_a_lattice(n_frames=60, shape=(192, 256), d_true=0.02, dose=2000.0, seed=0):
    """A movie of a square lattice of still columns (left half) and of adatoms doing random
    walks with ``D = d_true`` [Å²/frame] (right half, 6 Å apart), Gaussian columns of 0.45 Å
    with Poisson noise; returns the frames and the truth: ``frame, y, x`` [px] and ``atom``,
    ``moves`` per column and frame."""
    rng = np.random.default_rng(seed)
    h, w = shape
    step = 3.2 / SAMPLING
    ly, lx = np.meshgrid(np.arange(12, h - 12, step), np.arange(12, w / 2 - 6, step), indexing="ij")
    still = np.stack([ly.ravel(), lx.ravel()], 1)
    wy, wx = np.meshgrid(np.arange(20, h - 20, 6 / SAMPLING), np.arange(w / 2 + 20, w - 20, 6 / SAMPLING),
                         indexing="ij")
    start = np.stack([wy.ravel(), wx.ravel()], 1)
    walk = start + np.cumsum(rng.normal(0, np.sqrt(2 * d_true) / SAMPLING, (n_frames, len(start), 2)), axis=0)
    walk -= walk[0] - start  # (each walk starts at its place)
    rows = []
    for f in range(n_frames):
        yx = np.concatenate([still, walk[f]])
        rows.append(pd.DataFrame({"frame": f, "y": yx[:, 0], "x": yx[:, 1], "atom": np.arange(len(yx)),
                                  "moves": np.arange(len(yx)) >= len(still)}))
    truth = pd.concat(rows, ignore_index=True)
    img = _render_columns(truth["y"].to_numpy(), truth["x"].to_numpy(), np.ones(len(truth)),
                          truth["frame"].to_numpy(), (n_frames, h, w), 0.45 / SAMPLING)
    frames = rng.poisson(dose * SAMPLING**2 * (img + 0.2)).astype(np.float32)
    return frames, truth


def _atom_of_each_track(columns: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """The true atom most of each track's detections lie on (within 1 Å), by particle."""
    hits = []
    for f, g in columns[columns["particle"] >= 0].groupby("frame"):
        t = truth[truth["frame"] == f]
        d, i = cKDTree(t[["y", "x"]].to_numpy()).query(g[["y", "x"]].to_numpy())
        hits.append(pd.DataFrame({"particle": g["particle"].to_numpy(),
                                  "atom": np.where(d < 1.0 / SAMPLING, t["atom"].to_numpy()[i], -1)}))
    return pd.concat(hits).groupby("particle")["atom"].agg(lambda a: a.mode().iloc[0])


def test_wandering_atoms_get_their_d_and_still_columns_a_bound(tmp_path):
    d_true = 0.02  # Å² per frame
    frames, truth = _walkers_beside_a_lattice(d_true=d_true)
    track(frames, sampling=SAMPLING, classical=True, run_path=tmp_path / "run.h5")
    with open_run(tmp_path / "run.h5") as run:
        tables, summ = run_statistics(run)
        atom = _atom_of_each_track(run.columns, truth)
    tracks = tables["tracks"].set_index("particle")
    moves = truth.groupby("atom")["moves"].first()
    tracks["moves"] = atom.reindex(tracks.index).map(moves).fillna(False).astype(bool)
    walkers, still = tracks[tracks["moves"]], tracks[~tracks["moves"]]
    assert len(walkers) >= 15 and len(still) >= 60
    # every still column and nearly every walker told apart; the walkers' D, that of their walks
    assert not still["mobile"].any() and walkers["mobile"].mean() >= 0.9
    assert still["D"].isna().all() and (still["D_upper"] > 0).all()
    assert (still["sigma_from"] == "site").all()
    assert walkers["D"].median() == pytest.approx(d_true, rel=0.3)
    assert summ["median_D_mobile"] == pytest.approx(d_true, rel=0.3) and summ["D_units"] == "Å²/frame"
    # the still columns: their noise (that of the columns' positions about their true places) and a bound
    assert summ["tracks_still"] == len(still) and 0 < summ["localisation_sigma"] < 0.1
    assert summ["D_upper_still"] < d_true / 2
    text = "\n".join(figure_lines(summ))
    assert f"{int(tracks['mobile'].sum())} move above localisation noise" in text
    assert f"the other {len(still)}: no motion above localisation" in text


def test_mos2_columns_that_stay_on_their_sites_get_no_d(tmp_path):
    """The MoS2 flake in ADF: S2 columns lose atoms and vacancies hop, no column moves; no
    track is mobile and the report gives no D, but the noise and a bound."""
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker.config import config_from_dict
    from etem.tracker.pipeline import PipelineConfig

    m = mos2_movie(n_frames=20, shape=(160, 160), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                   flake_radius_A=6.0, sputter_rate=0.05, refill_rate=0.1, seed=3)
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem"}},
                           PipelineConfig(default_sampling=0.1))
    track(m.frames, sampling=0.1, config=cfg, run_path=tmp_path / "run.h5")
    with open_run(tmp_path / "run.h5") as run:
        tables, summ = run_statistics(run)
        assert len(run.stats["class_changes"]) > 0  # (the atoms did hop: by classes)
    tracks = tables["tracks"]
    assert len(tracks) >= 20
    assert not tracks["mobile"].any() and tracks["D"].isna().all()
    assert summ["tracks_mobile"] == 0 and summ["median_D_mobile"] is None
    text = "\n".join(figure_lines(summ))
    assert "all: no motion above localisation\n    noise (σ = " in text and " Å)" in text
    assert "D <" in text and "    D = " not in text
    # etem export says the same, in its printed figures, summary.json and tracks.csv
    import json

    from etem.tracker.export import export_run

    said: list[str] = []
    export_run(tmp_path / "run.h5", tmp_path / "out", formats="csv,report", progress=False, say=said.append)
    printed = "\n".join(said)
    sigma = f"{summ['localisation_sigma']:.2g}"
    assert said[0].startswith("run.h5: 20 frames") and f"noise (σ = {sigma} Å)" in printed
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["localisation_sigma"] == summ["localisation_sigma"]
    table = pd.read_csv(tmp_path / "out" / "tracks.csv")
    assert table["D"].isna().all() and (table["D_upper"] > 0).all()
    assert f"{table['sigma_A'].median():.2g}" == sigma
