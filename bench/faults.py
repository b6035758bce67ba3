"""Issue 19 figures: srum under faults, on a tiny random Janus (short real steps). Writes
docs/results/reliability.{json,md}: `kills` (generator, judge and learner processes SIGKILLed in one streaming Ray run:
every rollout id and batch learned once), `resume` (SHA-256 of the final weights: straight against killed and resumed,
local and lock-step Ray), `streaming` (a driver killed mid-run), `sockets` (all loopback), `bad_input` (each error);
issue 39: `strict_loading` (bad model directories: exit 2, nothing written), `stops` (NaN loss, failing judge,
corrupted weights: stopped by name or run on, counted), `logprob` (rollout vs learner log-probabilities; a drift stops).

    python bench/faults.py [--parts kills,resume,streaming,sockets,bad_input,strict_loading,stops,logprob] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, actor_pids, descendants, env, jsonl, kill_tree, md_table, previous, start, stop, tiny_model
from common import wait_for_text, write

SRUM = [sys.executable, "-m", "srum.cli"]
BASE = ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=2", "checkpoint_every=5", "sample_every=1000",
        "eval.at_start=false", "eval.at_end=false", "learner.lr=0.001", "ray.status_every=1000"]


def train_cmd(model: Path, out: Path, steps: int, engine: str, *sets: str) -> list[str]:
    cmd = SRUM + ["train", "--engine", engine, "--out", str(out), "--steps", str(steps), "--set", f"model={model}"]
    return cmd + [x for s in BASE + list(sets) for x in ("--set", s)]


def finish(cmd, log: Path, environment: dict | None = None) -> int:
    return start(cmd, log, environment).wait(timeout=1800)


def fresh(run: Path) -> Path:
    """A run directory of this bench, emptied: a run left by an earlier bench would be resumed, not measured."""
    shutil.rmtree(run, ignore_errors=True)
    return run


def steps_done(run: Path) -> int:
    rows = jsonl(run / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def wait_steps(run: Path, n: int, p: subprocess.Popen, timeout: float = 900) -> None:
    t = time.time()
    while steps_done(run) < n:
        if p.poll() is not None:
            raise RuntimeError(f"the run ended (exit {p.returncode}) before step {n}")
        if time.time() - t > timeout:
            raise TimeoutError(f"no step {n} in {timeout} s")
        time.sleep(0.2)


def final_sha(run: Path, steps: int) -> str:
    return hashlib.sha256((run / "checkpoints" / f"step_{steps:06d}" / "model" / "model.safetensors").read_bytes()).hexdigest()


def part_kills(model: Path, out: Path, n_kills: int) -> dict:
    run, steps = fresh(out / "kills"), 80
    p = start(train_cmd(model, run, steps, "ray", "ray.max_staleness=1", "ray.generators=2", "ray.judges=2",
                        "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25"), out / "kills.log")
    wait_steps(run, 2, p)
    kills = []

    def kill(role: str, patience: float = 120) -> None:
        t = time.time()
        while not (pids := actor_pids(role, p.pid)) and time.time() - t < patience:
            time.sleep(0.5)  # its replacement is still starting
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            kills.append({"at_step": steps_done(run), "role": role, "pid": pids[0]})

    for i in range(n_kills):  # one kill every two learned steps: spread over the run, each after the last recovered
        kill("GeneratorActor" if i % 2 == 0 else "JudgeActor")
        wait_steps(run, steps_done(run) + 2, p)
    wait_steps(run, steps_done(run) + 2, p)
    kill("LearnerActor", 0)
    code = p.wait(timeout=1800)
    rows = jsonl(run / "ledger.jsonl")
    ids, batches = [i for r in rows for i in r["ids"]], [r["batch"] for r in rows]
    last = jsonl(run / "metrics.jsonl")[-1]
    return {"exit": code, "steps": steps, "kills": kills, "steps_learned": len(rows),
            "rollout_ids_learned": len(ids), "distinct_rollout_ids": len(set(ids)),
            "every_id_once": len(ids) == len(set(ids)), "batches_learned": sorted(batches) == list(range(steps)),
            "samples_lost": steps - len(set(batches)), "reissued": last.get("reissued"),
            "restarts": {r: last.get(f"restarts_{r}") for r in ("generator", "judge", "learner")},
            "log_lines_about_restarts": sum("died; replaced" in x or "learner died" in x for x in (out / "kills.log").read_text().splitlines())}


def part_resume(model: Path, out: Path) -> dict:
    steps, res = 14, {}
    for engine, sets in (("local", []), ("ray", ["ray.max_staleness=0"])):
        ref = fresh(out / f"resume_{engine}_straight")
        code = finish(train_cmd(model, ref, steps, engine, *sets), out / f"resume_{engine}_straight.log")
        want, cases = final_sha(ref, steps), {}
        for name, (how, at) in (("after step 3", ("steps", 3)), ("mid step 8", ("steps", 8)),
                                ("inside the checkpoint write at step 10", ("fault", 10))):
            run = fresh(out / f"resume_{engine}_{how}{at}")
            cmd, log = train_cmd(model, run, steps, engine, *sets), out / f"{run.name}.log"
            if how == "steps":
                p = start(cmd, log)
                wait_steps(run, at, p)
                time.sleep(0.3)  # into the next step
                kill_tree(p)
                killed_at = steps_done(run)
            else:  # SRUM_FAULT: the process kills itself between the weights and `latest`
                (marker := out / f"{run.name}.marker").unlink(missing_ok=True)
                finish(cmd, log, env(SRUM_FAULT=f"checkpoint:{at}:{marker}"))
                killed_at = "checkpoint write" if marker.exists() else "no fault fired"
            latest = (run / "checkpoints" / "latest").read_text().strip() if (run / "checkpoints" / "latest").exists() else None
            code2, got = finish(cmd, log.with_suffix(".resumed.log")), final_sha(run, steps)
            cases[name] = {"killed_at": killed_at, "latest_at_kill": latest, "resume_exit": code2, "sha256": got[:16], "equal": got == want,
                           "steps_listed_once": [r["step"] for r in jsonl(run / "ledger.jsonl")] == list(range(1, steps + 1))}
        res[engine] = {"straight_exit": code, "sha256": want[:16], "kills": cases}
    return res


def part_streaming(model: Path, out: Path) -> dict:
    run, steps = fresh(out / "streaming"), 24
    cmd = train_cmd(model, run, steps, "ray", "ray.max_staleness=2", "ray.generators=2", "ray.generator.num_cpus=0.25")
    p = start(cmd, out / "streaming.log")
    wait_steps(run, 12, p)
    kill_tree(p)
    at = steps_done(run)
    state = json.loads((run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip() / "state.json").read_text())
    code = finish(cmd, out / "streaming.resumed.log")
    batches = [r["batch"] for r in jsonl(run / "ledger.jsonl")]
    return {"killed_after_step": at, "checkpoint": {k: state[k] for k in ("step", "data_position", "learned_ahead")},
            "resume_exit": code, "batches_learned": len(batches), "each_batch_once": len(batches) == len(set(batches)),
            "none_skipped": sorted(batches) == list(range(steps))}


def listening(under: int) -> list[str]:
    """host:port of every TCP listener owned by a process descending from `under`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    ours = set(descendants([under]))
    return sorted({line.split()[3] for line in out if ours & {int(x) for x in re.findall(r"pid=(\d+)", line)}})


def part_sockets(model: Path, out: Path) -> dict:
    p = start(train_cmd(model, fresh(out / "sockets"), 400, "ray"), out / "sockets_train.log")
    wait_steps(out / "sockets", 2, p)
    res = {"srum train --engine ray": listening(p.pid)}
    kill_tree(p)
    p = start(SRUM + ["serve", "--model", str(model), "--port", str(18000 + os.getpid() % 1000)], out / "sockets_serve.log")
    wait_for_text(out / "sockets_serve.log", "serving", p, 180)
    time.sleep(3)
    res["srum serve"] = listening(p.pid)
    stop(p)
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    return {k: {"listeners": v, "all_loopback": bool(v) and all(a.startswith(loopback) for a in v)} for k, v in res.items()}


def part_bad_input() -> dict:
    """Run tests/test_bad_input.py's cases and record each error message."""
    import contextlib
    import io
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        janus32 = tiny_model(base)  # puts tests/ on sys.path
        from conftest import CHAT, JANUS_WORDS, tiny_shape

        from srum.cli import main
        from srum.models.janus.build import build_janus
        from srum.pretrain.vocabulary import WORDS
        from tests.test_bad_input import CASES

        dirs = {"janus": build_janus(base / "j64", tiny_shape(64), WORDS + JANUS_WORDS, chat_template=CHAT,
                                     specials=["<|User|>", "<|Assistant|>"]), "janus32": janus32}
        for i, (name, argv, _) in enumerate(CASES):
            (tmp := base / f"case{i}").mkdir()
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv(tmp, dirs))
            rows.append({"input": name, "exit": code, "error": err.getvalue().strip().replace(str(tmp), "<tmp>")[-300:]})
    return {"cases": len(rows), "all_exit_2": all(r["exit"] == 2 for r in rows), "rows": rows}


def part_strict_loading() -> dict:
    """Issue 39: tests/models/test_strict_loading.py's bad model directories, each error as the CLI prints it."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as base:
        janus32 = tiny_model(Path(base))  # puts tests/ on sys.path
        from tests.models.test_strict_loading import CASES, run_case

        for i, (name, argv, _) in enumerate(CASES):
            (tmp := Path(base) / f"case{i}").mkdir()
            code, err, written = run_case(argv, tmp, {"janus32": janus32})
            line = next((x for x in err.splitlines() if x.startswith("srum:")), err.strip())  # the error, not a warning
            rows.append({"input": name, "exit": code, "wrote": len(written), "error": line.replace(str(tmp), "<tmp>")[:400]})
    return {"cases": len(rows), "all_exit_2_nothing_written": all(r["exit"] == 2 and not r["wrote"] for r in rows), "rows": rows}


def part_stops(model: Path, out: Path) -> dict:
    """Issue 39: injected faults stop a run by name (exit 3, RUN/stopped.json) or run on, counted."""
    def case(name, steps, fault, engine="local", *sets):
        run = fresh(out / f"stop_{name}")
        (marker := out / f"stop_{name}.marker").unlink(missing_ok=True)
        code = finish(train_cmd(model, run, steps, engine, *sets), out / f"stop_{name}.log", env(SRUM_FAULT=fault.format(marker)))
        rows, stopped = jsonl(run / "metrics.jsonl"), run / "stopped.json"
        return run, {"exit": code, "steps_learned": rows[-1]["step"] if rows else 0, "stopped": json.loads(stopped.read_text()) if stopped.exists() else None,
                     "judge_failures": sum(r.get("judge_failures") or 0 for r in rows), "dropped": sum(r.get("judge_dropped") or 0 for r in rows),
                     "samples": sum(r.get("judge_samples") or 0 for r in rows)}
    res = {}
    straight = fresh(out / "stop_straight")
    finish(train_cmd(model, straight, 10, "local"), out / "stop_straight.log")
    run, res["nan_loss at update 7"] = case("nan", 10, "nan_loss:7:{}")
    res["nan_loss at update 7"].update(resume_exit=finish(train_cmd(model, run, 10, "local"), out / "stop_nan.resumed.log"),
                                       resumed_equal=final_sha(run, 10) == final_sha(straight, 10))
    res["judge failing 100 %"] = case("judge100", 40, "judge_fail:100:{}", "local", "reward.judge.failure_window=32")[1]
    res["judge failing 5 %"] = case("judge5", 40, "judge_fail:5:{}", "local", "reward.judge.failure_window=32")[1]
    res["corrupted weights, version 3 (ray)"] = case("corrupt", 10, "corrupt_weights:3:{}", "ray", "ray.max_staleness=0")[1]
    return res


def part_logprob(model: Path, out: Path) -> dict:
    """Issue 39: the gap over whole runs (Ray at max_staleness 1: older batches unchecked); a drift, warn 0.02, stop 0.12."""
    def case(name, engine, *sets, fault=""):
        run, log = fresh(out / name), out / f"{name}.log"
        code = finish(train_cmd(model, run, 20, engine, "learner.logprob_check=1", *sets), log, env(SRUM_FAULT=fault))
        rows, st = jsonl(run / "metrics.jsonl"), json.loads(f.read_text()) if (f := run / "stopped.json").exists() else None
        ok = [r for r in rows if "logprob_gap" in r]
        return {"exit": code, "steps": len(rows), "checked": len(ok), "unchecked": sum(r.get("logprob_unchecked", 0) for r in rows),
                "gap": max((r["logprob_gap"] for r in ok), default=None), "token_gap": max((r["logprob_gap_max"] for r in ok), default=None),
                "warnings": log.read_text().count("above learner.logprob_warn"), "stopped": f"{st['reason']}: {st['message']}" if st else "no"}
    return {"local": case("logprob_local", "local"), "ray, max_staleness 1": case("logprob_ray", "ray", "ray.max_staleness=1"),
            "ray, drift": case("lp_drift", "ray", "ray.max_staleness=0", "learner.logprob_warn=.02", "learner.logprob_stop=.12", fault="logprob_drift:5:")}


def markdown(res: dict) -> str:
    parts = res.get("commands") or {"all": res["command"]}
    lines = ["# Reliability (issue 19)", "", f"Produced on {res['machine']} by " + ", ".join(f"`{c}`" for c in parts.values())
             + " (each part keeps its figures until it is run again).", ""]
    if k := res.get("kills"):
        lines += ["## Kills in one run", "", (f"{len(k['kills'])} SIGKILLs ({', '.join(x['role'] for x in k['kills'])}) in one "
                  f"{k['steps']}-step `srum train --engine ray` run: exit {k['exit']}; {k['rollout_ids_learned']} rollout ids "
                  f"learned, {k['distinct_rollout_ids']} distinct; every batch learned: {k['batches_learned']}; samples lost: "
                  f"{k['samples_lost']}; re-issued batches {k['reissued']}; restarts {k['restarts']}."), ""]
    if r := res.get("resume"):
        lines += ["## Exact resume (SHA-256 of the final weights)", "", *md_table(["engine", "kill", "killed at", "resumed equal"], [
            (e, n, c["killed_at"], f"{c['equal']} ({c['sha256']} vs {x['sha256']})") for e, x in r.items() for n, c in x["kills"].items()]), ""]
    if s := res.get("streaming"):
        lines += ["## Streaming across a kill", "", (f"max_staleness 2, driver killed after step {s['killed_after_step']}, "
                  f"resumed from {s['checkpoint']}: each batch once {s['each_batch_once']}, none skipped {s['none_skipped']}."), ""]
    if s := res.get("sockets"):
        lines += ["## Listening sockets", "", *md_table(["command", "listeners", "all loopback"], [
            (f"`{k}`", ", ".join(v["listeners"]), v["all_loopback"]) for k, v in s.items()]), ""]
    if b := res.get("bad_input"):
        lines += ["## Bad input", "", f"{b['cases']} cases (tests/test_bad_input.py), each exit 2 with this error, no traceback, "
                  "nothing on disk changed:", "", *md_table(["input", "error"], [
                      (r["input"], f"`{r['error'].replace('|', '/').splitlines()[-1]}`") for r in b["rows"]]), ""]
    if b := res.get("strict_loading"):
        lines += ["## Strict loading (issue 39)", "", f"{b['cases']} model directories that are not what their config says "
                  "(tests/models/test_strict_loading.py): each exit 2, nothing written "
                  f"({b['all_exit_2_nothing_written']}), with this error:", "", *md_table(["input", "error"], [
                      (r["input"], f"`{r['error'].replace('|', '/').splitlines()[-1]}`") for r in b["rows"]]), ""]
    if s := res.get("stops"):
        lines += ["## Stops by name (issue 39)", "", "`srum train` with a fault injected (SRUM_FAULT); exit 3 is a run stopped "
                  "by a check, RUN/stopped.json says which:", "", *md_table(
                      ["fault", "exit", "steps learned", "stopped", "judge failures / dropped / samples", "resumed"], [
                          (k, c["exit"], c["steps_learned"], f"{c['stopped']['reason']}: {c['stopped']['message'][:120]}" if c["stopped"] else "no",
                           f"{c['judge_failures']} / {c['dropped']} / {c['samples']}",
                           f"exit {c['resume_exit']}, weights equal {c['resumed_equal']}" if "resume_exit" in c else "") for k, c in s.items()]), ""]
    if s := res.get("logprob"):
        lines += ["## Rollout and learner agree (issue 39)", "", "gap: mean |log p the generator recorded - the learner's re-scoring| over a batch's image "
                  "tokens (nats), the run's largest; `learner.logprob_check=1`; drift: recorded 0.05 nats lower a batch:", "", *md_table(["run", *(keys := (
                      "exit", "steps", "checked", "unchecked", "gap", "token_gap", "warnings", "stopped"))], [(k, *(f"{c[x]:.2g}" if isinstance(
                          c[x], float) else str(c[x])[:140] for x in keys)) for k, c in s.items()]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="kills,resume,streaming,sockets,bad_input,strict_loading,stops,logprob")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "faults")
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = tiny_model(args.out)
    res = {**previous(RESULTS / "reliability.json"), "command": "python bench/faults.py " + " ".join(sys.argv[1:]), "machine": "2 CPU cores"}
    measure = {"kills": lambda: part_kills(model, args.out, args.kills), "resume": lambda: part_resume(model, args.out),
               "streaming": lambda: part_streaming(model, args.out), "sockets": lambda: part_sockets(model, args.out),
               "bad_input": part_bad_input, "strict_loading": part_strict_loading, "stops": lambda: part_stops(model, args.out),
               "logprob": lambda: part_logprob(model, args.out)}
    for part in args.parts.split(","):
        t = time.time()
        res[part] = measure[part]()
        res.setdefault("commands", {})[part] = f"python bench/faults.py --parts {part}"  # parts may come from several runs
        print(json.dumps({part: res[part], "seconds": round(time.time() - t)}, default=str), flush=True)
        write("reliability", res, markdown(res))  # after every part: a later part that fails loses nothing


if __name__ == "__main__":
    main()
