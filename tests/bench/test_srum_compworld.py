import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from common import table_lock  # noqa: E402  (bench/ is scripts, not a package)
from srum_compworld import ROWS, SEEDED  # noqa: E402

from srum.config import TrainConfig, load_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_row_is_a_valid_change_of_the_bench_config(name):
    # a row's typo would otherwise surface 20 minutes into its run, or never (an unknown key silently ignored)
    cfg = load_config(TrainConfig, ROOT / "configs/srum-compworld.yaml", ROWS[name] + ["seed=1", "time_budget_min=20"])
    base = load_config(TrainConfig, ROOT / "configs/srum-compworld.yaml", ["seed=1", "time_budget_min=20"])
    assert (cfg == base) == (name == "srum"), f"{name} must change the configuration (and only srum may not)"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_no_row_sets_a_key_twice(name):
    # which of two settings of one key wins would depend on their order: lambda_0 pinned to the old default behind
    # it ("learner.kl_coef=0", ..., "learner.kl_coef=0.1") would silently run lambda 0.1
    keys = [s.split("=", 1)[0] for s in ROWS[name]]
    assert len(keys) == len(set(keys)), f"{name}: {ROWS[name]}"


def test_the_seeded_rows_exist():
    assert set(SEEDED) <= set(ROWS)


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
