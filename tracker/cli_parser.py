"""The options of `etem` and its subcommands (the commands themselves: etem.tracker.cli)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .engines import ENGINE_KINDS


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


def _number(may_be_0: bool):
    """An argparse type: a finite number above 0 (a rate, a pace, a size), or 0 or more (a time,
    a distance)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((value >= 0 if may_be_0 else value > 0) and value < float("inf")):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if may_be_0 else 'above 0'}, got {text!r}")
        return value
    return parse


_positive = _number(may_be_0=False)
_at_least_0 = _number(may_be_0=True)


def _whole(low: int, high: int | None = None, what: str = ""):
    """An argparse type: a whole number from ``low`` (to ``high``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"{low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}{what}, got {text!r}")
        return value
    return parse


_count = _whole(1)


def _device_arg(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.strip()):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text.strip()


def _common_engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--model", help="bundled model name or model bundle path; 'auto': the bundled HRTEM model for "
                                   "--material, 'auto:stem': the STEM model (default: the bundled model for what the "
                                   "file's metadata or --imaging say the frames are, STEM or, with --material, "
                                   "HRTEM; else the classical locator)")
    m.add_argument("--classical", action="store_true", help="classical Laplacian-of-Gaussian locator, no network")
    g.add_argument("--engine", choices=ENGINE_KINDS, metavar="KIND",
                   help="engine kind: " + ", ".join(ENGINE_KINDS) + " (default: auto, the best available)")
    g.add_argument("--device", type=_device_arg, help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--int8", action="store_true",
                   help="onnxruntime on the CPU: run the network quantized to 8 bits, calibrated on the model's "
                        "calibration images (about 2x as fast on CPUs with VNNI, slower without; built once, cached)")
    g.add_argument("--dark", action="store_true", help="dark columns on a bright background (annular bright-field STEM): "
                   "the classical locator looks for them, a STEM model is shown the frames negated")
    g.add_argument("--imaging", choices=("hrtem", "stem"),
                   help="what the frames are, where their file does not say: the bundled model for it is "
                        "taken unless --model or --classical says otherwise, and the classical locator's trust "
                        "ranges are those measured on that kind of image (default: the strictest over HRTEM and "
                        "STEM)")
    g.add_argument("--sampling", type=_sampling_arg, metavar="Å/px|auto",
                   help="pixel size in Å/px (overrides the data's), or 'auto': from the lattice (needs --material)")
    g.add_argument("--material", metavar="NAME",
                   help="material in view (graphene, mos2, au, au110, au111, srtio3 …): the sampling is "
                        "estimated from its lattice where the data give none, and checked where they do")
    g.add_argument("--lattice-classes", choices=("auto", "on", "off"),
                   help="with a model that classes a honeycomb material's species (MoS2: Mo, S2, S), let each "
                        "column's sublattice decide metal or chalcogen ([locate] lattice_classes; auto, the "
                        "default: where the model does; off: the network's classes, to look for antisites)")
    g.add_argument("--config", type=Path, help="TOML config file (tables per stage; see docs)")


def _common_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, help="run file to write (HDF5); default: none")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--resume", type=Path, metavar="RUN.h5",
                   help="go on with the run in RUN.h5 (its tracker killed or stopped), with the options it "
                        "was started with; a replay skips the frames already tracked")
    p.add_argument("--force", action="store_true",
                   help="with --resume: also go on with a finished run, or one from another version")
    p.add_argument("--average", type=_count, metavar="N",
                   help="detect on the mean of each frame and the N-1 before it, registered onto it: N times "
                        "the dose for low-dose movies, at the price of time resolution (default 1)")
    p.add_argument("--intensity-classes", action="store_true",
                   help="class each column by its sublattice and intensity group, learned on the first frames "
                        "([locate] intensity_classes): in annular dark-field STEM, where the finder knows one "
                        "class, the sites then follow S2 -> S and the like")
    p.add_argument("--groups", type=_whole(1, 8), metavar="N",
                   help="with --intensity-classes: N groups per sublattice (default: 1 to 3, as the data say)")
    p.add_argument("--max-batch", type=_count, help="largest micro-batch [frames] (default: the config's, 4)")
    p.add_argument("--max-wait", type=_at_least_0,
                   help="longest wait for a micro-batch to fill [s] (default: the config's, 0.01)")
    p.add_argument("--detection", choices=("thread", "process"),
                   help="run the detector in a thread of the tracker (default) or in a process of its own, "
                        "so that detection and linking do not share one interpreter")
    p.add_argument("--quiet", action="store_true", help="no status line")


def _dashboard_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live dashboard (off unless asked for; --resume starts the one the run had)")
    g.add_argument("--dashboard", action="store_true",
                   help="serve a live dashboard and Prometheus /metrics at http://127.0.0.1:8765/")
    g.add_argument("--dashboard-port", type=_whole(0, 65535), metavar="PORT",
                   help="dashboard port (implies --dashboard; default 8765, 0: any free port)")
    g.add_argument("--dashboard-host", metavar="ADDRESS",
                   help="address to bind (implies --dashboard; default 127.0.0.1, this PC only; "
                        "any other address needs the token printed in the URL)")
    g.add_argument("--no-dashboard", action="store_true",
                   help="with --resume: do not start the dashboard the run was started with")


def _version() -> str:
    from importlib import metadata

    return metadata.version("etem-tracker")  # (one lookup at start-up, not versions()'s ten)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etem", description="Follow atomic columns through in-situ TEM/STEM movies.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-V", "--version", action="version", version=f"etem-tracker {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate a movie, stream it over ZeroMQ, track it, score against ground truth")
    p.add_argument("-o", "--out", type=Path, default=Path("etem-demo"), help="output folder (default: etem-demo)")
    p.add_argument("--frames", type=_count, default=60)
    p.add_argument("--size", type=_whole(16, what=" px"), default=256, help="frame size in px (square)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("push", "pub"), default="push", help="push: lossless; pub: live camera style")
    p.add_argument("--fps", type=_positive, help="publish at this frame rate (default: as fast as taken)")
    p.add_argument("--movie", choices=("toy", "hrtem", "stem", "mos2", "mos2-stem"), default="hrtem",
                   help="hrtem (default)/stem: Au particle from abTEM column waves; toy: Gaussian columns; "
                        "mos2: MoS2 flake with migrating S vacancies (80 kV HRTEM, three-image focal series); "
                        "mos2-stem: the same in annular dark field, classes from intensities")
    p.add_argument("--model", default="auto",
                   help="bundled model name or bundle path; auto (default): the bundled Au HRTEM model for the "
                        "hrtem movie, the STEM model for the stem movie, the MoS2 focal-series model for the mos2 "
                        "movie, the classical locator for the toy movie")
    p.add_argument("--classical", action="store_true", help="use the classical locator")
    p.add_argument("--average", type=_count, metavar="N",
                   help="detect on the registered mean of each frame and the N-1 before it (default 1)")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("track", help="track a live ZeroMQ stream")
    p.add_argument("--listen", metavar="ADDRESS", help="e.g. tcp://127.0.0.1:5555 (with --resume: the run's own)")
    p.add_argument("--mode", choices=("sub", "pull"), default="sub", help="sub: camera PUB (drops counted); pull: lossless")
    p.add_argument("--bind", action="store_true", help="bind ADDRESS instead of connecting to it")
    p.add_argument("--idle-timeout", type=_positive, help="stop after this many seconds without a frame")
    p.add_argument("--curve", type=Path, metavar="KEYS", help="encrypt and authenticate with CURVE keys (etem keys)")
    _common_engine(p)
    _common_run(p)
    _dashboard_options(p)

    p = sub.add_parser("replay", help="track a recorded file (HDF5, TIFF, MRC, DM3/DM4, EMD, SER, NPY) or folder")
    p.add_argument("file", type=Path)
    p.add_argument("--pace", type=_positive, help="1.0: acquisition pace; 2.0: twice as fast (default: full speed)")
    p.add_argument("--fps", type=_positive,
                   help="frame rate [1/s] of a recording or folder that records none: the frames' times (rates in seconds) and --pace")
    p.add_argument("--focal", type=_count, default=1, help="images per frame (focal series)")
    p.add_argument("--pattern", metavar="GLOB",
                   help="a folder's frame files, below it: e.g. '*.tif', '**/*.dm4' (default: every frame-file "
                        "type, subfolders included)")
    p.add_argument("--dataset", metavar="PATH",
                   help="the dataset of an HDF5 or .npz file to read (e.g. /scan/movie), or the title of the signal of "
                        "an EMD, DM or HyperSpy file (default: its largest stack of frames; the command says which it "
                        "read where there was a choice)")
    _common_engine(p)
    _common_run(p)
    _dashboard_options(p)

    p = sub.add_parser("publish", help="send a recorded or simulated sequence as a camera would")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", type=Path, help="recorded file to send")
    src.add_argument("--simulate", action="store_true", help="send a simulated hopping-nanoparticle movie")
    p.add_argument("--address", default="tcp://127.0.0.1:5555",
                   help="ZeroMQ address to bind (or, with --connect, to connect to); default: tcp://127.0.0.1:5555")
    p.add_argument("--mode", choices=("pub", "push"), default="pub",
                   help="pub (default): as a live camera, frames no subscriber takes are lost; push: lossless, "
                        "for one tracker (etem track --mode pull)")
    p.add_argument("--curve", type=Path, metavar="KEYS", help="encrypt and authenticate with CURVE keys (etem keys)")
    p.add_argument("--connect", action="store_true", help="connect instead of binding")
    p.add_argument("--fps", type=_positive, help="frame rate (default: as fast as possible)")
    p.add_argument("--frames", type=_count, help="with --simulate: number of frames (default 100)")
    p.add_argument("--size", type=_whole(16, what=" px"), help="with --simulate: frame size in px (default 256)")
    p.add_argument("--sampling", type=_positive, help="pixel size in Å/px to send (overrides the file's)")
    p.add_argument("--wait", type=_at_least_0, default=10.0,
                   help="PUB: wait this long for a subscriber [s] (default 10)")
    p.add_argument("--focal", type=_count, default=1, help="images per frame: a focal series of F images is sent "
                                                           "as one frame (default 1)")
    p.add_argument("--dataset", metavar="PATH",
                   help="the dataset of an HDF5 or .npz file to read (e.g. /scan/movie), or the title of the signal of "
                        "an EMD, DM or HyperSpy file (default: its largest stack of frames; the command says which it "
                        "read where there was a choice)")

    p = sub.add_parser("export", help="write a run's tables (Parquet/CSV) and maps (PNG)")
    p.add_argument("run", type=Path)
    p.add_argument("-o", "--out", type=Path, help="output folder (default: beside the run file)")
    p.add_argument("--formats", default="parquet,csv,png,h5,report",
                   help="comma-separated: parquet, csv, png, h5, report")
    p.add_argument("--movie", type=Path, metavar="OUT.gif",
                   help="also write a movie of the tracked frames with their columns (of the recording the run "
                        "names, or --source): .gif, .png (animated PNG), or .mp4 where ffmpeg is installed "
                        "(the [movie] extra); at most 300 frames")
    p.add_argument("--movie-fps", type=float, metavar="FPS",
                   help="frames per second the movie plays at (default: the recording's, real time; 0.5 to 30, "
                        "the caption says how much slower or faster than recorded)")
    p.add_argument("--movie-contrast", choices=("movie", "frame"),
                   help="grey range of the movie: one for all frames (movie, the default: brightness changes stay "
                        "visible) or each frame's own (frame)")
    p.add_argument("--source", type=Path, help="the recording (a file or a folder of frame files) the run tracked "
                                                "(for --movie; default: the one the run names, if it is there)")
    p.add_argument("--dataset", metavar="PATH",
                   help="with --source: the dataset (HDF5, .npz) or signal to read (default: the run's own)")

    p = sub.add_parser("train", help="train a column-segmentation network on a wave set; write a model bundle")
    p.add_argument("waves", type=Path, nargs="+",
                   help="wave-set file(s) from `etem simulate waves`; several are pooled (each set's last quarter "
                        "validates; sets of different materials need --classes column)")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle path (writes .safetensors and .json)")
    # options left as None take the defaults of etem.train.loop.TrainConfig, or with --init the
    # recipe in the starting model's card (etem.train.cli.train_config)
    p.add_argument("--validate", metavar="MOVIE", type=Path, action="append",
                   help="a simulated movie (`etem simulate movie`, frames with their true columns) like the "
                        "experiment: its frames, not the wave sets' validation images, choose the weights kept "
                        "and the threshold. Repeatable; --validation-images frames in all (16), spread over the movies")
    p.add_argument("--select", choices=("f1", "classes"), default="f1",
                   help="what chooses the weights kept: the validation F1 (f1, the default), or that F1 times the "
                        "class accuracy of the columns found (classes: for models whose classes matter as much as "
                        "finding, e.g. --classes height)")
    p.add_argument("--validation-images", type=_count, default=16, metavar="N",
                   help="validation images drawn from the held-out structures (or frames from --validate movies) "
                        "that choose the weights and the threshold (default 16; more give a steadier choice, "
                        "each validation takes longer)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from a trained model's weights (a bundled name or a bundle path) instead of "
                        "random ones, e.g. to fit it to one microscope's optics (--optics). Its card gives the "
                        "network, inputs, classes, pixel size and the rest of its recipe wherever an option is "
                        "not given (--lr: 5e-4); options that would change the network are refused. The "
                        "model's own validation F1 is the score to beat: the bundle written is never worse there")
    p.add_argument("--arch", default=None, choices=("fusionnet", "unet", "msdnet"), help="default fusionnet")
    p.add_argument("--width", type=_count, default=None, help="default 16")
    p.add_argument("--depth", type=_count, default=None, help="default 3")
    p.add_argument("--unshuffle", type=int, default=None, metavar="S",
                   help="fusionnet: fold each SxS block of pixels into channels before the top level and "
                        "back after the head (2: about a third of the work at the same width and depth; "
                        "the bundled CPU models use it)")
    p.add_argument("--steps", type=_count, default=None, help="training steps (default 600; with --minutes: "
                                                         "an upper bound, none unless given)")
    p.add_argument("--minutes", type=float, default=None,
                   help="train for this long, the learning-rate schedule spread over the time (for a "
                        "machine lent for a fixed time)")
    p.add_argument("--batch", type=_count, default=None, help="default 8")
    p.add_argument("--samples-per-wave", type=_count, default=None, metavar="K",
                   help="draw K samples from each wave of a batch (each its own microscope and geometry): "
                        "less work per sample on a GPU; must divide --batch")
    p.add_argument("--vacuum-fraction", type=float, default=None, metavar="P",
                   help="image vacuum (a flat wave, no columns) instead of a drawn wave with probability P, "
                        "so that the network sees noise alone (default 0)")
    p.add_argument("--coarse-fraction", type=float, default=None, metavar="P",
                   help="take a drawn wave's samples with a camera whose pixels are --coarse-factor times "
                        "--sampling and enlarge them onto the training grid, as the tracker enlarges frames "
                        "taken coarser than its model, with probability P (default 0)")
    p.add_argument("--coarse-factor", default=None, metavar="LO,HI",
                   help="range of that camera's pixel size over --sampling (default 1.5,2.5)")
    p.add_argument("--lr", type=_positive, default=None, help="peak learning rate (default 2e-3; 5e-4 with --init)")
    p.add_argument("--size", type=_whole(16, what=" px"), default=None, help="training image side [px] (default 128)")
    p.add_argument("--sampling", type=_positive, default=None, help="training image pixel size [Å/px] (default 0.2)")
    p.add_argument("--label-sigma", type=_positive, default=None, help="label Gaussian width [Å] (default 0.5)")
    p.add_argument("--preset", default=None, help="optics preset (graphene, au, mos2, haadf; default au)")
    p.add_argument("--optics", action="append", default=[], metavar="KEY=LO,HI|FILE.toml",
                   help="replace one of the preset's optics ranges: KEY=LO,HI or KEY=VALUE (fixed), e.g. "
                        "defocus_A=-90,-30 Cs_A=-2e5,-1e5 (keys: the fields of etem.simulate.optics."
                        "OpticsRanges, in Å, e/Å² and mrad); or a TOML file of such keys (top level or an "
                        "[optics] table). Repeatable; later ones win; with --init they add to the model's own")
    p.add_argument("--imaging", choices=("hrtem", "haadf"), default=None, help="default hrtem")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N, or auto (a CUDA GPU where there is one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the images drawn (default 0)")
    p.add_argument("--focal", default=None, metavar="OFFSETS",
                   help="defocus offsets of the input images [Å, comma-separated], e.g. -100,0,100 for a "
                        "three-image focal series (default: one image)")
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                   help="mixed precision (auto: bf16 on CUDA, off on the CPU)")
    p.add_argument("--checkpoint-every", type=_whole(0), default=100, metavar="STEPS",
                   help="write the training state every STEPS steps (0: never)")
    p.add_argument("--resume", action="store_true", help="go on from the output's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at -o and its checkpoint")
    p.add_argument("--classes", choices=("species", "height", "column"), default=None,
                   help="what the network tells apart: the wave set's species classes (the default), column "
                        "heights (atoms per column, 1 .. 10+) for counting atoms from a focal series, or "
                        "nothing: one class 'column' (a column finder for any material)")

    p = sub.add_parser("evaluate", help="score found columns against known ones (ID-recall, ID-precision, RMS); "
                                        "or a model on held-out simulated images (etem evaluate MODEL WAVES)")
    p.add_argument("found", type=Path, help="columns from etem find (CSV/Parquet) or a run file; or a model "
                                            "(bundled name or bundle path; comma-separated for several)")
    p.add_argument("truth", type=Path, help="a simulated movie file (etem simulate movie) or a CSV/Parquet of "
                                            "frame,y,x[,cls]; with a model: a held-out wave set (etem simulate waves)")
    p.add_argument("--radius", type=_positive, default=1.0, help="largest distance of a match [Å] (px without a sampling)")
    p.add_argument("--sampling", type=_positive, help="pixel size [Å/px] (default: the truth's or the run's)")
    p.add_argument("--border", type=_at_least_0, default=0.0, metavar="Å",
                   help="MODEL WAVES form: leave out of the score the columns (true or found) closer than this "
                        "to the image's edge [Å] (default 0: all)")
    p.add_argument("--doses", default="100,300,1000,3000,10000",
                   help="MODEL WAVES form: doses of the sweep [e/Å², comma-separated]")
    p.add_argument("-n", type=_count, default=8, help="MODEL WAVES form: images per dose")
    p.add_argument("--preset", help="MODEL WAVES form: optics preset of the held-out images (default: the "
                                    "first model's training optics, its card's preset and ranges; a preset "
                                    "given alone drops the card's ranges)")
    p.add_argument("--optics", action="append", default=[], metavar="KEY=LO,HI|FILE.toml",
                   help="MODEL WAVES form: optics ranges of the held-out images on top of the preset, as "
                        "`etem train --optics` (default: the first model's card's)")
    p.add_argument("--size", type=_whole(16, what=" px"), default=256, help="MODEL WAVES form: image side [px]")
    p.add_argument("--no-baseline", action="store_true",
                   help="MODEL WAVES form: leave the classical locator out of the table")
    p.add_argument("-o", "--output", type=Path,
                   help="MODEL WAVES form: folder for the per-image table (CSV) and the plots")
    p.add_argument("--seed", type=int, default=0, help="MODEL WAVES form: seed of the optics draws")
    p.add_argument("--bonds", type=float, metavar="Å",
                   help="MODEL WAVES form: also the spread of the bond lengths near this length between found "
                        "columns, per image (1.42 on a pristine graphene sheet: etem simulate waves "
                        "--material graphene-pristine)")
    p.add_argument("--write-card", nargs="?", const="heldout", metavar="KEY",
                   help="MODEL WAVES form: store the table (with the baseline rows) in each model's card "
                        "under KEY (default 'heldout'; e.g. heldout_on_graphene for a second set); with "
                        "--sweep: the cut-offs and the trust ranges the tracker judges frames by")
    p.add_argument("--sweep", action="store_true",
                   help="MODEL WAVES form: instead of the dose table, Wei et al.'s sweeps (dose, pixel size, "
                        "blur, contrast; one at a time from a fixed microscope) with each method's cut-offs "
                        "and a radar plot")
    p.add_argument("--base-dose", type=float, default=1e4,
                   help="MODEL WAVES --sweep: dose of the base condition [e/Å²] (default 10000)")
    p.add_argument("--int8", action="store_true",
                   help="MODEL WAVES form: run the models as the onnxruntime engine's int8 graphs (CPU; "
                        "`etem track --int8`), named 'NAME int8' in the table")

    p = sub.add_parser("view", help="open a run file (or an image) in napari")
    p.add_argument("path", type=Path)

    p = sub.add_parser("keys", help="make CURVE keys for encrypted, authenticated streams")
    p.add_argument("folder", type=Path)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("batch", help="track many recorded files on a Dask cluster; one summary table")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the run files and batch.csv/.parquet")
    p.add_argument("--workers", type=_count, default=2, help="processes of the local Dask cluster")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (instead of a local cluster)")
    _common_engine(p)

    from etem.simulate.cli import add_parser as add_simulate

    add_simulate(sub)

    from .engines.manage import add_parser as add_engine

    add_engine(sub)

    from .cli_info import add_parser as add_info

    add_info(sub)

    p = sub.add_parser("find", help="find the columns in one image or a stack")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, help="CSV, or Parquet by suffix (.parquet); - (or no -o and no --overlay): CSV on standard output")
    p.add_argument("--overlay", type=Path, help="PNG with the columns drawn on the (first) image")
    p.add_argument("--focal", type=_count, default=1)
    p.add_argument("--dataset", metavar="PATH",
                   help="the dataset of an HDF5 or .npz file to read (e.g. /scan/movie), or the title of the signal of "
                        "an EMD, DM or HyperSpy file (default: its largest stack of frames; the command says which it "
                        "read where there was a choice)")
    p.add_argument("--intensity-groups", action="store_true",
                   help="sort the columns by intensity: into the two sublattices of a honeycomb lattice where "
                        "they form one (graphene, hBN, MoS2 along [001]), then into groups by intensity within "
                        "each (in annular dark-field STEM: S, S2 and Se-containing columns of MoS2); adds "
                        "'sublattice' and 'group' (0: faintest) to the table and prints the groups")
    p.add_argument("--groups", type=_whole(1, 8), metavar="N",
                   help="with --intensity-groups: N groups per sublattice (default: 1 to 3, as the data say)")
    _common_engine(p)
    return parser
