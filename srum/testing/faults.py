"""Fault injection for bench/faults.py and the tests: with SRUM_FAULT=where:step:marker in the environment, the
process kills itself (SIGKILL, no cleanup) at that point, once (the marker file records that it did).

`fault_fires(where, step)` is the same switch for faults that are not a kill (issue 39): `nan_loss` (the learner's
loss becomes NaN at that update), `corrupt_weights` (a generator flips a value of the weights it loaded for that
version), `judge_fail` (step: the share of samples a judge fails, in percent; fires for every call, no marker
needed), `logprob_drift` (step: hundredths of a nat; a generator's recorded log-probabilities of batch b are lowered
by b times that, every batch, no marker needed), `judge_hang` (step: the n-th judge call of a process never returns,
for reward.judge.timeout_s). Several faults: separate them with commas."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


def fault_point(where: str, step: int) -> None:
    if fault_fires(where, step):
        os.kill(os.getpid(), signal.SIGKILL)


def _specs() -> list[tuple[str, str, str]]:
    return [tuple(x.split(":", 2)) for x in os.environ.get("SRUM_FAULT", "").split(",") if x.count(":") >= 2]


def fault_fires(where: str, step: int) -> bool:
    """True once (the marker file records it) when SRUM_FAULT names `where` at `step`."""
    for at, n, marker in _specs():
        if at == where and int(n) == step and not Path(marker).exists():
            Path(marker).write_text(f"{where} {step} pid {os.getpid()}\n")
            return True
    return False


def hang(*_) -> None:
    """A call that never returns (`judge_hang`: the n-th judge call of a process, once)."""
    threading.Event().wait()


def fault_value(where: str) -> int | None:
    """The number SRUM_FAULT gives `where` (a standing fault, such as judge_fail's percentage), or None."""
    return next((int(n) for at, n, _ in _specs() if at == where), None)
