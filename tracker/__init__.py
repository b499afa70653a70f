"""etem.tracker: follow every atomic column through in-situ (HR)TEM and STEM movies.

The public API::

    from etem.tracker import find, track
    columns = find(image, sampling=0.1)      # one image or a stack -> DataFrame
    result = track(movie, sampling=0.1)      # linked columns, sites, occupancy and event maps
"""
from .api import TrackResult, find, track
from .detect import EngineConfig
from .config import BatchConfig, PipelineConfig
from .pipeline import Pipeline

__all__ = ["find", "track", "TrackResult", "Pipeline", "PipelineConfig", "EngineConfig", "BatchConfig"]
