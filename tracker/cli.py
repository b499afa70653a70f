"""`etem`: the command line. Reads TOML config and options, calls the Python API, reports."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, EtemError


def _sampling_arg(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel size in Å/px or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the pixel size must be positive, got {text!r}")
    return value


def _common_engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--model", help="bundled model name or model bundle path (default: classical locator); "
                                   "'auto': the bundled HRTEM model for --material, 'auto:stem': the STEM model")
    m.add_argument("--classical", action="store_true", help="classical Laplacian-of-Gaussian locator, no network")
    g.add_argument("--engine", help="engine kind: auto, classical, eager, compiled, onnxruntime, tensorrt")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--dark", action="store_true", help="dark columns on a bright background (ABF, some HRTEM)")
    g.add_argument("--sampling", type=_sampling_arg, metavar="Å/px|auto",
                   help="pixel size in Å/px (overrides the data's), or 'auto': from the lattice (needs --material)")
    g.add_argument("--material", metavar="NAME",
                   help="material in view (graphene, mos2, au, au110, au111, srtio3 …): the sampling is "
                        "estimated from its lattice where the data give none, and checked where they do")
    g.add_argument("--config", type=Path, help="TOML config file (tables per stage; see docs)")


def _common_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, help="run file to write (HDF5); default: none")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--resume", type=Path, metavar="RUN.h5",
                   help="go on with the run in RUN.h5 (its tracker killed or stopped), with the options it "
                        "was started with; a replay skips the frames already tracked")
    p.add_argument("--force", action="store_true",
                   help="with --resume: also go on with a finished run, or one from another version")
    p.add_argument("--max-batch", type=int, help="largest micro-batch (frames)")
    p.add_argument("--max-wait", type=float, help="longest wait for a micro-batch to fill (s)")
    p.add_argument("--quiet", action="store_true", help="no status line")


def _dashboard_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live dashboard (off unless asked for)")
    g.add_argument("--dashboard", action="store_true",
                   help="serve a live dashboard and Prometheus /metrics at http://127.0.0.1:8765/")
    g.add_argument("--dashboard-port", type=int, metavar="PORT",
                   help="dashboard port (implies --dashboard; default 8765, 0: any free port)")
    g.add_argument("--dashboard-host", metavar="ADDRESS",
                   help="address to bind (implies --dashboard; default 127.0.0.1, this PC only; "
                        "any other address needs the token printed in the URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etem", description="Follow atomic columns through in-situ TEM/STEM movies.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate a movie, stream it over ZeroMQ, track it, score against ground truth")
    p.add_argument("--out", type=Path, default=Path("etem-demo"), help="output folder (default: etem-demo)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", type=int, default=256, help="frame size in px (square)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("push", "pub"), default="push", help="push: lossless; pub: live camera style")
    p.add_argument("--fps", type=float, help="publish at this frame rate (default: as fast as taken)")
    p.add_argument("--movie", choices=("toy", "hrtem", "stem", "mos2"), default="hrtem",
                   help="hrtem (default)/stem: Au particle from abTEM column waves; toy: Gaussian columns; "
                        "mos2: MoS2 flake with migrating S vacancies (80 kV HRTEM)")
    p.add_argument("--model", default="auto",
                   help="bundled model name or bundle path; auto (default): the bundled Au HRTEM model for the "
                        "hrtem movie, the classical locator for the others")
    p.add_argument("--classical", action="store_true", help="use the classical locator")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("track", help="track a live ZeroMQ stream")
    p.add_argument("--listen", metavar="ADDRESS", help="e.g. tcp://127.0.0.1:5555 (with --resume: the run's own)")
    p.add_argument("--mode", choices=("sub", "pull"), default="sub", help="sub: camera PUB (drops counted); pull: lossless")
    p.add_argument("--bind", action="store_true", help="bind ADDRESS instead of connecting to it")
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a frame")
    p.add_argument("--curve", type=Path, metavar="KEYS", help="encrypt and authenticate with CURVE keys (etem keys)")
    _common_engine(p)
    _common_run(p)
    _dashboard_options(p)

    p = sub.add_parser("replay", help="track a recorded file (HDF5, TIFF, MRC, DM3/DM4, EMD, SER, NPY) or folder")
    p.add_argument("file", type=Path)
    p.add_argument("--pace", type=float, help="1.0: acquisition pace; 2.0: twice as fast (default: full speed)")
    p.add_argument("--fps", type=float,
                   help="the recording's frame rate, for --pace when the file records none")
    p.add_argument("--focal", type=int, default=1, help="images per frame (focal series)")
    _common_engine(p)
    _common_run(p)
    _dashboard_options(p)

    p = sub.add_parser("publish", help="send a recorded or simulated sequence as a camera would")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", type=Path, help="recorded file to send")
    src.add_argument("--simulate", action="store_true", help="send a simulated hopping-nanoparticle movie")
    p.add_argument("--address", default="tcp://127.0.0.1:5555")
    p.add_argument("--mode", choices=("pub", "push"), default="pub")
    p.add_argument("--curve", type=Path, metavar="KEYS", help="encrypt and authenticate with CURVE keys (etem keys)")
    p.add_argument("--connect", action="store_true", help="connect instead of binding")
    p.add_argument("--fps", type=float, help="frame rate (default: as fast as possible)")
    p.add_argument("--frames", type=int, default=100, help="with --simulate: number of frames")
    p.add_argument("--size", type=int, default=256, help="with --simulate: frame size in px")
    p.add_argument("--sampling", type=float, help="pixel size in Å/px to send (overrides the file's)")
    p.add_argument("--wait", type=float, default=10.0, help="PUB: wait this long for a subscriber (s)")
    p.add_argument("--focal", type=int, default=1)

    p = sub.add_parser("export", help="write a run's tables (Parquet/CSV) and maps (PNG)")
    p.add_argument("run", type=Path)
    p.add_argument("-o", "--out", type=Path, help="output folder (default: beside the run file)")
    p.add_argument("--formats", default="parquet,csv,png,h5,report",
                   help="comma-separated: parquet, csv, png, h5, report")
    p.add_argument("--movie", type=Path, metavar="OUT.gif",
                   help="also write an animated image of the tracked frames (needs --source)")
    p.add_argument("--source", type=Path, help="the recording the run tracked (for --movie)")

    p = sub.add_parser("train", help="train a column-segmentation network on a wave set; write a model bundle")
    p.add_argument("waves", type=Path, help="wave-set file from `etem simulate waves`")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle path (writes .safetensors and .json)")
    p.add_argument("--arch", default="fusionnet", choices=("fusionnet", "unet", "msdnet"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--size", type=int, default=128, help="training image side [px]")
    p.add_argument("--sampling", type=float, default=0.2, help="training image pixel size [Å/px]")
    p.add_argument("--label-sigma", type=float, default=0.5, help="label Gaussian width [Å]")
    p.add_argument("--preset", default="au", help="optics preset (graphene, au, mos2, haadf)")
    p.add_argument("--imaging", choices=("hrtem", "haadf"), default="hrtem")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--focal", default="0", metavar="OFFSETS",
                   help="defocus offsets of the input images [Å, comma-separated], e.g. -100,0,100 for a "
                        "three-image focal series (default: one image)")
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                   help="mixed precision (auto: bf16 on CUDA, off on the CPU)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS",
                   help="write the training state every STEPS steps (0: never)")
    p.add_argument("--resume", action="store_true", help="go on from the output's checkpoint")

    p = sub.add_parser("evaluate", help="score found columns against known ones (ID-recall, ID-precision, RMS); "
                                        "or a model on held-out simulated images (etem evaluate MODEL WAVES)")
    p.add_argument("found", type=Path, help="columns from etem find (CSV/Parquet) or a run file; or a model "
                                            "(bundled name or bundle path; comma-separated for several)")
    p.add_argument("truth", type=Path, help="a simulated movie file (etem simulate movie) or a CSV/Parquet of "
                                            "frame,y,x[,cls]; with a model: a held-out wave set (etem simulate waves)")
    p.add_argument("--radius", type=float, default=1.0, help="largest distance of a match [Å] (px without a sampling)")
    p.add_argument("--sampling", type=float, help="pixel size [Å/px] (default: the truth's or the run's)")
    p.add_argument("--doses", default="100,300,1000,3000,10000",
                   help="MODEL WAVES form: doses of the sweep [e/Å², comma-separated]")
    p.add_argument("-n", type=int, default=8, help="MODEL WAVES form: images per dose")
    p.add_argument("--size", type=int, default=256, help="MODEL WAVES form: image side [px]")
    p.add_argument("--no-baseline", action="store_true",
                   help="MODEL WAVES form: leave the classical locator out of the table")
    p.add_argument("-o", "--output", type=Path,
                   help="MODEL WAVES form: folder for the per-image table (CSV) and the plots")
    p.add_argument("--seed", type=int, default=0, help="MODEL WAVES form: seed of the optics draws")
    p.add_argument("--write-card", action="store_true",
                   help="MODEL WAVES form: store the table (with the baseline rows) in each model's card "
                        "as 'heldout'")

    p = sub.add_parser("view", help="open a run file (or an image) in napari")
    p.add_argument("path", type=Path)

    p = sub.add_parser("keys", help="make CURVE keys for encrypted, authenticated streams")
    p.add_argument("folder", type=Path)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("batch", help="track many recorded files on a Dask cluster; one summary table")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the run files and batch.csv/.parquet")
    p.add_argument("--workers", type=int, default=2, help="processes of the local Dask cluster")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (instead of a local cluster)")
    _common_engine(p)

    from etem.simulate.cli import add_parser as add_simulate

    add_simulate(sub)

    from .engines.manage import add_parser as add_engine

    add_engine(sub)

    p = sub.add_parser("find", help="find the columns in one image or a stack")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, help="CSV, or Parquet by suffix (.parquet)")
    p.add_argument("--overlay", type=Path, help="PNG with the columns drawn on the (first) image")
    p.add_argument("--focal", type=int, default=1)
    _common_engine(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    previous = _terminate_like_ctrl_c()
    try:
        return _COMMANDS[args.command](args)
    except EtemError as exc:
        print(f"etem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        print(f"\netem {args.command}: {how}; what was processed is saved", file=sys.stderr)
        return 128 + int(signal.SIGTERM) if isinstance(exc, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us), taken the way Ctrl-C is: the run file is closed."""


def _terminate_like_ctrl_c():
    """Make SIGTERM raise _Terminated in the main thread, unless someone else handles it already.

    Returns the handler it replaced (to be put back), or None where it installed none.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: closing the run file goes undisturbed
        raise _Terminated()

    return signal.signal(signal.SIGTERM, on_sigterm)


def _config(args):
    from .config import load_config
    from .pipeline import PipelineConfig

    cfg = load_config(args.config) if getattr(args, "config", None) else PipelineConfig()
    batch = cfg.batch
    if getattr(args, "max_batch", None):
        batch = dataclasses.replace(batch, max_batch=args.max_batch)
    if getattr(args, "max_wait", None) is not None:
        batch = dataclasses.replace(batch, max_wait_s=args.max_wait)
    return dataclasses.replace(cfg, batch=batch)


def _engine_kwargs(args) -> dict:
    return dict(model=args.model, classical=args.classical, dark=args.dark, device=args.device,
                engine=args.engine, sampling=args.sampling, material=args.material)


class StatusLine:
    """A live status line on stderr: frames/s, latency, queue depths, message accounting.

    One line that fits the terminal: with a known frame count (replay), a progress counter
    then the status; otherwise the status alone, redrawn in place.
    """

    def __init__(self, *, total: int | None = None, enabled: bool = True, interval_s: float = 0.5) -> None:
        self.enabled = enabled
        self.interval_s = interval_s
        self._last = 0.0
        self._bar = None
        if enabled and total is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="frame", desc="replay", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc} {n_fmt}/{total_fmt} {percentage:3.0f}% [{elapsed}<{remaining}]{postfix}")

    @staticmethod
    def text(s: dict) -> str:
        """The status as one compact line (frames/s; latency p50/p99; queues ingest/host; accounting)."""
        return (f"{s['fps']:.1f} frames/s | latency {s['latency_p50_ms']:.0f}/{s['latency_p99_ms']:.0f} ms "
                f"| queues {s['queue_ingest']}/{s['queue_host']} | in {s['received']} done {s['processed']} "
                f"rejected {s['rejected']} dropped {s['dropped']} missing {s['missing']} | {s['sites']} sites")

    def __call__(self, res, pipe) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        text = self.text(pipe.status())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
        else:
            width = max(20, shutil.get_terminal_size().columns - 1)
            print("\r" + text[:width].ljust(width), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._last:
            print(file=sys.stderr)


def _report(result) -> None:
    c = result.counters
    print(f"frames: {c['received']} received, {c['processed']} processed, {c['rejected']} rejected, "
          f"{c['dropped']} dropped, {c['missing']} missing (seq gaps)")
    if c.get("oom_retries"):
        print(f"  out of GPU memory: {c['oom_retries']} batch(es) run again in halves")
    for k, v in c.items():
        if "/" in k and v:
            print(f"  {k}: {v}")
    judged = result.frames["in_range"] >= 0 if "in_range" in result.frames else []
    if len(judged) and judged.any():
        inside = int((result.frames["in_range"] == 1).sum())
        print(f"trust: {inside} of {int(judged.sum())} frames inside the locator's trust ranges")
    if len(result.sites):
        print(f"sites: {len(result.sites)}; mean occupancy {result.sites['occupancy'].mean():.3f}; "
              f"flips {len(result.flips)}; hops between sites {int(((result.hops.from_site >= 0) & (result.hops.to_site >= 0)).sum()) if len(result.hops) else 0}")
    if result.run_path:
        print(f"run file: {result.run_path}")


def _start_dashboard(args):
    """The dashboard the options ask for, started (its URL printed), or None."""
    if not (args.dashboard or args.dashboard_port is not None or args.dashboard_host is not None):
        return None
    from .dashboard import DEFAULT_PORT, Dashboard, DashboardConfig

    dash = Dashboard(DashboardConfig(host=args.dashboard_host or "127.0.0.1",
                                     port=DEFAULT_PORT if args.dashboard_port is None else args.dashboard_port))
    print(f"dashboard: {dash.start()}  (metrics: {dash.url.split('?')[0]}metrics)", file=sys.stderr, flush=True)
    return dash


def cmd_track(args) -> int:
    if args.listen is None and args.resume is None:
        raise ConfigError("--listen ADDRESS is required (or --resume RUN.h5 to go on with a run)")
    return _run(args, args.listen, total=None, mode=args.mode, bind=args.bind, idle_timeout_s=args.idle_timeout,
                curve_keys=args.curve)


def cmd_replay(args) -> int:
    from .files import open_recording

    total = None
    if args.file.is_file():
        total = len(open_recording(args.file, focal=args.focal, fps=args.fps))
    return _run(args, args.file, total=total, pace=args.pace, fps=args.fps, focal=args.focal)


def _run(args, source, *, total: int | None, **options) -> int:
    """Track ``source`` with the status line (and the dashboard when asked for); report."""
    from .api import track
    from .dashboard import chain

    dash = _start_dashboard(args)
    status = StatusLine(total=total, enabled=not args.quiet)
    if args.resume is not None:  # the run's own options; only the device may change
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v not in (None, False) and k in (
            "config", "model", "classical", "engine", "dark", "sampling", "material", "output", "overwrite",
            "max_batch", "max_wait")]
        if given:
            raise ConfigError(f"--resume goes on with the options the run was started with; leave out {', '.join(given)}")
        run_options = dict(resume=args.resume, force=args.force, device=args.device)
    else:
        run_options = dict(config=_config(args), run_path=args.output, overwrite=args.overwrite, **_engine_kwargs(args))
    try:
        result = track(source, on_frame=chain(status, dash), **options, **run_options)
    finally:
        status.close()
        if dash is not None:
            dash.close()
    _report(result)
    return 0


def cmd_publish(args) -> int:
    from .publish import Publisher, publish_frames

    if args.simulate:
        from etem.simulate.toy import make_movie

        movie = make_movie(n_frames=args.frames, shape=(args.size, args.size))
        frames, sampling = movie.frames, movie.sampling
    else:
        from .files import open_recording

        rec = open_recording(args.file, focal=args.focal)
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
    if args.movie and not args.source:
        raise ConfigError("--movie needs --source, the recording the run tracked")
    out = args.out or args.run.with_suffix("")
    for path in export_run(args.run, out, formats=formats, progress=sys.stderr.isatty()):
        print(path)
    if args.movie:
        from .report import write_movie
        from .runfile import open_run

        with open_run(args.run) as run:
            print(write_movie(run, args.source, args.movie))
    return 0


def _say_trust(rows: list[dict], out) -> None:
    from .trust import describe

    judged = [r for r in rows if r["in_range"] >= 0]
    if not judged:
        return
    if len(rows) == 1:
        r = rows[0]
        print(f"  {describe(r['out_of_range'])} (SNR {r['snr']:.3g}, resolution {r['resolution_A']:.2f} Å, "
              f"confidence {r['confidence']:.2f})", file=out)
        return
    inside = sum(r["in_range"] for r in judged)
    print(f"  {inside} of {len(judged)} frames inside the locator's trust ranges", file=out)


def cmd_find(args) -> int:
    import pandas as pd

    from .api import find
    from .plots import overlay_png

    cfg = _config(args)
    # with the table on standard output, what is said about it goes to standard error
    say = sys.stderr if not (args.output or args.overlay) else sys.stdout
    parts = []
    for i, path in enumerate(args.images):
        df = find(path, focal=args.focal, config=cfg, **_engine_kwargs(args))
        df.insert(0, "file", str(path))
        parts.append(df)
        print(f"{path}: {len(df)} columns in {df['frame'].nunique() if len(df) else 0} frame(s)", file=say)
        _say_trust(df.attrs.get("frames", []), say)
        est = df.attrs.get("sampling_estimate")
        if est:
            lattice = (f"{est['sampling']:.4f} ± {est['uncertainty']:.4f} Å/px from {est['n_peaks']} peaks of the "
                       f"{est['material']} {est['zone']} lattice")
            if est["used"]:
                print(f"  sampling {lattice}", file=say)
            else:
                print(f"  sampling {est['given']:.4f} Å/px from the data; the lattice says {lattice}", file=say)
        if args.overlay and i == 0:
            from .files import open_recording

            rec = open_recording(path, focal=args.focal)
            overlay_png(rec[0], df[df["frame"] == 0], args.overlay, class_names=df.attrs.get("class_names"))
            print(f"overlay: {args.overlay}", file=say)
    out = pd.concat(parts, ignore_index=True)
    if args.output:
        if args.output.suffix == ".parquet":
            out.to_parquet(args.output, index=False)
        else:
            out.to_csv(args.output, index=False)
        print(f"columns: {args.output}")
    elif not args.overlay:
        out.to_csv(sys.stdout, index=False)
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


def _table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV table ({exc})") from None


def cmd_train(args) -> int:
    from etem.train.loop import TrainConfig, train

    arch_args = {"width": args.width, "depth": args.depth} if args.arch != "msdnet" else {"depth": args.depth}
    try:
        focal = tuple(float(v) for v in args.focal.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--focal must be comma-separated defocus offsets in Å; got {args.focal!r}") from None
    if not args.waves.is_file():
        raise ConfigError(f"{args.waves}: no such wave set (make one with `etem simulate waves`)")
    cfg = TrainConfig(arch=args.arch, arch_args=arch_args, size=args.size, sampling_A=args.sampling,
                      label_sigma_A=args.label_sigma, preset=args.preset or None, imaging=args.imaging,
                      batch=args.batch, steps=args.steps, lr=args.lr, seed=args.seed, device=args.device,
                      validate_every=max(1, min(100, args.steps // 4)), focal_offsets_A=focal or (0.0,),
                      amp=args.amp, checkpoint_every=args.checkpoint_every)
    card = train(args.waves, args.output, cfg, progress=sys.stderr.isatty(), resume=args.resume)
    if card is None:  # a torchrun process other than the first
        return 0
    e = card["evaluation"]
    print(f"bundle {args.output}.safetensors/.json: held-out F1 {e['f1']:.3f} (precision {e['precision']:.3f}, "
          f"recall {e['recall']:.3f}, RMS {e['rms_A']:.3f} Å) after {card['training']['steps']} steps "
          f"in {card['training']['seconds']:.0f} s")
    return 0


def _is_model(arg: Path) -> bool:
    """A bundled model's name, a bundle path, ``classical``, or a comma-separated list of them."""
    from etem.train.bundle import bundle_paths, bundled_models

    for name in str(arg).split(","):
        if name in ("classical", "classical-dark") or name in bundled_models():
            continue
        if Path(name).suffix not in ("", ".json", ".safetensors") or not bundle_paths(name)[1].is_file():
            return False
    return True


def _evaluate_model(args) -> int:
    from etem.train.assess import CLASSICAL, assess, format_summary, plot, summary

    methods = str(args.found).split(",")
    if not args.no_baseline:
        methods += [c for c in CLASSICAL if c not in methods]
    try:
        doses = [float(d) for d in args.doses.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--doses must be comma-separated numbers; got {args.doses!r}") from None
    per = assess(methods, args.truth, doses=doses, n=args.n, size=args.size, sampling_A=args.sampling,
                 radius_A=args.radius, seed=args.seed)
    table = summary(per)
    print(f"{args.n} held-out images per dose from {args.truth.name} at {per.attrs['sampling_A']} Å/px "
          f"({per.attrs['imaging']}, optics preset {per.attrs['preset']!r}); match radius {args.radius} Å")
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
    from etem.train.bundle import bundle_paths

    rows = json.loads(table.to_json(orient="records"))
    for m in methods:
        if m in CLASSICAL:
            continue
        card_path = bundle_paths(m)[1]
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["heldout"] = {
            "wave_set": args.truth.name, "images_per_dose": args.n, "size_px": args.size,
            "sampling_A": per.attrs["sampling_A"], "imaging": per.attrs["imaging"],
            "optics_preset": per.attrs["preset"], "match_radius_A": args.radius,
            "date": datetime.date.today().isoformat(), "machine": platform.machine(),
            "table": rows,
        }
        card_path.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"stored the held-out table in {card_path}")


def cmd_evaluate(args) -> int:
    from .evaluate import score_columns

    if _is_model(args.found):
        if not args.truth.is_file():
            raise ConfigError(f"{args.truth}: no such wave set (make one with `etem simulate waves`)")
        return _evaluate_model(args)
    sampling = args.sampling
    if args.found.suffix in (".h5", ".hdf5"):
        from .runfile import open_run

        with open_run(args.found) as run:
            found, sampling = run.columns, sampling or run.sampling
    else:
        found = _table(args.found)
    if args.truth.suffix in (".h5", ".hdf5"):
        from etem.simulate.toy import load_movie

        movie = load_movie(args.truth)
        truth, sampling = movie.truth.positions, sampling or movie.sampling
    else:
        truth = _table(args.truth)
    for name, df in (("found", found), ("truth", truth)):
        missing = {"frame", "y", "x"} - set(df.columns)
        if missing:
            raise ConfigError(f"the {name} table lacks {', '.join(sorted(missing))}")
    radius_px = args.radius / sampling if sampling else args.radius
    s = score_columns(found, truth, radius_px=radius_px, sampling=sampling)
    unit = "Å" if sampling else "px"
    rms = s.get("rms_A", s["rms_px"]) if sampling else s["rms_px"]
    print(f"F1 {s['f1']:.3f}  ID-precision {s['precision']:.3f}  ID-recall {s['recall']:.3f}  "
          f"position RMS {rms:.3f} {unit}  ({s['tp']} matched, {s['fp']} extra, {s['fn']} missed"
          f"{', class accuracy %.3f' % s['cls_accuracy'] if 'cls_accuracy' in s else ''})")
    return 0


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

if __name__ == "__main__":
    raise SystemExit(main())
