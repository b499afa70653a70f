"""``etem simulate``: structures, exit waves, training images and in-situ movies, from a seed.

    etem simulate structures --material au -n 10 -o au.extxyz
    etem simulate waves --material graphene -n 8 --workers 2 -o graphene-waves.h5
    etem simulate images graphene-waves.h5 -n 64 -o graphene-images.h5
    etem simulate movie --kind insitu --imaging hrtem --frames 40 -o movie.h5
    etem simulate movie --material mos2 --substrate graphene --focal-series -100,0,100 -o mos2.h5
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from etem.tracker.errors import ConfigError

_MATERIALS = ("au", "graphene", "graphene-pristine", "mos2")
#: Beam energy [eV] of a material's waves where --energy is not given: MoS2 at 80 kV, as the
#: bundled MoS2 models (train/make_models.sh) and the mos2 movie are made; the rest at 300 kV.
DEFAULT_ENERGY_EV = {"mos2": 80e3}


def add_parser(sub) -> None:
    """Add ``simulate`` and its sub-commands to the ``etem`` parser."""
    p = sub.add_parser("simulate", help="structures, exit waves, training images and in-situ movies")
    s = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    q = s.add_parser("structures", help="random structures (ASE, extended XYZ with column labels)")
    q.add_argument("--material", choices=_MATERIALS, required=True)
    q.add_argument("-n", type=int, default=10, help="how many")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--substrate", choices=("none", "graphene", "mixed"), default="none",
                   help="MoS2: flakes bare, on a graphene sheet, or either (drawn per structure)")
    q.add_argument("-o", "--output", type=Path, required=True, help=".extxyz file")
    q.add_argument("--tilt-max", type=float, help="Au: largest tilt off the zone axis [deg] (default 5, Madsen's "
                                                    "range; a held-out set at ~1 deg measures the network, not the geometry)")

    q = s.add_parser("waves", help="exit waves (abTEM) of random structures, stored with their labels")
    q.add_argument("--material", choices=_MATERIALS, required=True)
    q.add_argument("-n", type=int, default=8, help="how many structures")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--sampling", type=float, default=0.05, help="wave sampling [Å/px]")
    q.add_argument("--energy", type=float, default=None,
                   help="beam energy [eV] (default: 80e3 for mos2, as the bundled MoS2 models were trained; "
                        "300e3 for the others)")
    q.add_argument("--frozen-phonons", type=int, default=0)
    q.add_argument("--classes", choices=("species", "height"), default="species")
    q.add_argument("--tilt-max", type=float, help="Au: largest tilt off the zone axis [deg] (default 5, Madsen's "
                                                    "range; a held-out set at ~1 deg measures the network, not the geometry)")
    q.add_argument("--substrate", choices=("none", "graphene", "mixed"), default="none",
                   help="MoS2: flakes bare, on a graphene sheet, or either (drawn per structure)")
    q.add_argument("--workers", type=int, default=1, help="processes (Dask) computing waves side by side")
    q.add_argument("--scheduler", help="address of a Dask distributed scheduler (a cluster) instead")
    q.add_argument("-o", "--output", type=Path, required=True, help="wave-set HDF5 file")

    # the defaults are etem train's (TrainConfig), so that these are the images it trains on
    q = s.add_parser("images", help="training images and labels from a wave set (optics and noise in torch), "
                                    "by default as `etem train` makes them")
    q.add_argument("waves", type=Path, help="wave-set file from `etem simulate waves`")
    q.add_argument("-n", type=int, default=64, help="how many images")
    q.add_argument("--size", type=int, help="image side [px] (default 128, as etem train)")
    q.add_argument("--sampling", type=float, help="image pixel size [Å/px] (default 0.2, as etem train)")
    q.add_argument("--preset", help="optics preset (graphene, au, mos2, haadf; default au, as etem train)")
    q.add_argument("--optics", action="append", default=[], metavar="KEY=LO,HI|FILE.toml",
                   help="replace ranges of the preset, as `etem train --optics` (e.g. defocus_A=-90,-30, or "
                        "a TOML file describing your microscope)")
    q.add_argument("--imaging", choices=("hrtem", "haadf"), default="hrtem")
    q.add_argument("--label-sigma", type=float,
                   help="label Gaussian width [Å] (default 0.5, as etem train; Madsen's 1 Å merges the columns "
                        "of dense lattices such as MoS2)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu")
    q.add_argument("-o", "--output", type=Path, required=True, help="HDF5 file: images, labels, positions")

    q = s.add_parser("movie", help="an in-situ movie with its ground truth")
    q.add_argument("--kind", choices=("insitu", "toy"), default="insitu",
                   help="insitu: abTEM column waves (see --material); toy: Gaussian columns (fast)")
    q.add_argument("--material", choices=("au", "mos2"), default="au",
                   help="insitu movies: au, a Au [110] particle with hopping surface columns (300 kV); mos2, "
                        "a MoS2 flake with hopping, forming and healing S vacancies (80 kV)")
    q.add_argument("--substrate", choices=("none", "graphene"), default="none", help="mos2 only: the support")
    q.add_argument("--imaging", choices=("hrtem", "stem"), default="hrtem", help="insitu movies only")
    # "-100,0,100" is a value, not an option (argparse takes only plain negative numbers for values)
    q._negative_number_matcher = re.compile(r"^-[\d.][\d.,eE+-]*$")
    q.add_argument("--focal-series", metavar="OFFSETS",
                   help="insitu movies: defocus offsets [Å], comma-separated (e.g. -100,0,100): frames of F images")
    q.add_argument("--classes", choices=("species", "height"), default="species",
                   help="insitu au movies: the true columns' class, the species (one) or the column's height "
                        "(atoms, classes 1 .. 10+, as a height model counts them: `etem train --classes height`)")
    q.add_argument("--frames", type=int, default=40)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--sampling", type=float, default=0.2)
    q.add_argument("--dose", type=float, default=300.0, help="e/Å² per frame (per image of a focal series)")
    q.add_argument("--fps", type=float, default=25.0,
                   help="frame rate [1/s]: the frames' acquisition times, stored with the movie (default 25)")
    q.add_argument("--hop-rate", type=float,
                   help="hop attempts per frame: per surface column (au, toy; default 0.08), per S vacancy (mos2; 0.05)")
    q.add_argument("--sputter-rate", type=float, help="mos2: sputtering per S atom per frame (default 0.003)")
    q.add_argument("--refill-rate", type=float, help="mos2: refilling per S vacancy per frame (default 0.03)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--output", type=Path, required=True, help="movie HDF5 file (frames and truth)")


def _structure(material: str, rng: np.random.Generator, tilt_max: float | None = None, substrate: str = "none"):
    from . import structures

    if substrate != "none" and material != "mos2":
        raise ConfigError(f"--substrate applies to MoS2 flakes; got --material {material}.")
    if material == "au":
        return structures.au_nanoparticle(rng, **({} if tilt_max is None else {"tilt_deg": (0.0, tilt_max)}))
    if tilt_max is not None:
        raise ConfigError(f"--tilt-max applies to Au nanoparticles; {material} structures lie flat on the zone axis.")
    if material == "graphene":
        return structures.graphene(rng)
    if material == "graphene-pristine":  # one perfect periodic sheet: every structure alike
        return structures.pristine_graphene()
    on_graphene = substrate == "graphene" or (substrate == "mixed" and bool(rng.integers(2)))
    return structures.mos2(rng, on_graphene=on_graphene)


def _make_structure(material: str, seed: int, i: int, tilt_max: float | None = None, substrate: str = "none"):
    return _structure(material, np.random.default_rng([seed, i]), tilt_max, substrate)


def cmd_simulate(args) -> int:
    return {"structures": _structures, "waves": _waves, "images": _images, "movie": _movie}[args.what](args)


def _structures(args) -> int:
    from ase.io import write
    from tqdm import tqdm

    out = []
    for i in tqdm(range(args.n), unit="structure", desc="structures", disable=not sys.stderr.isatty()):
        a = _make_structure(args.material, args.seed, i, args.tilt_max, args.substrate)
        a.info = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in a.info.items()}
        out.append(a)
    write(args.output, out, format="extxyz")
    print(f"{args.n} {args.material} structures ({sum(len(a) for a in out)} atoms): {args.output}")
    return 0


def _waves(args) -> int:
    from functools import partial

    from .waves import WaveConfig, compute_waves, save_waves

    energy = args.energy if args.energy is not None else DEFAULT_ENERGY_EV.get(args.material, 300e3)
    cfg = WaveConfig(energy_eV=energy, sampling_A=args.sampling, frozen_phonons=args.frozen_phonons)
    make = partial(_make_structure, args.material, args.seed, tilt_max=args.tilt_max, substrate=args.substrate)
    waves = compute_waves(make, n=args.n, config=cfg, seed=args.seed, classes=args.classes,
                          scheduler=args.scheduler or ("processes" if args.workers > 1 else None),
                          progress=sys.stderr.isatty())
    save_waves(args.output, waves, cfg)
    print(f"{len(waves)} exit waves ({waves[0].wave.shape[0]}x{waves[0].wave.shape[1]} px at "
          f"{args.sampling} Å/px, {energy / 1e3:g} kV): {args.output}")
    return 0


def _images(args) -> int:
    import h5py
    import torch

    from .augment import AugmentConfig, training_batch
    from .labels import pad_columns
    from .optics import OpticsRanges, optics_overrides
    from .waves import load_waves

    from etem.train.loop import TrainConfig, usable_device

    usable_device(args.device)  # a clear line for a device this torch cannot use
    train = TrainConfig()  # what etem train does where an option is not given
    size = args.size or train.size
    sampling = args.sampling or train.sampling_A
    sigma = args.label_sigma if args.label_sigma is not None else train.label_sigma_A
    preset = args.preset or train.preset
    ranges = OpticsRanges.from_dict({**({"preset": preset} if preset else {}), **optics_overrides(args.optics)})
    waves = load_waves(args.waves)
    classes = waves[0].classes
    cfg = AugmentConfig(out_shape=(size, size), out_sampling_A=sampling, n_classes=max(1, len(classes)),
                        sigma_A=sigma)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    images, labels, tables = [], [], []
    done = 0
    while done < args.n:
        w = waves[done % len(waves)]
        src = w.haadf_object(args.device) if args.imaging == "haadf" else torch.from_numpy(w.wave)[None].to(args.device)
        pts, cls = pad_columns([w.columns], sampling_A=w.sampling_A, device=args.device)
        batch = training_batch(src, pts, cls, sampling_A=w.sampling_A, energy_eV=w.energy_eV, generator=gen,
                               ranges=ranges, config=cfg, mode=args.imaging)
        images.append(batch.images.cpu().numpy())
        labels.append(batch.labels.cpu().numpy())
        t = batch.positions_table()
        t["frame"] = done
        tables.append(t)
        done += 1
    with h5py.File(args.output, "w") as f:
        f.attrs["format"] = "etem-training-images"
        f.attrs["classes"] = json.dumps(list(classes))
        f.attrs["source"] = str(args.waves)
        f.attrs.update({"sampling_A": sampling, "label_sigma_A": sigma, "preset": preset or "",
                        "imaging": args.imaging})
        f["images"] = np.concatenate(images)
        f["labels"] = np.concatenate(labels)
        pos = __import__("pandas").concat(tables, ignore_index=True)
        for c in pos.columns:
            f[f"positions/{c}"] = pos[c].to_numpy()
    print(f"{args.n} images {size}x{size} at {sampling:g} Å/px with labels ({len(classes)} classes + background, "
          f"σ {sigma:g} Å), optics preset {preset!r}: {args.output}")
    return 0


def _focal_offsets(text: str | None) -> tuple[float, ...] | None:

    if text is None:
        return None
    try:
        offsets = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--focal-series must be comma-separated defocus offsets in Å, e.g. -100,0,100; "
                          f"got {text!r}") from None
    if not all(np.isfinite(offsets)):
        raise ConfigError(f"--focal-series offsets must be finite numbers [Å]; got {text!r}")
    return offsets


def _movie(args) -> int:

    from .toy import make_movie, save_movie

    offsets = _focal_offsets(args.focal_series)
    mos2 = args.kind == "insitu" and args.material == "mos2"
    if args.kind == "toy" and (offsets or args.material != "au"):
        raise ConfigError("--focal-series and --material are options of insitu movies; drop --kind toy")
    rates = {k: v for k, v in (("sputter_rate", args.sputter_rate), ("refill_rate", args.refill_rate)) if v is not None}
    if args.classes == "height" and (args.kind == "toy" or mos2):
        raise ConfigError("--classes height is an option of the insitu au movie (whose columns have heights); "
                          "drop it or --kind toy / --material mos2")
    if not mos2 and (args.substrate != "none" or rates):
        raise ConfigError("--substrate, --sputter-rate and --refill-rate are options of the mos2 movie; "
                          "add --material mos2")
    common = {"n_frames": args.frames, "shape": (args.size, args.size), "sampling": args.sampling,
              "dose_per_frame": args.dose, "fps": args.fps, "seed": args.seed}
    if args.hop_rate is not None:
        common["hop_rate"] = args.hop_rate
    try:
        if args.kind == "toy":
            movie = make_movie(**common)
        elif mos2:
            from .insitu_mos2 import mos2_movie

            movie = mos2_movie(**common, mode=args.imaging, focal_offsets_A=offsets,
                               substrate=None if args.substrate == "none" else args.substrate, **rates)
        else:
            from .insitu import insitu_movie

            movie = insitu_movie(**common, mode=args.imaging, focal_offsets_A=offsets, classes=args.classes)
    except ValueError as exc:  # the movie's own checks of the numbers
        raise ConfigError(str(exc)) from None
    save_movie(movie, args.output)
    t = movie.truth
    images = f" x {len(offsets)} focal images" if offsets else ""
    print(f"{args.frames} frames{images} {args.size}x{args.size} at {args.sampling} Å/px, {len(t.sites)} sites, "
          f"{len(t.hops)} hops, {len(t.exchanges)} exchanges: {args.output}")
    return 0
