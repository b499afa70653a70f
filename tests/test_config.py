from pathlib import Path

import pytest

from etem.tracker.config import config_from_dict, load_config
from etem.tracker.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "docs" / "config-example.toml"


def test_example_config_loads_and_matches_defaults():
    from etem.tracker import PipelineConfig

    cfg = load_config(EXAMPLE)
    assert cfg == PipelineConfig()


def test_overrides():
    cfg = config_from_dict({"overflow": "drop", "batch": {"max_batch": 8}, "link": {"search_range_A": 2}})
    assert cfg.overflow == "drop" and cfg.batch.max_batch == 8 and cfg.link.search_range_A == 2.0


@pytest.mark.parametrize(
    "data, words",
    [
        ({"nonsense": 1}, "unknown key 'nonsense'"),
        ({"batch": {"max_bath": 8}}, "valid keys: max_batch, max_wait_s"),
        ({"batch": {"max_batch": "8"}}, "config.batch.max_batch must be an integer"),
        ({"overflow": "sometimes"}, "must be one of 'block', 'drop'"),
        ({"batch": {"max_batch": 0}}, "max_batch must be at least 1"),
        ({"link": {"drift": "yes"}}, "must be true or false"),
        ({"engine": 3}, "config.engine must be a table"),
    ],
)
def test_bad_config_gives_clear_errors(data, words):
    with pytest.raises(ConfigError, match=words):
        config_from_dict(data)


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[batch\nmax_batch = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
