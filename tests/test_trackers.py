"""Trackers: a local run logged to wandb (offline), TensorBoard and MLflow; the files read back hold the scalars
and the sample grids. And the grids themselves: captioned rows and a colour scale."""

import json

import numpy as np
import pytest

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.records import Judgement, Rollout
from srum.samples import grid, verdict


def test_sample_grid_has_captions_and_a_scale():
    img = np.zeros((32, 32, 3), np.uint8)
    img[4:14, 4:14] = (230, 30, 30)
    r = Rollout("x", "a red square", "single", img, np.zeros(0))
    j = Judgement("x", 0.5, [], np.full((32, 32), 0.75, np.float32))
    g = np.asarray(grid([r, r], [j, j]))
    assert g.shape[0] == 2 * 128 + 34 and g.shape[1] > 2 * 128  # two rows, the legend, the caption column
    caption = g[:128, 2 * 128 :]
    assert (caption < 128).any()  # text was drawn
    assert verdict("a red square", img) == "pass" and verdict("a red apple", img) is None


def _tb_read(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea.Tags()["scalars"], ea.Tags()["images"], ea


def _wandb_records(path):
    """The protobuf records of a .wandb file: a 7-byte header, then 32 KiB blocks of records, each with a 7-byte
    header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last), as wandb's log writer lays them out."""
    import struct

    data, pos, buf, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if (32768 - pos % 32768) < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            out.append(buf)
    return out


def _wandb_history(run):
    """(step, key) pairs in the offline run's history records, and the images it saved."""
    from wandb.proto import wandb_internal_pb2

    files = list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, list(run.rglob("*"))
    logged = set()
    for data in _wandb_records(files[0]):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item}
            step = json.loads(items.get("_step", "null"))
            logged |= {(step, k) for k in items}
    media = list(run.glob("wandb/offline-run-*/files/media/images/*.png"))
    return logged, media


@pytest.mark.slow
def test_a_run_logged_to_every_tracker(tmp_path, tiny_janus32_dir):
    pytest.importorskip("wandb")
    cfg = load_config(TrainConfig, None, [f"model={tiny_janus32_dir}", "steps=2", "engine=local", "rollout.prompts_per_step=2",
                                          "rollout.samples_per_prompt=2", "eval.prompts=6", "eval.images_per_prompt=1",
                                          "checkpoint_every=1", "sample_every=1", "logging.trackers=[wandb, tensorboard, mlflow]"])
    run = tmp_path / "run"
    LocalEngine(cfg, run, lambda *_: None).run()
    scalars, images, ea = _tb_read(run)
    assert {"total", "kl_term", "global_reward"} <= set(scalars) and "samples" in images
    assert [e.step for e in ea.Scalars("total")] == [1, 2]
    logged, media = _wandb_history(run)
    assert {(1, "total"), (2, "total"), (2, "kl_term"), (1, "global_reward"), (1, "samples/path"), (2, "samples/path")} <= logged
    assert len(media) == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run / "mlruns").resolve().as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "srum"]
    (mrun,) = client.search_runs([exp.experiment_id])
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "total")] == [1, 2]
    assert json.loads((run / "results.json").read_text())["steps_done"] == 2
