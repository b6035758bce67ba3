"""Issue 19 soak: `srum train --engine ray` for --minutes with a generator or judge SIGKILLed every --kill-every
seconds, beside `srum serve` under a bounded load loop, both on one Ray head on loopback. Writes
docs/results/soak.{json,md}.

    python bench/soak.py [--minutes 30] [--kill-every 180] [--model DIR] [--concurrency 2] [--out runs/soak]

Measured: the resident memory (RSS) of all the run's processes and their open files, every 30 s; Ray's object count
(the state API); every HTTP request's status and latency. Pass: RSS growth after warm-up (the first 5 minutes)
< 10 %, no growth in open files or Ray objects, every request answered 200 or refused 4xx/503.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def tree(root_pids: list[int]) -> list[int]:
    """Every live process descending from the given ones (Ray's workers descend from its raylet)."""
    ps = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    children: dict[int, list[int]] = {}
    for line in ps:
        if line.strip():
            pid, ppid = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
    out, todo = [], list(root_pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return round(total / 1024, 1)


def open_files(pids: list[int]) -> int:
    n = 0
    for p in pids:
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, PermissionError):
            pass
    return n


PROBE = """
import collections, json, subprocess, ray
ray.init(address={address!r}, log_to_driver=False, namespace="soak")
from ray.util.state import list_objects
objs = list_objects(limit=10000, detail=True, raise_on_missing_output=False)
title = dict(l.split(None, 1) for l in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.split(chr(10))[1:] if l.strip())
by = collections.Counter(f"{{title.get(str(o.pid), '?').split()[0]}} | {{o.reference_type}} | {{o.call_site}}" for o in objs)
print(json.dumps({{"total": len(objs), "by_owner": dict(by.most_common(8))}}))
"""


def ray_objects(address: str, env: dict) -> dict | None:
    """Ray's object references now: how many, and the largest groups by (owning process, reference type, call site
    where the head records them)."""
    try:  # the head's environment: its auth token; a probe that hangs counts as no answer, not as the end of the soak
        r = subprocess.run([sys.executable, "-c", PROBE.format(address=address)], capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return None
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def steady(values: list[float]) -> dict:
    """Growth in a steady state: the median of the last third of the samples against the median of the middle
    third (a bounded cache that filled during warm-up does not count; a leak keeps rising), and the least-squares
    slope over all of them per 10 samples."""
    n = len(values)
    if n < 6:
        return {"middle_median": None, "last_median": None, "growth": None, "slope_per_10_samples": None}
    mid, last = sorted(values[n // 3 : 2 * n // 3]), sorted(values[2 * n // 3 :])
    m, l = mid[len(mid) // 2], last[len(last) // 2]
    xbar, ybar = (n - 1) / 2, sum(values) / n
    slope = sum((i - xbar) * (v - ybar) for i, v in enumerate(values)) / sum((i - xbar) ** 2 for i in range(n))
    return {"middle_median": m, "last_median": l, "growth": round(l / m - 1, 4) if m else None,
            "slope_per_10_samples": round(10 * slope, 2)}


class Load:
    """A bounded load loop: `concurrency` clients, each sending the next request when its last one is answered."""

    def __init__(self, url: str, concurrency: int, image_b64: str):
        self.url, self.stop, self.rows = url, threading.Event(), []
        self.image = image_b64
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(concurrency)]

    def _client(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stop.is_set():
            kind = rng.choice(["generate", "judge", "bad"])
            body = {"generate": {"prompt": "two red squares", "n": 2, "seed": rng.randrange(1000)},
                    "judge": {"prompt": "a red square", "image": self.image},
                    "bad": {"prompt": "a red squircle"}}[kind]
            route = "/judge" if kind == "judge" else "/generate"
            req = urllib.request.Request(self.url + route, json.dumps(body).encode(), {"Content-Type": "application/json"})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except Exception:  # noqa: BLE001 - a request that got no answer at all is what the soak counts
                status = None
            self.rows.append({"kind": kind, "status": status, "s": time.perf_counter() - t, "t": time.time()})

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=150)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=180)
    ap.add_argument("--warmup-min", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    args = ap.parse_args()
    from faults import actor_pids, build_model, env, train_cmd
    from ray_head import start_head, stop_head

    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.out)
    head = start_head({"RAY_record_ref_creation_sites": "1"}, num_cpus=4)  # logical CPUs: training (1.25) and serving (1-2) share 2 physical cores
    procs = []
    try:
        e = {**head.env, **env(RAY_ADDRESS=head.address)}
        train = subprocess.Popen(train_cmd(model, args.out / "run", 100000, "ray", f"time_budget_min={args.minutes}", "ray.generators=2",
                                           "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25", "ray.learner.num_cpus=0.5",
                                           "checkpoint_every=50"),
                                 stdout=(args.out / "train.log").open("w"), stderr=subprocess.STDOUT, env=e, cwd=ROOT)
        port = 18500 + os.getpid() % 400
        serve = subprocess.Popen([sys.executable, "-m", "srum.cli", "serve", "--model", str(model), "--port", str(port)],
                                 stdout=(args.out / "serve.log").open("w"), stderr=subprocess.STDOUT, env=e, cwd=ROOT)
        procs = [train, serve]
        url = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while "serving" not in (args.out / "serve.log").read_text():
            if time.time() - t0 > 300 or serve.poll() is not None:
                raise RuntimeError("srum serve did not start: " + (args.out / "serve.log").read_text()[-2000:])
            time.sleep(1)
        import base64
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
        load = Load(url, args.concurrency, base64.b64encode(buf.getvalue()).decode())
        load.start()
        samples, kills, last_kill, start = [], [], time.time(), time.time()
        # the head's own processes (GCS, raylet, agents: their command lines name its temp dir); actors descend from the raylet
        raylet_root = [int(p) for p in subprocess.run(["pgrep", "-f", "--", str(head.temp_dir)],
                                                      capture_output=True, text=True).stdout.split()]
        while train.poll() is None:
            time.sleep(30)
            pids = tree([train.pid, serve.pid, *raylet_root])
            samples.append({"t_min": round((time.time() - start) / 60, 2), "rss_mb": rss_mb(pids), "open_files": open_files(pids),
                            "processes": len(pids), "ray_objects": (probe := ray_objects(head.address, e)) and probe["total"],
                            "ray_objects_by_owner": probe and probe["by_owner"]})
            print(json.dumps(samples[-1]), flush=True)
            if time.time() - last_kill > args.kill_every:
                role = random.choice(["GeneratorActor", "JudgeActor"])
                # actors descend from the head's raylet (whose parent is init), not from this process
                victims = [p for root in raylet_root for p in actor_pids(role, root)]
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    kills.append({"t_min": samples[-1]["t_min"], "role": role})
                last_kill = time.time()
        load.finish()
        code = train.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        stop_head(head)
    # after warm-up, while everything ran: the sample taken as the run was shutting down says nothing about leaks
    running = max(s["processes"] for s in samples)
    warm = [s for s in samples if s["t_min"] >= args.warmup_min and s["processes"] == running]
    steps = json.loads((args.out / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    res = summarize(warm, load.rows, kills, code, steps, args)
    res["samples"] = samples
    write_results(res, args)
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))


def summarize(warm: list[dict], rows: list[dict], kills: list[dict], code: int, steps: dict, args) -> dict:
    first, last = warm[0], warm[-1]
    lat = sorted(r["s"] for r in rows if r["status"] == 200)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    probed = [s for s in warm if s["ray_objects"] is not None]
    objs = steady([s["ray_objects"] for s in probed])
    res = {"command": "python bench/soak.py " + " ".join(sys.argv[1:]), "minutes": args.minutes, "warmup_min": args.warmup_min,
           "train_exit": code, "kills": kills, "train_steps": steps["step"],
           "train_restarts": {r: steps.get(f"restarts_{r}") for r in ("generator", "judge")},
           "rss_mb_after_warmup": first["rss_mb"], "rss_mb_at_end": last["rss_mb"],
           "rss_growth": round(last["rss_mb"] / first["rss_mb"] - 1, 4), "rss_steady": steady([s["rss_mb"] for s in warm]),
           "open_files_after_warmup": first["open_files"], "open_files_at_end": last["open_files"],
           "open_files_max_after_warmup": max(s["open_files"] for s in warm),
           "open_files_steady": steady([s["open_files"] for s in warm]),
           "ray_objects_after_warmup": probed[0]["ray_objects"] if probed else None,
           "ray_objects_at_end": probed[-1]["ray_objects"] if probed else None,
           "ray_objects_max_after_warmup": max(s["ray_objects"] for s in probed) if probed else None,
           "ray_objects_steady": objs,
           "ray_objects_by_owner": {"after_warmup": probed[0].get("ray_objects_by_owner") if probed else None,
                                    "at_end": probed[-1].get("ray_objects_by_owner") if probed else None},
           "requests": len(rows), "statuses": statuses, "unanswered": statuses.get("None", 0),
           "every_request_answered": statuses.get("None", 0) == 0 and all(k in ("200", "422", "400", "413", "503") for k in statuses),
           "latency_s": {"p50": round(lat[len(lat) // 2], 4) if lat else None, "p99": round(lat[int(len(lat) * 0.99)], 4) if lat else None}}
    res["pass"] = {"rss_growth_under_10pct": res["rss_growth"] < 0.10,
                   "open_files_steady": (res["open_files_steady"]["growth"] or 0) <= 0.02,
                   "ray_objects_steady": objs["growth"] is not None and objs["growth"] <= 0.10,
                   "every_request_answered": res["every_request_answered"], "kills_fired": len(kills) > 0}
    return res


def write_results(res: dict, args) -> None:
    out = ROOT / "docs" / "results"
    (out / "soak.json").write_text(json.dumps(res, indent=2) + "\n")
    st = {k: res[f"{k}_steady"] for k in ("rss", "open_files", "ray_objects")}

    def row(name: str, k: str, key: str) -> str:
        growth = "n/a" if st[k]["growth"] is None else f"{st[k]['growth']:+.1%}"
        return (f"| {name} | {res[f'{key}_after_warmup']} | {res[f'{key}_at_end']} | {st[k]['middle_median']} -> "
                f"{st[k]['last_median']} ({growth}) | {st[k]['slope_per_10_samples']} |\n")

    owners = res["ray_objects_by_owner"]["at_end"] or {}
    (out / "soak.md").write_text(
        f"# Soak ({args.minutes:g} minutes)\n\nProduced by `{res['command']}` on 2 CPU cores: `srum train --engine ray` with "
        f"{len(res['kills'])} actor kills ({', '.join(k['role'] for k in res['kills'])}), beside `srum serve` under {args.concurrency} "
        f"clients. Train exit {res['train_exit']}, {res['train_steps']} steps, restarts {res['train_restarts']}. Samples every 30 s; "
        f"warm-up {res['warmup_min']:g} min. *Steady state*: the median of the last third of the post-warm-up samples "
        f"against the median of the middle third (a bounded cache filled during warm-up does not count, a leak keeps "
        f"rising), and the least-squares slope per 10 samples (5 minutes).\n\n"
        f"| figure | after warm-up | at end | steady state: middle -> last third | slope / 5 min |\n|---|---|---|---|---|\n"
        + row("RSS of every process (MB)", "rss", "rss_mb") + row("open files", "open_files", "open_files")
        + row("Ray objects", "ray_objects", "ray_objects") +
        f"\nRSS growth after warm-up: {100 * res['rss_growth']:+.1f} % (limit 10 %). Pass: {res['pass']}.\n\n"
        f"Requests: {res['requests']}, statuses {res['statuses']}; latency of answered requests p50 {res['latency_s']['p50']} s, "
        f"p99 {res['latency_s']['p99']} s.\n\nRay objects at the end by (owning process | reference type | call site):\n\n"
        + "".join(f"- {k}: {v}\n" for k, v in owners.items()))


if __name__ == "__main__":
    main()
