import pytest

from srum.config import ConfigError, TrainConfig, load_config
from srum.pretrain import JanusPretrainConfig as PretrainConfig


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.01\nshape:\n  hidden: 64\n")
    cfg = load_config(PretrainConfig, f, ["shape.layers=2", "steps=5"])
    assert (cfg.lr, cfg.shape.hidden, cfg.shape.layers, cfg.steps) == (0.01, 64, 2, 5)


def test_unknown_key_names_file_and_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.01\nshape:\n  hidden: 64\n  depth: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4: shape.depth: unknown key"):
        load_config(PretrainConfig, f)


def test_ill_typed_value_names_file_and_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: many\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: steps: .*integer.*'many'"):
        load_config(PretrainConfig, f)


def test_bad_override_names_the_override():
    with pytest.raises(ConfigError, match=r"--set shape.hidden=wide: shape.hidden"):
        load_config(PretrainConfig, None, ["shape.hidden=wide"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(PretrainConfig, None, ["steps"])
    with pytest.raises(ConfigError, match=r"--set steps.x=1: steps: .*integer"):
        load_config(PretrainConfig, None, ["steps.x=1"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(PretrainConfig, None, ["steps=1", "steps.x=1"])


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    f = tmp_path / "c.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(PretrainConfig, f)
    f.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PretrainConfig, f)


def test_collective_weights_refuse_a_following_judge():
    with pytest.raises(ConfigError, match="collective broadcasts to generators only"):
        load_config(TrainConfig, None, ["ray.weights=collective", "learner.judge_follows=true"])


def test_per_prompt_centring_needs_several_samples_per_prompt():
    with pytest.raises(ConfigError, match="needs rollout.samples_per_prompt >= 2"):
        load_config(TrainConfig, None, ["rollout.samples_per_prompt=1"])
    assert load_config(TrainConfig, None, ["rollout.samples_per_prompt=1", "reward.centre=none"]).reward.centre == "none"
