"""A real Ray head for end-to-end tests: `ray start --head` on loopback with its own temp dir and free
ports, and a teardown that stops only the processes this head started (never `ray stop`, which would
end every Ray instance of the user)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    env: dict

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
        return p


def start_head(extra_env: dict | None = None, num_cpus: int = 2) -> RayHead:
    bin_dir = str(Path(sys.executable).parent)  # the job's python is whichever one `ray start` finds first
    temp = Path(tempfile.mkdtemp(prefix="srt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_metrics_report_interval_ms": "1000", "GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1",
           **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    head = RayHead(temp, free_port(), free_port(), free_port(), env)
    head.run(f"{bin_dir}/ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={head.gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={head.dashboard_port}", "--include-dashboard=true",
             f"--metrics-export-port={head.metrics_port}", f"--dashboard-agent-listen-port={free_port()}",
             f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}", "--disable-usage-stats", f"--num-cpus={num_cpus}",
             timeout=120)
    return head


def _pids_of(head: RayHead) -> set[int]:
    marks = (str(head.temp_dir), f"127.0.0.1:{head.gcs_port}", f"--port={head.dashboard_port}")
    parents, found = {}, set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[int(d.name)] = ppid
        if any(m in cmd for m in marks):
            found.add(int(d.name))
    grew = True
    while grew:  # and every descendant (workers, dashboard modules)
        new = {pid for pid, pp in parents.items() if pp in found} - found
        found |= new
        grew = bool(new)
    return found - {os.getpid()}


def stop_head(head: RayHead) -> None:
    pids = _pids_of(head)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
