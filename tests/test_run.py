"""Run directories: a rerun refuses to mix two runs, a dangling `latest` is an error, and a resumed run lists
every step once in its logs."""

import json

import pytest

from srum.config import TrainConfig, dump_config, load_config
from srum.io import InputError, open_log
from srum.learner.checkpoints import latest_checkpoint
from srum.run import prepare


def make_run(tmp_path, **sets):
    cfg = load_config(TrainConfig, None, [f"{k}={v}" for k, v in sets.items()])
    run = tmp_path / "run"
    ck = run / "checkpoints" / "step_000002"
    (ck / "model").mkdir(parents=True)
    (ck / "state.json").write_text("{}")
    (run / "checkpoints" / "latest").write_text("step_000002\n")
    (run / "config.yaml").write_text(dump_config(cfg))
    return run, cfg


def test_prepare_accepts_the_same_run_with_other_steps(tmp_path):
    run, cfg = make_run(tmp_path)
    prepare(run, cfg.model_copy(update={"steps": 999, "time_budget_min": 3.0}))


def test_prepare_refuses_another_identity(tmp_path):
    run, _cfg = make_run(tmp_path)
    other = load_config(TrainConfig, None, ["learner.kl_coef=0.5"])
    with pytest.raises(InputError, match="learner.kl_coef: the run was started with 0.05, this command says 0.5"):
        prepare(run, other)


def test_prepare_resumes_a_run_older_than_an_option_at_its_default(tmp_path):
    """A run started before srum had an option (its config.yaml lacks the key) is the same run when the option is at
    its default; set otherwise, or an option this srum no longer has, it is refused by name."""
    import yaml

    run, cfg = make_run(tmp_path)
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["learner"]["logprob_check"]
    old["reward"]["binarize_at"] = 0.5  # retired
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(InputError, match="reward.binarize_at: the run was started with 0.5, this command says 'no such option"):
        prepare(run, cfg)
    del old["reward"]["binarize_at"], old["reward"]["judge_mode"]
    old["reward"]["relations"] = True  # renamed: reward.judge_mode grounded
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    prepare(run, cfg)
    with pytest.raises(InputError, match="reward.judge_mode: the run was started with 'grounded', this command says 'self'"):
        prepare(run, load_config(TrainConfig, None, ["reward.judge_mode=self"]))
    with pytest.raises(InputError, match="learner.logprob_check: the run was started with None, this command says 0.5"):
        prepare(run, load_config(TrainConfig, None, ["learner.logprob_check=0.5"]))
    del old["rollout"]["scenes"]  # older than the scene split's default: it ran on every scene
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(InputError, match="rollout.scenes: the run was started with False, this command says True"):
        prepare(run, cfg)
    prepare(run, load_config(TrainConfig, None, ["rollout.scenes=false"]))


def test_prepare_refuses_a_file(tmp_path):
    f = tmp_path / "x"
    f.write_text("mine")
    with pytest.raises(InputError, match="is a file"):
        prepare(f, load_config(TrainConfig))
    assert f.read_text() == "mine"


def test_dangling_latest(tmp_path):
    run, _ = make_run(tmp_path)
    assert latest_checkpoint(run).name == "step_000002"
    (run / "checkpoints" / "latest").write_text("step_000009\n")
    with pytest.raises(InputError, match="names 'step_000009', which is missing or incomplete; point it at a complete checkpoint \\(step_000002\\)"):
        latest_checkpoint(run)


def test_open_log_drops_rows_of_steps_to_be_learned_again(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "tot')  # cut by a kill
    with open_log(f, 2) as out:
        out.write(json.dumps({"step": 3}) + "\n")
    assert [json.loads(x)["step"] for x in f.read_text().splitlines()] == [1, 2, 3]
