"""Issue 19 soak: `srum train --engine ray` for --minutes with a generator or judge SIGKILLed every --kill-every
seconds, beside `srum serve` under a bounded load loop, on one loopback Ray head. Writes docs/results/soak.{json,md}.

    python bench/soak.py [--minutes 30] [--kill-every 180] [--concurrency 2] [--out runs/soak]

Every 30 s: the RSS and open files of all the run's processes and Ray's object count; every request's status and
latency. Pass: RSS growth after warm-up < 10 %, no growth in open files or Ray objects, every request answered.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import ROOT, actor_pids, descendants, env, jsonl, md_table, start, stop, tiny_model, wait_for_text, write
from faults import train_cmd

sys.path.insert(0, str(ROOT / "tests"))  # ray_head
WARMUP_MIN = 5  # minutes before the figures count
PROBE = ("import ray; ray.init(address={!r}, log_to_driver=False, namespace='soak'); from ray.util.state import list_objects; "
         "print(len(list_objects(limit=10000, detail=True, raise_on_missing_output=False)))")


def usage(pids: list[int]) -> dict:
    """The resident memory (MB) and the open files of these processes together (one that ended counts nothing)."""
    kb = files = 0
    for p in pids:
        try:
            kb += sum(int(x.split()[1]) for x in Path(f"/proc/{p}/status").read_text().splitlines() if x.startswith("VmRSS:"))
            files += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {"rss_mb": round(kb / 1024, 1), "open_files": files}


def ray_objects(address: str, environment: dict) -> int | None:
    """How many object references Ray holds now, asked in the head's environment (its auth token); a probe that
    hangs counts as no answer, not as the end of the soak. (Grouped by owner and call site: at tag archive/experiments-2026-12.)"""
    try:
        r = subprocess.run([sys.executable, "-c", PROBE.format(address)], capture_output=True, text=True, timeout=120, env=environment)
        return int(r.stdout.split()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def steady(values: list[float]) -> dict:
    """Growth in a steady state: the median of the last third of the samples against the median of the middle third
    (a bounded cache filled during warm-up does not count; a leak keeps rising), and the least-squares slope per 10."""
    n = len(values)
    if n < 6:
        return {"middle_median": None, "last_median": None, "growth": None, "slope_per_10_samples": None}
    mid, last = sorted(values[n // 3 : 2 * n // 3]), sorted(values[2 * n // 3 :])
    m, z = mid[len(mid) // 2], last[len(last) // 2]
    xbar, ybar = (n - 1) / 2, sum(values) / n
    slope = sum((i - xbar) * (v - ybar) for i, v in enumerate(values)) / sum((i - xbar) ** 2 for i in range(n))
    return {"middle_median": m, "last_median": z, "growth": round(z / m - 1, 4) if m else None, "slope_per_10_samples": round(10 * slope, 2)}


def client(url: str, seed: int, image: str, halt: threading.Event, rows: list) -> None:
    """One client of the bounded load loop: it sends its next request when its last one is answered."""
    rng = random.Random(seed)
    while not halt.is_set():
        kind = rng.choice(["generate", "judge", "bad"])
        body = {"generate": {"prompt": "two red squares", "n": 2, "seed": rng.randrange(1000)},
                "judge": {"prompt": "a red square", "image": image}, "bad": {"prompt": "a red squircle"}}[kind]
        req = urllib.request.Request(url + ("/judge" if kind == "judge" else "/generate"), json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except Exception:  # noqa: BLE001 - a request that got no answer at all is what the soak counts
            status = None
        rows.append({"kind": kind, "status": status, "s": time.perf_counter() - t, "t": time.time()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=180)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    args = ap.parse_args()
    import numpy as np
    from ray_head import start_head, stop_head

    from srum.serve import encode_png

    args.out.mkdir(parents=True, exist_ok=True)
    model, procs = tiny_model(args.out), []
    head = start_head({"RAY_record_ref_creation_sites": "1"}, num_cpus=4)  # training (1.25) and serving (1-2) share 2 cores
    try:
        e, port = {**head.env, **env(RAY_ADDRESS=head.address)}, 18500 + os.getpid() % 400
        train = start(train_cmd(model, args.out / "run", 100000, "ray", f"time_budget_min={args.minutes}", "ray.generators=2",
                                "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25", "ray.learner.num_cpus=0.5",
                                "checkpoint_every=50"), args.out / "train.log", e)
        serve = start([sys.executable, "-m", "srum.cli", "serve", "--model", str(model), "--port", str(port)], args.out / "serve.log", e)
        procs = [train, serve]
        wait_for_text(args.out / "serve.log", "serving", serve, 300)
        halt, rows, image = threading.Event(), [], encode_png(np.zeros((32, 32, 3), np.uint8))
        clients = [threading.Thread(target=client, args=(f"http://127.0.0.1:{port}", i, image, halt, rows), daemon=True)
                   for i in range(args.concurrency)]
        for th in clients:
            th.start()
        samples, kills, last_kill, t0 = [], [], time.time(), time.time()
        # the head's own processes (GCS, raylet, agents: their command lines name its temp dir); actors descend from the raylet
        raylet_root = [int(p) for p in subprocess.run(["pgrep", "-f", "--", str(head.temp_dir)], capture_output=True, text=True).stdout.split()]
        while train.poll() is None:
            time.sleep(30)
            pids = descendants([train.pid, serve.pid, *raylet_root])
            samples.append({"t_min": round((time.time() - t0) / 60, 2), **usage(pids), "processes": len(pids),
                            "ray_objects": ray_objects(head.address, e)})
            print(json.dumps(samples[-1]), flush=True)
            if time.time() - last_kill > args.kill_every:
                role = random.choice(["GeneratorActor", "JudgeActor"])
                if victims := [p for root in raylet_root for p in actor_pids(role, root)]:  # not this process's descendants
                    os.kill(victims[0], signal.SIGKILL)
                    kills.append({"t_min": samples[-1]["t_min"], "role": role})
                last_kill = time.time()
        halt.set()
        for th in clients:
            th.join(timeout=150)
        code = train.wait()
    finally:
        for p in procs:
            stop(p)
        stop_head(head)
    # after warm-up, while everything ran: the sample taken as the run was shutting down says nothing about leaks
    running = max(s["processes"] for s in samples)
    warm = [s for s in samples if s["t_min"] >= WARMUP_MIN and s["processes"] == running]
    res = summarize(warm, rows, kills, code, jsonl(args.out / "run" / "metrics.jsonl")[-1], args) | {"samples": samples}
    write_results(res, args)
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))


def summarize(warm: list[dict], rows: list[dict], kills: list[dict], code: int, steps: dict, args) -> dict:
    lat = sorted(r["s"] for r in rows if r["status"] == 200)
    statuses = dict(collections.Counter(str(r["status"]) for r in rows))
    probed = [s for s in warm if s["ray_objects"] is not None]
    res = {"command": "python bench/soak.py " + " ".join(sys.argv[1:]), "minutes": args.minutes, "warmup_min": WARMUP_MIN,
           "train_exit": code, "kills": kills, "train_steps": steps["step"],
           "train_restarts": {r: steps.get(f"restarts_{r}") for r in ("generator", "judge")},
           "rss_growth": round(warm[-1]["rss_mb"] / warm[0]["rss_mb"] - 1, 4)}
    for key, name, xs in (("rss_mb", "rss", warm), ("open_files", "open_files", warm), ("ray_objects", "ray_objects", probed)):
        vals = [s[key] for s in xs]
        res |= {f"{key}_after_warmup": vals[0] if vals else None, f"{key}_at_end": vals[-1] if vals else None,
                f"{key}_max_after_warmup": max(vals, default=None), f"{name}_steady": steady(vals)}
    res |= {"requests": len(rows), "statuses": statuses, "unanswered": statuses.get("None", 0),
            "every_request_answered": statuses.get("None", 0) == 0 and all(k in ("200", "422", "400", "413", "503") for k in statuses),
            "latency_s": {"p50": round(lat[len(lat) // 2], 4) if lat else None, "p99": round(lat[int(len(lat) * 0.99)], 4) if lat else None}}
    objs = res["ray_objects_steady"]
    res["pass"] = {"rss_growth_under_10pct": res["rss_growth"] < 0.10, "open_files_steady": (res["open_files_steady"]["growth"] or 0) <= 0.02,
                   "ray_objects_steady": objs["growth"] is not None and objs["growth"] <= 0.10,
                   "every_request_answered": res["every_request_answered"], "kills_fired": len(kills) > 0}
    return res


def write_results(res: dict, args) -> None:
    def row(label: str, name: str, key: str) -> tuple:
        st = res[f"{name}_steady"]
        growth = "n/a" if st["growth"] is None else f"{st['growth']:+.1%}"
        return (label, res[f"{key}_after_warmup"], res[f"{key}_at_end"], f"{st['middle_median']} -> {st['last_median']} ({growth})",
                st["slope_per_10_samples"])

    write("soak", res, "\n".join([
        f"# Soak ({args.minutes:g} minutes)", "", (f"Produced by `{res['command']}` on 2 CPU cores: `srum train --engine ray` with "
        f"{len(res['kills'])} actor kills ({', '.join(k['role'] for k in res['kills'])}), beside `srum serve` under {args.concurrency} "
        f"clients. Train exit {res['train_exit']}, {res['train_steps']} steps, restarts {res['train_restarts']}. Samples every 30 s; "
        f"warm-up {res['warmup_min']:g} min; *steady state*: the notes below."), "",
        *md_table(["figure", "after warm-up", "at end", "steady state: middle -> last third", "slope / 5 min"],
                  [row("RSS of every process (MB)", "rss", "rss_mb"), row("open files", "open_files", "open_files"),
                   row("Ray objects", "ray_objects", "ray_objects")]), "",
        f"RSS growth after warm-up: {100 * res['rss_growth']:+.1f} % (limit 10 %). Pass: {res['pass']}.", "",
        (f"Requests: {res['requests']}, statuses {res['statuses']}; latency of answered requests p50 {res['latency_s']['p50']} s, "
         f"p99 {res['latency_s']['p99']} s.")]) + "\n")


if __name__ == "__main__":
    main()
