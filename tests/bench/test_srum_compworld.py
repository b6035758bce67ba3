import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from common import table_lock  # noqa: E402  (bench/ is scripts, not a package)
from srum_compworld import MATCHED, ONE_SEED, ROWS, settings  # noqa: E402

from srum.config import TrainConfig, load_config  # noqa: E402


def config(sets):
    return load_config(TrainConfig, ROOT / "configs/srum-compworld.yaml", sets + settings("validation", 800, 8, seed=1))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_row_is_a_valid_change_of_the_bench_config(name):
    # a row's typo would otherwise surface 20 minutes into its run, or never (an unknown key silently ignored)
    cfg = config(ROWS[name])
    assert (cfg == config([])) == (name == "grounded"), f"{name} must change the configuration (and only grounded may not)"
    assert cfg.steps == 800 and cfg.time_budget_min == 0 and cfg.rollout.scenes and cfg.eval.split == "validation"
    assert (cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt) == (16, 4)  # the table's samples = updates x 64


def test_each_matched_control_is_its_row_with_the_judgements_shuffled():
    for name, control in MATCHED.items():
        a, b = config(ROWS[name]), config(ROWS[control])
        assert not a.reward.shuffle and b.reward.shuffle
        b.reward.shuffle = False
        assert a == b, f"{control} must differ from {name} by reward.shuffle alone"


def test_the_rows_name_their_judge_mode():
    for name in ROWS:
        mode = config(ROWS[name]).reward.judge_mode
        assert name in ("uniform", "paper", "oracle") or name.endswith(mode), (name, mode)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_no_row_sets_a_key_twice(name):
    # which of two settings of one key wins would depend on their order: lambda_0 pinned to the old default behind
    # it ("learner.kl_coef=0", ..., "learner.kl_coef=0.1") would silently run lambda 0.1
    keys = [s.split("=", 1)[0] for s in ROWS[name]]
    assert len(keys) == len(set(keys)), f"{name}: {ROWS[name]}"


def test_the_one_seed_rows_exist():
    assert set(ONE_SEED) <= set(ROWS) and set(MATCHED) | set(MATCHED.values()) <= set(ROWS)


def test_two_benches_writing_one_table_take_turns(tmp_path):
    """Two rows run side by side each read the table after training and write it under this lock, so neither
    overwrites the other's row (it did: a row run beside another was lost from the table)."""
    import subprocess

    table = tmp_path / "t.json"
    try_lock = ("import fcntl, sys; f = open(sys.argv[1], 'w')\n"
                "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('got')\n"
                "except BlockingIOError:\n    print('busy')")
    lock = str(table) + ".lock"
    with table_lock(table):
        held = subprocess.run([sys.executable, "-c", try_lock, lock], capture_output=True, text=True).stdout.strip()
    free = subprocess.run([sys.executable, "-c", try_lock, lock], capture_output=True, text=True).stdout.strip()
    assert (held, free) == ("busy", "got")
