"""Measure where a locator stops working and the trust ranges that follow (Wei et al.'s cut-offs).

    python bench/sweep_trust.py                      # classical locator, bright and dark columns
    python bench/sweep_trust.py --write              # and store them as the packaged ranges
    python bench/sweep_trust.py --model NAME         # a model bundle (prints its ranges for the card)

Prints, per condition, the measured SNR, detected dose, resolution and mean column probability
with ID-recall, ID-precision and position RMS, then the ranges (etem.train.sweep.trust_ranges).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import pandas as pd
import torch

from etem.train.sweep import default_conditions, run_sweep, trust_ranges

PACKAGED = Path(__file__).resolve().parents[1] / "tracker" / "data" / "classical_trust.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model bundle (default: the classical locator)")
    ap.add_argument("--contrast", default="bright,dark")
    ap.add_argument("--frames", type=int, default=2, help="frames per condition")
    ap.add_argument("--write", action="store_true", help="store the classical ranges in the package")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    find_kwargs = {"model": args.model} if args.model else {"classical": True}
    out = {"_about": (f"Trust ranges of the classical locator, measured by bench/sweep_trust.py on "
                      f"{dt.date.today().isoformat()} ({platform.machine()}, torch {torch.__version__}) on "
                      "toy-model images (Gaussian columns, shot noise; etem.simulate.toy), 51.2 Å fields, "
                      f"{args.frames} frames per condition. Pass: recall >= 0.9, precision >= 0.95, RMS <= 0.3 Å.")}
    for contrast in args.contrast.split(","):
        table = run_sweep(default_conditions(contrast), find_kwargs=find_kwargs, n_frames=args.frames)
        print(f"\n## {contrast} columns\n")
        print(table.round(3).to_string(index=False))
        # the classical locator's scores are not probabilities: no confidence floor
        ranges = trust_ranges(table, with_confidence=bool(args.model))
        print(f"\n{ranges}")
        out[contrast] = ranges.to_dict()
    if args.write and not args.model:
        PACKAGED.parent.mkdir(exist_ok=True)
        PACKAGED.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {PACKAGED}")


if __name__ == "__main__":
    main()
