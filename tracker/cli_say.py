"""What the ``etem`` commands say about their results: which locator found the columns, the
run's counts, the trust ranges, the classes (the commands themselves are in :mod:`.cli`)."""
from __future__ import annotations

import sys
from pathlib import Path


def say_locator(args, model, engine, out=None, indent: str = "  ", lattice: bool = False,
                width_px: float | None = None) -> None:
    """Which locator found the columns, and, where the tracker chose a model itself, why."""
    out = out or sys.stdout
    if engine is None:
        return
    if model is None:
        line = f"{indent}located by the classical locator"
        if width_px:
            line += (f", columns {width_px:.2f} px wide as measured on the first image (the pixel size is "
                     "unknown; --sampling gives it)")
        asked = getattr(args, "model", None)
        if isinstance(asked, str) and (asked == "auto" or asked.startswith("auto:")):
            what = " ".join(str(v) for v in (getattr(args, "material", None),
                                              "STEM" if asked == "auto:stem" or getattr(args, "imaging", None) == "stem"
                                              else "HRTEM") if v)
            focal = getattr(args, "focal", None) or 1
            line += (f" (--model {asked}: no bundled model is made for {what} frames of {focal} "
                     f"image{'s' if focal != 1 else ''}; docs/models.md lists them)")
        print(line, file=out)
        return
    line = f"{indent}located by model {model} ({engine})"
    if getattr(args, "model", None) is None and not getattr(args, "classical", False):
        given = [f"--{k} {getattr(args, k)}" for k in ("imaging", "material") if getattr(args, k, None)]
        who = (" and ".join(given) if len(given) == 2 or getattr(args, "imaging", None) == "stem"
               else f"{given[0]} and the data" if given
               else "the data (a file's metadata or a stream's frame meta)")
        verb = "says" if len(given) == 1 and " and " not in who else "say"
        line += (f": the bundled model for the kind of image (and, for HRTEM, the material) as {who} {verb}; "
                 "--classical for the classical locator")
    if lattice:
        line += "; metal or chalcogen from each column's sublattice (--lattice-classes off: the network's own)"
    print(line, file=out)


def report(result, args=None) -> None:
    c = result.counters
    print(f"frames: {c['received']} received, {c['processed']} processed, {c['rejected']} rejected, "
          f"{c['dropped']} dropped, {c['missing']} missing (seq gaps)")
    if args is not None and args.resume is None:
        say_locator(args, result.model, result.engine, indent="columns ", lattice=result.lattice_classes,
                     width_px=result.column_sigma_px)
    if c.get("oom_retries"):
        print(f"  out of GPU memory: {c['oom_retries']} batch(es) run again in halves")
    for k, v in c.items():
        if "/" in k and v:
            print(f"  {k}: {v}")
    if getattr(result, "filled_nonfinite", 0):
        print(f"  {result.filled_nonfinite} frame(s) with NaN or infinite pixels filled with their median "
              "([preprocess] fill_nonfinite)")
    from .trust import tally

    line = tally(result.frames["out_of_range"]) if "out_of_range" in result.frames else None
    if line:
        print(f"trust: {line}")
        if result.trust_note and (result.frames["out_of_range"] > 0).any():
            print(f"  ({result.trust_note})")
        if not result.sampling and (result.frames["out_of_range"] >= 0).any():
            print(f"  ({UNJUDGED})")
    if result.model:
        from etem.train.bundle import missing_trust_note

        note = missing_trust_note(result.model)
        if note:
            print(f"trust: {note}")
    if result.view_jumps:
        print(f"view jumps: {result.view_jumps} frame(s) where the view moved further than the drift "
              "estimate looks (link.max_drift_A); found by the jump search (link.max_jump_A)")
    if len(result.sites):
        from .sites import occupied_sites

        seen = occupied_sites(result.sites)
        hops = int(((result.hops.from_site >= 0) & (result.hops.to_site >= 0)).sum()) if len(result.hops) else 0
        more = len(result.sites) - len(seen)
        print(f"sites: {len(seen)}" + (f" ({more} more place{'s' if more != 1 else ''} never judged occupied: "
                                        "n_occupied 0 in the sites table)" if more else "") + "; mean "
              f"occupancy {seen['occupancy'].mean() if len(seen) else float('nan'):.3f}; flips {len(result.flips)}; "
              f"hops between sites {hops}")
        if getattr(result, "intensity_classes_hint", False):
            print("  (the columns are of one class here: an S2 column losing an atom is no flip, and an atom hopping "
                  "between two such columns no hop; --intensity-classes classes them by sublattice and intensity "
                  "and follows both)")
    changes = result.class_changes
    if changes is not None and len(changes):
        kind = "its height, e.g. 5 -> 4 atoms" if _counts_heights(result.model) else "class, e.g. S2 -> S"
        print(f"class changes: {len(changes)} (a site's column changing {kind}; class_changes in the run file)")
    if result.run_path and Path(result.run_path).exists():  # (opened at the first frame tracked)
        print(f"run file: {result.run_path}")


#: what a trust verdict leaves out where the pixel size is unknown (:func:`etem.tracker.trust.judge`)
UNJUDGED = ("the pixel size unknown: judged by the columns' confidence alone, not by SNR and resolution; "
            "--sampling gives them their units")


def say_trust(rows: list[dict], out, note: str = "") -> None:
    judged = [r for r in rows if r["in_range"] >= 0]
    if not judged:
        return
    unjudged = not any(r.get("sampling") for r in judged)  # (said under the verdict)
    if len(rows) == 1:
        r = rows[0]
        unit = "Å" if r.get("sampling") else "px"  # (measured in px where the pixel size is unknown)
        said = r["trust"].replace(f" ({note})", "") if note else r["trust"]  # (the note on a line of its own)
        print(f"  {said}: SNR {r['snr']:.3g}, resolution {r['resolution_A']:.2f} {unit}, "
              f"confidence {r['confidence']:.2f}", file=out)
        if note and r["out_of_range"] > 0:
            print(f"  ({note})", file=out)
    else:
        from .trust import tally

        print(f"  {tally([r['out_of_range'] for r in rows])}", file=out)
        if note and any(r["out_of_range"] > 0 for r in judged):
            print(f"  ({note})", file=out)
    if unjudged:
        print(f"  ({UNJUDGED})", file=out)


def say_classes(df, say) -> None:
    """The columns found of each class, where the locator knows several (MoS2: Mo, S2, S)."""
    names = df.attrs.get("class_names") or []
    if len(names) < 2 or not len(df):
        return
    counts = df["cls"].value_counts()
    per = f" (all {df['frame'].nunique()} frames)" if df["frame"].nunique() > 1 else ""
    from .frames import class_label

    text = ", ".join(f"{class_label(names, k)} {int(n)}" for k, n in sorted(counts.items()))
    print(f"  classes{per}: {text}", file=say)


def print_site_scores(sites, flips, truth, radius_px: float, changes=None, run_hops=None) -> None:
    """A run's sites, occupied/empty events and class changes against a simulated movie's truth."""
    from .evaluate import score_class_changes, score_hops, score_sites, true_class_changes
    from .sites import occupied_sites

    seen = occupied_sites(sites)
    s = score_sites(seen, flips, truth, radius_px=radius_px)
    more = len(sites) - len(seen)
    print(f"sites: {s['n_found']} found ({more} more place{'s' if more != 1 else ''} never judged occupied), "
          f"{s['n_matched']} of {s['n_true']} true sites matched; occupancy mean |error| {s['occupancy_mae']:.3f}, "
          f"event rate per site mean |error| {s.get('event_rate_mae', float('nan')):.4f} per frame")

    def by_tolerance(head: str, score) -> None:
        """``head``, then recall and precision (``score(tol)``) in the same frame and within 1, 2."""
        line = [head]
        for tol in (0, 1, 2):
            recall, precision = score(tol)
            when = "same frame" if tol == 0 else f"within {tol} frame{'s' if tol > 1 else ''}"
            line.append(f"{when}: recall {recall:.3f} precision "
                        + ("- (none found)" if precision != precision else f"{precision:.3f}"))
        print("; ".join(line))

    def events(tol):
        e = s if tol == 0 else score_sites(seen, flips, truth, radius_px=radius_px, frame_tolerance=tol)
        return e["event_recall"], e["event_precision"]

    def class_changes(tol):
        c = score_class_changes(seen, changes, truth, radius_px=radius_px, frame_tolerance=tol)
        return c["recall"], c["precision"]

    by_tolerance(f"events: {0 if flips is None else len(flips)} flips found, {len(truth.flips())} true", events)
    if len(truth.hops):
        def hops(tol):
            h = score_hops(seen, run_hops, truth, radius_px=radius_px, frame_tolerance=tol)
            return h["recall"], h["precision"]

        n_found = score_hops(seen, run_hops, truth, radius_px=radius_px)["n_found"]
        by_tolerance(f"hops (site to site): {n_found} found, {len(truth.hops)} true", hops)
    n_true = len(true_class_changes(truth))
    if n_true and (changes is None or not len(changes)):
        print(f"class changes: none found, {n_true} true")
    elif n_true or (changes is not None and len(changes)):
        by_tolerance(f"class changes: {0 if changes is None else len(changes)} found, {n_true} true", class_changes)


def _counts_heights(model) -> bool:
    """Whether ``model`` (a bundled name or bundle path; None: the classical locator) counts
    column heights (its card's ``use.task``)."""
    if not model:
        return False
    import json

    from etem.train.bundle import bundle_paths

    try:
        card = json.loads(bundle_paths(model)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (card.get("use") or {}).get("task") == "heights"
