"""Measure where a locator stops working and the trust ranges that follow (Wei et al.'s cut-offs).

    python bench/sweep_trust.py                      # classical locator, toy images, bright and dark columns
    python bench/sweep_trust.py --waves W.h5         # ... and on exit-wave images of the Au particles in W.h5
    python bench/sweep_trust.py --waves W.h5 --write # store the ranges as the classical locator's packaged ones
    python bench/sweep_trust.py --model NAME         # a model bundle on toy images (its card's come from
                                                     #   etem evaluate MODEL WAVES --sweep)

Prints, per condition, the measured SNR, detected dose, resolution and mean column probability
with ID-recall, ID-precision and position RMS, then the ranges (etem.train.sweep.trust_ranges).

With ``--waves`` the classical locator is also swept on exit-wave images (etem.train.sweep.wave_sweep,
one fixed microscope per kind of image, dose, pixel size, blur and contrast in turn): bright
columns in negative-Cs HRTEM and in HAADF-STEM, dark columns in positive-Cs HRTEM. It cannot
tell which kind of image a frame is, so the ranges stored per contrast are the strictest of
all it was measured on (etem.train.sweep.strictest); those of each kind are stored too
(``"bright:stem"``), for runs that say what their frames are (``--imaging``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
from pathlib import Path

import pandas as pd
import torch

from etem.train.sweep import (BASE_OPTICS, cutoffs, default_conditions, format_cutoffs, run_sweep, strictest,
                              trust_ranges, wave_sweep, wave_trust_ranges)

PACKAGED = Path(__file__).resolve().parents[1] / "tracker" / "data" / "classical_trust.json"

#: Exit-wave sweeps of the classical locator: (contrast, method, optics preset, imaging, base microscope).
WAVE_KINDS = (
    ("bright", "classical", "au", "hrtem", BASE_OPTICS["au"]),
    ("bright", "classical", "haadf", "haadf", BASE_OPTICS["haadf"]),
    ("dark", "classical-dark", "au", "hrtem", {**BASE_OPTICS["au"], "defocus_A": 60.0, "Cs_A": 15e4}),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model bundle (default: the classical locator)")
    ap.add_argument("--contrast", default="bright,dark")
    ap.add_argument("--frames", type=int, default=2, help="toy frames per condition")
    ap.add_argument("--waves", type=Path, help="held-out Au wave set (etem simulate waves --material au)")
    ap.add_argument("-n", type=int, default=16, help="exit-wave images per condition")
    ap.add_argument("--write", action="store_true", help="store the classical ranges in the package")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    find_kwargs = {"model": args.model} if args.model else {"classical": True}
    today = dt.date.today().isoformat()
    out = {"_about": (f"Trust ranges of the classical locator, measured by bench/sweep_trust.py on {today} "
                      f"({platform.machine()}, torch {torch.__version__}) on toy-model images (Gaussian columns, "
                      f"shot noise; etem.simulate.toy), 51.2 Å fields, {args.frames} frames per condition"
                      + (f", and on exit-wave images of {args.waves.name} ({args.n} per condition: negative-Cs "
                         "HRTEM and HAADF-STEM for bright columns, positive-Cs HRTEM for dark ones), the "
                         "strictest of them per contrast" if args.waves else "")
                      + ". Pass: recall >= 0.9, precision >= 0.95, RMS <= 0.3 Å.")}
    for contrast in args.contrast.split(","):
        table = run_sweep(default_conditions(contrast), find_kwargs=find_kwargs, n_frames=args.frames)
        print(f"\n## {contrast} columns, toy images\n")
        print(table.round(3).to_string(index=False))
        # the classical locator's scores are not probabilities: no confidence floor
        ranges = [trust_ranges(table, with_confidence=bool(args.model))]
        print(f"\n{ranges[0]}")
        if args.waves and not args.model:
            for kind_contrast, method, preset, imaging, optics in WAVE_KINDS:
                if kind_contrast != contrast:
                    continue
                t = wave_sweep([method], args.waves, n=args.n, size=256, sampling_A=0.2, preset=preset,
                               imaging=imaging, base_optics=optics)
                print(f"\n## {contrast} columns, {imaging} exit-wave images of {args.waves.name}\n")
                print(t.round(3).to_string(index=False))
                print(format_cutoffs(cutoffs(t)))
                r = wave_trust_ranges(t, t["method"].iloc[0], source=f"{imaging} exit-wave images, {today}")
                # no confidence floor for the classical locator (as above)
                r = dataclasses.replace(r, confidence_min=None)
                ranges.append(r)
                kind = "stem" if imaging == "haadf" else imaging
                # for frames said to be of this kind (--imaging): this kind's ranges within the toy ones
                out[f"{contrast}:{kind}"] = strictest([ranges[0], r], source=(
                    f"etem.train.sweep on toy and {kind} exit-wave images, {today}")).to_dict()
                print(f"\n{contrast}, {kind}: {r.text()}")
        final = strictest(ranges, source=f"etem.train.sweep on toy{' and exit-wave' if args.waves else ''} "
                                         f"images, {today}") if len(ranges) > 1 else ranges[0]
        print(f"\n{contrast}: {final.text()}")
        out[contrast] = final.to_dict()
    if args.write and not args.model:
        PACKAGED.parent.mkdir(exist_ok=True)
        PACKAGED.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {PACKAGED}")


if __name__ == "__main__":
    main()
