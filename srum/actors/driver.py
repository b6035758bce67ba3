"""The Ray engine's driver: connect to (or start) Ray, launch the named controller, watch it, stop it
cleanly on SIGTERM / SIGINT (what `ray job stop` and Ctrl-C send), and evaluate before and after.

Run directory: the local engine's layout (config.yaml, metrics.jsonl, checkpoints/, samples/, eval/,
results.json). The learner writes checkpoints there, so on a multi-node cluster `--out` must be on
storage the learner's node can reach.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from ..config import TrainConfig
from ..learner.checkpoints import latest_checkpoint
from ..models import load_model
from ..run import Run

NAMESPACE = "srum"


def connect(address: str | None) -> None:
    """Join the cluster at `address` / RAY_ADDRESS, or start a private local instance on loopback only."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    else:
        start_local_ray(log_to_driver=True)


def start_local_ray(**kwargs) -> None:
    """A private Ray instance whose every listener is on 127.0.0.1 (GCS, raylet, object manager, workers,
    agents, metrics: tested by listing the listening sockets).

    Ray replaces a node address of 127.0.0.1 by the machine's external one, and then binds its gRPC servers to
    every interface, unless `ray_constants.ENABLE_RAY_CLUSTER` is false. That constant is read from
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when ray is first imported, which has happened by now, so it is set here
    as well as in the environment that Ray's own processes inherit."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's proxy must answer its readiness check within 5 s or it is killed and restarted, over and over, on a
    # busy 2-core machine (seen with two training runs beside `srum serve`); 30 s is still a clear failure signal.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs.setdefault("runtime_env", {"worker_process_setup_hook": "srum.actors.driver.loopback_serve_replicas"})
    ray.init(namespace=NAMESPACE, _node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)


def loopback_serve_replicas() -> None:
    """Worker setup hook of the private instance: Ray Serve 2.60 binds each replica's inter-deployment gRPC
    server to "[::]:0" (hard-coded in ray/serve/_private/replica.py, which imports add_port_to_grpc_server from
    ray._common.tls_utils by name when the replica class loads, after this hook); on a loopback-only instance
    it binds 127.0.0.1 instead. On a user's cluster nothing is patched."""
    try:  # a hook that raises kills the worker: never let this one
        from ray._common import tls_utils

        bind = tls_utils.add_port_to_grpc_server
    except (ImportError, AttributeError):  # another Ray: tests/test_serve.py's socket test will say so
        return
    if getattr(bind, "srum_loopback", False):
        return

    def loopback(server, address: str):
        return bind(server, address.replace("[::]", "127.0.0.1"))

    loopback.srum_loopback = True
    tls_utils.add_port_to_grpc_server = loopback


def controller_handle(name: str):
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise LookupError(f"no running srum job named {name!r} in namespace {NAMESPACE!r} on this cluster") from None


class RayEngine:
    """The Ray engine: the run's lifecycle (srum/run.py) around a controller actor that streams the loop."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        self.cfg, self.dir, self.log = cfg, Path(run_dir).resolve(), log
        self.run_dir = Run(cfg, self.dir, log)
        self._stop_requested = False

    def run(self) -> dict:
        run, cfg = self.run_dir, self.cfg
        run.open()
        connect(cfg.ray.address)
        model_stages = cfg.ray.stages == "model"
        fresh = latest_checkpoint(self.dir) is None
        if model_stages and fresh and run.wants_initial_eval(0):
            initial = load_model(cfg.model)
            run.evaluate("initial", initial, initial)
        summary = self._train()
        results = {"steps_done": summary["steps_done"], "train_seconds": summary["seconds"], "ray": summary}
        if self._stop_requested:
            # A stopped job has seconds before SIGKILL (RAY_JOB_STOP_WAIT_TIME_S): keep the checkpoint, skip eval.
            # (A run that reached its time budget stopped too, on its own terms: it is evaluated.)
            self.log(f"stopped at step {summary['steps_done']}; final evaluation skipped "
                     f"(srum eval --model {self.dir}/checkpoints/<latest>/model)")
        elif model_stages and cfg.eval.at_end:
            latest = latest_checkpoint(self.dir)
            judge = load_model(latest / "model") if cfg.learner.judge_follows else load_model(cfg.model)
            results["final"] = run.evaluate("final", load_model(latest / "model"), judge)
        return run.finish(results)

    def _train(self) -> dict:
        from .controller import Controller

        try:
            ray.get_actor(self.cfg.ray.name, namespace=NAMESPACE)
            raise RuntimeError(f"a srum job named {self.cfg.ray.name!r} is already running on this cluster; "
                               f"set ray.name to run another beside it")
        except ValueError:
            pass
        # on the driver's own node (the head, under `ray job submit`): a worker node lost must not take the run's
        # scheduler with it (it takes no resources, so Ray would otherwise put it on any node)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        ctl = Controller.options(name=self.cfg.ray.name, namespace=NAMESPACE, lifetime=None, scheduling_strategy=here).remote(
            self.cfg.model_dump_json(), str(self.dir))
        run_ref = ctl.run.remote()
        main = threading.current_thread() is threading.main_thread()  # signals can only be caught there
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            return self._watch(ctl, run_ref)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _on_signal(self, signum, _frame) -> None:
        self.log(f"received {signal.Signals(signum).name}: finishing the current step and checkpointing")
        self._stop_requested = True

    def _watch(self, ctl, run_ref) -> dict:
        """Wait for the controller, printing a status line every `status_every` steps; honour stop and budget."""
        bar = tqdm(total=self.cfg.steps, desc="srum train (ray)", mininterval=2, file=sys.stderr)
        t0, budget, stop_sent, printed = time.perf_counter(), 60 * self.cfg.time_budget_min, False, 0
        while True:
            ready, _ = ray.wait([run_ref], timeout=1.0)
            if ready:
                break
            over_budget = budget and time.perf_counter() - t0 > budget
            if (self._stop_requested or over_budget) and not stop_sent:
                ctl.stop.remote()
                stop_sent = True
            st = ray.get(ctl.status.remote())
            bar.update(st["step"] - bar.n)
            if st["history"] and st["step"] >= printed + self.cfg.ray.status_every:
                printed = st["step"]
                self.log(status_line(st, time.perf_counter() - t0, self.cfg))
        bar.close()
        try:
            summary = ray.get(run_ref)
        except ray.exceptions.RayTaskError as e:  # a check stopped the run by name: the controller said so
            from .group import stop_cause

            stop = stop_cause(e)
            if stop is None:
                raise
            ray.kill(ctl)  # its run() has returned: free the job's name now, as a finished run's end does
            self.log(f"srum: run stopped ({stop.reason}): {stop} (RUN/stopped.json; the newest checkpoint is the last good state)")
            raise stop from None
        if summary.get("stop_reason"):
            self.log(f"srum: stopped: {summary['stop_reason']}")
        self.log(f"ray engine: {summary['steps_done']} steps, {summary['samples_per_s']} samples/s, "
                 f"{summary['dropped_stale']} stale batches dropped, learner idle {summary['learner_idle_ratio']:.0%}")
        return summary


def status_line(st: dict, elapsed: float, cfg: TrainConfig) -> str:
    h = st["history"][-1]
    samples = st["consumed"] * cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
    return (f"step {st['step']}/{cfg.steps} v{st['version']} | {samples / max(elapsed, 1e-9):.1f} samples/s | "
            f"g {h.get('global_reward')} loc {h.get('local_reward')} | loss {h.get('total')} kl {h.get('kl_term')} | "
            f"staleness {h['staleness']} dropped {st['dropped_stale']} | gens {st['generators']} judges {st['judges']}")


def scale(name: str, generators: int | None, judges: int | None, address: str | None = None) -> dict:
    """Ask the running job's controller for a new size; it adds or retires actors between batches."""
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        connect(address)
    except ConnectionError as e:
        raise LookupError(f"no Ray cluster at {address!r} to find the job in ({e})") from None
    return ray.get(controller_handle(name).scale.remote(generators, judges))


