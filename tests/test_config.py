"""Run configuration: defaults < TOML file < command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bidsdeid.config import ConfigError, build_config, parse_key_values


def base(**extra):
    return {"input_dir": Path("in"), "output_dir": Path("out"), "analysis_level": "participant"} | extra


def test_defaults_suit_an_openneuro_release():
    cfg = build_config(base())
    assert cfg.deface and cfg.deface_method == "cnn" and cfg.redact == "all" and cfg.n_procs == len(os.sched_getaffinity(0))
    assert cfg.deid.retain_long_dates == "modified" and not cfg.deid.retain_uids


def test_toml_values_apply_and_cli_values_win(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('n_procs = 2\nheuristic = "mine.toml"\n[deid]\nretain_uids = true\n')
    cfg = build_config(base(n_procs=3), config)
    assert cfg.n_procs == 3, "the command line must win over the file"
    assert cfg.heuristic == "mine.toml"
    assert cfg.deid.retain_uids is True


def test_relative_paths_in_toml_are_relative_to_the_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('private_dir = "secrets"\n')
    assert build_config(base(), config).private_dir == tmp_path / "secrets"


def test_cli_deid_pairs_override_the_toml_table(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[deid]\nretain_long_dates = "full"\n')
    cfg = build_config(base(deid=parse_key_values(["retain_long_dates=off"])), config)
    assert cfg.deid.retain_long_dates == "off"


@pytest.mark.parametrize("text, message", [
    ("n_porcs = 2\n", "unknown option"),
    ("redact = 'some'\n", "redact must be one of"),
    ("deface_method = 'pydeface'\n", "deface_method must be one of"),
    ("[deid]\nretain_everything = true\n", "unknown de-identification option"),
    ("n_procs = \n", "invalid TOML"),
])
def test_bad_config_is_a_clear_usage_error(tmp_path, text, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_config(base(), config)


def test_key_value_pairs_need_an_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_key_values(["retain_uids"])
