"""etem.simulate: in-situ movies and training data with known ground truth.

The public API::

    from etem.simulate import insitu_movie, make_movie, save_movie, load_movie
    movie = insitu_movie(n_frames=60, seed=0)  # HRTEM/STEM movie of a Au particle (abTEM waves)
    movie = make_movie(n_frames=60, seed=0)    # Gaussian columns, no abTEM needed
    save_movie(movie, "movie.h5")              # frames + truth, for etem replay / evaluate
    waves = compute_waves(au_nanoparticle, 8, WaveConfig())   # exit waves of 8 particles (etem train)
    save_waves("waves.h5", waves)

The names are imported when first used (abTEM and ase take seconds to load).
"""
from __future__ import annotations

from etem.tracker.lazy import lazy_names

_WHERE = {
    "make_movie": ".toy", "ToyMovie": ".toy", "MovieTruth": ".toy",
    "save_movie": ".movie_io", "load_movie": ".movie_io",
    "insitu_movie": ".insitu", "mos2_movie": ".insitu_mos2",
    "WaveConfig": ".waves", "ExitWave": ".waves", "compute_waves": ".waves", "save_waves": ".waves",
    "load_waves": ".waves", "iter_waves": ".waves",
    "au_nanoparticle": ".structures", "mos2": ".structures", "columns": ".structures",
    "pristine_graphene": ".graphene",  # (graphene(), not exported: the name is the submodule's)
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
