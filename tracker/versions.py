"""Versions of the software a run used (stored with every run)."""
from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("etem-tracker", "numpy", "scipy", "pandas", "torch", "trackpy", "pyzmq", "h5py", "rosettasciio")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
