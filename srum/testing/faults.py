"""Fault injection for bench/faults.py and the tests: with SRUM_FAULT=where:step:marker in the environment, the
process kills itself (SIGKILL, no cleanup) at that point, once (the marker file records that it did)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def fault_point(where: str, step: int) -> None:
    spec = os.environ.get("SRUM_FAULT", "")
    if spec.count(":") < 2:
        return
    at, n, marker = spec.split(":", 2)
    if at == where and int(n) == step and not Path(marker).exists():
        Path(marker).write_text(f"{where} {step} pid {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
