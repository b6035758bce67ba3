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
from tqdm import tqdm

from .. import rundir
from ..config import TrainConfig, dump_config
from ..engine import eval_reports, evaluate
from ..io import write_json, write_text
from ..models import load_model
from ..rundir import latest_checkpoint

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
