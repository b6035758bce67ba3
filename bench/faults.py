"""Issue 19 figures: srum under faults. Writes docs/results/reliability.{json,md} and prints the JSON.

    python bench/faults.py [--parts kills,resume,streaming,sockets,bad_input] [--model DIR] [--out runs/faults]

- kills: one `srum train --engine ray` run (streaming, max_staleness 1, two generators and two judges) in which
  generator and judge processes are SIGKILLed every few seconds (--kills, 10 by default), then the learner once.
  The run must complete; from its ledger: every rollout id learned once, every batch index 0..steps-1 learned,
  nothing lost beyond the re-issued in-flight batches.
- resume: SHA-256 of the final weights of an uninterrupted run against runs killed (SIGKILL) and resumed with
  the same command, for the local engine and the lock-step Ray engine; kills after a few steps, in the middle
  of a later step, and inside a checkpoint write (SRUM_FAULT: the process kills itself between the weights and
  `latest`).
- streaming: a streaming Ray run (max_staleness 2) whose driver is killed mid-run and resumed: every batch
  learned exactly once across the kill, none skipped.
- sockets: the listening sockets of a default `srum train --engine ray` and of `srum serve`: all on 127.0.0.1.
- bad_input: the table of tests/test_bad_input.py: each input and the error it gets.

The model is a tiny random Janus built here (tests/conftest.py's shape): faults are about orchestration, and
a small model makes a step short enough to fit ten kills in a few minutes; its forward and backward passes are
real.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
SRUM = [sys.executable, "-m", "srum.cli"]
BASE = ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=2", "checkpoint_every=5", "sample_every=1000",
        "eval.at_start=false", "eval.at_end=false", "learner.lr=0.001", "ray.status_every=1000"]


def env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **extra}


def train_cmd(model: Path, out: Path, steps: int, engine: str, *sets: str) -> list[str]:
    cmd = SRUM + ["train", "--engine", engine, "--out", str(out), "--steps", str(steps), "--set", f"model={model}"]
    for s in BASE + list(sets):
        cmd += ["--set", s]
    return cmd


def start(cmd, log: Path, **extra) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(**extra), cwd=ROOT,
                            start_new_session=True)


def finish(p: subprocess.Popen, timeout: float = 1800) -> int:
    return p.wait(timeout=timeout)


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (its own Ray instance): a preempted node."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    time.sleep(2)


def steps_done(run: Path) -> int:
    f = run / "metrics.jsonl"
    if not f.exists():
        return 0
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip().endswith("}")]
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
    f = run / "checkpoints" / f"step_{steps:06d}" / "model" / "model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest()


def ledger(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]


def actor_pids(role: str, under: int) -> list[int]:
    """Processes of Ray actors of a class (their titles are ray::<Class>...) that descend from `under`."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    parent = {int(a.split()[0]): int(a.split()[1]) for a in out}
    title = {int(a.split()[0]): a.split(None, 2)[2] for a in out}
    return [pid for pid, t in title.items() if t.startswith(f"ray::{role}") and descends(pid, under, parent)]


def descends(pid: int, under: int, parent: dict[int, int]) -> bool:
    """Whether process `pid` is `under` or one of its descendants, by the (pid -> parent pid) table."""
    while pid > 1:
        if pid == under:
            return True
        pid = parent.get(pid, 0)
    return False


# ---- parts ----


def part_kills(model: Path, out: Path, n_kills: int) -> dict:
    run = fresh(out / "kills")
    steps = 80
    p = start(train_cmd(model, run, steps, "ray", "ray.max_staleness=1", "ray.generators=2", "ray.judges=2",
                        "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25"), out / "kills.log")
    wait_steps(run, 2, p)
    kills = []
    for i in range(n_kills):  # one kill every two learned steps: spread over the run, each after the last recovered
        role = "GeneratorActor" if i % 2 == 0 else "JudgeActor"
        t = time.time()
        while not (pids := actor_pids(role, p.pid)) and time.time() - t < 120:
            time.sleep(0.5)  # its replacement is still starting
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            kills.append({"at_step": steps_done(run), "role": role, "pid": pids[0]})
        wait_steps(run, steps_done(run) + 2, p)
    wait_steps(run, steps_done(run) + 2, p)
    learner = actor_pids("LearnerActor", p.pid)
    if learner:
        os.kill(learner[0], signal.SIGKILL)
        kills.append({"at_step": steps_done(run), "role": "LearnerActor", "pid": learner[0]})
    code = finish(p)
    rows = ledger(run)
    ids = [i for r in rows for i in r["ids"]]
    batches = [r["batch"] for r in rows]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
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
        code = finish(start(train_cmd(model, ref, steps, engine, *sets), out / f"resume_{engine}_straight.log"))
        want = final_sha(ref, steps)
        cases = {}
        for name, how in (("after step 3", ("steps", 3)), ("mid step 8", ("steps", 8)),
                          ("inside the checkpoint write at step 10", ("fault", 10))):
            run = fresh(out / f"resume_{engine}_{how[0]}{how[1]}")
            log = out / f"{run.name}.log"
            if how[0] == "steps":
                p = start(train_cmd(model, run, steps, engine, *sets), log)
                wait_steps(run, how[1], p)
                time.sleep(0.3)  # into the next step
                kill_tree(p)
                killed_at = steps_done(run)
            else:
                marker = out / f"{run.name}.marker"
                marker.unlink(missing_ok=True)
                p = start(train_cmd(model, run, steps, engine, *sets), log, SRUM_FAULT=f"checkpoint:{how[1]}:{marker}")
                finish(p)
                killed_at = "checkpoint write" if marker.exists() else "no fault fired"
            latest = (run / "checkpoints" / "latest").read_text().strip() if (run / "checkpoints" / "latest").exists() else None
            code2 = finish(start(train_cmd(model, run, steps, engine, *sets), log.with_suffix(".resumed.log")))
            got = final_sha(run, steps)
            cases[name] = {"killed_at": killed_at, "latest_at_kill": latest, "resume_exit": code2, "sha256": got[:16],
                           "equal": got == want, "steps_listed_once": [r["step"] for r in ledger(run)] == list(range(1, steps + 1))}
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
    code = finish(start(cmd, out / "streaming.resumed.log"))
    batches = [r["batch"] for r in ledger(run)]
    return {"killed_after_step": at, "checkpoint": {k: state[k] for k in ("step", "data_position", "learned_ahead")},
            "resume_exit": code, "batches_learned": len(batches), "each_batch_once": len(batches) == len(set(batches)),
            "none_skipped": sorted(batches) == list(range(steps))}


def fresh(run: Path) -> Path:
    """A run directory of this bench, emptied: a run left by an earlier bench would be resumed, not measured."""
    shutil.rmtree(run, ignore_errors=True)
    return run


def listening(under: int) -> list[str]:
    """host:port of every TCP listener owned by a process descending from `under`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    ps = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    parent = {int(a.split()[0]): int(a.split()[1]) for a in ps if a.strip()}
    found = []
    for line in out:
        pids = [int(x) for x in re.findall(r"pid=(\d+)", line)]
        if any(descends(pid, under, parent) for pid in pids):
            found.append(line.split()[3])
    return sorted(set(found))


def part_sockets(model: Path, out: Path) -> dict:
    res = {}
    p = start(train_cmd(model, fresh(out / "sockets"), 400, "ray"), out / "sockets_train.log")
    wait_steps(out / "sockets", 2, p)
    res["srum train --engine ray"] = listening(p.pid)
    kill_tree(p)
    port = 18000 + os.getpid() % 1000
    p = start(SRUM + ["serve", "--model", str(model), "--port", str(port)], out / "sockets_serve.log")
    t = time.time()
    while "serving" not in (out / "sockets_serve.log").read_text() and time.time() - t < 180:
        time.sleep(0.5)
    time.sleep(3)
    res["srum serve"] = listening(p.pid)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_tree(p)
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    return {k: {"listeners": v, "all_loopback": bool(v) and all(a.startswith(loopback) for a in v)} for k, v in res.items()}


def part_bad_input() -> dict:
    """Run tests/test_bad_input.py's cases and record each error message."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import tempfile

    from conftest import CHAT, JANUS_WORDS, tiny_shape

    from srum.cli import main
    from srum.models.janus_build import build_janus
    from srum.models.janus_pretrain import SETTINGS
    from srum.models.tokenizer import WORDS
    from tests.test_bad_input import CASES

    rows = []
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        dirs = {"janus": build_janus(base / "j64", tiny_shape(64), WORDS + JANUS_WORDS, chat_template=CHAT,
                                     specials=["<|User|>", "<|Assistant|>"]),
                "janus32": build_janus(base / "j32", tiny_shape(32), WORDS, settings=SETTINGS)}
        import contextlib
        import io

        for i, (name, argv, _) in enumerate(CASES):
            tmp = base / f"case{i}"
            tmp.mkdir()
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv(tmp, dirs))
            rows.append({"input": name, "exit": code, "error": err.getvalue().strip().replace(str(tmp), "<tmp>")[-300:]})
    return {"cases": len(rows), "all_exit_2": all(r["exit"] == 2 for r in rows), "rows": rows}


def build_model(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_shape

    from srum.models.janus_build import build_janus
    from srum.models.janus_pretrain import SETTINGS
    from srum.models.tokenizer import WORDS

    d = out / "model"
    if not (d / "config.json").exists():
        build_janus(d, tiny_shape(32), WORDS, seed=0, settings=SETTINGS)
    return d


def markdown(res: dict) -> str:
    parts = res.get("commands") or {"all": res["command"]}
    lines = ["# Reliability (issue 19)", "", f"Produced on {res['machine']} by " + ", ".join(f"`{c}`" for c in parts.values())
             + " (each part keeps its figures until it is run again).", ""]
    if "kills" in res:
        k = res["kills"]
        lines += ["## Kills in one run", "", (f"{len(k['kills'])} SIGKILLs ({', '.join(x['role'] for x in k['kills'])}) in one "
                  f"{k['steps']}-step `srum train --engine ray` run: exit {k['exit']}; {k['rollout_ids_learned']} rollout ids "
                  f"learned, {k['distinct_rollout_ids']} distinct; every batch learned: {k['batches_learned']}; samples lost: "
                  f"{k['samples_lost']}; re-issued batches {k['reissued']}; restarts {k['restarts']}."), ""]
    if "resume" in res:
        lines += ["## Exact resume (SHA-256 of the final weights)", "", "| engine | kill | killed at | resumed equal |", "|---|---|---|---|"]
        for engine, r in res["resume"].items():
            for name, c in r["kills"].items():
                lines.append(f"| {engine} | {name} | {c['killed_at']} | {c['equal']} ({c['sha256']} vs {r['sha256']}) |")
        lines.append("")
    if "streaming" in res:
        s = res["streaming"]
        lines += ["## Streaming across a kill", "", (f"max_staleness 2, driver killed after step {s['killed_after_step']}, "
                  f"resumed from {s['checkpoint']}: each batch once {s['each_batch_once']}, none skipped {s['none_skipped']}."), ""]
    if "sockets" in res:
        lines += ["## Listening sockets", "", "| command | listeners | all loopback |", "|---|---|---|"]
        for k, v in res["sockets"].items():
            lines.append(f"| `{k}` | {', '.join(v['listeners'])} | {v['all_loopback']} |")
        lines.append("")
    if "bad_input" in res:
        lines += ["## Bad input", "", (f"{res['bad_input']['cases']} cases (tests/test_bad_input.py), each exit 2 with this "
                  "error, no traceback, nothing on disk changed:"), "", "| input | error |", "|---|---|"]
        for r in res["bad_input"]["rows"]:
            lines.append(f"| {r['input']} | `{r['error'].replace('|', '/').splitlines()[-1]}` |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="kills,resume,streaming,sockets,bad_input")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "faults")
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.out)
    parts = args.parts.split(",")
    old = json.loads((RESULTS / "reliability.json").read_text()) if (RESULTS / "reliability.json").exists() else {}
    res = {**old, "command": "python bench/faults.py " + " ".join(sys.argv[1:]), "machine": "2 CPU cores"}
    for part in parts:
        t = time.time()
        if part == "kills":
            res["kills"] = part_kills(model, args.out, args.kills)
        elif part == "resume":
            res["resume"] = part_resume(model, args.out)
        elif part == "streaming":
            res["streaming"] = part_streaming(model, args.out)
        elif part == "sockets":
            res["sockets"] = part_sockets(model, args.out)
        elif part == "bad_input":
            res["bad_input"] = part_bad_input()
        res.setdefault("commands", {})[part] = f"python bench/faults.py --parts {part}"  # parts may come from several runs
        print(json.dumps({part: res[part], "seconds": round(time.time() - t)}, default=str), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)  # after every part: a later part that fails loses nothing
        (RESULTS / "reliability.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (RESULTS / "reliability.md").write_text(markdown(res))


if __name__ == "__main__":
    main()
