from pathlib import Path

import pytest

from etem.tracker.config import config_from_dict, load_config
from etem.tracker.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "docs" / "config-example.toml"


def test_example_config_loads_and_matches_defaults():
    from etem.tracker import PipelineConfig

    cfg = load_config(EXAMPLE)
    assert cfg == PipelineConfig()


def _example_keys(text: str, *, commented: bool) -> dict[str, list[str]]:
    """The keys the example sets (or, ``commented``, also shows in a ``# key = value`` line), by table."""
    import re

    keys: dict[str, list[str]] = {"": []}
    table = ""
    for line in text.splitlines():
        if m := re.match(r"\[(\w+)\]\s*$", line):
            table = m.group(1)
            keys[table] = []
        elif m := re.match(r"(# )?(\w+) = ", line):
            if commented or not m.group(1):
                keys[table].append(m.group(2))
    return keys


def test_example_config_shows_every_key():
    """Every key of every table is in the example, set to its default or shown in a comment."""
    import dataclasses

    from etem.tracker import PipelineConfig

    shown = _example_keys(EXAMPLE.read_text(encoding="utf-8"), commented=True)
    cfg = PipelineConfig()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            assert sorted(shown[f.name]) == sorted(g.name for g in dataclasses.fields(value)), f.name
        else:
            assert f.name in shown[""], f.name


def test_example_config_commented_keys_can_be_uncommented(tmp_path):
    """A ``# key = value`` line of the example is valid where it stands once uncommented (no key twice)."""
    import re

    text = EXAMPLE.read_text(encoding="utf-8")
    for table, names in _example_keys(text, commented=True).items():
        assert len(names) == len(set(names)), (table, names)
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(re.sub(r"(?m)^# (\w+ = )", r"\1", text), encoding="utf-8")
    load_config(uncommented)


def test_overrides():
    cfg = config_from_dict({"overflow": "drop", "batch": {"max_batch": 8}, "link": {"search_range_A": 2}})
    assert cfg.overflow == "drop" and cfg.batch.max_batch == 8 and cfg.link.search_range_A == 2.0


@pytest.mark.parametrize(
    "data, words",
    [
        ({"nonsense": 1}, "unknown key 'nonsense'"),
        ({"batch": {"max_bath": 8}}, "valid keys: max_batch, max_wait_s"),
        ({"batch": {"max_bath": 8}}, r"unknown key 'max_bath' in \[batch\] \(did you mean 'max_batch'\?\)"),
        ({"default_sampling": -0.2}, "default_sampling must be a pixel size > 0"),
        ({"default_sampling": 0}, "default_sampling must be a pixel size > 0"),
        ({"batch": {"max_batch": "8"}}, r"^\[batch\] max_batch must be an integer"),
        ({"overflow": "sometimes"}, "must be one of 'block', 'drop'"),
        ({"batch": {"max_batch": 0}}, r"^\[batch\] max_batch must be at least 1"),
        ({"link": {"drift": "yes"}}, r"^\[link\] drift must be true or false"),
        ({"engine": 3}, r"^engine must be a table \(\[engine\] and its keys\)"),
        ({"engine": {"kind": "gpu"}}, r"^\[engine\] kind must be one of 'auto', 'classical'"),  # (was: at the run)
        ({"link": {"memory": -1}}, r"^\[link\] memory must be an integer >= 0"),  # (the stage's check said link.)
        ({"locate": {"threshold": 2.0}}, r"^\[locate\] threshold must be a probability"),
        ({"nonsense": 1}, r"^unknown key 'nonsense' at the top level \(before any \[table\]\)"),
    ],
)
def test_bad_config_gives_clear_errors(data, words):
    with pytest.raises(ConfigError, match=words):
        config_from_dict(data)


@pytest.mark.parametrize(
    "text, said",
    [
        ('[engine]\nkind = "gpu"\n', "[engine] kind must be one of 'auto', 'classical', 'compiled', 'eager', "
                                      "'onnxruntime', 'tensorrt'; got 'gpu'."),
        ("[link]\nsearch_range_A = -1\n", "[link] search_range_A must be > 0 Å; got -1.0"),
        ('[sites]\noccupancy = "kalman"\n', "[sites] occupancy must be one of 'hmm', 'gaps'; got 'kalman'"),
        ('[preprocess]\nsigma_A = "wide"\n', "[preprocess] sigma_A must be a number, got 'wide'"),
        ("[batch]\nmax_batch = 0\n", "[batch] max_batch must be at least 1, got 0"),
        ('overflow = "sometimes"\n[batch]\nmax_batch = 2\n', "overflow must be one of 'block', 'drop'; got 'sometimes'"),
    ],
)
def test_a_bad_value_in_a_config_file_is_named_by_its_table_and_key(tmp_path, text, said):
    """A bad value in a TOML file is named as the file has it, ``[table] key`` (before: by the key
    alone, as ``kind must be one of …``, or as ``config.link: link.search_range_A …``)."""
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == said


def test_the_cli_says_a_bad_config_value_with_its_table_in_one_line(tmp_path, capsys):
    import numpy as np

    from etem.simulate.toy import make_movie
    from etem.tracker.cli import main

    np.save(tmp_path / "m.npy", make_movie(n_frames=2, shape=(64, 64), seed=1).frames)
    (tmp_path / "bad.toml").write_text('[engine]\nkind = "gpu"\n', encoding="utf-8")
    assert main(["find", str(tmp_path / "m.npy"), "--config", str(tmp_path / "bad.toml")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "etem find: error: [engine] kind must be one of 'auto', 'classical', 'compiled', 'eager', 'onnxruntime', "
        "'tensorrt'; got 'gpu'."]


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[batch\nmax_batch = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_default_sampling_is_the_pixel_size_of_frames_that_give_none(tmp_path, caplog):
    import logging

    import numpy as np

    from etem.simulate.toy import make_movie
    from etem.tracker import find, track

    m = make_movie(n_frames=3, shape=(96, 96), particle_radius_A=6.0, seed=1)
    np.save(tmp_path / "m.npy", m.frames)  # (a stack that says no pixel size)
    cfg = config_from_dict({"default_sampling": 0.2})
    found = find(tmp_path / "m.npy", config=cfg)
    np.testing.assert_allclose(found["x_A"], found["x"] * 0.2)  # (in Å, and no width measured for a guess)
    assert found.attrs["column_sigma_px"] is None
    plain = find(tmp_path / "m.npy")
    assert "x_A" not in plain and plain.attrs["column_sigma_px"] is not None
    with caplog.at_level(logging.WARNING):
        res = track(tmp_path / "m.npy", config=cfg)
    assert res.sampling == 0.2 and "gives no pixel size" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        track(tmp_path / "m.npy")
    assert "gives no pixel size" in caplog.text
