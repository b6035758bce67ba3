"""`srum serve`: the model behind HTTP with Ray Serve.

    POST /generate {"prompt": str, "n": 1..16 (default 1), "seed": int (default 0)}
         -> {"prompt", "category", "n", "seed", "policy_version", "images": [base64 RGB PNG at the model's size:
             32x32 for the built-in, 1024x1024 for BAGEL-7B-MoT at its defaults]}
    POST /judge    {"prompt": str, "image": base64 RGB PNG at a size the model's judge takes: 32x32 for the
                    built-in; for BAGEL any width and height from one ViT patch (14) to its largest image (1024),
                    its own /generate size included (the understanding transform resizes it for the ViT)}
         -> {"prompt", "policy_version", "global_score", "regions": [{"box", "label", "score"}], "relation_score",
             "reward_map": H x W floats (the image's size), "reward_map_range": [lo, hi], "reward_map_png": base64 grey PNG}
    GET  /healthz  -> {"ok": true, "policy_version", "judge_policy_version", "checkpoint", "judge_image_sides": [lo, hi]}

Request bodies are limited to MAX_BODY (64 KiB), /judge's to MAX_BODY plus the largest PNG of its largest image
(`ImageSides.max_body`: 69 KiB for 32 x 32, 4.1 MiB for 1024 x 1024); over it a 413 names the limit, an image of
another size a 422 names the sizes accepted. The sizes follow the loaded model: the ingress asks the judge
deployment once (`Judge.sides`).

Three deployments: `Api` (the FastAPI ingress: authentication, size limits, validation, one replica)
calls `Generator` and `Judge` through deployment handles; those two hold a model each and autoscale
between 1 and --replicas-max replicas. Every malformed request is answered 4xx with {"error": message}
before it reaches a model; a full queue is 503. With --follow RUN_DIR each model replica polls
RUN_DIR/checkpoints/latest and swaps in a checkpoint when `latest` names a different one (the judge
serves the checkpoint's understanding head).

No `from __future__ import annotations` here: FastAPI reads the handlers' `Request` annotations at
import time, and string annotations on the ingress class's methods are not resolved.
"""

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..world import parse
from .requests import (
    APP_NAME,
    MAX_BODY,
    POLL_S,
    SAMPLING,
    ImageSides,
    RequestError,
    encode_png,
    generate_request,
    judge_request,
    judge_sides,
    judgement_json,
    log,
)



class Following:
    """A replica's model (and whatever is built from it); with a run directory, swapped for the run's
    checkpoint whenever RUN_DIR/checkpoints/latest names a different one. Readers take `current` once
    per request, so a swap never mixes two models inside one request."""

    def __init__(self, model: str, follow: str | None, poll_s: float, build=lambda m: m):
        import torch

        from ..models import load_model

        torch.set_num_threads(1)  # one core per replica; concurrency comes from replicas
        self.build, self.follow, self.checkpoint = build, Path(follow) if follow else None, None
        m = load_model(model)  # its policy_version is the one it was saved at (0 for the built-in)
        self.current = (m, build(m))
        if self.follow is not None:
            self._poll_quietly()
            threading.Thread(target=self._loop, args=(poll_s,), daemon=True, name="srum-follow").start()

    def poll(self) -> bool:
        from ..models import load_model

        latest = self.follow / "checkpoints" / "latest"
        try:
            name = latest.read_text().strip()
        except FileNotFoundError:
            return False
        if not name or name == self.checkpoint:
            return False
        d = latest.parent / name
        state = json.loads((d / "state.json").read_text())
        m = load_model(d / "model")
        m.policy_version = int(state["policy_version"])
        self.current, self.checkpoint = (m, self.build(m)), name
        log.info("srum serve: now serving %s (policy_version %d)", d, m.policy_version)
        return True

    def _poll_quietly(self) -> None:
        try:
            self.poll()
        except Exception as e:  # a checkpoint pruned or half-copied: keep serving, retry next time
            log.warning("srum serve: could not load the run's latest checkpoint: %s", e)

    def _loop(self, poll_s: float) -> None:
        while True:
            time.sleep(poll_s)
            self._poll_quietly()

    @property
    def version(self) -> dict:
        return {"policy_version": self.current[0].policy_version, "checkpoint": self.checkpoint}


# One computation at a time per replica, on one torch thread (a second concurrent forward pass of a small
# model only fights over the GIL). Requests wait in the replica's executor, so a replica accepts many at
# once and /healthz's version call never queues behind generation; beyond that, 64 wait in the router.
MODEL_OPTIONS = {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 32, "max_queued_requests": 64,
                 "health_check_period_s": 5.0}


class ModelReplica:
    def __init__(self, model: str, follow: str | None, poll_s: float, build=lambda m: m):
        self.m = Following(model, follow, poll_s, build)
        self.compute = ThreadPoolExecutor(1, thread_name_prefix="srum-compute")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.compute, fn, *args)

    async def version(self) -> dict:
        return self.m.version


@serve.deployment(**MODEL_OPTIONS)
class Generator(ModelReplica):
    async def generate(self, prompt: str, n: int, seed: int) -> dict:
        return await self.run(self._generate, prompt, n, seed)

    def _generate(self, prompt: str, n: int, seed: int) -> dict:
        from ..models import SampleOptions
        from ..rollout.draw import draw_rollouts

        model, _ = self.m.current
        rollouts = draw_rollouts(model, [prompt], n, seed, SampleOptions(**SAMPLING))
        return {"policy_version": model.policy_version, "images": [encode_png(r.image) for r in rollouts]}


@serve.deployment(**MODEL_OPTIONS)
class Judge(ModelReplica):
    def __init__(self, model: str, follow: str | None, poll_s: float):
        from ..config import RewardConfig
        from ..stages import make_judge

        self.reward = RewardConfig()
        super().__init__(model, follow, poll_s, build=lambda m: make_judge(m, self.reward))

    async def judge(self, prompt: str, image: np.ndarray) -> dict:
        return await self.run(self._judge, prompt, image)

    async def sides(self) -> tuple[int, int]:
        """The image sides this model's judge takes (`judge_sides`): what /judge accepts."""
        return judge_sides(self.m.current[0])

    def _judge(self, prompt: str, image: np.ndarray) -> dict:
        from ..records import Rollout

        model, judge = self.m.current
        latent = np.zeros(0, np.float32)  # only the image is judged
        j = judge.judge([Rollout("request", prompt, parse(prompt).category, image, latent, model.policy_version)])[0]
        return {"policy_version": model.policy_version, **judgement_json(j)}


# ---------------------------------------------------------------- the HTTP ingress

app = FastAPI(title="srum", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_request, e: StarletteHTTPException):  # unknown path 404, wrong method 405: same shape
    return JSONResponse({"error": str(e.detail)}, e.status_code, headers=getattr(e, "headers", None))


async def read_body(request: Request, limit: int = MAX_BODY, what: str = "") -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"body of {declared} bytes is over the {limit}-byte limit{what}")
    buf = bytearray()
    async for chunk in request.stream():  # chunked bodies carry no Content-Length: count as they come
        buf += chunk
        if len(buf) > limit:
            raise RequestError(413, f"body is over the {limit}-byte limit{what}")
    return bytes(buf)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(app)
class Api:
    def __init__(self, generator, judge, token_sha256: str | None):
        self.generator, self.judge_, self.token_sha256 = generator, judge, token_sha256
        self.sides = None  # what /judge accepts: asked of the judge deployment (its loaded model) once

    async def _judge_sides(self) -> ImageSides:
        if self.sides is None:
            self.sides = ImageSides(*await self.judge_.sides.remote())
        return self.sides

    def _authorise(self, request: Request) -> None:
        if self.token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise RequestError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")

    async def _answer(self, request: Request, work) -> JSONResponse:
        from ray.serve.exceptions import BackPressureError

        try:
            self._authorise(request)
            return JSONResponse(await work())
        except RequestError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return JSONResponse({"error": e.message}, e.status, headers=headers)
        except BackPressureError:
            return JSONResponse({"error": "server busy: too many queued requests, retry later"}, 503,
                                headers={"Retry-After": "1"})
        except Exception as e:  # a fault of ours (a replica died, a bug), never of the request: keep it JSON
            log.exception("srum serve: %s %s failed", request.method, request.url.path)
            return JSONResponse({"error": f"internal error: {type(e).__name__}"}, 500)

    @app.post("/generate")
    async def generate(self, request: Request) -> JSONResponse:
        async def work():
            prompt, n, seed = generate_request(await read_body(request))
            out = await self.generator.generate.remote(prompt, n, seed)
            return {"prompt": prompt, "category": parse(prompt).category, "n": n, "seed": seed, **out}
        return await self._answer(request, work)

    @app.post("/judge")
    async def judge(self, request: Request) -> JSONResponse:
        async def work():
            sides = await self._judge_sides()
            raw = await read_body(request, sides.max_body, f" of /judge ({sides})")
            prompt, image = judge_request(raw, sides)
            return {"prompt": prompt, **await self.judge_.judge.remote(prompt, image)}
        return await self._answer(request, work)

    @app.get("/healthz")
    async def healthz(self, request: Request) -> JSONResponse:
        async def work():
            g, j = await self.generator.version.remote(), await self.judge_.version.remote()
            sides = await self._judge_sides()
            return {"ok": True, "policy_version": g["policy_version"], "judge_policy_version": j["policy_version"],
                    "checkpoint": g["checkpoint"], "judge_image_sides": [sides.lo, sides.hi]}
        return await self._answer(request, work)


# ---------------------------------------------------------------- building and running

def build(model: str = "builtin", follow: str | Path | None = None, token: str | None = None, replicas_max: int = 2,
          poll_s: float = POLL_S):
    """The Serve application: Api -> (Generator, Judge), each model deployment autoscaling 1..replicas_max."""
    if replicas_max < 1:
        raise ValueError(f"--replicas-max must be at least 1 (got {replicas_max})")
    scaling = {"min_replicas": 1, "max_replicas": replicas_max, "target_ongoing_requests": 2,
               "upscale_delay_s": 3.0, "downscale_delay_s": 30.0}
    model = model if model == "builtin" else str(Path(model).resolve())
    follow = str(Path(follow).resolve()) if follow else None
    digest = hashlib.sha256(token.encode()).hexdigest() if token else None  # the token itself is not shipped
    gen = Generator.options(autoscaling_config=scaling).bind(model, follow, poll_s)
    judge = Judge.options(autoscaling_config=scaling).bind(model, follow, poll_s)
    return Api.bind(gen, judge, digest)


def start(model: str = "builtin", follow=None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          replicas_max: int = 2, poll_s: float = POLL_S) -> str:
    """Start Serve on the connected Ray instance and deploy; returns the base URL once it answers."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(model, follow, token, replicas_max, poll_s), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def check_model(model: str) -> None:
    """Refuse a model that cannot load before any replica tries (the message names the file and why)."""
    from ..models import backend_of, model_dir

    backend_of(model_dir(model))


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve_forever(args) -> int:
    """`srum serve`: deploy, print the URL, block until SIGINT / SIGTERM, then shut down what we started."""
    import ray

    from ..actors.driver import connect
    from ..io import InputError

    token = args.token or os.environ.get("SRUM_SERVE_TOKEN") or None
    if args.replicas_max < 1:
        raise InputError(f"--replicas-max must be at least 1 (got {args.replicas_max})")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be between 1 and 65535 (got {args.port})")
    check_model(args.model)
    owned = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")  # else: a cluster someone else runs
    if owned and not port_free(args.host, args.port):
        raise InputError(f"{args.host}:{args.port} is in use; pick another --port")
    if args.follow and not (Path(args.follow) / "checkpoints" / "latest").exists():
        print(f"srum serve: {args.follow} has no checkpoint yet; serving {args.model} until one appears", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"srum serve: warning: listening on {args.host} without a token (--token or SRUM_SERVE_TOKEN)", flush=True)
    connect(None)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = start(args.model, args.follow, args.host, args.port, token, args.replicas_max)
        print(json.dumps({"serving": url, "model": args.model, "follow": str(args.follow) if args.follow else None,
                          "routes": ["POST /generate", "POST /judge", "GET /healthz"], "token": bool(token)}), flush=True)
        while not stop.wait(1.0):
            pass
        print("srum serve: shutting down", flush=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if owned:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(APP_NAME)
    return 0
