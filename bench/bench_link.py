"""Linking benchmark: trackpy's ``Linker`` against :class:`etem.tracker.fastlink.FastLinker`.

An in-situ-like movie of drift-corrected column positions (the linker's input): a square
lattice with vacancies, positions jittered about their sites, columns missed for a frame
(blinking), hopping to a neighbouring vacancy, and appearing at / vanishing from sites. Both
linkers take the same coordinates; the table gives ms per frame and frames/s of the linking
call alone (``next_level``) and of the whole ``StreamLinker.update`` (drift estimation and the
DataFrame too), the share of columns linked as unique pairs, the ambiguous subnetworks per
frame, and whether the two partitions into tracks are identical (they must be).
Times are wall clock and CPU time of this (single-threaded) process; frames/s is taken from
the CPU time, what one core would sustain if it were not shared. Each row is the best of
``--repeat`` runs. Speed is measured here, never in a timed test.

    python bench/bench_link.py                          # 250, 1000, 4000 columns
    python bench/bench_link.py --columns 1000 --frames 300 --jitter 0.3 --spacing 2.0
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np
import pandas as pd

from _machine import cpu_name


def insitu_movie(
    n_columns: int,
    n_frames: int,
    *,
    spacing: float = 2.5,
    jitter: float = 0.1,
    blink: float = 0.02,
    hop: float = 0.005,
    turnover: float = 0.002,
    vacancy: float = 0.1,
    seed: int = 0,
) -> list[np.ndarray]:
    """Per-frame (N, 2) positions [Å] of columns on a square lattice with vacancies.

    Per frame and column: ``jitter`` [Å] Gaussian scatter about the site, probability
    ``blink`` of being missed, ``hop`` of moving to a vacant neighbouring site, ``turnover``
    of vanishing; vacant sites fill at the rate that keeps the fraction ``vacancy`` empty.
    Rows are shuffled per frame.
    """
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_columns / (1 - vacancy))))
    ij = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    sites = ij * spacing
    occ = rng.random(len(sites)) < n_columns / len(sites)
    steps = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])
    frames = []
    for _ in range(n_frames):
        for s in np.flatnonzero(occ & (rng.random(len(sites)) < hop)):
            n = ij[s] + steps[rng.integers(4)]
            if (n >= 0).all() and (n < side).all() and not occ[n[0] * side + n[1]]:
                occ[s], occ[n[0] * side + n[1]] = False, True
        u = rng.random(len(sites))
        occ = np.where(occ, u >= turnover, u < turnover * (1 - vacancy) / vacancy)
        seen = np.flatnonzero(occ & (rng.random(len(sites)) >= blink))
        pos = sites[seen] + rng.normal(0, jitter, (len(seen), 2))
        frames.append(pos[rng.permutation(len(pos))])
    return frames


def partition(ids: list[np.ndarray]) -> np.ndarray:
    """Canonical labels (first appearance order): equal arrays <=> equal partitions."""
    return pd.factorize(np.concatenate(ids))[0]


def run_linker(kind: str, frames, search_range: float, memory: int):
    import trackpy

    from etem.tracker.fastlink import FastLinker

    if kind == "trackpy":
        linker = trackpy.linking.Linker(search_range, memory=memory)
    else:
        linker = FastLinker(search_range, memory=memory)
    ids, counts = [], np.zeros(3)
    linker.init_level(frames[0], 0)
    ids.append(np.asarray(linker.particle_ids))
    t0, c0 = time.perf_counter(), time.process_time()
    for t, c in enumerate(frames[1:], 1):
        linker.next_level(c, t)
        ids.append(np.asarray(linker.particle_ids))
        if kind == "fast":
            counts += [linker.counts["unique"], linker.counts["subnets"], len(c)]
    n = len(frames) - 1
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, ids, counts


def run_stream(method: str, frames, search_range: float, memory: int) -> tuple[float, float, list]:
    from etem.tracker.link import LinkConfig, StreamLinker

    drift = np.cumsum(np.full((len(frames), 2), [0.3, -0.2]), axis=0)  # Å per frame
    cfg = LinkConfig(search_range_A=search_range, memory=memory, method=method)
    sl = StreamLinker(cfg, sampling=1.0)
    dfs = [
        pd.DataFrame({"y": c[:, 0] + d[0], "x": c[:, 1] + d[1], "cls": 0, "prob": 1.0}) for c, d in zip(frames, drift)
    ]
    ids = [sl.update(0, dfs[0])["particle"].to_numpy()]
    t0, c0 = time.perf_counter(), time.process_time()
    for f, df in enumerate(dfs[1:], 1):
        ids.append(sl.update(f, df)["particle"].to_numpy())
    n = len(frames) - 1
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, ids


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--columns", default="250,1000,4000", help="columns per frame, comma separated")
    ap.add_argument("--frames", type=int, default=0, help="frames per run (default: ~200k columns, 40-400 frames)")
    ap.add_argument("--search-range", type=float, default=1.0, help="[Å]")
    ap.add_argument("--memory", type=int, default=3)
    ap.add_argument("--spacing", type=float, default=2.5, help="lattice spacing [Å]")
    ap.add_argument("--jitter", type=float, default=0.1, help="scatter about the site [Å]")
    ap.add_argument("--blink", type=float, default=0.02)
    ap.add_argument("--hop", type=float, default=0.005)
    ap.add_argument("--turnover", type=float, default=0.002)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row; the best is kept")
    args = ap.parse_args(argv)
    import trackpy

    trackpy.quiet()
    cpu = cpu_name()
    print(f"# {datetime.date.today()}  {cpu}, {os.cpu_count()} CPUs  trackpy {trackpy.__version__}")
    print(
        f"# search_range {args.search_range} Å, memory {args.memory}, spacing {args.spacing} Å, jitter "
        f"{args.jitter} Å, per frame: blink {args.blink}, hop {args.hop}, turnover {args.turnover}"
    )
    print(
        "| columns | frames | linker | link ms/frame | link CPU ms/frame | link frames/s (CPU) | update ms/frame "
        "| update CPU ms/frame | update frames/s (CPU) | unique pairs | subnets/frame | identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.columns.split(",")]:
        n_frames = args.frames or int(np.clip(200_000 // n, 40, 400))
        frames = insitu_movie(
            n, n_frames, spacing=args.spacing, jitter=args.jitter, blink=args.blink, hop=args.hop,
            turnover=args.turnover, seed=n,
        )
        run_linker("fast", frames[:3], args.search_range, args.memory)  # numba compile, imports
        res = {}
        for kind in ("trackpy", "fast"):  # best of --repeat runs by CPU time
            runs = [run_linker(kind, frames, args.search_range, args.memory) for _ in range(args.repeat)]
            streams = [run_stream(kind, frames, args.search_range, args.memory) for _ in range(args.repeat)]
            res[kind] = (min(runs, key=lambda r: r[1]), min(streams, key=lambda r: r[1]))
        ref = partition(res["trackpy"][0][2])
        ref_upd = partition(res["trackpy"][1][2])
        for kind in ("trackpy", "fast"):
            (dt, ct, ids, _), (du, cu, uids) = res[kind]
            same = np.array_equal(partition(ids), ref) and np.array_equal(partition(uids), ref_upd)
            cnt = res["fast"][0][3]
            uniq = f"{100 * cnt[0] / max(cnt[2], 1):.1f} %" if kind == "fast" else ""
            sub = f"{cnt[1] / (len(frames) - 1):.1f}" if kind == "fast" else ""
            print(
                f"| {np.mean([len(f) for f in frames]):.0f} | {len(frames)} | {kind} | {dt * 1e3:.2f} | {ct * 1e3:.2f} "
                f"| {1 / ct:.0f} | {du * 1e3:.2f} | {cu * 1e3:.2f} | {1 / cu:.0f} | {uniq} | {sub} "
                f"| {'yes' if same else 'NO'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
