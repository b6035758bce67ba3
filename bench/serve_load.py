"""Load on `srum serve` over loopback: requests/s and p50 / p99 latency of POST /generate (n = 1) and POST /judge at
1, 4 and 16 concurrent clients (threads, one keep-alive connection each), a fixed number of requests per level, on a
private loopback Ray instance deployed as `srum serve` does (srum.serve.start). Writes docs/results/serve_load.{json,md}.

    python bench/serve_load.py [--model builtin|DIR] [--requests 40] [--levels 1,4,16] [--replicas-max 2]
"""

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import threading
import time
import urllib.parse

from common import md_table, write

PROMPTS = ["a red square", "two blue circles", "a green triangle to the left of a yellow square", "three white triangles"]


def level(url: str, path: str, bodies: list[bytes], clients: int, headers: dict) -> dict:
    """Send every body once, `clients` threads at a time; latency per request, throughput overall."""
    lock, todo, lat, codes = threading.Lock(), list(range(len(bodies))), [], {}

    def client():
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=120)
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop()
            t = time.perf_counter()
            conn.request("POST", path, bodies[i], headers)
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                codes[r.status] = codes.get(r.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(bodies), "status": {str(k): v for k, v in sorted(codes.items())},
            "requests_per_s": round(len(bodies) / wall, 2), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * sorted(lat)[max(0, math.ceil(0.99 * len(lat)) - 1)], 1), "max_ms": round(1000 * max(lat), 1), "wall_s": round(wall, 2)}


def replicas() -> dict:
    from ray import serve

    app = serve.status().applications["srum"]
    return {name: sum(n for state, n in d.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")
            for name, d in app.deployments.items()}


def run(url: str, token: str | None, n_requests: int, levels: list[int]) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    gen = [json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "n": 1, "seed": i}).encode() for i in range(n_requests)]
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=120)
    conn.request("POST", "/generate", gen[0], headers)
    image = json.loads(conn.getresponse().read())["images"][0]  # one image, judged against the four prompts
    jud = [json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "image": image}).encode() for i in range(n_requests)]
    level(url, "/generate", gen[: min(8, n_requests)], 2, headers)  # warm-up, not reported
    level(url, "/judge", jud[: min(8, n_requests)], 2, headers)
    out = {}
    for path, bodies in (("/generate", gen), ("/judge", jud)):
        out[path] = []
        for c in levels:
            r = level(url, path, bodies, c, headers)
            r["replicas_after"] = replicas()
            out[path].append(r)
            print(json.dumps({path: r}), flush=True)
    return out


def markdown(res: dict) -> str:
    rows = [(path, r["clients"], r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["max_ms"],
             ", ".join(f"{k}: {v}" for k, v in r["status"].items()), ", ".join(f"{k} {v}" for k, v in r["replicas_after"].items()))
            for path, rs in res["results"].items() for r in rs]
    return "\n".join([
        "# `srum serve` under load (issue 6, part 3)", "", f"Measured on {res['machine']}, {res['date']}, with", "",
        f"    {res['command']}", "", f"Load average (1, 5, 15 min) before the run: {', '.join(map(str, res['load_average_before']))}.", "",
        (f"Model: {res['model']}; sampler {res['sampling']}; Ray Serve autoscaling 1..{res['replicas_max']} replicas "
         f"per model deployment (target 2 ongoing requests each); {res['requests']} requests per level, "
         "after a warm-up; one keep-alive HTTP connection per client thread, loopback."), "",
        *md_table(["route", "clients", "requests/s", "p50 ms", "p99 ms", "max ms", "status", "replicas after"], rows)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", default=os.environ.get("SRUM_SERVE_TOKEN"))
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--replicas-max", type=int, default=2)
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every figure
    import socket

    import ray
    from ray import serve

    from srum.serve import start
    from srum.serve.requests import SAMPLING

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        url = start(args.model, port=port, token=args.token, replicas_max=args.replicas_max)
        results = run(url, args.token, args.requests, [int(x) for x in args.levels.split(",")])
    finally:
        serve.shutdown()
        ray.shutdown()
    res = {"command": f"python bench/serve_load.py --requests {args.requests} --levels {args.levels} --replicas-max {args.replicas_max}",
           "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU", "date": time.strftime("%Y-%m-%d"),
           "load_average_before": load_before, "model": args.model, "sampling": SAMPLING, "replicas_max": args.replicas_max,
           "requests": args.requests, "url": "private loopback instance", "results": results}
    print(json.dumps(res, indent=2))
    write("serve_load", res, markdown(res))


if __name__ == "__main__":
    main()
