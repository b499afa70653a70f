"""`etem find`: the columns of images or stacks, as a table, an overlay PNG and what the command
says of them (the locator, the classes, the trust ranges, the intensity groups)."""
from __future__ import annotations

import sys
from pathlib import Path

from .cli_outputs import _written
from .cli_say import say_classes, say_locator, say_trust
from .errors import ConfigError


def cmd_find(args) -> int:
    import pandas as pd

    from .cli import _config, _engine_kwargs, _say_dataset

    from .api import find
    from .files import SUFFIXES, open_recording
    from .plots import overlay_png

    cfg = _config(args)
    # the table goes to standard output without -o and --overlay, or with -o -; what is said
    # about it then goes to standard error
    to_stdout = str(args.output) == "-" or not (args.output or args.overlay)
    say = sys.stderr if to_stdout else sys.stdout
    parts = []
    for i, path in enumerate(args.images):
        if SUFFIXES.get(path.suffix.lower()) in ("hdf5", "npz") and path.is_file():  # (read lazily: cheap to open)
            with open_recording(path, focal=args.focal, dataset=args.dataset) as rec:
                _say_dataset(rec, say)
        with _CalibrationSaidHere():  # (said below, once, with the rest)
            df = find(path, focal=args.focal, config=cfg, dataset=args.dataset, **_engine_kwargs(args))
        df.insert(0, "file", str(path))
        parts.append(df)
        print(f"{path}: {len(df)} columns in {df['frame'].nunique() if len(df) else 0} frame(s)", file=say)
        say_locator(args, df.attrs.get("model"), df.attrs.get("engine"), say, lattice=df.attrs.get("lattice_classes", False),
                     width_px=df.attrs.get("column_sigma_px"))
        say_classes(df, say)
        say_trust(df.attrs.get("frames", []), say, note=df.attrs.get("trust_note", ""))
        if len(parts) == 1:  # (once: a user's model whose card has no trust ranges judges no frame)
            from etem.train.bundle import say_missing_trust

            say_missing_trust(df.attrs.get("model"), say)
        for r in df.attrs.get("rejected", []):
            print(f"  frame {r['frame']} skipped: {r['reason']}", file=say)
        if df.attrs.get("cut_short"):
            print(f"  {df.attrs['cut_short']}", file=say)
        est = df.attrs.get("sampling_estimate")
        if est:
            lattice = (f"{est['sampling']:.4f} ± {est['uncertainty']:.4f} Å/px from {est['n_peaks']} peaks of the "
                       f"{est['material']} {est['zone']} lattice")
            if est["used"]:
                print(f"  sampling {lattice}", file=say)
            else:
                print(f"  sampling {est['given']:.4f} Å/px from the data; the lattice says {lattice}", file=say)
            if est.get("calibration_note"):
                note = est["calibration_note"]
                if isinstance(getattr(args, "sampling", None), float):
                    note = note.replace("the data say", "--sampling says").replace("the data's", "--sampling's")
                print(f"  warning: {note}", file=say)
    out = pd.concat(parts, ignore_index=True)
    if not any(p.attrs.get("frames") for p in parts) and any(p.attrs.get("rejected") for p in parts):
        print("etem find: no frame could be located (every one has NaN or infinite pixels); nothing written",
              file=sys.stderr)
        return 1
    names = parts[0].attrs.get("class_names")
    if args.intensity_groups:
        out = _intensity_groups(out, args.groups, say)
    if args.overlay:
        # the first image's first frame that could be located
        located = [r["frame"] for r in parts[0].attrs.get("frames", [])]
        shown = located[0] if located else 0
        first = out[(out["file"] == str(args.images[0])) & (out["frame"] == shown)]
        if args.intensity_groups:  # coloured by sublattice and group
            from .intensity import display_names, group_classes, group_ratios

            cls, names = group_classes(first)
            first = first.assign(cls=cls)
            # MoS2's species beside the group names (A (Mo), B0 (S2) …), by the groups' intensities
            names = display_names(names, getattr(args, "material", None),
                                  group_ratios(_summary_of(first), names))
        title, warning, sampling = _overlay_words(args, parts[0], shown, located)
        with _written(args.overlay):
            overlay_png(open_recording(args.images[0], focal=args.focal, dataset=args.dataset)[shown], first,
                        args.overlay, class_names=names, title=title, warning=warning, sampling=sampling)
        print(f"overlay: {args.overlay}" + (f" (frame {shown})" if shown else ""), file=say)
    if to_stdout:
        out.to_csv(sys.stdout, index=False)
    elif args.output:
        with _written(args.output):
            if args.output.suffix == ".parquet":
                out.to_parquet(args.output, index=False)
            else:
                out.to_csv(args.output, index=False)
        print(f"columns: {args.output}")
    return 0


class _CalibrationSaidHere:
    """Within it, the lattice's warning that the data's pixel size disagrees with it
    (:func:`etem.tracker.lattice.resolve_sampling`) is not logged: ``etem find`` says it itself."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("etem.lattice")
        self.logger.addFilter(self._filter)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeFilter(self._filter)

    @staticmethod
    def _filter(record) -> bool:
        return not getattr(record, "etem_calibration", False)


#: The least separation (Ashman's D) of two intensity groups a run's intensity classes keep apart
#: (:class:`etem.tracker.intensity.IntensityClasses`'s ``separation``; ``find`` keeps them from 1).
RUN_SEPARATION = 2.0


def _summary_of(table):
    """:func:`etem.tracker.intensity.group_columns`'s summary of one frame already grouped: each
    sublattice's groups' mean net intensities (for the species of the overlay's names)."""
    import numpy as np

    from .intensity import net_intensity

    net = net_intensity(table)
    out = []
    for s in sorted({int(v) for v in table["sublattice"] if v >= 0}):
        g = table["group"].to_numpy()[(table["sublattice"].to_numpy() == s)]
        v = net[(table["sublattice"].to_numpy() == s)]
        ks = sorted({int(k) for k in g if k >= 0})
        out.append({"frame": 0, "sublattice": s, "means": [float(np.nanmean(v[g == k])) for k in ks]})
    return out


def _overlay_words(args, df, shown: int, located: list) -> tuple[str, str | None, float | None]:
    """``etem find --overlay``'s title (the file, the frame shown of a stack, the pixel size and
    where it came from, the locator), the trust warning where the shown frame is outside the
    locator's trust ranges, and the pixel size [Å/px] (None: unknown) for the scale bar."""
    path = Path(args.images[0])
    row = next((r for r in df.attrs.get("frames", []) if r["frame"] == shown), {})
    n = len(located)
    first = f"{path.name}" + (f" — frame {shown} of the {n} located (the table holds them all)" if n > 1 else
                              f" — frame {shown}" if shown else "")
    if len(args.images) > 1:
        first += f"; the first of {len(args.images)} files"
    sampling = row.get("sampling")
    est = df.attrs.get("sampling_estimate")
    if not sampling:
        where = "pixel size unknown (--sampling gives it)"
    elif isinstance(getattr(args, "sampling", None), float):
        where = f"{sampling:.4g} Å/px (--sampling)"
    elif est and est.get("used"):
        where = f"{sampling:.4g} Å/px (from the {est['material']} lattice"
        where += f"; the file says {est['data_sampling']:.4g})" if est.get("calibration_note") else ")"
    else:
        where = f"{sampling:.4g} Å/px (from the file"
        where += (f"; the {est['material']} lattice measures {est['sampling']:.4g})"
                  if est and est.get("calibration_note") else ")")
    model, engine = df.attrs.get("model"), df.attrs.get("engine")
    locator = f"model {model}" if model else "the classical locator" if engine else "no locator"
    classes = "; classes: intensity groups" if getattr(args, "intensity_groups", False) else ""
    title = f"{first}\n{where}; located by {locator}{classes}"
    warning = None
    if row.get("out_of_range", 0) > 0:
        why = str(row.get("trust", "")).removeprefix("out of range: ")
        note = df.attrs.get("trust_note") or ""
        why = why.replace(f" ({note})", "") if note else why
        warning = f"outside the locator's trust ranges: {why} — columns may be false"
    return title, warning, float(sampling) if sampling else None


def _closer_than_a_run_takes(summary: dict) -> str:
    """The neighbouring groups of one sublattice's ``summary`` (:func:`group_columns`) closer than
    a run's intensity classes resolve (Ashman's D below :data:`RUN_SEPARATION`), as ``"0 and 1
    (D = 1.5)"``; empty where there are none."""
    import math

    m, sd = summary["means"], summary["sds"]
    pairs = []
    for g in range(len(m) - 1):
        d = math.sqrt(2) * abs(m[g + 1] - m[g]) / (math.hypot(sd[g], sd[g + 1]) or 1e-12)
        if d < RUN_SEPARATION:
            pairs.append(f"{g} and {g + 1} (D = {d:.2g})")
    return ", ".join(pairs)


def _intensity_groups(table, groups: int | None, say):
    """``--intensity-groups``: the table with ``sublattice`` and ``group``, the groups said."""
    from collections import Counter

    from .intensity import group_columns

    if groups is not None and not 1 <= groups <= 8:
        raise ConfigError(f"--groups must be 1 to 8; got {groups}.")
    out, summary = group_columns(table, groups=groups)
    frames = list(dict.fromkeys((s.get("file"), s["frame"]) for s in summary))  # (file, frame), in order
    several = len({f for f, _ in frames}) > 1
    if len(frames) > 3:  # a stack: the first frames, then how many groups the rest had
        rest = Counter(tuple(len(s["counts"]) for s in summary if (s.get("file"), s["frame"]) == k)
                       for k in frames[3:])
        tail = "; ".join(f"{n} with {'/'.join(map(str, k))} group(s) per sublattice" for k, n in rest.most_common())
    for file, frame in frames[:3]:
        rows = [s for s in summary if (s.get("file"), s["frame"]) == (file, frame)]
        here = (out["frame"] == frame) & ((out["file"] == file) if file is not None else True)
        undecided = int((here & (out["sublattice"] < 0)).sum())
        print(f"intensity groups, {f'{file} ' if several else ''}frame {frame}"
              + (f" ({undecided} columns on no sublattice)" if undecided else ""), file=say)
        for s in rows:
            groups_text = ", ".join(f"{n} at {m:.4g} ± {sd:.2g}" for n, m, sd in zip(s["counts"], s["means"], s["sds"]))
            print(f"  sublattice {s['sublattice']} ({s['columns']} columns): {groups_text}", file=say)
            close = _closer_than_a_run_takes(s)
            if close:
                print(f"    (groups {close}: replay/track --intensity-classes takes groups closer than "
                      f"D = {RUN_SEPARATION:g} as one; --groups N fixes the number in both)", file=say)
    if len(frames) > 3:
        print(f"and {len(frames) - 3} more frames ({tail}); every frame's groups are in the table", file=say)
    return out
