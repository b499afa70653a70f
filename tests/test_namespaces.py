"""The three packages' top-level names: each resolves to the object its module defines."""
import importlib

import pytest


@pytest.mark.parametrize("package", ["etem.tracker", "etem.simulate", "etem.train"])
def test_every_public_name_resolves_to_its_module_object(package):
    mod = importlib.import_module(package)
    names = [n for n in mod.__all__ if n != "__version__"]
    assert names
    for name in names:
        value = getattr(mod, name)
        assert getattr(importlib.import_module(value.__module__), name) is value, name
        assert name in dir(mod)


@pytest.mark.parametrize("package", ["etem.tracker", "etem.simulate", "etem.train"])
def test_an_unknown_name_is_an_attribute_error(package):
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(importlib.import_module(package), "no_such_name")


def test_the_simulate_docstring_movie_round_trip(tmp_path):
    from etem.simulate import load_movie, make_movie, save_movie

    movie = make_movie(n_frames=3, shape=(64, 64), seed=1)
    save_movie(movie, tmp_path / "movie.h5")
    back = load_movie(tmp_path / "movie.h5")
    assert back.frames.shape == movie.frames.shape == (3, 64, 64)
    assert (back.frames == movie.frames).all()
