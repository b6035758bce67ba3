"""What the benches share: their result files and tables, subprocesses and process trees, the tiny model of the
orchestration benches, timing. bench/ is scripts, not a package: a script in it finds this module on sys.path."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def previous(out: Path, **identity) -> dict:
    """The JSON at `out` ({} if none) when it was measured under the same `identity` (weights, sizes); otherwise
    stop with both named, rather than mix or lose its figures."""
    old = json.loads(out.read_text()) if out.exists() else {}
    theirs = {k: old.get(k) for k in identity}
    if old and theirs != identity:
        raise SystemExit(f"{out}: measured with {theirs}, this run {identity}: give another --out rather than lose its figures")
    return old


def write(name: str | Path, res: dict, markdown: str | None = None, notes: str = "\n## Notes") -> None:
    """docs/results/NAME.json (and NAME.md); a path: PATH.json (and PATH.md). What the .md holds from the line
    `notes` on is written by hand (what the figures show) and kept: a bench writes its figures, not their prose."""
    out = RESULTS / name if isinstance(name, str) else name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    if markdown is not None:
        old = md.read_text() if (md := out.with_suffix(".md")).exists() else ""
        md.write_text(markdown + (notes + old.partition(notes)[2] if notes in old else ""))


def md_table(header: list[str], rows) -> list[str]:
    """The lines of a markdown table: the header, its rule, one line per row of cells."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header)] + [f"| {' | '.join(map(str, r))} |" for r in rows]


def jsonl(f: Path) -> list[dict]:
    """The complete rows of a JSON-lines file (a row being written is skipped)."""
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip().endswith("}")] if f.exists() else []


@contextlib.contextmanager
def table_lock(res_file: Path):
    """An exclusive lock beside the table (TABLE.json.lock), held while a bench reads, merges and writes it."""
    res_file.parent.mkdir(parents=True, exist_ok=True)
    with open(res_file.with_name(res_file.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def env(**extra) -> dict:
    """The environment of a `srum` subprocess: offline, unbuffered, no Ray usage stats."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **extra}


def start(cmd: list[str], log: Path, environment: dict | None = None) -> subprocess.Popen:
    """`cmd` from the repository root in a process group of its own, its output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment or env(), cwd=ROOT, start_new_session=True)


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL the process and its group (its own Ray instance): a preempted node."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(2)


def stop(p: subprocess.Popen) -> None:
    """SIGINT (a clean shutdown), then SIGKILL to its group after 60 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_tree(p)


def wait_for_text(log: Path, text: str, p: subprocess.Popen, timeout: float) -> None:
    """Until `text` is in `log`; an error if `p` ended first or it took longer than `timeout` seconds."""
    t = time.time()
    while text not in log.read_text():
        if time.time() - t > timeout or p.poll() is not None:
            raise RuntimeError(f"no {text!r} in {log}: " + log.read_text()[-2000:])
        time.sleep(0.5)


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    rows = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return {int(r.split()[0]): (int(r.split()[1]), (r.split(None, 2) + [""])[2]) for r in rows if r.strip()}


def descendants(roots: list[int], table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    """The given processes and every live process descending from them (Ray's workers descend from its raylet)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in (table or processes()).items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(roots)
    while todo:
        out.append(p := todo.pop())
        todo += children.get(p, [])
    return out


def actor_pids(role: str, under: int) -> list[int]:
    """Processes of Ray actors of a class (their titles are ray::<Class>...) that descend from `under`."""
    table = processes()
    return [p for p in descendants([under], table) if table.get(p, (0, ""))[1].startswith(f"ray::{role}")]


def tiny_model(out: Path) -> Path:
    """OUT/model, a tiny random Janus (tests/conftest.py's shape, 32 px) in the built-in's format: the model of the
    benches about orchestration, whose steps must be short; its forward and backward passes are real."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from conftest import tiny_shape

    from srum.models.janus.build import build_janus
    from srum.pretrain import SETTINGS
    from srum.pretrain.vocabulary import WORDS

    if not (out / "model" / "config.json").exists():
        build_janus(out / "model", tiny_shape(32), WORDS, seed=0, settings=SETTINGS)
    return out / "model"


def timed(fn, device=None) -> float:
    """Seconds of fn(), a CUDA device synchronised before and after (it runs asynchronously)."""
    sync = __import__("torch").cuda.synchronize if getattr(device, "type", None) == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t
