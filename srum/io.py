"""Small I/O helpers: atomic writes (temp file + rename), safetensors, JSONL with line numbers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename over `path`, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def load_metadata(path: Path) -> dict[str, str]:
    """The string metadata a safetensors file was saved with."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as h:
        return h.metadata() or {}


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


class InputError(ValueError):
    """Bad user input, with the file and line it came from."""


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; a line that is not a JSON object is an InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "opt.") -> dict[str, torch.Tensor]:
    """An Adam-family optimiser's per-parameter state as flat named tensors (safetensors has no pickle)."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        out.update({f"{prefix}{i}.{k}": (v if v.dim() else v.reshape(1)) for k, v in st.items()})
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str = "opt.") -> None:
    sd = opt.state_dict()
    for i in (i for group in sd["param_groups"] for i in group["params"]):
        if f"{prefix}{i}.step" in tensors:
            sd["state"][i] = {k: tensors[f"{prefix}{i}.{k}"].reshape(()) if k == "step" else tensors[f"{prefix}{i}.{k}"]
                              for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.load_state_dict(sd)


def open_log(path: Path, upto_step: int):
    """A JSONL log of steps opened for appending, after dropping every row of a step beyond `upto_step`: a
    resumed run learns those steps again, and each step must be listed once."""
    path = Path(path)
    if path.exists():
        keep = [line for line in path.read_text().splitlines(keepends=True) if _step_of(line) <= upto_step]
        write_text(path, "".join(line if line.endswith("\n") else line + "\n" for line in keep))
    return path.open("a")


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return float("inf")  # a row cut short by a kill: dropped


class StopRun(RuntimeError):
    """A check that stops a run by name (issue 39): numbers that went non-finite, a judge that keeps failing,
    weights a generator does not hold as they were published. `reason` names the check. Nothing is written from
    the bad state: the run's newest checkpoint is its last good one, and the same command resumes from it."""

    def __init__(self, reason: str, message: str, step: int | None = None):
        super().__init__(message)
        self.reason, self.message, self.step = reason, message, step

    def __reduce__(self):  # crosses Ray's process boundaries intact
        return (type(self), (self.reason, self.message, self.step))


class ModelDirError(InputError):
    """A model directory that cannot be loaded, with the directory or file and the reason."""


def replace_dir(new: Path, target: Path) -> None:
    """Move directory `new` to `target`: an old `target` is renamed away first and removed last, so a reader sees
    the old directory or the new one, never half of one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
