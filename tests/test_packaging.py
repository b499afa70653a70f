"""What a built wheel holds: every file the installed package reads at run time (bundled models
and their cards, the dashboard's page and script, data tables, the napari manifest), and
nothing else (no tests, benchmarks or stray top-level packages)."""
import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: files in the package folders that are run from a checkout, not from the installed package
NOT_SHIPPED = {"train/make_models.sh"}


def _setuptools_config() -> dict:
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml beside the tests (an installed copy of them)")
    return tomllib.loads(pyproject.read_text())["tool"]["setuptools"]


def _package_folders(cfg: dict) -> dict[str, str]:
    """Each listed package's source folder, relative to the project root, as setuptools maps it
    (a package not in package-dir lies under its nearest mapped parent)."""
    dirs = cfg.get("package-dir", {})
    out = {}
    for pkg in cfg["packages"]:
        parent = max((p for p in dirs if pkg == p or pkg.startswith(p + ".")), key=len)
        out[pkg] = "/".join([dirs[parent], *pkg[len(parent):].split(".")[1:]])
    return out


def test_every_file_in_the_package_folders_goes_into_the_wheel():
    """A file added beside the code (a stylesheet for the dashboard, a model, a table) is in a
    listed package and matches its package-data patterns, or the wheel silently lacks it."""
    cfg = _setuptools_config()
    assert cfg.get("include-package-data") is False  # the wheel holds what package-data lists
    folders = _package_folders(cfg)
    package_of = {folder: pkg for pkg, folder in folders.items()}
    data = cfg.get("package-data", {})
    roots = {folder.split("/")[0] for folder in folders.values()}
    missing = []
    for root in sorted(roots):
        for dirpath, dirnames, filenames in os.walk(ROOT / root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            folder = Path(dirpath).relative_to(ROOT).as_posix()
            for name in filenames:
                rel = f"{folder}/{name}"
                if name.endswith((".pyc", ".pyo")) or rel in NOT_SHIPPED:
                    continue
                pkg = package_of.get(folder)
                if pkg is None:
                    missing.append(f"{rel} (its folder is no package in [tool.setuptools] packages)")
                elif not name.endswith(".py") and not any(fnmatch.fnmatch(name, pat) for pat in data.get(pkg, [])):
                    missing.append(f"{rel} (no pattern in [tool.setuptools.package-data] \"{pkg}\")")
    assert not missing, "not in the wheel:\n" + "\n".join(missing)


def test_the_package_data_the_code_reads_is_listed():
    from importlib import resources

    for pkg, name in [("etem.tracker", "napari.yaml"), ("etem.tracker", "static/dashboard.html"),
                      ("etem.tracker", "static/dashboard.js"), ("etem.tracker", "data/classical_trust.json"),
                      ("etem.simulate", "data/vibration_amplitudes.json")]:
        assert resources.files(pkg).joinpath(name).is_file(), f"{pkg}: {name}"
    from etem.train.bundle import bundled_models

    models = bundled_models()  # the cards in the models folder, each with its weights
    assert {"au-hrtem", "haadf-stem", "mos2-unet"} <= set(models)
    for model in models:
        for ext in (".json", ".safetensors"):
            assert resources.files("etem.tracker").joinpath("models", model + ext).is_file(), model + ext


def test_a_built_wheel_holds_the_package_and_its_data_and_nothing_else(tmp_path):
    cfg = _setuptools_config()
    src = tmp_path / "src"
    src.mkdir()
    keep = ["pyproject.toml", "README.md", "MANIFEST.in"] + sorted({f.split("/")[0] for f in _package_folders(cfg).values()})
    for name in keep:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # built with the setuptools installed here (2 s), so that the test needs no package index
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:  # [build-system] requires
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build system's 77")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("etem_tracker-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
    names = {i.filename for i in infos}
    assert {n.split("/")[0] for n in names} == {"etem", next(n.split("/")[0] for n in names if ".dist-info/" in n)}
    assert not [n for n in names if "/tests/" in n or "/bench/" in n or n.endswith((".pyc", ".sh"))]
    assert "etem/__init__.py" not in names  # etem is a namespace package
    for folder in _package_folders(cfg).values():  # every package and the data beside it
        for path in (src / folder).iterdir():
            rel = f"{folder}/{path.name}"
            if path.is_file() and rel not in NOT_SHIPPED and not path.name.endswith(".pyc"):
                pkg = next(p for p, f in _package_folders(cfg).items() if f == folder)
                assert pkg.replace(".", "/") + "/" + path.name in names, rel
    biggest = max(infos, key=lambda i: i.file_size)
    assert sum(i.compress_size for i in infos) < 40e6, biggest.filename  # the bundled models: about 12 MB
