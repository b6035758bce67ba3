#!/usr/bin/env bash
# Submit `srum train --engine ray` to a running Ray cluster as a Ray job, from the repository root.
#
#   deploy/job_submit.sh                                  # a head on this machine (dashboard at 127.0.0.1:8265)
#   RAY_DASHBOARD=http://127.0.0.1:8265 deploy/job_submit.sh --set ray.generators=2 --steps 200
#
# A head on this machine, loopback only, started inside the venv (the job's `python` and `srum` are the
# ones `ray start` found on PATH):
#   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 .venv/bin/ray start --head --node-ip-address=127.0.0.1 \
#     --dashboard-host=127.0.0.1 --dashboard-port=8265 --metrics-export-port=8090 --disable-usage-stats
# For a cluster from deploy/cluster.yaml, forward its dashboard first: `ray dashboard deploy/cluster.yaml`.
#
# --working-dir uploads this checkout (without the venv and old runs) and runs the job in that copy, so
# the run directory is absolute: it must outlive the job's temporary copy. Follow the job with
# `ray job logs -f <id>`; `ray job stop <id>` sends SIGTERM, and the driver finishes the current step and
# checkpoints within RAY_JOB_STOP_WAIT_TIME_S seconds. Submitting again with the same --out resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
ADDRESS=${RAY_DASHBOARD:-http://127.0.0.1:8265}
OUT=${OUT:-$PWD/runs/srum-compworld-ray}
RAY=${RAY:-$([ -x .venv/bin/ray ] && echo .venv/bin/ray || echo ray)}

"$RAY" job submit --address "$ADDRESS" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs"], "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "30"}}' \
  -- srum train --engine ray --config configs/srum-compworld.yaml --out "$OUT" "$@"
