"""Experiment trackers: the scalars of metrics.jsonl and the sample grids, sent to wandb, TensorBoard and/or
MLflow as `logging.trackers` lists them. Everything is written under the run directory and nothing needs a
network: wandb runs offline by default (`wandb sync RUN/wandb/offline-run-*` uploads later), TensorBoard
writes event files to RUN/tensorboard, MLflow a file store at RUN/mlruns (or `logging.mlflow_uri`).

One `Trackers` object per run, in the process that writes metrics.jsonl (the local engine, or the Ray
engine's controller); a tracker that cannot start (its package missing) is an error before training starts.
"""

from __future__ import annotations

import numbers
from pathlib import Path

TRACKERS = ("wandb", "tensorboard", "mlflow")


class TrackerError(ValueError):
    """A tracker asked for that cannot run here."""


def scalars(row: dict) -> dict[str, float]:
    """The numeric fields of a metrics row (what every tracker plots)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, numbers.Number) and not isinstance(v, bool) and k != "step"}


class Trackers:
    def __init__(self, names: list[str], run_dir: Path, config: dict, project: str = "srum", wandb_mode: str = "offline",
                 mlflow_uri: str | None = None):
        self.run_dir, self.sinks = Path(run_dir), []
        for name in names:
            if name not in TRACKERS:
                raise TrackerError(f"logging.trackers: unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
            try:
                self.sinks.append(_OPEN[name](self.run_dir, config, project, wandb_mode, mlflow_uri))
            except ImportError as e:
                raise TrackerError(f"logging.trackers: {name} is not installed ({e}); pip install 'srum[trackers]'") from None

    def log(self, step: int, row: dict) -> None:
        values = scalars(row)
        for s in self.sinks:
            s.scalars(step, values)

    def image(self, step: int, name: str, path: Path, caption: str = "") -> None:
        """A PNG the run wrote (a sample grid), as an image of `step`."""
        import numpy as np
        from PIL import Image

        pixels = np.asarray(Image.open(path).convert("RGB"))
        for s in self.sinks:
            s.image(step, name, pixels, caption)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []


class _Wandb:
    def __init__(self, run_dir: Path, config: dict, project: str, mode: str, _uri):
        import wandb

        self.wandb = wandb
        # resume="allow" with the run directory's own id: a resumed srum run goes on in the same wandb run
        rid = "srum-" + "".join(c if c.isalnum() else "-" for c in run_dir.resolve().name)[-50:]
        self.run = wandb.init(project=project, dir=str(run_dir), config=config, mode=mode, id=rid, resume="allow",
                              settings=wandb.Settings(silent=True, console="off"))

    def scalars(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def image(self, step: int, name: str, pixels, caption: str) -> None:
        self.run.log({name: self.wandb.Image(pixels, caption=caption)}, step=step)

    def close(self) -> None:
        self.run.finish()


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict, _project, _mode, _uri):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(run_dir / "tensorboard"))
        self.w.add_text("config", "```\n" + _yaml(config) + "\n```", 0)

    def scalars(self, step: int, values: dict) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def image(self, step: int, name: str, pixels, caption: str) -> None:
        self.w.add_image(name, pixels, step, dataformats="HWC")
        if caption:
            self.w.add_text(f"{name}/caption", caption, step)
        self.w.flush()

    def close(self) -> None:
        self.w.close()


class _Mlflow:
    def __init__(self, run_dir: Path, config: dict, project: str, _mode, uri: str | None):
        import os

        import mlflow

        self.mlflow = mlflow
        if uri is None:  # a file store inside the run: no server, no database (MLflow 3 asks to opt in to it)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri or (run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(project)
        self.run = mlflow.start_run(run_name=run_dir.name)
        mlflow.log_params({k: str(v)[:250] for k, v in _flat(config).items()})

    def scalars(self, step: int, values: dict) -> None:
        self.mlflow.log_metrics(values, step=step)

    def image(self, step: int, name: str, pixels, caption: str) -> None:
        self.mlflow.log_image(pixels, f"{name}/step_{step:06d}.png")

    def close(self) -> None:
        self.mlflow.end_run()


_OPEN = {"wandb": _Wandb, "tensorboard": _TensorBoard, "mlflow": _Mlflow}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
