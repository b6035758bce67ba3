import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from common import descendants, previous  # noqa: E402  (bench/ is scripts, not a package)


def test_previous_keeps_figures_of_the_same_weights_and_refuses_others(tmp_path):
    out = tmp_path / "r.json"
    assert previous(out, model_sha256="abc") == {}
    out.write_text(json.dumps({"model_sha256": "abc", "images_per_prompt": 8, "rows": {"x": 1}}))
    assert previous(out, model_sha256="abc", images_per_prompt=8)["rows"] == {"x": 1}
    with pytest.raises(SystemExit, match="r.json: measured with .*'images_per_prompt': 8.* this run .*'images_per_prompt': 2"):
        previous(out, model_sha256="abc", images_per_prompt=2)
    assert json.loads(out.read_text())["rows"] == {"x": 1}  # nothing lost


def test_descendants_follow_the_parent_table():
    table = {10: (1, "a"), 11: (10, "b"), 12: (11, "c"), 20: (1, "d")}
    assert sorted(descendants([10], table)) == [10, 11, 12]
    assert os.getpid() in descendants([os.getppid()])  # the live table: this process descends from its parent
