"""`etem train` and `etem evaluate MODEL WAVES`: training a network and scoring models on
held-out simulated images (their options: etem.tracker.cli_parser)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from etem.simulate.optics import optics_overrides
from etem.tracker.errors import ConfigError


#: learning rate of a run that starts from a trained model (--init) unless --lr is given
INIT_LR = 5e-4


def _pair(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what}; got {text!r}") from None


def _focal(args) -> tuple[float, ...] | None:
    """``--focal`` as offsets [Å] (one image, 0, where it is empty); None where not given."""
    if args.focal is None:
        return None
    return _pair(args.focal, "--focal must be comma-separated defocus offsets in Å") or (0.0,)


def _network(args) -> dict:
    """The network the options ask for: TrainConfig's arch, arch_args and focal_offsets_A."""
    arch = args.arch or "fusionnet"
    depth = 3 if args.depth is None else args.depth
    arch_args = {"depth": depth} if arch == "msdnet" else {"width": 16 if args.width is None else args.width,
                                                            "depth": depth}
    if args.unshuffle not in (None, 1):
        if arch != "fusionnet":
            raise ConfigError(f"--unshuffle is an option of the fusionnet architecture, not of {arch}")
        arch_args["unshuffle"] = args.unshuffle
    return {"arch": arch, "arch_args": arch_args, "focal_offsets_A": _focal(args) or (0.0,)}


def _from_card(args) -> dict:
    """With ``--init``: the starting model's recipe (its card's training settings), its network as
    the bundle records it, and the options that would change that network refused."""
    from dataclasses import fields

    from etem.train.bundle import load_bundle
    from etem.train.loop import TrainConfig

    _, card = load_bundle(args.init)
    known = {f.name for f in fields(TrainConfig)}
    recipe = {k: v for k, v in ((card.get("training") or {}).get("config") or {}).items() if k in known}
    theirs = {k: v for k, v in card["arch_args"].items() if k not in ("n_inputs", "n_classes")}
    asked = {"arch": args.arch, "width": args.width, "depth": args.depth, "focal": _focal(args),
             "unshuffle": args.unshuffle, "classes": args.classes}
    have = {"arch": card["arch"], "width": theirs.get("width"), "depth": theirs.get("depth"),
            "unshuffle": theirs.get("unshuffle", 1), "classes": recipe.get("classes", "species"),
            "focal": tuple(float(v) for v in card["inputs"])}
    differ = [k for k, v in asked.items() if v is not None and v != have[k]]
    if differ:
        raise ConfigError(f"--init {args.init}: fine-tuning keeps the model's network; it has "
                          + ", ".join(f"{k} {have[k]}" for k in differ) + " where the options ask for "
                          + ", ".join(f"{asked[k]}" for k in differ) + ": leave those options out")
    return {**recipe, "arch": card["arch"], "arch_args": theirs, "focal_offsets_A": have["focal"],
            "lr": INIT_LR, "optics": dict(recipe.get("optics") or {})}


def train_config(args):
    """The :class:`~etem.train.loop.TrainConfig` of an `etem train` command line: options given
    win; the others are the defaults, or with ``--init`` the starting model's recipe (its card)."""
    from dataclasses import asdict

    from etem.train.loop import TrainConfig

    cfg = asdict(TrainConfig())
    cfg.update(_from_card(args) if args.init else _network(args))
    for opt, key in (("batch", "batch"), ("samples_per_wave", "samples_per_wave"), ("classes", "classes"),
                     ("vacuum_fraction", "vacuum_fraction"), ("coarse_fraction", "coarse_fraction"),
                     ("lr", "lr"), ("size", "size"), ("sampling", "sampling_A"), ("label_sigma", "label_sigma_A"),
                     ("preset", "preset"), ("imaging", "imaging")):
        if getattr(args, opt) is not None:
            cfg[key] = getattr(args, opt)
    if args.coarse_factor is not None:
        cfg["coarse_factor"] = _pair(args.coarse_factor, "--coarse-factor must be LO,HI (two numbers above 1)")
    if args.optics:
        cfg["optics"] = {**cfg["optics"], **optics_overrides(args.optics)}
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"--minutes must be a positive time, got {args.minutes}")
    steps = args.steps if args.steps is not None else (600 if args.minutes is None else 10**9)
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    # the run's own settings never come from a card
    cfg.update(steps=steps, max_minutes=args.minutes, validate_every=max(1, min(100, steps // 4)), seed=args.seed,
               device=args.device, amp=args.amp, checkpoint_every=args.checkpoint_every, threads=None,
               init=str(args.init) if args.init else None, preset=cfg["preset"] or None,
               validate_movies=tuple(str(p) for p in (args.validate or ())),
               select=args.select, n_validation=args.validation_images,
               focal_offsets_A=tuple(cfg["focal_offsets_A"]), coarse_factor=tuple(cfg["coarse_factor"]))
    return TrainConfig(**cfg)


def cmd_train(args) -> int:
    from etem.train.bundle import bundle_base
    from etem.train.loop import train

    for path in args.waves:
        if not path.is_file():
            raise ConfigError(f"{path}: no such wave set (make one with `etem simulate waves`)")
    for path in args.validate or ():
        if not path.is_file():
            raise ConfigError(f"--validate {path}: no such movie (make one with `etem simulate movie`)")
    cfg = train_config(args)
    args.output = bundle_base(args.output)
    card = train(args.waves, args.output, cfg, progress=sys.stderr.isatty(), resume=args.resume,
                 overwrite=args.overwrite)
    if card is None:  # a torchrun process other than the first
        return 0
    e = card["evaluation"]
    start = card["training"].get("initialized_from")
    if start:
        print(f"started from {start['model']}: validation F1 {start['validation_f1']:.3f} on these images")
    for r in card["training"].get("resumed", []):
        print(f"resumed from the checkpoint of step {r['step']} ({r['seconds']:.0f} s of training before it)")
    t = card["training"]
    kept = f"the weights of step {t['kept_step']}" if t.get("kept_step") is not None else "the best weights"
    print(f"bundle {args.output}.safetensors/.json: {kept}, validation F1 {_f(e['f1'])} on the structures held "
          f"out for choosing the weights (precision {_f(e['precision'])}, recall {_f(e['recall'])}, RMS "
          f"{_f(e['rms_A'])} Å), after {t['steps']} steps in {t['seconds']:.0f} s; score it on wave sets it never "
          "saw with `etem evaluate MODEL WAVES.h5`")
    if t["config"].get("select") == "classes":
        print(f"chosen by validation F1 x class accuracy: class accuracy {_f(e.get('cls_accuracy'))} of the columns found")
    if "movie_validation" in e:
        m = e["movie_validation"]
        print(f"chosen on {m['frames']} frames of {', '.join(m['movies'])}: F1 {m['f1']:.3f} "
              f"(precision {m['precision']:.3f}, recall {m['recall']:.3f}) at threshold {card['threshold']:g}")
    return 0


def _f(value) -> str:
    """A score as printed: three decimals, or "none" (an empty score is stored as null)."""
    return "none" if value is None else f"{value:.3f}"


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
    if args.int8 and (args.write_card or args.sweep):
        raise ConfigError("--int8 scores the int8 graphs on the dose table only: leave out "
                          + ("--write-card (a card holds the float32 network's scores)" if args.write_card else "--sweep"))
    if args.write_card:  # before any work: a shipped model's card stays as shipped
        from etem.train.bundle import refuse_bundled_card

        for m in methods:
            if m not in CLASSICAL:
                refuse_bundled_card(m)
    from etem.train.assess import training_mismatches

    for line in training_mismatches(methods, args.truth):  # before the table, which looks normal
        print(line)
    if not args.no_baseline:
        methods += [c for c in CLASSICAL if c not in methods]
    if args.sweep:
        return _sweep(methods, args)
    try:
        doses = [float(d) for d in args.doses.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--doses must be comma-separated numbers; got {args.doses!r}") from None
    optics = optics_overrides(args.optics) if args.optics else ({} if args.preset else None)
    per = assess(methods, args.truth, doses=doses, n=args.n, size=args.size, sampling_A=args.sampling,
                 preset=args.preset, optics=optics, radius_A=args.radius, seed=args.seed, bond_A=args.bonds,
                 border_A=args.border, int8=args.int8)
    table = summary(per)
    ranges = "".join(f", {k} {v}" for k, v in (per.attrs["optics"] or {}).items())
    print(f"{args.n} held-out images per dose from {args.truth.name} at {per.attrs['sampling_A']} Å/px "
          f"({per.attrs['imaging']}, optics preset {per.attrs['preset']!r}{ranges}); match radius {args.radius} Å"
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
        "optics_preset": per.attrs["preset"], "optics": per.attrs["optics"] or {}, "match_radius_A": args.radius, "border_A": args.border,
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

    from etem.train.assess import CLASSICAL
    from etem.train.bundle import bundle_paths, update_card
    from etem.train.sweep import cutoffs, format_cutoffs, radar_plot, wave_sweep, wave_trust_ranges

    methods = [m for m in methods if m != "classical-dark"]  # the sweep's microscopes show bright columns
    if methods[0] in CLASSICAL:
        raise ConfigError("--sweep takes the conditions from a model's card: name a model first")
    if args.optics:
        raise ConfigError("--sweep images every condition at one fixed microscope (that of the preset, "
                          "train/sweep.py BASE_OPTICS); --optics sets the ranges of the dose table")
    table = wave_sweep(methods, args.truth, base_dose=args.base_dose, n=args.n, size=args.size,
                       radius_A=args.radius, seed=args.seed, preset=args.preset)
    cuts = cutoffs(table)
    a = table.attrs
    optics = ", ".join(f"{k} {v:g}" for k, v in a["base_optics"].items())
    print(f"{args.n} held-out images per condition from {args.truth.name} ({a['imaging']}); base: "
          f"{a['base_dose']:g} e/Å², {a['sampling_A']} Å/px, {optics}; match radius {args.radius} Å")
    print("cut-offs (recall >= 0.9, precision >= 0.95, RMS <= 0.3 Å), going from the base towards each hard end:")
    print(format_cutoffs(cuts))
    labels = table.attrs["labels"]  # each method's name in the table
    ranges = {m: wave_trust_ranges(table, labels[m]) for m in methods if m not in CLASSICAL}
    for m, r in ranges.items():
        print(f"{labels[m]}: trust ranges {r.text()}")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.output / "sweep.csv", index=False)
        cuts.to_csv(args.output / "cutoffs.csv", index=False)
        print(f"wrote {radar_plot(cuts, args.output / 'radar.png', title=f'{methods[0]} on {args.truth.name}')}")
    else:
        print("(no -o: sweep.csv, cutoffs.csv and the radar plot were not written; -o FOLDER writes them)")
    if args.write_card:
        record = {"wave_set": args.truth.name, "images_per_condition": args.n, "size_px": args.size,
                  "base_dose": a["base_dose"], "base_optics": a["base_optics"], "sampling_A": a["sampling_A"],
                  "match_radius_A": args.radius, "date": datetime.date.today().isoformat(),
                  "machine": platform.machine(), "cutoffs": json.loads(cuts.to_json(orient="records"))}
        for m, r in ranges.items():
            # which frames went in as they are, not resampled (the card's inference.as_is_ratio; None: all
            # resampled): the card says under which preprocessing its ranges were measured
            as_is = (json.loads(bundle_paths(m)[1].read_text()).get("inference") or {}).get("as_is_ratio")
            entry = {**record, "as_is_ratio": as_is}
            print(f"stored the cut-offs and trust ranges in {update_card(m, {'sweep': entry, 'trust': r.to_dict()})}")
    return 0
