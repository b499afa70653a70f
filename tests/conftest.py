"""Shared test set-up: engines built during tests are cached in a temporary folder, not the user's."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _engine_cache_in_tmp(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ETEM_CACHE_DIR", str(tmp_path_factory.mktemp("engine-cache")))
    yield
    mp.undo()
