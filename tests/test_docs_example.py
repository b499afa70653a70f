"""The notebook-style example in docs/ runs and makes its picture."""
import os
import runpy
from pathlib import Path

from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "notebook.py"


def test_notebook_example_runs_and_draws(tmp_path, capsys):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "F1 1.000" in out or "F1 0.9" in out
    with Image.open(tmp_path / "notebook.png") as im:
        assert im.size[0] > 600 and len(set(im.convert("L").getdata())) > 50  # a picture, not a blank
