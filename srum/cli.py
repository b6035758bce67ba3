"""The `srum` command line: world | pretrain | eval | judge | train | scale | status | serve."""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

from .config import ConfigError
from .io import InputError, StopRun


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConfigError, InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"srum: error: {e}", file=sys.stderr)
        return 2
    except StopRun as e:  # a check stopped a run by name (issue 39); the newest checkpoint is the last good one
        print(f"srum: stopped ({e.reason}): {e}", file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srum", description="SRUM self-rewarding RL for unified multimodal models")
    sub = p.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="CompWorld v1: render prompts, check images").add_subparsers(dest="world_cmd", required=True)
    r = world.add_parser("render", help="render a JSONL prompt file to PNGs + manifest")
    r.add_argument("--prompts", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_world_render)
    c = world.add_parser("check", help="the oracle's verdict for every image of a manifest")
    c.add_argument("--manifest", required=True, type=Path)
    c.set_defaults(func=cmd_world_check)
    s = world.add_parser("prompts", help="write a prompt set as JSONL (an evaluation split, or a slice of the training stream)")
    s.add_argument("--set", dest="which", choices=["heldout", "validation", "test", "train"], default="validation")
    s.add_argument("--n", type=int, default=300, help="number of training-stream prompts")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_world_prompts)

    pt = sub.add_parser("pretrain", help="pretrain the built-in model on CompWorld renders")
    _config_args(pt)
    pt.add_argument("--out", required=True, type=Path, help="run directory (resumed if it holds a state)")
    pt.set_defaults(func=cmd_pretrain)

    ev = sub.add_parser("eval", help="CompWorld-Bench: generate, check with the oracle, report")
    ev.add_argument("--model", default="builtin")
    ev.add_argument("--prompts", type=Path, help="JSONL prompt file (default: the evaluation split, --split)")
    ev.add_argument("--split", choices=["heldout", "validation", "test"], default="validation",
                    help="without --prompts: the scene split's validation (choices) or test (claims), or heldout (the old wordings)")
    ev.add_argument("--images-per-prompt", type=int, default=4)
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--steps", type=int, help="Euler steps (flow models; default: the model's own, bagel 49)")
    ev.add_argument("--cfg-scale", type=float, help="classifier-free guidance (default: the model's own)")
    ev.add_argument("--device", default="auto", help="cpu, cuda[:N], or auto (a GPU if torch sees one)")
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train", help="the online SRUM loop on the built-in model and CompWorld by default")
    tr.add_argument("--engine", choices=["local", "ray"], help="overrides engine in the config")
    tr.add_argument("--steps", type=int, help="overrides steps in the config")
    tr.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory (resumed if it holds checkpoints)")
    _config_args(tr)
    tr.set_defaults(func=cmd_train)

    sc = sub.add_parser("scale", help="add or remove rollout workers of a running `srum train --engine ray` job")
    sc.add_argument("--generators", type=int)
    sc.add_argument("--judges", type=int)
    sc.add_argument("--name", default="srum", help="the job's ray.name (default srum)")
    sc.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else the local cluster)")
    sc.set_defaults(func=cmd_scale)

    st = sub.add_parser("status", help="summarise a run directory (finished or running)")
    st.add_argument("run", type=Path)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    j = sub.add_parser("judge", help="the model's global P(yes) for each image of a manifest")
    j.add_argument("--model", default="builtin")
    j.add_argument("--manifest", required=True, type=Path)
    j.add_argument("--out", required=True, type=Path)
    j.add_argument("--device", default="auto", help="cpu, cuda[:N], or auto (a GPU if torch sees one)")
    j.add_argument("--engine", choices=["policy", "vllm"], default="policy",
                   help="policy: --model's own understanding in torch; vllm: --judge-model served by vLLM")
    j.add_argument("--judge-model", type=Path, help="with --engine vllm: the judge model's directory (e.g. a Qwen2-VL)")
    j.set_defaults(func=cmd_judge)

    sv = sub.add_parser("serve", help="serve /generate, /judge and /healthz over HTTP with Ray Serve")
    sv.add_argument("--model", default="builtin", help="builtin or a model directory")
    sv.add_argument("--follow", type=Path, metavar="RUN_DIR", help="serve the newest checkpoint of a training run")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: SRUM_SERVE_TOKEN, else none)")
    sv.add_argument("--replicas-max", type=int, default=2, help="autoscaling limit of each model deployment")
    sv.set_defaults(func=cmd_serve)
    return p


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set lr=1e-4 (repeatable)")


def cmd_world_render(args) -> int:
    from .io import write_jsonl
    from .world import render
    from .world.files import read_prompts, write_png

    specs = read_prompts(args.prompts)
    rng = random.Random(args.seed)
    rows = []
    for i, spec in enumerate(specs):
        name = f"{i:05d}.png"
        write_png(args.out / name, render(spec, rng))
        rows.append({"file": name, "prompt": spec.prompt, "category": spec.category})
    write_jsonl(args.out / "manifest.jsonl", rows)
    print(f"rendered {len(rows)} images to {args.out}")
    return 0


def cmd_world_check(args) -> int:
    from .evaluate import bench_score
    from .world import check, failure
    from .world.files import read_manifest, read_png

    rows = []
    for f, spec, row in read_manifest(args.manifest):
        ok, found = check(read_png(f), spec)
        rows.append({"file": row["file"], "prompt": spec.prompt, "category": spec.category, "passed": ok,
                     "failure": failure(spec, found, ok), "detected": [f"{d.color} {d.shape}" for d in found]})
        print(json.dumps(rows[-1]))
    failures = collections.Counter(r["failure"] for r in rows if r["failure"])
    summary = {"images": len(rows), "passed": sum(r["passed"] for r in rows), **bench_score(rows),
               "failures": dict(failures.most_common())}
    print(json.dumps({"summary": summary}))
    return 0


def cmd_world_prompts(args) -> int:
    from .io import write_jsonl
    from .world import eval_set, training_spec

    if args.n < 1:
        raise InputError(f"--n must be at least 1 (got {args.n})")
    specs = eval_set(args.which) if args.which != "train" else [training_spec(args.seed, i, scenes=True) for i in range(args.n)]
    write_jsonl(args.out, [{"prompt": s.prompt, "category": s.category} for s in specs])
    print(f"wrote {len(specs)} prompts to {args.out}")
    return 0


def cmd_pretrain(args) -> int:
    from .config import load_config
    from .pretrain import JanusPretrainConfig, pretrain

    cfg = load_config(JanusPretrainConfig, args.config, args.overrides)
    t0 = time.time()
    pretrain(cfg, args.out)
    print(f"pretrained in {time.time() - t0:.0f} s; model at {args.out / 'model'}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import run_eval
    from .models import SampleOptions, load_model
    from .rollout.sources import read_prompt_file
    from .world import eval_set

    if args.images_per_prompt < 1:
        raise InputError(f"--images-per-prompt must be at least 1 (got {args.images_per_prompt})")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1 (got {args.steps})")
    _out_dir(args.out)
    specs = read_prompt_file(args.prompts) if args.prompts else eval_set(args.split)
    model = load_model(args.model, args.device)
    opts = SampleOptions(cfg_scale=args.cfg_scale, steps=args.steps if model.objective == "flow" else None)
    report = run_eval(model, specs, args.images_per_prompt, args.out, args.seed, opts)
    print(json.dumps(report, indent=2))
    return 0


def cmd_train(args) -> int:
    from .config import TrainConfig, load_config

    overrides = list(args.overrides)
    overrides += [f"engine={args.engine}"] if args.engine else []
    overrides += [f"steps={args.steps}"] if args.steps is not None else []
    cfg = load_config(TrainConfig, args.config, overrides)
    check_train(cfg, args.out)
    if cfg.engine == "ray":
        from .actors.driver import RayEngine as Engine
    else:
        from .engine import LocalEngine as Engine

    results = Engine(cfg, args.out).run()
    summary = {k: {"overall": v["overall"], "categories": v["categories"], "judge_mean_global": v.get("judge_mean_global")}
               for k, v in results.items() if k in ("initial", "final")}
    extra = {"ray": results["ray"]} if "ray" in results else {}
    print(json.dumps({**summary, "steps_done": results["steps_done"], **extra, "run": str(args.out)}, indent=2))
    return 0


def cmd_scale(args) -> int:
    from .actors.driver import scale

    if args.generators is None and args.judges is None:
        raise InputError("srum scale: give --generators N and/or --judges N")
    for flag, n in (("--generators", args.generators), ("--judges", args.judges)):
        if n is not None and n < 1:
            raise InputError(f"srum scale: {flag} must be at least 1 (got {n})")
    try:
        st = scale(args.name, args.generators, args.judges, args.address)
    except LookupError as e:
        raise InputError(str(e)) from None
    print(json.dumps({k: st[k] for k in ("step", "version", "want", "generators", "judges")}))
    return 0


def cmd_status(args) -> int:
    from .status import format_status, run_status

    st = run_status(args.run)
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def cmd_judge(args) -> int:
    from .evaluate import run_judge
    from .models import load_model

    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a directory; give the JSONL file to write")
    if args.engine == "vllm":
        if not args.judge_model:
            raise InputError("srum judge --engine vllm needs --judge-model DIR: the judge model's directory")
        from .rewards.vllm_judge import VllmJudge

        # checked strictly against its own config before vLLM starts (srum/models/strict.py); the same question() /
        # judge_yes_prob() as a policy backend
        judge = VllmJudge(args.judge_model)
    else:
        judge = load_model(args.model, args.device)
    rows = run_judge(judge, args.manifest, args.out)
    print(f"judged {len(rows)} images -> {args.out}")
    return 0


def check_train(cfg, out: Path) -> None:
    """What can be refused before a Ray instance starts: the run directory, the model, the training mode."""
    from .models import backend_of, model_dir, train_modes
    from .run import prepare

    prepare(out, cfg)
    if cfg.rollout.prompts != "compworld" and not Path(cfg.rollout.prompts).exists():
        raise InputError(f"rollout.prompts: {cfg.rollout.prompts}: no such prompt file")
    backend = backend_of(model_dir(cfg.model))
    _check_models(cfg, out)
    modes = train_modes(backend)
    if cfg.learner.train not in modes:
        need = "a backend with add_lora" if cfg.learner.train == "lora" else f"one of {', '.join(modes)}"
        raise ConfigError(f"learner.train: {cfg.learner.train} needs {need}; {cfg.model} is a {backend} model, "
                          f"which trains {', '.join(modes)}")
    sampling = cfg.rollout.sampling
    if (sampling.height is not None or sampling.width is not None) and sampling.height != sampling.width:
        raise ConfigError(f"rollout.sampling: height and width: training pools the reward map to a square token grid, "
                          f"so set both to one size (got {sampling.height} x {sampling.width})")
    import importlib.util

    for name in cfg.logging.trackers:
        module = {"tensorboard": "torch.utils.tensorboard"}.get(name, name)
        if importlib.util.find_spec(module.split(".")[0]) is None or (name == "tensorboard" and importlib.util.find_spec("tensorboard") is None):
            raise ConfigError(f"logging.trackers: {name} is not installed; pip install 'srum[trackers]'")


def _check_models(cfg, out: Path) -> None:
    """Every model directory the run will load, strictly (headers: names, shapes, dtypes), before anything starts:
    the model, the checkpoint a resume loads, a vLLM judge's and a detector's directory."""
    from .learner.checkpoints import latest_checkpoint
    from .models import check_model
    from .models.strict import check_hf_dir

    check_model(cfg.model)
    if (ckpt := latest_checkpoint(out)) is not None:
        check_model(ckpt / "model")
    if cfg.reward.judge.engine == "vllm" and cfg.reward.judge.model:
        check_hf_dir(Path(cfg.reward.judge.model), "reward.judge.model")
    if cfg.reward.proposer.startswith("detector:"):
        check_hf_dir(Path(cfg.reward.proposer.split(":", 1)[1]), f"reward.proposer {cfg.reward.proposer}")


def _out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a directory (nothing was written)")


def cmd_serve(args) -> int:
    from .serve import serve_forever

    return serve_forever(args)


if __name__ == "__main__":
    sys.exit(main())


def config_reference() -> str:
    """docs/config.md: every key of `srum train` and `srum pretrain` (a test keeps the file in step with the code)."""
    from .config import TrainConfig
    from .pretrain import JanusPretrainConfig

    return ("# Configuration reference\n\nGenerated from the pydantic models in `srum/config.py` and "
            "`srum/pretrain/config.py` (a test keeps this file in step with the code).\n\n"
            + reference_markdown(TrainConfig, "`srum train` (TrainConfig)") + "\n"
            + reference_markdown(JanusPretrainConfig, "`srum pretrain` (JanusPretrainConfig)"))


def reference_markdown(cls, title: str) -> str:
    """A table of every key of `cls` (dotted), its type and default: docs/config.md is made from it."""
    from pydantic import BaseModel

    rows = []

    def walk(model, prefix: str) -> None:
        for name, f in type(model).model_fields.items():
            value = getattr(model, name)  # the default as the parent section sets it
            if isinstance(value, BaseModel):  # a section
                walk(value, f"{prefix}{name}.")
                continue
            ann = f.annotation
            typ = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
            typ = typ.replace("|", "\\|")  # `float | None` would otherwise split the table's cell
            rows.append(f"| `{prefix}{name}` | {typ} | `{value}` |")

    walk(cls(), "")
    return f"## {title}\n\n| key | type | default |\n|---|---|---|\n" + "\n".join(rows) + "\n"
