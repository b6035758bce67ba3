"""`srum serve` (issue 6, part 3): Ray Serve deployments for /generate, /judge, /healthz on an in-process
loopback Ray instance, with a tiny model that follows a fake training run; every malformed request is a
4xx with a message; the bearer token; the CLI's refusals."""

import base64
import http.client
import io
import json
import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import numpy as np
import pytest
from conftest import tiny_janus32
from PIL import Image
from ray_head import free_port

from srum.cli import main
from srum.io import write_json, write_text
from srum.serve import (
    MAX_BODY,
    ImageSides,
    RequestError,
    decode_png,
    encode_png,
    generate_request,
    judge_request,
    judge_sides,
)

TOKEN = "s3cret-token"


def png_b64(image: np.ndarray, mode="RGB", fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(image, mode).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def bomb_png_b64() -> str:
    """A PNG header declaring 100000 x 100000 pixels: must be refused before any pixel is decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 99))
                            + chunk(b"IEND", b"")).decode()


def request(url, path, body=None, method=None, token=TOKEN, raw: bytes | None = None, headers=None):
    """(status, parsed JSON) of one HTTP request; errors are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"), headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def checkpoint(run, step, version, seed):
    """A checkpoint laid out as LearnerStage.checkpoint writes one: model/, state.json, then `latest`."""
    d = run / "checkpoints" / f"step_{step:06d}"
    tiny_janus32(d / "model", seed)
    write_json(d / "state.json", {"step": step, "policy_version": version, "data_position": step})
    write_text(run / "checkpoints" / "latest", d.name + "\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from srum.serve import start

    root = tmp_path_factory.mktemp("serve")
    run = root / "run"
    checkpoint(run, 1, 1, seed=0)
    from srum.actors.driver import start_local_ray

    if ray.is_initialized():  # an earlier module's in-process engine left its instance up
        ray.shutdown()
    start_local_ray(num_cpus=2, log_to_driver=False)
    try:
        # --model is the builtin model, but the run's checkpoint (the tiny model) is what gets served
        url = start("builtin", follow=run, port=free_port(), token=TOKEN, replicas_max=2, poll_s=0.5)
        yield url, run
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_generate_judge_and_health(server):
    url, _ = server
    status, out = request(url, "/generate", {"prompt": "a red square above a blue circle", "n": 2, "seed": 7})
    assert status == 200, out
    assert out["category"] == "spatial" and out["n"] == 2 and len(out["images"]) == 2
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in out["images"]]
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images)
    assert request(url, "/generate", {"prompt": "a red square above a blue circle", "n": 2, "seed": 7})[1]["images"] == out["images"]

    status, j = request(url, "/judge", {"prompt": "a red square above a blue circle", "image": out["images"][0]})
    assert status == 200, j
    assert -1 <= j["global_score"] <= 1 and j["policy_version"] == out["policy_version"]
    assert j["relation_score"] is None or -1 <= j["relation_score"] <= 1  # the prompt's relation, where its objects are recognised
    for r in j["regions"]:
        assert len(r["box"]) == 4 and r["label"] in ("a red square", "a blue circle") and -1 <= r["score"] <= 1
    m = np.array(j["reward_map"])
    assert m.shape == (32, 32) and j["reward_map_range"][0] <= m.min() <= m.max() <= j["reward_map_range"][1]
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(j["reward_map_png"])))).shape == (32, 32)
    # a data: URL is accepted too
    assert request(url, "/judge", {"prompt": "a red square", "image": "data:image/png;base64," + out["images"][0]})[0] == 200


@pytest.mark.slow
def test_follow_swaps_in_the_runs_newest_checkpoint(server):
    url, run = server
    status, h = request(url, "/healthz")
    assert status == 200 and h["ok"] is True and h["checkpoint"] == "step_000001" and h["policy_version"] == 1
    checkpoint(run, 2, 5, seed=1)
    deadline = time.time() + 20
    while time.time() < deadline:
        h = request(url, "/healthz")[1]
        if h["policy_version"] == 5 and h["judge_policy_version"] == 5:
            break
        time.sleep(0.3)
    assert h["checkpoint"] == "step_000002" and h["policy_version"] == 5 and h["judge_policy_version"] == 5
    assert h["judge_image_sides"] == [32, 32]  # the built-in Janus judges its own 32 x 32 only
    assert request(url, "/generate", {"prompt": "a red square"})[1]["policy_version"] == 5


@pytest.mark.slow
def test_every_malformed_request_is_a_4xx_with_a_message(server):
    url, _ = server
    zeros = np.zeros((32, 32, 3), np.uint8)
    ok_img = png_b64(zeros)
    cases = [  # (path, body or raw bytes, method, expected status, a word of the message)
        ("/generate", b"{not json", None, 400, "not valid JSON"),
        ("/generate", b"\xff\xfe\x00", None, 400, "not valid JSON"),
        ("/generate", b"[" * 50_000 + b"]" * 10_000, None, 400, "not valid JSON"),
        ("/generate", ["a red square"], None, 400, "JSON object"),
        ("/generate", {"n": 1}, None, 422, "missing field 'prompt'"),
        ("/generate", {"prompt": "a red square", "num": 2}, None, 422, "unknown field 'num'"),
        ("/generate", {"prompt": 3}, None, 422, "'prompt' must be a string"),
        ("/generate", {"prompt": "a red square", "n": "2"}, None, 422, "'n' must be an integer"),
        ("/generate", {"prompt": "a red square", "n": True}, None, 422, "'n' must be an integer"),
        ("/generate", {"prompt": "a red square", "n": 2.0}, None, 422, "'n' must be an integer"),
        ("/generate", {"prompt": "a red square", "n": 0}, None, 422, "between 1 and 16"),
        ("/generate", {"prompt": "a red square", "n": 10**40}, None, 422, "between 1 and 16"),
        ("/generate", {"prompt": "a red square", "seed": -1}, None, 422, "'seed' must be between"),
        ("/generate", {"prompt": "a red squircle"}, None, 422, "matches no CompWorld v1 template"),
        ("/generate", {"prompt": "a red square " * 100}, None, 422, "longer than"),
        ("/generate", b"x" * (MAX_BODY + 1), None, 413, "limit"),
        ("/judge", b"x" * (ImageSides().max_body + 1), None, 413, "byte limit of /judge (a 32x32 RGB PNG)"),
        ("/judge", {"prompt": "a red square"}, None, 422, "missing field 'image'"),
        ("/judge", {"prompt": "a red square", "image": 5}, None, 422, "base64 string"),
        ("/judge", {"prompt": "a red square", "image": "not base64!!"}, None, 422, "not valid base64"),
        ("/judge", {"prompt": "a red square", "image": base64.b64encode(b"hello world").decode()}, None, 422, "not a PNG image"),
        ("/judge", {"prompt": "a red square", "image": png_b64(np.zeros((64, 64, 3), np.uint8))}, None, 422, "32x32 RGB"),
        ("/judge", {"prompt": "a red square", "image": png_b64(np.zeros((32, 32), np.uint8), "L")}, None, 422, "32x32 RGB"),
        ("/judge", {"prompt": "a red square", "image": png_b64(zeros, fmt="JPEG")}, None, 422, "not a PNG image"),
        ("/judge", {"prompt": "a red square", "image": bomb_png_b64()}, None, 422, "32x32 RGB"),
        ("/judge", {"prompt": "a red square", "image": base64.b64encode(base64.b64decode(ok_img)[:60]).decode()}, None, 422, "damaged PNG"),
        ("/judge", {"prompt": "two purple hexagons", "image": ok_img}, None, 422, "CompWorld"),
        ("/nowhere", {"prompt": "a red square"}, None, 404, "Not Found"),
        ("/generate", None, "GET", 405, "Method Not Allowed"),
        ("/healthz", {}, "POST", 405, "Method Not Allowed"),
    ]
    for path, body, method, want, word in cases:
        raw = body if isinstance(body, bytes) else None
        status, out = request(url, path, None if raw else body, method=method, raw=raw)
        assert (status, word in out.get("error", "")) == (want, True), (path, body if raw is None else raw[:40], status, out)
    # a chunked body carries no Content-Length: it is counted as it arrives
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/generate", body=iter([b" " * 16384] * 5), encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert r.status == 413 and "limit" in json.loads(r.read())["error"]
    conn.close()
    assert request(url, "/healthz")[0] == 200  # and the server is still up
    # /judge's limit is scaled to the largest PNG it takes: a body over /generate's limit but under it is judged
    padded = json.dumps({"prompt": "a red square", "image": ok_img}).encode() + b" " * MAX_BODY
    assert MAX_BODY < len(padded) <= ImageSides().max_body and request(url, "/judge", raw=padded)[0] == 200


@pytest.mark.slow
def test_the_token(server):
    url, _ = server
    body = {"prompt": "a red square"}
    for token, headers in ((None, None), ("wrong", None), (None, {"Authorization": TOKEN}),
                           (None, {"Authorization": f"Basic {TOKEN}"})):
        status, out = request(url, "/generate", body, token=token, headers=headers)
        assert status == 401 and "Bearer" in out["error"], (token, headers, status, out)
    assert request(url, "/healthz", token=None)[0] == 401
    assert request(url, "/generate", body)[0] == 200


def test_request_parsing_without_a_server():
    assert generate_request(b'{"prompt": " a red square "}') == ("a red square", 1, 0)
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    assert np.array_equal(decode_png(encode_png(img)), img)
    with pytest.raises(RequestError, match="between 1 and 16") as e:
        generate_request(b'{"prompt": "a red square", "n": 17}')
    assert e.value.status == 422


def test_judge_takes_the_models_own_image_sizes_and_the_body_limit_follows():
    janus, bagel = type("Janus", (), {"image_size": 32})(), type("Bagel", (), {"image_size": 1024, "judge_sides": (14, 1024)})()
    pro = type("JanusPro", (), {"image_size": 384})()
    assert judge_sides(janus) == (32, 32) and judge_sides(bagel) == (14, 1024) and judge_sides(pro) == (32, 384)
    small, big = ImageSides(*judge_sides(janus)), ImageSides(*judge_sides(bagel))
    assert small == ImageSides() and MAX_BODY < small.max_body < big.max_body < 5 * 2**20
    rng = np.random.default_rng(0)
    for sides in (small, big):  # noise does not compress: the largest PNG of the largest image, as a data: URL, fits
        noise = rng.integers(0, 256, (sides.hi, sides.hi, 3), dtype=np.uint8)
        body = json.dumps({"prompt": "a red square", "image": "data:image/png;base64," + encode_png(noise)}).encode()
        assert len(body) <= sides.max_body
        assert np.array_equal(judge_request(body, sides)[1], noise)
    for h, w in ((14, 14), (96, 96), (1024, 1024), (40, 17)):  # any width and height in BAGEL's range
        assert decode_png(encode_png(np.zeros((h, w, 3), np.uint8)), big).shape == (h, w, 3)
    for h, w in ((13, 13), (1024, 1025), (2048, 16)):
        with pytest.raises(RequestError, match=f"an RGB PNG of 14 to 1024 pixels a side .*got {w}x{h} RGB") as e:
            decode_png(encode_png(np.zeros((h, w, 3), np.uint8)), big)
        assert e.value.status == 422
    with pytest.raises(RequestError, match="must be a 32x32 RGB PNG, got 96x96 RGB"):  # the built-in's: 32 x 32 only
        decode_png(encode_png(np.zeros((96, 96, 3), np.uint8)), small)


def test_cli_refuses_bad_arguments_before_starting_anything(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert main(["serve", "--replicas-max", "0"]) == 2
    assert "--replicas-max must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def ray_listeners() -> list[tuple[str, str]]:
    """(address, process) of every listening TCP socket owned by a Ray process (`ss -ltnp`)."""
    import re
    import shutil
    import subprocess

    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2) to list listening sockets")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [(line.split()[3], m.group(1)) for line in out if (m := re.search(r'users:\(\("([^"]+)"', line))]
    return [(addr, proc) for addr, proc in rows if proc.startswith(("ray::", "raylet", "gcs_server", "ray-dashboard"))
            or "ray" in proc.lower()]


@pytest.mark.slow
def test_every_listener_of_the_private_instance_is_on_loopback(server):
    """GCS, raylet, object manager, agents, the Serve proxy and every replica's gRPC server: 127.0.0.1 only."""
    found = ray_listeners()
    assert any(proc.startswith("ray::ServeRepli") for _, proc in found), found  # the replicas were seen
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    assert all(addr.startswith(loopback) for addr, _ in found), [f for f in found if not f[0].startswith(loopback)]


@pytest.mark.slow
def test_srum_serve_serves_the_built_in_janus(tmp_path):
    """The shipped built-in through the command a user runs: `srum serve`, then /generate and /judge."""
    import signal
    import subprocess
    import sys

    port = free_port()
    log = tmp_path / "serve.log"
    p = subprocess.Popen([sys.executable, "-m", "srum.cli", "serve", "--model", "builtin", "--port", str(port)],
                         stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        t = time.time()
        while "serving" not in log.read_text(errors="replace"):
            assert p.poll() is None and time.time() - t < 300, log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        url = f"http://127.0.0.1:{port}"
        status, out = request(url, "/generate", {"prompt": "two blue circles", "n": 2, "seed": 0}, token=None)
        assert status == 200 and len(out["images"]) == 2, out
        status, j = request(url, "/judge", {"prompt": "two blue circles", "image": out["images"][0]}, token=None)
        assert status == 200 and -1 <= j["global_score"] <= 1, j
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
