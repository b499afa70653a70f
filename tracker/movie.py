"""A movie of a run's frames with its columns drawn on them (GIF, APNG, or MP4 with ffmpeg), from
the recording the run came from: :func:`write_movie` (``etem export RUN --movie``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import diffusion as D
from .frames import class_label
from .plots import class_colours, length_text, scale_bar_length
from .runfile import Run

__all__ = ["write_movie", "check_movie_path", "mp4_encoder", "movie_fps"]


MOVIE_SUFFIXES = (".gif", ".png", ".apng", ".mp4")
_MAX_MOVIE_FPS = 30.0     # players and GIF viewers do not keep up with more (a GIF's frame delay is in 10 ms)
_MIN_MOVIE_FPS = 0.5


def mp4_encoder() -> str | None:
    """An ffmpeg program to write MP4 with: imageio-ffmpeg's (``pip install imageio-ffmpeg``) or one
    on the PATH; None where there is none."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # (not installed, or its binary missing)
        import shutil

        return shutil.which("ffmpeg")


def check_movie_path(path: str | Path) -> None:
    """Refuse a movie file name whose suffix this cannot write (before anything is written):
    ``.gif``, ``.png``/``.apng`` (animated PNG), and ``.mp4`` where an ffmpeg is there."""
    from .errors import ConfigError

    suffix = Path(path).suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise ConfigError(f"--movie {path}: a movie is written as .gif, .png (animated PNG) or .mp4, not "
                          f"{suffix or 'a file without a suffix'}")
    if suffix == ".mp4" and mp4_encoder() is None:
        raise ConfigError(f"--movie {path}: writing MP4 needs ffmpeg (pip install 'etem-tracker[movie]', or ffmpeg on "
                          "the PATH); or write a .gif")


def movie_fps(recorded: float | None, fps: float | None) -> tuple[float, str]:
    """The frame rate to play a movie at, and what the caption says of it: the recording's own
    (real time) unless ``fps`` is given, within 0.5 to 30 frames/s."""
    want = fps if fps else (recorded or 10.0)
    play = float(np.clip(want, _MIN_MOVIE_FPS, _MAX_MOVIE_FPS))
    if not recorded:
        return play, f"plays at {play:g} frames/s (the recording's frame rate is not known)"
    ratio = recorded / play
    if abs(ratio - 1) < 0.02:
        return play, f"real time ({play:g} frames/s)"
    how = f"{ratio:.3g}× slower" if ratio > 1 else f"{1 / ratio:.3g}× faster"  # (recorded 25/s, played 10/s: slower)
    return play, f"plays {how} than recorded ({play:g} of {recorded:.3g} frames/s)"


def write_movie(run: Run, source: str | Path, path: str | Path, *, fps: float | None = None,
                max_frames: int = 300, side: int = 512, dataset: str | None = None,
                contrast: str = "movie", say: Callable[[str], None] | None = None) -> Path:
    """A movie of the recording with the run's columns drawn on each frame, in their classes'
    colours (:func:`etem.tracker.plots.class_colours`, as the overlay draws them); a band above
    the frames gives the frame, the time [s] where the run knows it, and a scale bar where it
    knows its pixel size; a band below, the legend and how the movie plays.

    ``source`` is the recording the run tracked (any file ``etem replay`` reads, or a folder of
    frame files, read as the run read it: its ``pattern``); ``dataset``: the file's dataset or
    signal (default: the run's). The suffix of ``path`` chooses GIF, APNG (``.png``, ``.apng``)
    or MP4 (with ffmpeg: :func:`mp4_encoder`; other suffixes are refused). Frames are scaled to
    ``side`` px on their long side (small ones enlarged by a whole factor, pixel for pixel). It
    plays at the recording's frame rate (``fps`` to choose another; 0.5 to 30). ``contrast``:
    ``"movie"``, one grey range for every frame (0.5–99.5 % of a sample of frames: brightness
    changes stay visible), or ``"frame"``, each frame stretched to its own. At most
    ``max_frames`` frames; ``say`` is told where that cuts the movie.
    """
    from PIL import Image, ImageDraw

    from .errors import ConfigError, FileFormatError
    from .files import open_recording

    check_movie_path(path)
    if contrast not in ("movie", "frame"):
        raise ConfigError(f"contrast {contrast!r}: 'movie' or 'frame'")
    options = run.attrs.get("source_options") or {}

    def recording():
        if Path(source).is_dir():
            from .watch import watch_folder

            return iter(watch_folder(source, pattern=options.get("pattern"), focal=options.get("focal") or 1,
                                     poll_s=0.01, settle_s=0.0, idle_timeout_s=0.0))
        return iter(open_recording(source, dataset=dataset or options.get("dataset")).iter_frames())

    def first_image(f) -> np.ndarray:
        img = np.asarray(f.image, float)
        return img.reshape(-1, *img.shape[-2:])[0]

    frames_table = run.frames
    n_run = len(frames_table)
    recorded = D.frame_rate(frames_table)
    play, pace = movie_fps(recorded, fps)
    times = {}
    if recorded and "t" in frames_table:
        t = frames_table[["frame", "t"]].dropna()
        t0 = float(t["t"].min()) if len(t) else 0.0
        times = {int(k): float(v) - t0 for k, v in zip(t["frame"], t["t"])}
    lo_hi = None
    if contrast == "movie":  # one grey range: percentiles over about 24 frames spread over the movie
        step = max(1, min(n_run or max_frames, max_frames) // 24)
        sample = []
        for i, f in enumerate(recording()):
            if i >= max_frames:
                break
            if i % step == 0:
                img = first_image(f)
                sample.append(img[:: max(1, img.shape[0] // 256), :: max(1, img.shape[1] // 256)].ravel())
        if sample:
            lo_hi = tuple(np.percentile(np.concatenate(sample), (0.5, 99.5)))
    cols = run.columns
    by_frame = {int(k): g for k, g in cols.groupby("frame")}
    names = list(run.class_names)
    colours = [_rgb(c) for c in class_colours(names)]
    classes = sorted(int(k) for k in np.unique(cols["cls"])) if "cls" in cols and len(cols) else [0]
    ring_px = _ring_radius(cols)
    font = _font(14)
    how = [pace, "contrast: one grey range for the whole movie" if contrast == "movie"
           else "contrast: each frame stretched to its own range"]
    legend = header = None
    images = []
    cut = first = last = None
    for f in recording():
        if len(images) >= max_frames:
            cut = int(f.frame)
            break
        img = first_image(f)
        lo, hi = lo_hi if lo_hi is not None else np.percentile(img, (0.5, 99.5))
        g = np.clip((img - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        long = max(g.shape)
        scale = side / long if long > side else float(int(np.ceil(side / long)))
        im = Image.fromarray(g).convert("RGB")
        if scale != 1:
            im = im.resize((round(g.shape[1] * scale), round(g.shape[0] * scale)),
                           Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)
        d = ImageDraw.Draw(im)
        c = by_frame.get(int(f.frame))
        if c is not None:
            r = max(3.0, ring_px * scale)
            width = 2 if r >= 5 else 1
            cls = c["cls"].to_numpy().astype(int) if "cls" in c else np.zeros(len(c), int)
            for y, x, k in zip((c["y"].to_numpy() + 0.5) * scale - 0.5, (c["x"].to_numpy() + 0.5) * scale - 0.5, cls):
                d.ellipse((x - r, y - r, x + r, y + r), outline=colours[k % len(colours)], width=width)
        if legend is None or legend.width != im.width:
            legend = _movie_legend(im.width, [(class_label(names, k), colours[k % len(colours)]) for k in classes],
                                   notes=how)
        header = _movie_header(im.width, f"frame {f.frame}" + (f"   t = {times[int(f.frame)]:.3f} s"
                                                                  if int(f.frame) in times else ""),
                               run.sampling, scale, font)
        framed = Image.new("RGB", (im.width, header.height + im.height + legend.height))
        framed.paste(header, (0, 0))
        framed.paste(im, (0, header.height))
        framed.paste(legend, (0, header.height + im.height))
        images.append(framed)
        first = int(f.frame) if first is None else first
        last = int(f.frame)
    if not images:
        raise FileFormatError(f"{source} holds no frames")
    if cut is not None and say is not None:
        say(f"movie: cut at {max_frames} frames, the most it draws (frames {first} to {last} of the "
            f"run's {n_run}; the movie stops before frame {cut})")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        _write_mp4(images, path, play)
    else:
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / play)), loop=0,
                       format="PNG" if suffix in (".png", ".apng") else "GIF")
    return path


def _ring_radius(cols: pd.DataFrame) -> float:
    """0.3 × the median distance between neighbouring columns of a frame [px] (the overlay's rings)."""
    if not len(cols):
        return 2.0
    from scipy.spatial import cKDTree

    one = cols[cols["frame"] == cols["frame"].iloc[0]][["y", "x"]].to_numpy(float)
    one = one[np.isfinite(one).all(axis=1)]
    if len(one) < 2:
        return 2.0
    dist, _ = cKDTree(one).query(one, k=2)
    return float(np.clip(0.3 * np.median(dist[:, 1]), 1.5, 50.0))


def _font(size: int):
    """matplotlib's DejaVu Sans (it has ×, Å, µ and ², which Pillow's own default font lacks)."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
        return ImageFont.truetype(path, size)
    except (ImportError, OSError, ValueError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # (Pillow before 10.1: one small bitmap font)
        return ImageFont.load_default()


def _movie_header(width: int, stamp: str, sampling: float | None, scale: float, font):
    """A dark band above a frame: the frame (and time) at the left, a scale bar at the right
    where the pixel size [Å/px] is known; nothing of it over the columns."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (width, 26), (22, 22, 28))
    d = ImageDraw.Draw(band)
    d.text((6, 13), stamp, fill=(255, 255, 255), font=font, anchor="lm")
    if sampling:
        field_A = width / scale * float(sampling)
        length_A = scale_bar_length(field_A)  # (as the find overlays' scale bar)
        bar = length_A / float(sampling) * scale
        text = length_text(length_A)
        x1 = width - 8
        x0 = x1 - bar
        d.rectangle((x0, 15, x1, 19), fill=(255, 255, 255))
        d.text((x0 - 6, 13), text, fill=(255, 255, 255), font=font, anchor="rm")
    return band


def _write_mp4(images: list, path: Path, fps: float) -> None:
    """H.264 MP4 (yuv420p, which players and slides take) through ffmpeg; frames padded to even sizes."""
    import subprocess

    from .errors import ConfigError

    exe = mp4_encoder()
    if exe is None:  # (checked before: check_movie_path)
        raise ConfigError(f"{path}: writing MP4 needs ffmpeg (pip install imageio-ffmpeg); or write a .gif")
    w, h = images[0].size
    W, H = w + w % 2, h + h % 2
    encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p"] if "libx264" in encoders else ["-c:v", "mpeg4", "-q:v", "3"]
    tmp = path.with_name(path.name + ".part.mp4")
    cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
           "-r", f"{fps:g}", "-i", "-", "-an", *codec, "-movflags", "+faststart", str(tmp)]
    try:
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                for im in images:
                    buf = np.zeros((H, W, 3), np.uint8)
                    buf[:h, :w] = np.asarray(im.convert("RGB"))
                    proc.stdin.write(buf.tobytes())
                proc.stdin.close()
            except BrokenPipeError:  # (ffmpeg stopped: its message below)
                pass
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise OSError(f"ffmpeg could not write {path}: {err.strip()[-300:]}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _movie_legend(width: int, entries: list[tuple[str, tuple[int, int, int]]], notes: Sequence[str] = ()):
    """A dark band ``width`` px wide with a ring and a name per class, in rows as they fit, then
    ``notes`` (how the movie plays), a line each, wrapped to the width."""
    from PIL import Image, ImageDraw

    font = _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_h, pad, ring = 18, 5, 5
    items = [(name, colour, int(probe.textlength(name, font=font)) + 2 * ring + 14) for name, colour in entries]
    rows: list[list] = [[]]
    used = pad
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = pad
        rows[-1].append(item)
        used += item[2]
    lines: list[str] = []
    for note in notes:  # (wrapped at words)
        line = ""
        for word in note.split(" "):
            if line and probe.textlength(f"{line} {word}", font=font) > width - 2 * pad:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    band = Image.new("RGB", (width, (len(rows) + len(lines)) * row_h + 2 * pad), (22, 22, 28))
    d = ImageDraw.Draw(band)
    for i, row in enumerate(rows):
        x, y = pad, pad + i * row_h + row_h // 2
        for name, colour, w in row:
            d.ellipse((x, y - ring, x + 2 * ring, y + ring), outline=colour, width=2)
            d.text((x + 2 * ring + 4, y), name, fill=(255, 255, 255), font=font, anchor="lm")
            x += w
    for j, line in enumerate(lines):
        y = pad + (len(rows) + j) * row_h + row_h // 2
        d.text((pad, y), line, fill=(190, 190, 200), font=font, anchor="lm")
    return band
