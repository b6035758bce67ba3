"""The NCCL weight broadcast (ray.weights=collective with learner and generator on their own GPUs): the
same code as the gloo path that tests/actors/test_ray_engine.py runs on CPUs. NCCL needs a distinct GPU
per rank, so this needs two: skipped otherwise (`pytest -m gpu` on a GPU host)."""

import pytest
import ray
import torch

from srum.actors.driver import RayEngine, start_local_ray
from tests.actors.test_ray_engine import cfg_for, quiet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")]


def test_nccl_broadcast_streams_and_matches_the_learner(tmp_path, tiny_model_dir):
    start_local_ray(num_cpus=4, num_gpus=torch.cuda.device_count(), log_to_driver=False)
    try:
        cfg = cfg_for(tiny_model_dir, 4, "ray.max_staleness=1", "ray.weights=collective", "ray.generator.num_gpus=1",
                      "ray.learner.num_gpus=1", "ray.judge.num_gpus=0")
        s = RayEngine(cfg, tmp_path / "run", quiet).run()["ray"]
        assert s["weight_sync"]["transport"] == "collective" and s["weight_sync"]["broadcast_fallbacks"] == 0
        assert s["consumed"] == 4 and s["weight_sync"]["fetches"] >= 2
    finally:
        ray.shutdown()
