import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import per_prompt  # noqa: E402  (bench/ is scripts, not a package)


def manifest(d: Path, passed: dict[str, list[bool]]) -> Path:
    d.mkdir(parents=True)
    rows = [{"file": "x.png", "prompt": p, "category": "color", "passed": ok} for p, oks in passed.items() for ok in oks]
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_buckets_pair_each_prompt_with_its_base_rate(tmp_path, monkeypatch, capsys):
    base = manifest(tmp_path / "base", {"a": [False, False], "b": [True, False], "c": [True, True]})
    run = manifest(tmp_path / "run" / "eval" / "final", {"a": [True, False], "b": [True, True], "c": [True, False]})
    monkeypatch.setattr(sys, "argv", ["per_prompt", "--base", str(base), "--runs", f"srum={tmp_path / 'run'}"])
    per_prompt.main()
    out = json.loads(capsys.readouterr().out)
    assert [(b["prompts"], b["base"], b["srum"]) for b in out["buckets_excluding_single"]] == [(1, 0.0, 0.5), (1, 0.5, 1.0), (1, 1.0, 0.5)]
    assert out["base_passes_at_least_once"] == round(2 / 3, 4) and out["base_never_passes_by_category"] == {"color": 1}


def test_a_run_of_other_prompts_is_refused(tmp_path, monkeypatch):
    base = manifest(tmp_path / "base", {"a": [True]})
    other = manifest(tmp_path / "other", {"b": [True]})
    monkeypatch.setattr(sys, "argv", ["per_prompt", "--base", str(base), "--runs", f"srum={other}"])
    with pytest.raises(SystemExit, match="prompts differ"):
        per_prompt.main()


@pytest.mark.parametrize("runs, why", [("srum", "is not NAME=RUN_DIR"), ("srum={missing}", "no manifest.jsonl")])
def test_a_bad_runs_argument_is_named(tmp_path, monkeypatch, runs, why):
    base = manifest(tmp_path / "base", {"a": [True]})
    monkeypatch.setattr(sys, "argv", ["per_prompt", "--base", str(base), "--runs", runs.format(missing=tmp_path / "nothing")])
    with pytest.raises(SystemExit, match=why):
        per_prompt.main()
