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


# --- the documents themselves: links, named files, example configs, command options -------------

import argparse
import re

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md",
        *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "guides").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_in_the_docs_resolves():
    """Links and images in the docs point at files that exist, and an #anchor at a heading."""
    bad = []
    for doc in DOCS:
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path) if path else doc
            if not dest.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                if anchor not in heads:
                    bad.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_files_the_docs_name_exist():
    """`bench/...`, `tests/...`, `docs/...` and the like named in the docs are in the repository."""
    bad = []
    for doc in DOCS:
        for path in re.findall(r"`((?:bench|tests|docs|train|deploy|tracker|simulate)/[\w./-]+\.\w+)`",
                               doc.read_text()):
            if not (ROOT / path).exists():
                bad.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not bad, "\n".join(bad)


def test_example_configs_load():
    """The config files the docs hand out are read without an error."""
    from etem.simulate.optics import optics_overrides
    from etem.tracker.config import load_config

    load_config(ROOT / "docs" / "config-example.toml")
    load_config(ROOT / "deploy" / "track.toml")
    ranges = optics_overrides([str(ROOT / "docs" / "microscope-example.toml")])
    assert ranges["defocus_A"] == [-90, -30]


def test_config_example_shows_every_key_and_its_default():
    """docs/config-example.toml says "every key is optional (defaults shown)": each value set
    there is the default, each key left commented out is accepted where it stands, and every
    key the config reader knows is in the file."""
    import dataclasses
    import tomllib

    from etem.tracker.config import PipelineConfig, config_from_dict

    path = ROOT / "docs" / "config-example.toml"
    data = tomllib.loads(path.read_text())
    base = PipelineConfig()
    differ, named = [], {None: set(data)}
    for table, values in data.items():
        if isinstance(values, dict):
            named[table] = set(values)
            for key, value in values.items():
                default = getattr(getattr(base, table), key)
                if default != value and not (isinstance(default, tuple) and list(default) == value):
                    differ.append(f"[{table}] {key} = {value!r}, default {default!r}")
        elif getattr(base, table) != values:
            differ.append(f"{table} = {values!r}, default {getattr(base, table)!r}")
    assert not differ, "\n".join(differ)

    table = None
    for line in path.read_text().splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            table = m.group(1)
        elif m := re.match(r"#\s*(\w+\s*=\s*[^#]+)", line):
            kv = tomllib.loads(m.group(1))
            config_from_dict({table: kv} if table else kv)  # a key it does not know raises
            named.setdefault(table, set()).update(kv)

    missing = []
    for f in dataclasses.fields(base):
        sub = getattr(base, f.name)
        if dataclasses.is_dataclass(sub):
            missing += [f"[{f.name}] {g.name}" for g in dataclasses.fields(sub) if g.name not in named.get(f.name, ())]
        elif f.name not in named[None]:
            missing.append(f.name)
    assert not missing, "keys not in docs/config-example.toml: " + ", ".join(missing)


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + name] = set(sub._option_string_actions)
                out.update(_commands(sub, prefix + name + " "))
    return out


def test_options_of_documented_commands_exist():
    """Every --option of an `etem COMMAND ...` line in the docs (code blocks and `...` spans)
    is an option of that command."""
    from etem.tracker.cli_parser import build_parser

    commands = _commands(build_parser())
    bad = []
    for doc in [*DOCS, ROOT / "deploy" / "etem-track.service"]:
        text = doc.read_text()
        lines = re.findall(r"`(etem [^`]+)`", text)
        for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):
            lines += block.splitlines()
        lines += [ln for ln in text.splitlines() if ln.startswith("    ")]   # indented code
        for line in lines:
            for m in re.finditer(r"\betem (?:-v )?([a-z]+)(?: ([a-z]+))?([^#`;&|]*)", line):
                name = f"{m.group(1)} {m.group(2)}" if f"{m.group(1)} {m.group(2)}" in commands else m.group(1)
                if name not in commands:
                    continue   # prose ("etem tracker"), not a command
                for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", (m.group(2) or "") + m.group(3)):
                    if option not in commands[name]:
                        bad.append(f"{doc.relative_to(ROOT)}: etem {name} {option}")
    assert not bad, "\n".join(sorted(set(bad)))
