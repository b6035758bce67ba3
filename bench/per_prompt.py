"""Issue 18, a diagnostic: where SRUM's gain comes from, prompt by prompt, from the evaluations the bench kept.

Each held-out prompt's pass rate over its K images, in the base evaluation and in the final evaluation of each run
named (their manifests: the same prompts, images per prompt and evaluation seed, so rows are paired). Prompts are
bucketed by the base's own pass rate; per bucket, the mean pass rate of the base and of each group of runs. Also the
share of prompts the base passes at least once ("sharpening" — making the model draw what it can already draw —
could reach at most that). Buckets come from the same K images as the base's figure, so regression to the mean
flatters the lowest bucket's gain and darkens the highest's. Prints JSON (and writes --out).

    python bench/per_prompt.py --base runs/bench/SHA/base --runs srum=runs/bench/SHA/srum_seed0_20min,... [--out F]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

BUCKETS = ((0.0, 0.0), (0.01, 0.375), (0.376, 0.625), (0.626, 0.99), (1.0, 1.0))


def pass_rates(manifest: Path) -> dict[tuple[str, str], float]:
    """(category, prompt) -> the share of its images that pass."""
    seen = collections.defaultdict(list)
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        seen[(row["category"], row["prompt"])].append(bool(row["passed"]))
    return {k: sum(v) / len(v) for k, v in seen.items()}


def manifest_of(run: Path) -> Path:
    """A run directory's final evaluation, or an evaluation directory itself."""
    for m in (run / "manifest.jsonl", run / "eval" / "final" / "manifest.jsonl"):
        if m.exists():
            return m
    raise SystemExit(f"{run}: no manifest.jsonl (neither {run}/manifest.jsonl nor {run}/eval/final/manifest.jsonl)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--runs", required=True, help="NAME=RUN_DIR, comma-separated; runs of one NAME are averaged")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base = pass_rates(manifest_of(args.base))
    groups = collections.defaultdict(list)
    for item in args.runs.split(","):
        name, sep, run = item.partition("=")
        if not (name and sep and run):
            raise SystemExit(f"--runs: {item!r} is not NAME=RUN_DIR")
        rates = pass_rates(manifest_of(Path(run)))
        if rates.keys() != base.keys():
            raise SystemExit(f"{run}: its evaluation's prompts differ from the base's")
        groups[name].append(rates)
    buckets = []
    for lo, hi in BUCKETS:
        keys = [k for k, v in base.items() if lo <= v <= hi and k[0] != "single"]
        if keys:
            row = {"base_pass_rate": [lo, hi], "prompts": len(keys), "base": round(statistics.fmean(base[k] for k in keys), 4)}
            row |= {n: round(statistics.fmean(statistics.fmean(r[k] for r in rs) for k in keys), 4) for n, rs in groups.items()}
            buckets.append(row)
    by_category = collections.defaultdict(list)
    for (cat, _), v in base.items():
        by_category[cat].append(v)
    result = {"command": "python bench/per_prompt.py --base " + str(args.base) + " --runs " + args.runs,
              "runs": {n: len(rs) for n, rs in groups.items()}, "buckets_excluding_single": buckets,
              "base_passes_at_least_once": round(sum(v > 0 for v in base.values()) / len(base), 4),
              "base_never_passes_by_category": {c: sum(v == 0 for v in vs) for c, vs in sorted(by_category.items())}}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
