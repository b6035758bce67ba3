"""The Ray engine on an in-process local Ray instance: lock-step equals the local engine, streaming
bounds staleness, every batch is accounted for, and scaling happens while training runs."""

import json
import threading
import time

import pytest
import ray
import torch

from srum.actors.driver import NAMESPACE, RayEngine, start_local_ray
from srum.actors.group import bundle
from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.models import load_model

NO_EVAL = ["eval.at_start=false", "eval.at_end=false"]


@pytest.fixture(scope="module")
def local_ray():
    start_local_ray(num_cpus=2, log_to_driver=False, resources={"rollout_pool": 4})  # a pool, as a worker group declares
    yield
    ray.shutdown()


def cfg_for(model_dir, steps, *sets):
    base = [f"model={model_dir}", f"steps={steps}", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "rollout.sampling.steps=2", "checkpoint_every=2", "sample_every=100", "learner.lr=0.01",
            "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25", "ray.learner.num_cpus=0.5", *NO_EVAL]
    return load_config(TrainConfig, None, base + list(sets))


def quiet(*_):
    pass


@pytest.mark.parametrize("transport", ["shared_memory", "object_store", "collective"])
def test_lock_step_gives_the_local_engines_weights(local_ray, tmp_path, tiny_model_dir, transport):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors run one thread each: same arithmetic on both sides
    try:
        local = LocalEngine(cfg_for(tiny_model_dir, 3), tmp_path / "local", quiet)
        local.run()
    finally:
        torch.set_num_threads(threads)
    cfg = cfg_for(tiny_model_dir, 3, "ray.max_staleness=0", "ray.generators=2", f"ray.weights={transport}")
    summary = RayEngine(cfg, tmp_path / "ray", quiet).run()["ray"]
    assert summary["consumed"] == 3 and summary["dropped_stale"] == 0
    assert summary["weight_sync"]["transport"] == transport
    assert summary["weight_sync"].get("broadcast_fallbacks", 0) == 0
    ray_model = load_model(tmp_path / "ray" / "checkpoints" / "step_000003" / "model")
    assert torch.equal(local.policy.flat_weights(), ray_model.flat_weights())
    rows = [json.loads(line) for line in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rows] == [0, 1, 2] and all(r["staleness"] == 0 for r in rows)
    # the learner's checkpoint is the local engine's: same optimiser state, same data position
    for name in ("state.json",):
        a = json.loads((tmp_path / "local" / "checkpoints" / "step_000003" / name).read_text())
        b = json.loads((tmp_path / "ray" / "checkpoints" / "step_000003" / name).read_text())
        assert a == b


def test_data_parallel_learners_take_the_single_learners_steps(local_ray, tmp_path, tiny_model_dir):
    """Two learner ranks, each on half of every batch, gradients all-reduced: the local engine's weights
    up to float rounding (the all-reduce sums in another order), and both ranks hold the same weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = LocalEngine(cfg_for(tiny_model_dir, 3), tmp_path / "local", quiet)
        local.run()
    finally:
        torch.set_num_threads(threads)
    cfg = cfg_for(tiny_model_dir, 3, "ray.max_staleness=0", "ray.learners=2", "ray.learner.num_cpus=0.25")
    summary = RayEngine(cfg, tmp_path / "ray", quiet).run()["ray"]
    assert summary["consumed"] == 3
    ray_model = load_model(tmp_path / "ray" / "checkpoints" / "step_000003" / "model")
    start = load_model(tiny_model_dir).flat_weights()
    moved = (local.policy.flat_weights() - start).abs()
    diff = (local.policy.flat_weights() - ray_model.flat_weights()).abs()
    # Adam turns rounding in near-zero gradients into steps of up to lr: bound the share of such weights among those
    # the update moves (the generation path's). A wrong share of the batch or of the noise would move most of them
    # by ~lr away from the local engine.
    trained = int((moved > 1e-4).sum())
    assert trained > 1000
    off = int((diff > 1e-5).sum())
    assert off < 3e-3 * trained and diff.max() < 1e-3, (float(diff.max()), off, trained)
    with pytest.raises(ValueError, match="ray.learners"):
        cfg_for(tiny_model_dir, 3, "ray.learners=3")  # 4 samples per batch do not split in 3


@pytest.mark.parametrize("transport", ["shared_memory", "object_store", "collective"])
def test_streaming_bounds_staleness_and_accounts_for_every_batch(local_ray, tmp_path, tiny_model_dir, transport):
    """Also: no generator's weights change while it generates (the stand-in generator checks the learner's
    stamp after each batch and fails the run otherwise): the shared-memory ring never reuses a slot in use."""
    cfg = cfg_for(tiny_model_dir, 12, "ray.stages=stand_in", "ray.max_staleness=1", "ray.generators=3",
                  "ray.stand_in.generate_s=0.05", "ray.stand_in.judge_s=0.01", "ray.stand_in.learn_s=0.01",
                  "ray.stand_in.weights_mb=1", f"ray.weights={transport}")
    s = RayEngine(cfg, tmp_path / "run", quiet).run()["ray"]
    assert s["weight_sync"]["transport"] == transport and s["weight_sync"].get("broadcast_fallbacks", 0) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert s["consumed"] == 12 and max(r["staleness"] for r in rows) <= 1
    assert s["generated"] == s["consumed"] + s["dropped_stale"] + s["abandoned_at_stop"]
    assert s["weight_sync"]["fetches"] >= 1 and s["weight_sync"]["fetch_bytes"] > 0


def test_a_staleness_bound_below_the_sync_interval_is_refused():
    from srum.config import ConfigError

    with pytest.raises(ConfigError, match="max_staleness .0. must be at least sync_every - 1"):
        load_config(TrainConfig, None, ["ray.max_staleness=0", "ray.sync_every=2"])


def wait_for(ctl, pred, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = ray.get(ctl.status.remote())
        assert not st["finished"], f"the run ended before the condition held: {st}"
        if pred(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting; last status {st}")


@pytest.mark.parametrize("transport", ["auto", "collective"])
def test_scale_while_training(local_ray, tmp_path, tiny_model_dir, transport):
    """With the collective transport each change of generators forms a new broadcast group (an epoch). The run is
    long and stopped once every phase was seen: a fixed step count raced a slow CI machine's actor start-up."""
    cfg = cfg_for(tiny_model_dir, 2000, "ray.stages=stand_in", "ray.max_staleness=3", f"ray.name=scaletest-{transport}",
                  "ray.stand_in.generate_s=0.15", "ray.stand_in.judge_s=0.01", "ray.stand_in.learn_s=0.01",
                  "ray.stand_in.weights_mb=1", f"ray.weights={transport}", "checkpoint_every=500")
    out, errors = {}, []

    def train():
        try:
            out.update(RayEngine(cfg, tmp_path / "run", quiet).run())
        except Exception as e:  # surfaced below, not lost in the thread
            errors.append(e)

    t = threading.Thread(target=train)
    t.start()
    deadline = time.time() + 60
    while True:
        try:
            ctl = ray.get_actor(f"scaletest-{transport}", namespace=NAMESPACE)
            break
        except ValueError:
            assert time.time() < deadline and not errors, errors
            time.sleep(0.2)
    try:
        wait_for(ctl, lambda st: st["step"] >= 5, timeout=120)
        ray.get(ctl.scale.remote(generators=2))
        # scale back only after several learner steps were taken with two generators running
        wait_for(ctl, lambda st: sum(h["generators"] == 2 for h in st["history"]) >= 5, timeout=120)
        ray.get(ctl.scale.remote(generators=1))
        wait_for(ctl, lambda st: [h["generators"] for h in st["history"][-3:]] == [1, 1, 1], timeout=120)
    except ray.exceptions.RayActorError as e:  # the run ended early: say why, not only that its actor is gone
        t.join(60)
        raise AssertionError(f"the run ended before the test was done: {errors or out}") from e
    finally:  # also after a failure: a run left going holds CPUs the next test's actors wait for
        try:
            ray.get(ctl.stop.remote())
        except ray.exceptions.RayActorError:
            pass
    t.join(120)
    assert not errors, errors
    s = out["ray"]
    gens = [json.loads(line)["generators"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert gens[0] == 1 and 2 in gens and gens[-1] == 1
    assert s["consumed"] == s["steps_done"] == len(gens) < 2000
    assert s["generated"] == s["consumed"] + s["dropped_stale"] + s["abandoned_at_stop"]
    if transport == "collective":
        assert s["weight_sync"]["broadcast_epochs"] >= 3 and s["weight_sync"]["broadcast_fallbacks"] == 0


def test_autoscale_grows_generators_while_the_learner_starves(local_ray, tmp_path, tiny_model_dir):
    cfg = cfg_for(tiny_model_dir, 40, "ray.stages=stand_in", "ray.max_staleness=4", "ray.autoscale=true",
                  "ray.autoscale_idle=0.5", "ray.max_generators=3", "ray.status_every=3",
                  "ray.stand_in.generate_s=0.2", "ray.stand_in.judge_s=0.01", "ray.stand_in.learn_s=0.01",
                  "ray.stand_in.weights_mb=1")
    s = RayEngine(cfg, tmp_path / "run", quiet).run()["ray"]
    gens = [json.loads(line)["generators"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert gens[0] == 1 and max(gens) == 3 and gens == sorted(gens)  # grew, up to the maximum, never shrank
    assert s["consumed"] == 40 and s["generated"] == s["consumed"] + s["dropped_stale"]


def test_roles_pinned_to_a_pool_and_the_placement_table(local_ray, tmp_path, tiny_model_dir):
    """ray.generator.resources pins the generators to the nodes that offer the pool; where every actor landed is in
    RUN/placement.json (here: one node, which offers rollout_pool)."""
    cfg = cfg_for(tiny_model_dir, 4, "ray.stages=stand_in", "ray.generators=2", "ray.generator.resources={rollout_pool: 1}")
    assert bundle(cfg.ray.generator) == {"CPU": 0.25, "rollout_pool": 1.0}
    summary = RayEngine(cfg, tmp_path / "run", quiet).run()["ray"]
    assert summary["steps_done"] == 4
    table = json.loads((tmp_path / "run" / "placement.json").read_text())
    roles = [a["role"] for a in table["actors"]]
    assert roles.count("generator") == 2 and roles.count("judge") == 1 and roles.count("learner") == 1
    assert {a["node_id"] for a in table["actors"]} == {ray.get_runtime_context().get_node_id()}
    assert table["transport"] in ("shared_memory", "object_store")
