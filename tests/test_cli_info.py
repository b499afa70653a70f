"""`etem info` and `etem --version`: what this installation can do, said as it is."""
import importlib.util
import json
from importlib import metadata

import pytest
import torch

from etem.tracker.cli import main
from etem.tracker.engines import available_kinds
from etem.train.bundle import bundled_models


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"etem-tracker {metadata.version('etem-tracker')}"


def test_info_says_what_is_installed_and_what_runs_here(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["etem-tracker"] == metadata.version("etem-tracker")
    assert info["torch"]["version"] == torch.__version__ and info["torch"]["cuda"] == torch.cuda.is_available()
    assert len(info["torch"]["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert info["engines"]["cpu"] == available_kinds("cpu")
    assert ("cuda" in info["engines"]) == torch.cuda.is_available()
    for name, extra in info["extras"].items():  # (each extra: whether all its modules are there)
        assert extra["installed"] == (not extra["missing"])
        for module in extra["missing"]:
            assert importlib.util.find_spec(module) is None, (name, module)
    models = {m["name"]: m for m in info["models"]}
    assert set(models) == set(bundled_models())
    card = json.loads(bundled_models()["mos2-unet"].read_text())
    assert models["mos2-unet"]["classes"] == card["class_names"] and models["mos2-unet"]["inputs"] == 3
    assert models["haadf-stem"]["imaging"] == "stem" and models["haadf-stem"]["weights_MB"] > 0

    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"torch {torch.__version__}" in text and "bundled models:" in text
    assert all(f"  {name} " in text for name in models)
    for name, extra in info["extras"].items():
        assert (f"[{name}] not installed (pip install 'etem-tracker[{name}]')" in text) == (not extra["installed"])


def test_info_with_the_engine_cache_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ETEM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["info"]) == 0
    assert f"engine cache: {tmp_path / 'cache'} (empty)" in capsys.readouterr().out
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "x.onnx").write_bytes(b"0" * 2_000_000)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine_cache"] == {"folder": str(tmp_path / "cache"), "exists": True,
                                                                   "MB": 2.0}
