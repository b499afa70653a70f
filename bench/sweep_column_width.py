"""The classical locator on frames of unknown pixel size: the column width measured on the image.

Where a frame's pixel size is unknown, the classical locator cannot turn its width in Å
(0.45 Å) into pixels; it measures the width on the first frame instead
(:func:`etem.tracker.classical.column_width_px`). This script simulates the first frame of
in-situ movies at several pixel sizes and scores the columns found with three widths: the
2 px taken before the width was measured, the width the known pixel size gives, and the
measured one (F1, matched within 1 Å). It also times the measurement.

    python bench/sweep_column_width.py                       # about 20 s on 2 CPU cores
    python bench/sweep_column_width.py --samplings 0.05,0.1 --movies toy,au-stem
"""
from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch

from _machine import cpu_name

from etem.tracker.classical import DEFAULT_SIGMA_PX, column_width_px, find_columns_classical
from etem.tracker.evaluate import score_columns

MOVIES = {  # name: (kind, material, imaging, dose per frame [e/Å²])
    "au-hrtem": ("insitu", "au", "hrtem", 3000.0),
    "au-stem": ("insitu", "au", "stem", 1000.0),
    "mos2-stem": ("insitu", "mos2", "stem", 1000.0),
    "toy": ("toy", None, None, 300.0),
}
SIGMA_A = 0.45  # the locator's column width where the pixel size is known [Å]


def first_frame(name: str, sampling: float, seed: int):
    """The first frame of a movie whose field is 51 Å wide, and its true columns."""
    kind, material, imaging, dose = MOVIES[name]
    size = int(round(256 * 0.2 / sampling / 32)) * 32
    common = {"n_frames": 1, "shape": (size, size), "sampling": sampling, "dose_per_frame": dose, "seed": seed}
    if kind == "toy":
        from etem.simulate.toy import make_movie

        movie = make_movie(**common)
    elif material == "mos2":
        from etem.simulate.insitu_mos2 import mos2_movie

        movie = mos2_movie(**common, mode=imaging)
    else:
        from etem.simulate.insitu import insitu_movie

        movie = insitu_movie(**common, mode=imaging)
    image = np.asarray(movie.frames[0])
    truth = movie.truth.positions[movie.truth.positions.frame == 0]
    return image, truth


def f1(image, truth, sigma_px: float, sampling: float) -> float:
    found = find_columns_classical(image, column_sigma_px=sigma_px)
    found["frame"] = 0
    return score_columns(found, truth, radius_px=1.0 / sampling)["f1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", default=",".join(MOVIES), help=f"comma-separated: {', '.join(MOVIES)}")
    ap.add_argument("--samplings", default="0.05,0.1,0.2", help="pixel sizes [Å/px], comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"# {datetime.date.today()}, {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("| movie | Å/px | px | known width px | measured px | measure ms | F1 at 2 px | known | measured |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.movies.split(","):
        for sampling in (float(s) for s in args.samplings.split(",")):
            image, truth = first_frame(name, sampling, args.seed)
            t0 = time.perf_counter()
            width = column_width_px(image)
            ms = 1e3 * (time.perf_counter() - t0)
            known = SIGMA_A / sampling
            scores = [f1(image, truth, s, sampling) for s in (DEFAULT_SIGMA_PX, known, width or DEFAULT_SIGMA_PX)]
            shown = "none" if width is None else f"{width:.2f}"
            print(f"| {name} | {sampling:g} | {image.shape[-1]} | {known:.2f} | {shown} | {ms:.0f} | "
                  + " | ".join(f"{s:.3f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
