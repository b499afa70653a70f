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


def test_readmes_run_file_snippet_runs(tmp_path, monkeypatch):
    """README's Python lines that read a run file run as written."""
    import re

    from etem.simulate.toy import make_movie
    from etem.tracker import track

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "open_run" in b]
    m = make_movie(n_frames=8, shape=(96, 96), particle_radius_A=6.0, seed=2)
    track(m.frames, sampling=m.sampling, run_path=tmp_path / "run.h5")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["summary"]["frames"] == 8 and "site_kinetics" in scope["tables"]


def test_readmes_config_snippet_runs():
    """README's Python lines that give a config as a dict run as written."""
    import re

    from etem.simulate.toy import make_movie

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "config_from_dict" in b]
    m = make_movie(n_frames=4, shape=(64, 64), particle_radius_A=5.0, seed=2)
    scope: dict = {"movie": m.frames, "track": __import__("etem.tracker", fromlist=["track"]).track}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["res"].counters["processed"] == 4
    assert scope["cfg"].link.search_range_A == 1.5
