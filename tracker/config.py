"""A run's configuration (:class:`PipelineConfig`, one frozen dataclass per stage) and its TOML form
(read only in the CLI layer).

A TOML file has one table per stage, named like the fields of :class:`PipelineConfig`::

    overflow = "drop"
    [engine]
    kind = "classical"
    [batch]
    max_batch = 8
    [link]
    search_range_A = 1.0

Unknown tables or keys are errors that list the valid ones; an error names the key as the file
has it, with its table (``[engine] kind must be one of …``).
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .detect import EngineConfig
from .errors import ConfigError, choice_error
from .link import LinkConfig
from .locate import LocateConfig
from .preprocess import PreprocessConfig
from .sites import SitesConfig



@dataclass(frozen=True)
class BatchConfig:
    """Micro-batching: at most ``max_batch`` frames, waiting at most ``max_wait_s`` after the first."""

    max_batch: int = 4
    max_wait_s: float = 0.01


@dataclass(frozen=True)
class PipelineConfig:
    """Configuration of one run; one frozen dataclass per stage."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    sites: SitesConfig = field(default_factory=SitesConfig)
    queue_frames: int = 64
    overflow: Literal["block", "drop"] = "block"
    #: a live stream's first stop (Ctrl-C, SIGTERM) ends the stream and first tracks the frames
    #: already received (the queue, and what ZeroMQ holds), for at most this long [s]; what is
    #: left then is counted dropped/stopped. A second Ctrl-C stops at once. 0: stop at once.
    finish_on_stop_s: float = 20.0
    default_sampling: float | None = None  # used for frames that carry none
    #: the material in view (graphene, mos2, au, srtio3 …): where frames carry no sampling, it is
    #: estimated from the lattice on the first frame (see etem.tracker.lattice)
    material: str | None = None
    #: estimate the sampling from the lattice even where frames carry one (needs ``material``)
    sampling_from_lattice: bool = False
    #: with a run file, the tables kept in memory (for :func:`~etem.tracker.track`'s result and
    #: dashboards) hold only the latest this many frames, and the result reads its tables back
    #: from the file; None keeps every frame. Without a run file every frame is kept.
    keep_in_memory_frames: int | None = 1000
    #: where the detector runs: ``"thread"`` (a thread of the tracker's process) or ``"process"``
    #: (a child process, :mod:`etem.tracker.detect_process`: detection and the host work each
    #: get an interpreter of their own, for rates where both are busy)
    detection: Literal["thread", "process"] = "thread"
    #: a frame in which no spacing stands above the noise (its measured resolution is infinite,
    #: :mod:`etem.tracker.quality`) and whose SNR is below this fraction of the median of the
    #: run's last 50 frames (once it has 5), or a constant frame, holds no image (beam blanked,
    #: shutter closed): it is rejected (``rejected/blank``) instead of tracked, so that its
    #: missing or false columns do not read as events or new sites; 0 turns it off.
    blank_snr_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.sampling_from_lattice and not self.material:
            raise ConfigError("sampling_from_lattice needs the material in view (material = \"graphene\", …)")
        if self.default_sampling is not None and not (isinstance(self.default_sampling, (int, float))
                                                      and math.isfinite(self.default_sampling)
                                                      and self.default_sampling > 0):
            raise ConfigError(f"default_sampling must be a pixel size > 0 in Å/px (or unset); got {self.default_sampling!r}")
        if self.overflow not in ("block", "drop"):
            raise choice_error("overflow", self.overflow, ("block", "drop"))
        if self.detection not in ("thread", "process"):
            raise choice_error("detection", self.detection, ("thread", "process"))
        if not (isinstance(self.finish_on_stop_s, (int, float)) and math.isfinite(self.finish_on_stop_s)
                and self.finish_on_stop_s >= 0):
            raise ConfigError(f"finish_on_stop_s must be a time >= 0 in s (0: stop at once), got {self.finish_on_stop_s!r}")
        if self.queue_frames < 1:
            raise ConfigError(f"queue_frames must be at least 1, got {self.queue_frames}")
        if self.batch.max_batch < 1:
            raise ConfigError(f"[batch] max_batch must be at least 1, got {self.batch.max_batch}")
        if not 0 <= self.blank_snr_fraction < 1:
            raise ConfigError(f"blank_snr_fraction must be in [0, 1) (0: off), got {self.blank_snr_fraction}")
        if self.keep_in_memory_frames is not None and self.keep_in_memory_frames < 1:
            raise ConfigError(f"keep_in_memory_frames must be at least 1 (or unset: keep all), "
                              f"got {self.keep_in_memory_frames}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(data: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Overlay ``data`` on ``base`` (default config); validates every table and key."""
    base = base or PipelineConfig()
    return _overlay(base, data, "")


def load_config(path: str | Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """Read a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_dict(data, base)


def _overlay(obj, data: Mapping[str, Any], table: str):
    """``obj`` with ``data`` set on it; ``table``: its TOML table (``"engine"``, ``""`` the top)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{table} must be a table ([{table}] and its keys), got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            import difflib

            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.7)
            meant = f" (did you mean {near[0]!r}?)" if near else ""
            place = f"in [{table}]" if table else "at the top level (before any [table])"
            raise ConfigError(f"unknown key {key!r} {place}{meant}; valid keys: {', '.join(sorted(fields))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _overlay(current, value, f"{table}.{key}" if table else key)
        else:
            changes[key] = _check_type(value, hints[key], f"[{table}] {key}" if table else key)
    try:
        return dataclasses.replace(obj, **changes)
    except (TypeError, ValueError) as exc:  # (ConfigError too: a stage's own checks, which name the key alone)
        if not table and isinstance(exc, ConfigError):
            raise
        text = str(exc).removeprefix(f"{table.rsplit('.', 1)[-1]}.") if table else str(exc)  # ("link.memory": once)
        kind = type(exc) if isinstance(exc, ConfigError) else ConfigError
        raise kind(f"[{table}] {text}" if table else text) from None


def _check_type(value: Any, hint, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
