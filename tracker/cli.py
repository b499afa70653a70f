"""`etem`: the command line. Reads TOML config and options, calls the Python API, reports."""
from __future__ import annotations

import dataclasses
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from .cli_parser import build_parser
from . import interrupt
from .errors import ConfigError, EtemError
from .cli_outputs import _check_writable, _make_output_folders, _what_was_saved, _written  # noqa: F401
from .cli_evaluate import cmd_evaluate
from .cli_info import cmd_info
from .cli_find import RUN_SEPARATION, _overlay_words, cmd_find  # noqa: F401 (re-exported)
from .cli_say import report
from .statusline import StatusLine  # noqa: F401 (re-exported: etem.tracker.cli.StatusLine)


def _joined_negative_lists(argv: Sequence[str]) -> list[str]:
    """``--focal -100,0,100`` as ``--focal=-100,0,100``: argparse takes a value that starts with
    '-' and is no plain number for an option of its own ("expected one argument")."""
    out: list[str] = []
    for tok in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_LIST.fullmatch(tok):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


#: what the ``[simulate]`` extra brings that the base install lacks (Dask comes with rosettasciio)
_SIMULATE_EXTRA = ("ase", "abtem")
_NEGATIVE_LIST = re.compile(r"-[\d.][\d.eE+-]*(,[-+]?[\d.][\d.eE+-]*)+")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_joined_negative_lists(sys.argv[1:] if argv is None else argv))
    if extra:  # said by the command's own parser, with its usage and the options meant
        _unknown_arguments(parser, args.command, extra)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    started = time.time()
    interrupt.reset()
    previous = interrupt.terminate_like_ctrl_c()
    try:
        with interrupt.ctrl_c_held():  # a Ctrl-C waits for the frame in hand
            _make_output_folders(args)
            return _COMMANDS[args.command](args)
    except EtemError as exc:
        print(f"etem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # etem demo, simulate, train … without the [simulate] extra
        missing = (exc.name or "").split(".")[0]
        if missing not in _SIMULATE_EXTRA:
            raise
        toy = "; `etem demo --movie toy` needs nothing more" if args.command == "demo" else ""
        print(f"etem {args.command}: error: this needs {missing}, which is not installed: "
              f"pip install 'etem-tracker[simulate]'{toy}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        interrupt.delivered()
        how = "terminated" if isinstance(exc, interrupt.Terminated) else "interrupted"
        print(f"\netem {args.command}: {how}{_what_was_saved(args, started)}", file=sys.stderr)
        return 128 + int(signal.SIGTERM) if isinstance(exc, interrupt.Terminated) else 130
    except BrokenPipeError:
        # whatever reads the output went away (`etem replay … | head`): the files are written
        # (a run cut short closes its run file on the way out); the rest of the text goes nowhere
        _stdout_to_devnull()
        return 128 + 13  # as a shell reports a process ended by SIGPIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        interrupt.reset()


def _unknown_arguments(parser, command: str, extra: list[str]) -> None:
    """Exit (status 2) with ``etem COMMAND``'s usage, the arguments it does not know and, for
    an option misspelled, the ones it may have meant."""
    import argparse
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    known = [o for o in sub._option_string_actions if o.startswith("--")]
    hints = []
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name.startswith("-"):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else ""))


def _stdout_to_devnull() -> None:
    """Point stdout at the null device, so that the interpreter's last flush cannot fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (embedded, captured)
        pass


def _config(args):
    from .config import load_config
    from .pipeline import PipelineConfig

    cfg = load_config(args.config) if getattr(args, "config", None) else PipelineConfig()
    batch = cfg.batch
    if getattr(args, "max_batch", None):
        batch = dataclasses.replace(batch, max_batch=args.max_batch)
    if getattr(args, "max_wait", None) is not None:
        batch = dataclasses.replace(batch, max_wait_s=args.max_wait)
    pre = cfg.preprocess
    if getattr(args, "average", None) is not None:
        pre = dataclasses.replace(pre, average_frames=args.average)
    engine = cfg.engine
    if getattr(args, "imaging", None):
        engine = dataclasses.replace(engine, imaging=args.imaging)
    if getattr(args, "int8", False):
        if engine.kind not in ("auto", "onnxruntime") or (args.engine or "auto") not in ("auto", "onnxruntime"):
            raise ConfigError("--int8 is the onnxruntime engine's (--engine onnxruntime or auto, on the CPU).")
        engine = dataclasses.replace(engine, options={**engine.options, "int8": True})
    cfg = dataclasses.replace(cfg, batch=batch, preprocess=pre, engine=engine)
    if getattr(args, "detection", None):
        cfg = dataclasses.replace(cfg, detection=args.detection)
    classes, groups = getattr(args, "intensity_classes", False), getattr(args, "groups", None)
    if groups is not None and not (classes or getattr(args, "intensity_groups", False)):
        raise ConfigError("--groups goes with --intensity-classes (replay, track) or --intensity-groups (find).")
    if classes:
        cfg = dataclasses.replace(cfg, locate=dataclasses.replace(cfg.locate, intensity_classes=True,
                                                                  intensity_groups=groups))
    if getattr(args, "lattice_classes", None):
        cfg = dataclasses.replace(cfg, locate=dataclasses.replace(cfg.locate, lattice_classes=args.lattice_classes))
    return cfg


def _engine_kwargs(args) -> dict:
    return dict(model=args.model, classical=args.classical, dark=args.dark, device=args.device,
                engine=args.engine, sampling=args.sampling, material=args.material)


def _start_dashboard(args):
    """The dashboard the options ask for, started (its URL printed), or None. With --resume,
    the one the run was started with (its address, the options given replacing theirs), unless
    --no-dashboard: a page left open on it sees the run go on."""
    asked = args.dashboard or args.dashboard_port is not None or args.dashboard_host is not None
    if args.no_dashboard:
        if asked:
            raise ConfigError("--no-dashboard goes with no other dashboard option; leave out "
                              + ", ".join(o for o, v in (("--dashboard", args.dashboard),
                                                         ("--dashboard-port", args.dashboard_port is not None),
                                                         ("--dashboard-host", args.dashboard_host is not None)) if v))
        return None
    had = _dashboard_of_run(args.resume) if args.resume is not None else None
    if not (asked or had):
        return None
    from .dashboard import DEFAULT_PORT, Dashboard, DashboardConfig

    had = had or {}
    host = args.dashboard_host or had.get("host") or "127.0.0.1"
    port = args.dashboard_port if args.dashboard_port is not None else had.get("port", DEFAULT_PORT)
    dash = Dashboard(DashboardConfig(host=host, port=port))
    try:
        url = dash.start()
    except ConfigError as exc:
        if args.dashboard_port is not None or "port" not in had:  # (a port asked for: its error stands)
            raise
        dash = Dashboard(DashboardConfig(host=host, port=0))
        try:
            url = dash.start()
        except ConfigError:
            raise ConfigError(f"{exc}, or --no-dashboard to resume without the dashboard the run had") from None
        print(f"etem {args.command}: the run's dashboard port {port} is taken; serving it on port {dash.port}",
              file=sys.stderr)
    print(f"dashboard: {url}  (metrics: {dash.metrics_url})", file=sys.stderr, flush=True)
    return dash


def _dashboard_of_run(path) -> dict | None:
    """The dashboard address (``host``, ``port``) a run file says its run was started with;
    None where it says none (started without one, or written before runs kept it) or cannot
    be read (the resume says why)."""
    from .run import open_run

    try:
        with open_run(path) as run:
            had = run.attrs.get("dashboard")
    except (EtemError, OSError):
        return None
    if not (isinstance(had, dict) and isinstance(had.get("host"), str) and isinstance(had.get("port"), int)
            and 0 <= had["port"] <= 65535):
        return None
    return {"host": had["host"], "port": had["port"]}


def cmd_track(args) -> int:
    if args.listen is None and args.resume is None:
        raise ConfigError("--listen ADDRESS is required (or --resume RUN.h5 to go on with a run)")
    if args.listen is not None and "://" not in args.listen:  # (else it would be read as a file name)
        raise ConfigError(f"--listen takes a ZeroMQ address such as tcp://127.0.0.1:5555, got {args.listen!r}"
                          + (f" (tcp://{args.listen}?)" if ":" in args.listen else
                             "; a recorded file is tracked with etem replay FILE"))
    if args.listen is not None and args.resume is None:
        how = "PUB/SUB" if args.mode == "sub" else "PUSH/PULL, lossless"
        print(f"etem track: {'listening on' if args.bind else 'connecting to'} {args.listen} ({how}); "
              + (f"run file {args.output}" if args.output else "no -o: the run is not saved (-o RUN.h5 keeps it)"),
              file=sys.stderr)
    return _run(args, args.listen, total=None, mode=args.mode, bind=args.bind, idle_timeout_s=args.idle_timeout,
                curve_keys=args.curve)


def cmd_replay(args) -> int:
    from .files import open_recording

    total = None
    waiting = _no_frame_files(args.file, args.pattern)
    if waiting:  # (a folder still to be filled is followed for 5 s without a new file)
        print(f"etem replay: {waiting}; waiting for frame files", file=sys.stderr)
    if args.file.is_file():
        with open_recording(args.file, focal=args.focal, fps=args.fps, dataset=args.dataset) as rec:
            total = len(rec)
            _say_dataset(rec, sys.stderr)
    return _run(args, args.file, total=total, pace=args.pace, fps=args.fps, focal=args.focal, pattern=args.pattern,
                dataset=args.dataset)


def _no_frame_files(source, pattern: str | None) -> str | None:
    """For a folder without a frame file to read: what it holds instead (else None)."""
    if not isinstance(source, Path) or not source.is_dir():
        return None
    from .watch import no_frame_files

    return no_frame_files(source, pattern)


def _say_dataset(rec, file) -> None:
    """Which dataset of the file is read, where it holds several to choose from."""
    if rec.meta.get("datasets"):
        read, *others = rec.meta["datasets"]
        print(f"{rec.meta['source']}: dataset {read} read; also in it: {', '.join(others)} (--dataset to choose)",
              file=file)


def _run(args, source, *, total: int | None, **options) -> int:
    """Track ``source`` with the status line (and the dashboard when asked for); report."""
    from .api import track
    from .dashboard import chain

    if args.force and args.resume is None:
        raise ConfigError("--force goes with --resume RUN.h5 (to go on with a finished run); to replace a run file, "
                          "--overwrite")
    if args.resume is not None:  # the run's own options; only the device may change
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v not in (None, False) and k in (
            "config", "model", "classical", "engine", "dark", "imaging", "sampling", "material", "output",
            "overwrite", "max_batch", "max_wait", "average", "detection", "intensity_classes", "groups",
            "lattice_classes", "int8")]
        if given:
            raise ConfigError(f"--resume goes on with the options the run was started with; leave out {', '.join(given)}")
        run_options = dict(resume=args.resume, force=args.force, device=args.device)
    else:
        # (the command reads no columns back: without -o it keeps only the latest frames' in memory)
        run_options = dict(config=_config(args), run_path=args.output, overwrite=args.overwrite, keep_all_columns=False,
                           **_engine_kwargs(args))
    dash = _start_dashboard(args)
    if dash is not None and args.resume is None:  # kept with the run, for --resume to serve it again
        run_options["attrs"] = {"dashboard": {"host": dash.cfg.host, "port": dash.port}}
    status = StatusLine(total=total, enabled=not args.quiet)
    said_here = _NothingTrackedSaidHere()  # (below, with the exit status)
    logging.getLogger("etem.api").addFilter(said_here)
    try:
        result = track(source, on_frame=chain(status, dash), **options, **run_options)
    except EtemError:  # (said by main): where the frames tracked before it are
        _say_saved_before_failure(args.output if args.resume is None else args.resume)
        raise
    finally:
        logging.getLogger("etem.api").removeFilter(said_here)
        status.close()
        if dash is not None:
            dash.close()
    report(result, args)
    c = result.counters
    if not c.get("processed") and args.resume is None:
        # nothing tracked: no run file either (it is opened at the first frame); a wrong camera
        # address or a file of unreadable frames is not a run that went well
        why = (f"{c['rejected']} frame(s) rejected (above)" if c.get("rejected")
               else f"no frame arrived at {source}" if isinstance(source, str) and "://" in source
               else _no_frame_files(source, options.get("pattern")) or "no frame was read")
        print(f"etem: nothing tracked: {why}; no run file written", file=sys.stderr)
        return 1
    return 0


class _NothingTrackedSaidHere(logging.Filter):
    """track()'s warning that nothing was tracked: the command says it itself, as its last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("nothing tracked")


def _say_saved_before_failure(path) -> None:
    """Under a run's error (a file cut short, a corrupt frame): how many frames the run file
    kept, marked failed, where it holds any."""
    if path is None or not Path(path).is_file():
        return
    from .run import open_run

    try:
        with open_run(path) as run:
            n, status = len(run.frames), run.status
    except (EtemError, OSError):
        return
    if n and status == "failed":  # (not a file of an earlier run that this one refused to replace)
        print(f"run file: {path} ({n} frame{'s' if n != 1 else ''} tracked before it, marked failed; "
              "etem export reads it)")


def cmd_publish(args) -> int:
    from .publish import Publisher, publish_frames

    if args.simulate:
        from etem.simulate.toy import make_movie

        movie = make_movie(n_frames=args.frames or 100, shape=(args.size or 256,) * 2)
        frames, sampling = movie.frames, movie.sampling
    else:
        from .files import open_recording

        given = [o for o, v in (("--frames", args.frames), ("--size", args.size)) if v is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --simulate; a file is "
                              "sent whole, as it is")
        rec = open_recording(args.file, focal=args.focal, dataset=args.dataset)
        _say_dataset(rec, sys.stderr)
        frames, sampling = rec.iter_frames(), rec.sampling
    if args.sampling is not None:
        sampling = args.sampling
    with Publisher(args.address, mode=args.mode, bind=not args.connect, curve_keys=args.curve) as pub:
        print(f"publishing on {pub.address} ({args.mode})", file=sys.stderr)
        if args.mode == "pub" and not pub.wait_for_subscribers(1, timeout_s=args.wait):
            print(f"no subscriber within {args.wait} s; sending anyway", file=sys.stderr)
        stats = publish_frames(frames, pub, fps=args.fps, sampling=sampling, progress=sys.stderr.isatty())
    print(f"sent {stats.sent} frames in {stats.seconds:.2f} s ({stats.fps:.1f} frames/s)")
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    from .export import EXPORT_FORMATS

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = set(formats) - set(EXPORT_FORMATS)
    if bad:
        raise ConfigError(f"unknown format(s) {', '.join(sorted(bad))}; valid: {', '.join(EXPORT_FORMATS)}")
    if args.movie and not args.source:  # the recording the run says it tracked, where it is still there
        from .runfile import open_run

        with open_run(args.run) as run:
            stored = run.attrs.get("source")
        if not (isinstance(stored, str) and "://" not in stored and Path(stored).exists()):
            raise ConfigError("--movie needs --source, the recording (file or folder of frame files) the run tracked"
                              + (f" (the run names {stored}, which is not there)" if isinstance(stored, str)
                                 and "://" not in stored else ""))
        args.source = Path(stored)
    if args.dataset and not args.movie:
        raise ConfigError("--dataset goes with --movie and --source (the dataset of the recording to draw)")
    if (args.movie_fps or args.movie_contrast) and not args.movie:
        raise ConfigError("--movie-fps and --movie-contrast go with --movie")
    if args.movie:  # before the other outputs are written
        from .files import SUFFIXES
        from .movie import check_movie_path

        check_movie_path(args.movie)  # (a suffix it can write: .mp4 only where ffmpeg is there)

        if not args.source.exists():
            raise ConfigError(f"--source {args.source}: no such file or folder")
        if args.source.is_file() and args.source.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"--source {args.source}: not a recording etem reads ({', '.join(sorted(SUFFIXES))})")
    out = args.out or args.run.with_suffix("")
    if args.out is None:
        _check_writable(out, folder=True)
    with _written(out):
        written = export_run(args.run, out, formats=formats, progress=sys.stderr.isatty(),
                             say=lambda text: print(text, file=sys.stderr))  # (stdout: the files written)
    for path in written:
        print(path)
    if args.movie:
        from .movie import write_movie
        from .runfile import open_run

        with open_run(args.run) as run, _written(args.movie):
            print(write_movie(run, args.source, args.movie, dataset=args.dataset, fps=args.movie_fps,
                              contrast=args.movie_contrast or "movie",
                              say=lambda text: print(text, file=sys.stderr)))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    status = StatusLine(enabled=not args.quiet)
    try:
        report = run_demo(args.out, n_frames=args.frames, shape=(args.size, args.size), seed=args.seed,
                          mode=args.mode, fps=args.fps, config=_config(args), on_frame=status,
                          movie_kind=args.movie, model=None if args.classical else args.model)
    finally:
        status.close()
    print(report.summary())
    print("wrote:")
    for f in report.files:
        print(f"  {f}")
    return 0


def cmd_train(args) -> int:
    from etem.train.cli import cmd_train as run

    return run(args)


def cmd_view(args) -> int:
    from .napari_reader import napari_get_reader

    reader = napari_get_reader(str(args.path))
    if reader is None:
        raise ConfigError(f"{args.path}: neither a run file nor an image etem reads")
    layers = reader(str(args.path))  # read first: a bad file is an error before a window opens
    try:
        import napari
    except ImportError:
        raise ConfigError("etem view needs napari: pip install 'etem-tracker[napari]'") from None
    viewer = napari.Viewer(title=f"etem: {args.path.name}")
    for data, meta, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **meta)
    napari.run()
    return 0


def cmd_keys(args) -> int:
    from .security import make_keys

    folder = make_keys(args.folder, overwrite=args.overwrite)
    print(f"CURVE keys in {folder}: copy the folder to both machines (keep *.key_secret private); "
          "pass --curve on both sides")
    return 0


def cmd_batch(args) -> int:
    from .batch import replay_many

    options = {k: v for k, v in _engine_kwargs(args).items() if v not in (None, False)}
    if args.config:
        options["config"] = _config(args)
    table = replay_many(args.files, args.out, options=options, scheduler=args.scheduler, n_workers=args.workers)
    table.to_csv(args.out / "batch.csv", index=False)
    table.drop(columns=[c for c in ("detail",) if c in table]).to_parquet(args.out / "batch.parquet", index=False)
    ok = table["status"] == "ok"
    print(f"{int(ok.sum())} of {len(table)} files tracked; table: {args.out / 'batch.csv'}")
    for _, row in table[~ok].iterrows():
        print(f"  failed: {row['file']}: {row['error']}", file=sys.stderr)
    return 0 if ok.all() else 1


def cmd_engine(args) -> int:
    from .engines.manage import cmd_engine as run

    return run(args)


def cmd_simulate(args) -> int:
    from etem.simulate.cli import cmd_simulate as run

    return run(args)


_COMMANDS = {
    "info": cmd_info,
    "simulate": cmd_simulate,
    "engine": cmd_engine,
    "batch": cmd_batch,
    "keys": cmd_keys,
    "view": cmd_view,
    "evaluate": cmd_evaluate,
    "train": cmd_train,
    "demo": cmd_demo,
    "track": cmd_track,
    "replay": cmd_replay,
    "publish": cmd_publish,
    "export": cmd_export,
    "find": cmd_find,
}


def console() -> int:
    """The ``etem`` command: :func:`main`; then a Ctrl-C while Python shuts down ends the
    process at once with main's exit code (:func:`interrupt.quit_on_ctrl_c`)."""
    rc = main()
    interrupt.quit_on_ctrl_c(rc)
    return rc


if __name__ == "__main__":
    raise SystemExit(console())
