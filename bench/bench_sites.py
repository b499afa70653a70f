"""Sites-stage benchmark: one :meth:`SiteMap.update` per frame, and the lattice classes.

Site map: a square lattice of columns (drift-corrected positions, the site map's input), each
frame 10 % of them missed and 2 % as many false columns midway between two neighbours (which
make sites of their own: shadows, :mod:`etem.tracker.site_shadows`), with 1 or 3 classes, 5 %
of the classes said wrongly (3 classes are named Mo, S2, S, so that the class changes this
noise makes are looked at as hops too). The table gives the median ms per update over the last
``--frames`` - 20 frames, once the "hmm" occupancy is deciding frames (its look-ahead is 10),
with shadow sites (the default) and without (``min_separation_A = 0``), and with each frame's
image given (a noisy image with a spot at each column: the occupancy then weighs the image's
mean within 0.5 Å of every site, :mod:`etem.tracker.site_evidence`; the default in the
pipeline) or not.

Busy classes: the same lattice, 1 % of the sites changing class (S2 <-> S) each frame and 20 %
of the classes said at random, with the classes unnamed and named Mo, S2, S (then opposite
class changes beside each other are paired into hops, among the hundreds awaiting a partner).

Lattice classes (:func:`etem.tracker.lattice_classes.lattice_classes`): a projected MoS2 [001]
flake of the given number of columns, the network's Mo and S2 swapped in 30 % of them; the
table gives the median ms per frame and the fraction of columns put on the right sublattice.

The host stage runs on the CPU whatever the engine's device, so these figures hold on a GPU
machine too. Speed is measured here, never in a timed test.

    python bench/bench_sites.py
    python bench/bench_sites.py --columns 1000,4000,16000 --lattice 186,1700,4600,18000
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import numpy as np
import pandas as pd

from _machine import cpu_name


def site_map_ms(n_columns: int, n_classes: int, n_frames: int, seed: int = 0, *,
                separation: float | None = None, images: bool = False) -> tuple[float, int, int]:
    from etem.tracker.sites import SiteMap, SitesConfig

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_columns)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n_columns] * 20.0
    cls = rng.integers(0, n_classes, len(grid))
    sm = SiteMap(SitesConfig(min_separation_A=separation), sampling=0.1)
    if n_classes == 3:  # named as a MoS2 model's: class changes S2 <-> S beside each other are hops
        sm.class_names = ["Mo", "S2", "S"]
    side_px = int(grid.max()) + 21
    spot = np.exp(-(np.arange(-6, 7)[:, None] ** 2 + np.arange(-6, 7)[None] ** 2) / 18.0)
    times = []
    for f in range(n_frames):
        keep = rng.random(len(grid)) < 0.9
        false = grid[rng.choice(len(grid), len(grid) // 50, replace=False)] + [10.0, 0.0]
        yx = np.vstack([grid[keep], false]) + rng.normal(0, 0.5, (int(keep.sum()) + len(false), 2))
        said = np.r_[cls[keep], rng.integers(0, n_classes, len(false))]
        wrong = rng.random(len(said)) < 0.05
        said = np.where(wrong, (said + 1) % n_classes, said)
        image = None
        if images:  # (made outside the timing: the camera's work)
            image = rng.normal(100.0, 10.0, (side_px, side_px)).astype(np.float32)
            for y, x in np.rint(grid[keep]).astype(int) + 6:
                image[y - 6:y + 7, x - 6:x + 7] += 20 * spot
        t0 = time.perf_counter()
        sm.update(f, yx, said, image=image, offset=(6.0, 6.0) if images else None)
        times.append(time.perf_counter() - t0)
    shadows = sm._shadows()
    return 1e3 * statistics.median(times[20:]), sm.n_sites, 0 if shadows is None else int(shadows.sum())


def busy_classes_ms(n_columns: int, n_frames: int, named: bool, seed: int = 0) -> tuple[float, int, int, int]:
    """A busy flake: 1 % of the sites change class (S2 <-> S) each frame, 20 % of the classes
    said at random; ``named``: the classes are Mo, S2, S, so that the class changes are paired
    into hops (:mod:`etem.tracker.site_classes`). Median ms per update over the last
    ``n_frames`` - 20 frames, class changes found, changes awaiting a partner at the end, hops."""
    from etem.tracker.sites import SiteMap, SitesConfig

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_columns)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n_columns] * 20.0
    cls = rng.integers(0, 3, len(grid))
    sm = SiteMap(SitesConfig(), sampling=0.1)
    sm.class_names = ["Mo", "S2", "S"] if named else None
    times = []
    for f in range(n_frames):
        keep = rng.random(len(grid)) < 0.9
        cls = np.where((rng.random(len(grid)) < 0.01) & (cls > 0), 3 - cls, cls)
        said = cls[keep]
        said = np.where(rng.random(len(said)) < 0.2, rng.integers(0, 3, len(said)), said)
        yx = grid[keep] + rng.normal(0, 0.5, (int(keep.sum()), 2))
        t0 = time.perf_counter()
        sm.update(f, yx, said)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[20:]), len(sm.class_changes), len(sm._cc_open), sm.n_site_hops


def mos2_flake(n_columns: int, rng: np.random.Generator, a: float = 3.16, sampling: float = 0.1) -> pd.DataFrame:
    """A round MoS2 [001] flake of about ``n_columns`` columns: ``y, x`` [px], ``true`` (0 Mo, 1 S2)
    and ``cls`` (the network's: Mo and S2 swapped in 30 %)."""
    radius = np.sqrt(n_columns / (4 / (np.sqrt(3) * a * a)) / np.pi)  # two columns per cell of sqrt(3)/2 a^2
    n = int(radius / a) + 3
    i, j = np.meshgrid(np.arange(-2 * n, 2 * n), np.arange(-2 * n, 2 * n), indexing="ij")
    base = np.stack([i.ravel() * a + j.ravel() * a / 2, j.ravel() * a * np.sqrt(3) / 2], 1)
    pts = np.vstack([base, base + [a / 2, a / (2 * np.sqrt(3))]])
    true = np.r_[np.zeros(len(base), int), np.ones(len(base), int)]
    inside = np.hypot(pts[:, 0], pts[:, 1]) < radius
    pts, true = pts[inside] / sampling + 2 * radius / sampling, true[inside]
    said = np.where(rng.random(len(true)) < 0.3, 1 - true, true)
    return pd.DataFrame({"y": pts[:, 1], "x": pts[:, 0], "true": true, "cls": said})


def lattice_ms(n_columns: int, repeat: int, seed: int = 0) -> tuple[float, int, float]:
    from etem.train.bundle import bundled_models
    from etem.tracker.lattice_classes import lattice_classes, lattice_species

    species = lattice_species(json.loads(bundled_models()["mos2-unet"].with_suffix(".json").read_text()))
    t = mos2_flake(n_columns, np.random.default_rng(seed))
    out = lattice_classes(t, species)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        lattice_classes(t, species)
        times.append(time.perf_counter() - t0)
    right = float(np.mean((out == 0) == (t["true"].to_numpy() == 0)))
    return 1e3 * statistics.median(times), len(t), right


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--columns", default="1000,4000", help="columns per frame of the site-map rows")
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--lattice", default="186,1700,4600", help="columns per frame of the lattice-class rows")
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    print(f"# bench_sites, {datetime.date.today()}, {cpu_name()}")
    print("\n| columns | classes | sites | shadows | site map, ms per frame | without shadows | with images |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(v) for v in args.columns.split(",")):
        for k in (1, 3):
            ms, sites, shadows = site_map_ms(n, k, args.frames)
            off, _, _ = site_map_ms(n, k, args.frames, separation=0.0)
            img, _, _ = site_map_ms(n, k, args.frames, images=True)
            print(f"| {n} | {k} | {sites} | {shadows} | {ms:.2f} | {off:.2f} | {img:.2f} |")
    print("\n| columns | busy classes: class changes | awaiting a partner | hops | ms per frame, unnamed | named |")
    print("|---|---|---|---|---|---|")
    for n in (int(v) for v in args.columns.split(",")):
        plain, _, _, _ = busy_classes_ms(n, args.frames, named=False)
        ms, changes, waiting, hops = busy_classes_ms(n, args.frames, named=True)
        print(f"| {n} | {changes} | {waiting} | {hops} | {plain:.2f} | {ms:.2f} |")
    print("\n| columns | lattice classes, ms per frame | on the right sublattice |")
    print("|---|---|---|")
    for n in (int(v) for v in args.lattice.split(",")):
        ms, got, right = lattice_ms(n, args.repeat)
        print(f"| {got} | {ms:.2f} | {right:.3f} |")


if __name__ == "__main__":
    main()
