"""`etem evaluate`: found columns (a table from `etem find`, or a run file) against a simulated
movie's truth or a table of true columns; a model on held-out simulated images is
:mod:`etem.train.cli`'s."""
from __future__ import annotations

from pathlib import Path

from .cli_say import print_site_scores
from .errors import ConfigError

__all__ = ["cmd_evaluate"]


def cmd_evaluate(args) -> int:
    from etem.train.cli import cmd_evaluate_model, is_model

    from .evaluate import score_columns

    if is_model(args.found):
        return cmd_evaluate_model(args)
    if args.preset or args.optics:
        raise ConfigError("--preset and --optics set the microscope of held-out images (etem evaluate MODEL "
                          "WAVES); found columns are scored against the images they were found on.")
    if args.border:
        raise ConfigError("--border applies to a model scored on held-out waves (etem evaluate MODEL WAVES), "
                          "whose images have a known size; not to found columns against a movie or table.")
    if getattr(args, "int8", False):
        raise ConfigError("--int8 runs a model on held-out waves (etem evaluate MODEL WAVES --int8); found "
                          "columns were found already.")
    sampling = args.sampling
    run_sites = run_flips = run_changes = run_hops = movie = None
    by_intensity = heights = False
    if args.found.suffix in (".h5", ".hdf5"):
        from .runfile import open_run

        with open_run(args.found) as run:
            found, sampling = run.columns, sampling or run.sampling
            frames_seen = set(run.frames["frame"].tolist())
            run_sites, run_flips, run_changes = run.sites, run.stats.get("flips"), run.stats.get("class_changes")
            run_hops = run.stats.get("hops")
            by_intensity = bool(((run.attrs.get("config") or {}).get("locate") or {}).get("intensity_classes"))
            from .site_classes import class_kinds

            names = tuple(run.class_names)  # a height model's "1" … "10": amounts of atoms
            heights = bool(names) and all(kind == "atoms" for kind, _ in class_kinds(names))
    else:
        found = _table(args.found)
        frames_seen = set(found["frame"].tolist()) if "frame" in found.columns else set()
    if args.truth.suffix in (".h5", ".hdf5"):
        from .evaluate import load_truth_movie

        movie = load_truth_movie(args.truth)
        truth, sampling = movie.truth.positions, sampling or movie.sampling
    else:
        from .evaluate import read_truth_table

        truth = read_truth_table(args.truth)
    for name, df in (("found", found), ("truth", truth)):
        missing = {"frame", "y", "x"} - set(df.columns)
        if missing:
            raise ConfigError(f"the {name} table lacks {', '.join(sorted(missing))}")
    truth_frames = set(truth["frame"].tolist())
    if truth_frames - frames_seen:  # a table of one image, a run of part of the movie: score what it tracked
        kept = sorted(truth_frames & frames_seen)
        which = (f"frame {kept[0]}" if len(kept) == 1 else f"frames {kept[0]}-{kept[-1]}") if kept else "none"
        print(f"scored on the {len(kept)} frame{'s' if len(kept) != 1 else ''} of the truth's {len(truth_frames)} "
              f"that {args.found.name} holds ({which})" + ("" if args.found.suffix in (".h5", ".hdf5") else
              "; a frame in which nothing was found is not in a table, so it is not scored"))
        truth = truth[truth["frame"].isin(frames_seen)]
    radius_px = args.radius / sampling if sampling else args.radius
    if run_sites is not None and by_intensity and "cls" in truth.columns:
        # classes of sublattices and intensity groups: scored as the true classes most of their columns have
        from .evaluate import as_true_classes

        found, run_changes, to_true = as_true_classes(found, run_changes, truth, radius_px=radius_px)
        print("classes from intensities, scored as the true classes most of their columns are: "
              + ", ".join(f"{a} -> {b}" for a, b in sorted(to_true.items())))
    s = score_columns(found, truth, radius_px=radius_px, sampling=sampling, ordinal=heights)
    unit = "Å" if sampling else "px"
    rms = s.get("rms_A", s["rms_px"]) if sampling else s["rms_px"]
    one_class = "cls" in found.columns and found["cls"].nunique() <= 1
    print(f"F1 {s['f1']:.3f}  ID-precision {s['precision']:.3f}  ID-recall {s['recall']:.3f}  "
          f"position RMS {rms:.3f} {unit}  ({s['tp']} matched, {s['fp']} extra, {s['fn']} missed"
          + (", one class found: classes not scored" if one_class and "cls_accuracy" in s else
             f", class accuracy {s['cls_accuracy']:.3f}" if "cls_accuracy" in s else "") + ")")
    if heights and "miscount_1" in s:  # column heights (Madsen et al. 2018, Fig. 12)
        print(f"column heights of the matched columns: exact {s['cls_accuracy']:.3f}, off by one atom "
              f"{s['miscount_1']:.3f}, by two {s['miscount_2']:.3f}, by three or more {s['miscount_3plus']:.3f}")
    if run_sites is not None and movie is not None and len(run_sites):
        print_site_scores(run_sites, run_flips, movie.truth, radius_px, run_changes, run_hops)
    return 0


def _table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV table ({exc})") from None
