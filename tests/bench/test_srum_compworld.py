import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from srum_compworld import ROWS, SEEDED  # noqa: E402  (bench/ is scripts, not a package)

from srum.config import TrainConfig, load_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_row_is_a_valid_change_of_the_bench_config(name):
    # a row's typo would otherwise surface 20 minutes into its run, or never (an unknown key silently ignored)
    cfg = load_config(TrainConfig, ROOT / "configs/srum-compworld.yaml", ROWS[name] + ["seed=1", "time_budget_min=20"])
    base = load_config(TrainConfig, ROOT / "configs/srum-compworld.yaml", ["seed=1", "time_budget_min=20"])
    assert (cfg == base) == (name == "srum"), f"{name} must change the configuration (and only srum may not)"


def test_the_seeded_rows_exist():
    assert set(SEEDED) <= set(ROWS)
