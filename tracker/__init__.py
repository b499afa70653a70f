"""etem.tracker: follow every atomic column through in-situ (HR)TEM and STEM movies.

The public API::

    from etem.tracker import find, track
    columns = find(image, sampling=0.1)      # one image or a stack -> DataFrame
    result = track(movie, sampling=0.1)      # linked columns, sites, occupancy and event maps
    with open_run("run.h5") as run: ...      # a run file (while written, or left by a killed run too)

The names are imported when first used (torch, pandas and trackpy take seconds to load): the
``etem`` command starts at once, and a Ctrl-C while they load ends it as one later does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

__all__ = ["find", "track", "open_run", "TrackResult", "Pipeline", "PipelineConfig", "EngineConfig", "BatchConfig",
           "__version__"]


def _version() -> str:
    """The installed etem-tracker's version (``__version__``, looked up when first asked for)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("etem-tracker")
    except PackageNotFoundError:  # (run from a source tree that was not installed)
        return "unknown"

_WHERE = {"find": ".api", "track": ".api", "TrackResult": ".api", "open_run": ".run", "Pipeline": ".pipeline",
          "PipelineConfig": ".config", "BatchConfig": ".config", "EngineConfig": ".detect"}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals(), {"__version__": _version})


if TYPE_CHECKING:
    from .api import TrackResult, find, track
    from .config import BatchConfig, PipelineConfig
    from .detect import EngineConfig
    from .pipeline import Pipeline
    from .run import open_run
