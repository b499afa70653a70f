"""`etem demo`: a simulated movie streamed over ZeroMQ on loopback through the whole pipeline.

Needs nothing but the installed package: it makes a short movie of a nanoparticle whose surface
atoms hop between sites, publishes it on 127.0.0.1 (PUSH, lossless; or PUB at a set frame rate),
tracks it, writes the run's HDF5 file and PNG maps, and scores the result against the movie's
ground truth.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


from .errors import ConfigError
from .api import TrackResult, track
from .evaluate import as_true_classes, score_class_changes, score_columns, score_hops, score_sites, true_class_changes
from .pipeline import PipelineConfig
from .publish import Publisher, publish_frames
from .sites import occupied_sites

log = logging.getLogger("etem.demo")


@dataclass
class DemoReport:
    result: TrackResult
    columns: dict[str, Any]
    sites: dict[str, Any]
    published: int
    seconds: float
    files: list[Path]
    #: found class -> true class, where the classes are the run's own (intensity classes)
    class_mapping: dict[int, int] | None = None

    def summary(self) -> str:
        c, s, r = self.columns, self.sites, self.result
        cnt = r.counters
        lines = [
            f"frames: {self.published} published, {cnt['received']} received, {cnt['processed']} processed, "
            f"{cnt['rejected']} rejected, {cnt['dropped']} dropped, {cnt['missing']} missing "
            f"({self.seconds:.1f} s, {cnt['processed'] / self.seconds:.1f} frames/s)",
            f"columns vs ground truth: F1 {c['f1']:.3f} (precision {c['precision']:.3f}, recall {c['recall']:.3f}), "
            f"position RMS {c['rms_A']:.3f} Å"
            + (f", class accuracy {c['cls_accuracy']:.3f}" if "cls_accuracy" in c else ""),
            f"sites: {s['n_found']} found, {s['n_matched']} of {s['n_true']} true sites matched "
            f"({s['n_never_occupied']} more {'place' if s['n_never_occupied'] == 1 else 'places'} "
            "never judged occupied)",
            f"occupancy: mean |error| {s['occupancy_mae']:.3f}, max {s['occupancy_max_error']:.3f}",
            f"events (occupied/empty flips): recall {s['event_recall']:.3f}, precision {s['event_precision']:.3f}; "
            f"within 2 frames: {s['event_recall_2']:.3f}, {s['event_precision_2']:.3f} "
            f"({len(r.flips)} flips found, {s['n_true_flips']} true)",
        ]
        if "hops" in s:
            h = s["hops"]
            lines.append(f"hops (site to site): {h['n_found']} found, {h['n_true']} true; within 2 frames: "
                         f"recall {h['recall']:.3f}, precision {h['precision']:.3f}")
        from .trust import tally

        trust = tally(r.frames["out_of_range"]) if "out_of_range" in r.frames else None
        lines.append(f"trust: {trust}" if trust else
                     "trust: not judged (the locator has no trust ranges; a model's are measured by "
                     "`etem evaluate MODEL WAVES.h5 --sweep --write-card`)")
        if self.class_mapping:
            lines.append("classes from sublattice and intensity, scored as the true classes most of their columns "
                         "are: " + ", ".join(f"{a} -> {b}" for a, b in sorted(self.class_mapping.items())))
        if "class_changes" in s:
            c = s["class_changes"]
            lines.append(f"class changes (e.g. S2 -> S): {c['n_found']} found, {c['n_true']} true; within 2 frames: "
                         f"recall {c['recall']:.3f}, precision {c['precision']:.3f}")
        return "\n".join(lines)


def run_demo(
    out_dir: str | Path = "etem-demo",
    *,
    n_frames: int = 60,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    mode: Literal["push", "pub"] = "push",
    fps: float | None = None,
    config: PipelineConfig | None = None,
    overwrite: bool = True,
    progress: bool = False,
    on_frame=None,
    movie_kind: Literal["toy", "hrtem", "stem", "mos2", "mos2-stem"] = "hrtem",
    model: str | None = "auto",
) -> DemoReport:
    """Simulate, stream, track, write and score; returns the scores and the files written.

    ``movie_kind``: ``"toy"`` (Gaussian columns), an in-situ Au movie from
    abTEM column waves imaged by ``"hrtem"`` or ``"stem"`` (:mod:`etem.simulate.insitu`), or
    ``"mos2"``: a MoS2 flake whose sulfur vacancies hop, form and heal, in 80 kV HRTEM, a
    three-image focal series per frame (:mod:`etem.simulate.insitu_mos2`), or ``"mos2-stem"``:
    the same in annular dark field at 1,000 e/Å² per frame, tracked with intensity classes
    (``[locate] intensity_classes``: the STEM finder knows one class; the sublattice and the
    intensity tell Mo, S and S2), scored with each class taken as the true class most of its
    columns have. The default is the Au HRTEM movie.

    ``model``: a bundled model's name or a bundle path; ``"auto"``: the bundled Au HRTEM model
    for the ``"hrtem"`` movie, the bundled STEM model for the ``"stem"`` and ``"mos2-stem"`` movies and the bundled
    MoS2 focal-series model for the ``"mos2"`` movie (at the movies' 300 e/Å² per frame each
    finds more columns than the classical locator), the classical locator for the toy movie;
    ``None``: the classical locator.
    """
    from etem.simulate.toy import make_movie, save_movie

    from .export import export_run

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the demo writes a folder of files (--out/-o FOLDER)")
    out.mkdir(parents=True, exist_ok=True)
    if movie_kind == "toy":
        movie = make_movie(n_frames=n_frames, shape=shape, seed=seed)
    elif movie_kind in ("hrtem", "stem"):
        try:
            from etem.simulate.insitu import insitu_movie
        except ImportError as exc:
            raise ConfigError(f"the {movie_kind} demo movie is simulated with abTEM, which is not installed "
                              f"({exc}); pip install 'etem-tracker[simulate]', or run `etem demo --movie toy`") from exc

        movie = insitu_movie(n_frames=n_frames, shape=shape, seed=seed, mode=movie_kind)
    elif movie_kind == "mos2":
        from etem.simulate.insitu_mos2 import mos2_movie

        # a three-image focal series per frame, as the bundled MoS2 model takes
        movie = mos2_movie(n_frames=n_frames, shape=shape, seed=seed, mode="hrtem", focal_offsets_A=(-100, 0, 100))
    elif movie_kind == "mos2-stem":
        from etem.simulate.insitu_mos2 import mos2_movie

        movie = mos2_movie(n_frames=n_frames, shape=shape, seed=seed, mode="stem", dose_per_frame=1000.0)
    else:
        raise ConfigError(f"movie_kind must be 'toy', 'hrtem', 'stem', 'mos2' or 'mos2-stem'; got {movie_kind!r}")
    save_movie(movie, out / "movie.h5")
    truth = movie.truth
    if model == "auto":
        from .api import resolve_model

        model = {"hrtem": lambda: resolve_model("auto", "au"),
                 "stem": lambda: resolve_model("auto:stem", "au"),
                 "mos2-stem": lambda: resolve_model("auto:stem", "mos2"),
                 "mos2": lambda: resolve_model("auto", "mos2", focal=3)}.get(movie_kind, lambda: None)()

    pub = Publisher("tcp://127.0.0.1:0", mode=mode)
    sent: dict[str, Any] = {}

    def sender() -> None:
        if mode == "pub" and not pub.wait_for_subscribers(1, timeout_s=10):
            log.error("no subscriber joined within 10 s")
        sent["stats"] = publish_frames(movie.frames, pub, fps=fps, sampling=movie.sampling, times=movie.times,
                                        progress=False)

    t0 = time.perf_counter()
    thread = threading.Thread(target=sender, name="etem-demo-publisher", daemon=True)
    thread.start()
    run_path = out / "run.h5"
    # the run knows what its frames are (the classical locator is judged by that kind's ranges)
    imaging = {"hrtem": "hrtem", "mos2": "hrtem", "stem": "stem", "mos2-stem": "stem"}.get(movie_kind)
    config = config or PipelineConfig()
    if imaging and config.engine.imaging is None:
        config = dataclasses.replace(config, engine=dataclasses.replace(config.engine, imaging=imaging))
    if movie_kind == "mos2-stem" and model is not None and not config.locate.intensity_classes:
        config = dataclasses.replace(config, locate=dataclasses.replace(config.locate, intensity_classes=True))
    result = track(
        pub.address,
        mode="sub" if mode == "pub" else "pull",
        config=config,
        run_path=run_path,
        overwrite=overwrite,
        idle_timeout_s=30.0,
        on_frame=on_frame,
        model=model,
        attrs={"demo": {"seed": seed, "n_frames": n_frames, "shape": list(shape), "mode": mode, "movie": movie_kind,
                        "model": model or "classical"}},
    )
    seconds = time.perf_counter() - t0
    thread.join(timeout=5)
    pub.close()

    radius = 1.0 / movie.sampling  # 1 Å
    columns, changes, to_true = result.columns, result.class_changes, None
    if config.locate.intensity_classes:  # classes of sublattices and groups: as the truth's most of their columns are
        columns, changes, to_true = as_true_classes(columns, changes, truth.positions, radius_px=radius)
    cols = score_columns(columns, truth.positions, radius_px=radius, sampling=movie.sampling)
    if truth.positions["cls"].nunique() < 2:  # (one true class: no class accuracy to speak of)
        cols.pop("cls_accuracy", None)
    # sites never judged occupied are where the detector saw only what the occupancy model took
    # for false detections: left out of the scores, as they are out of the maps and the report
    seen = occupied_sites(result.sites)
    sites = score_sites(seen, result.flips, truth, radius_px=radius)
    near = score_sites(seen, result.flips, truth, radius_px=radius, frame_tolerance=2)
    sites["n_never_occupied"] = len(result.sites) - len(seen)
    if len(true_class_changes(truth)):
        sites["class_changes"] = score_class_changes(seen, changes, truth, radius_px=radius,
                                                     frame_tolerance=2)
    sites.update(event_recall_2=near["event_recall"], event_precision_2=near["event_precision"],
                 n_true_flips=len(truth.flips()))
    if len(truth.hops):
        sites["hops"] = score_hops(seen, result.hops, truth, radius_px=radius, frame_tolerance=2)
    files = [out / "movie.h5", run_path] + export_run(run_path, out, formats=("csv", "png"), progress=progress)
    return DemoReport(result, cols, sites, sent["stats"].sent if "stats" in sent else 0, seconds, files,
                      class_mapping=to_true)
