"""`etem train` and `etem evaluate MODEL WAVES`: training a network and scoring models on
held-out simulated images (their options: etem.tracker.cli_parser)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from etem.tracker.errors import ConfigError


def cmd_train(args) -> int:
    from etem.train.loop import TrainConfig, train

    arch_args = {"width": args.width, "depth": args.depth} if args.arch != "msdnet" else {"depth": args.depth}
    if args.unshuffle != 1:
        if args.arch != "fusionnet":
            raise ConfigError(f"--unshuffle is an option of the fusionnet architecture, not of {args.arch}")
        arch_args["unshuffle"] = args.unshuffle
    try:
        focal = tuple(float(v) for v in args.focal.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--focal must be comma-separated defocus offsets in Å; got {args.focal!r}") from None
    try:
        coarse_factor = tuple(float(v) for v in args.coarse_factor.split(","))
    except ValueError:
        raise ConfigError(f"--coarse-factor must be LO,HI (two numbers above 1); got {args.coarse_factor!r}") from None
    for path in args.waves:
        if not path.is_file():
            raise ConfigError(f"{path}: no such wave set (make one with `etem simulate waves`)")
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"--minutes must be a positive time, got {args.minutes}")
    steps = args.steps if args.steps is not None else (600 if args.minutes is None else 10**9)
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    cfg = TrainConfig(arch=args.arch, arch_args=arch_args, size=args.size, sampling_A=args.sampling,
                      label_sigma_A=args.label_sigma, preset=args.preset or None, imaging=args.imaging,
                      batch=args.batch, steps=steps, lr=args.lr, seed=args.seed, device=args.device,
                      validate_every=max(1, min(100, steps // 4)), max_minutes=args.minutes,
                      samples_per_wave=args.samples_per_wave, vacuum_fraction=args.vacuum_fraction,
                      coarse_fraction=args.coarse_fraction, coarse_factor=coarse_factor,
                      focal_offsets_A=focal or (0.0,),
                      amp=args.amp, checkpoint_every=args.checkpoint_every, classes=args.classes)
    card = train(args.waves, args.output, cfg, progress=sys.stderr.isatty(), resume=args.resume)
    if card is None:  # a torchrun process other than the first
        return 0
    e = card["evaluation"]
    print(f"bundle {args.output}.safetensors/.json: held-out F1 {e['f1']:.3f} (precision {e['precision']:.3f}, "
          f"recall {e['recall']:.3f}, RMS {e['rms_A']:.3f} Å) after {card['training']['steps']} steps "
          f"in {card['training']['seconds']:.0f} s")
    return 0


def is_model(arg: Path) -> bool:
    """A bundled model's name, a bundle path, ``classical``, or a comma-separated list of them."""
    from etem.train.bundle import bundle_paths, bundled_models

    for name in str(arg).split(","):
        if name in ("classical", "classical-dark") or name in bundled_models():
            continue
        if Path(name).suffix not in ("", ".json", ".safetensors") or not bundle_paths(name)[1].is_file():
            return False
    return True


def cmd_evaluate_model(args) -> int:
    """`etem evaluate MODEL[,MODEL…] WAVES`: the held-out dose sweep, beside the classical locator."""
    if not args.truth.is_file():
        raise ConfigError(f"{args.truth}: no such wave set (make one with `etem simulate waves`)")
    from etem.train.assess import CLASSICAL, assess, format_summary, plot, summary

    if args.write_card and not re.fullmatch(r"heldout[a-z0-9_]*", args.write_card):
        raise ConfigError(f"--write-card KEY names a held-out table and starts with 'heldout' (e.g. "
                          f"heldout_on_graphene); got {args.write_card!r}")
    methods = str(args.found).split(",")
    if not args.no_baseline:
        methods += [c for c in CLASSICAL if c not in methods]
    if args.sweep:
        return _sweep(methods, args)
    try:
        doses = [float(d) for d in args.doses.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--doses must be comma-separated numbers; got {args.doses!r}") from None
    per = assess(methods, args.truth, doses=doses, n=args.n, size=args.size, sampling_A=args.sampling,
                 radius_A=args.radius, seed=args.seed, bond_A=args.bonds, border_A=args.border)
    table = summary(per)
    print(f"{args.n} held-out images per dose from {args.truth.name} at {per.attrs['sampling_A']} Å/px "
          f"({per.attrs['imaging']}, optics preset {per.attrs['preset']!r}); match radius {args.radius} Å"
          + (f"; columns within {args.border} Å of the edge left out" if args.border else ""))
    print(format_summary(table))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        per.to_csv(args.output / "per_image.csv", index=False)
        table.to_csv(args.output / "summary.csv", index=False)
        for path in plot(per, args.output):
            print(f"wrote {path}")
    if args.write_card:
        _store_heldout(methods, per, table, args)
    return 0


def _store_heldout(methods, per, table, args) -> None:
    """The held-out table into each model's card (the weights, and so the card's hash, stay)."""
    import datetime
    import json
    import platform

    from etem.train.assess import CLASSICAL
    from etem.train.bundle import update_card

    rows = json.loads(table.to_json(orient="records"))
    heldout = {
        "wave_set": args.truth.name, "images_per_dose": args.n, "size_px": args.size,
        "sampling_A": per.attrs["sampling_A"], "imaging": per.attrs["imaging"],
        "optics_preset": per.attrs["preset"], "match_radius_A": args.radius, "border_A": args.border,
        "date": datetime.date.today().isoformat(), "machine": platform.machine(), "table": rows,
    }
    for m in methods:
        if m not in CLASSICAL:
            print(f"stored the held-out table in {update_card(m, {args.write_card: heldout})} "
                  f"as {args.write_card!r}")


def _sweep(methods, args) -> int:
    """`etem evaluate MODEL WAVES --sweep`: Wei et al.'s cut-offs and radar plot; the trust ranges."""
    import datetime
    import json
    import platform

    from etem.train.assess import CLASSICAL, _label
    from etem.train.bundle import update_card
    from etem.train.sweep import cutoffs, format_cutoffs, radar_plot, wave_sweep, wave_trust_ranges

    methods = [m for m in methods if m != "classical-dark"]  # the sweep's microscopes show bright columns
    if methods[0] in CLASSICAL:
        raise ConfigError("--sweep takes the conditions from a model's card: name a model first")
    table = wave_sweep(methods, args.truth, base_dose=args.base_dose, n=args.n, size=args.size,
                       radius_A=args.radius, seed=args.seed)
    cuts = cutoffs(table)
    a = table.attrs
    optics = ", ".join(f"{k} {v:g}" for k, v in a["base_optics"].items())
    print(f"{args.n} held-out images per condition from {args.truth.name} ({a['imaging']}); base: "
          f"{a['base_dose']:g} e/Å², {a['sampling_A']} Å/px, {optics}; match radius {args.radius} Å")
    print("cut-offs (recall >= 0.9, precision >= 0.95, RMS <= 0.3 Å), going from the base towards each hard end:")
    print(format_cutoffs(cuts))
    ranges = {m: wave_trust_ranges(table, _label(m)) for m in methods if m not in CLASSICAL}
    for m, r in ranges.items():
        print(f"{_label(m)}: trust ranges {r.text()}")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.output / "sweep.csv", index=False)
        cuts.to_csv(args.output / "cutoffs.csv", index=False)
        print(f"wrote {radar_plot(cuts, args.output / 'radar.png', title=f'{methods[0]} on {args.truth.name}')}")
    if args.write_card:
        record = {"wave_set": args.truth.name, "images_per_condition": args.n, "size_px": args.size,
                  "base_dose": a["base_dose"], "base_optics": a["base_optics"], "sampling_A": a["sampling_A"],
                  "match_radius_A": args.radius, "date": datetime.date.today().isoformat(),
                  "machine": platform.machine(), "cutoffs": json.loads(cuts.to_json(orient="records"))}
        for m, r in ranges.items():
            print(f"stored the cut-offs and trust ranges in {update_card(m, {'sweep': record, 'trust': r.to_dict()})}")
    return 0
