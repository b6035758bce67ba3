"""Strict loading, shared by the backends: what a safetensors file holds (its header, read without the data) against
what a model built from its config expects, names, shapes and dtype. Any difference is a ModelDirError naming the
file and the first tensors that differ: a directory never loads with tensors filled at random (docs/architecture.md,
"Adding a backend", step 3)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from ..io import ModelDirError

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}
SHOWN = 5  # how many differing tensor names an error lists

Header = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, safetensors dtype string)


def check_safetensors(f: Path) -> None:
    """A safetensors file whose header reads and whose size covers every tensor it declares (a truncated copy
    fails here with its name, not in the middle of a load)."""
    size = f.stat().st_size
    try:
        with f.open("rb") as h:
            n = struct.unpack("<Q", h.read(8))[0]
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(h.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{f}: not a readable safetensors file ({e})") from None
    if 8 + n + end > size:
        raise ModelDirError(f"{f}: truncated ({size} bytes; its header declares {8 + n + end})")


def header(path: Path) -> Header:
    """name -> (shape, dtype string) of a safetensors file, without reading the data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"{path}: not a readable safetensors file ({e})") from None


def differences(expected: dict[str, tuple[int, ...]], found: Header, optional: set[str] = frozenset(),
                hint=lambda missing: "") -> list[str]:
    """What keeps `found` from being exactly `expected` (names and shapes; `optional` names may be absent: tied
    weights that `save_pretrained` leaves out), as short phrases, the first few tensors of each kind named."""
    missing = sorted(set(expected) - set(found) - set(optional))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k} {list(found[k][0])} (expected {list(expected[k])})" for k in sorted(set(expected) & set(found))
             if tuple(found[k][0]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing{hint(missing)} (first: {', '.join(missing[:SHOWN])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:SHOWN])})")
    if wrong:
        problems.append(f"{len(wrong)} of the wrong shape (first: {'; '.join(wrong[:SHOWN])})")
    return problems


def check_dtype(path: Path | str, found: Header, dtype: torch.dtype | None) -> None:
    """Every floating tensor in `dtype` (the config's), or with none declared, all in one floating dtype."""
    floats = {k: d for k, (_, d) in found.items() if d in DTYPES}
    if dtype is not None:
        want = NAMES.get(dtype)
        off = sorted(k for k, d in floats.items() if d != want)
        if off:
            raise ModelDirError(f"{path}: {len(off)} tensors are not {want}, the dtype its config declares "
                                f"(first: {', '.join(f'{k} {floats[k]}' for k in off[:SHOWN])})")
    elif len(set(floats.values())) > 1:
        raise ModelDirError(f"{path}: tensors of several dtypes ({sorted(set(floats.values()))}); expected one")


def expected_of(net: torch.nn.Module) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The state dict's names and shapes of a model (built on the meta device: no memory, no init), and the names
    that only alias another parameter (tied weights), which a file may leave out."""
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    seen, aliases = set(), set()
    for name, p in net.named_parameters(remove_duplicate=False):
        (aliases.add(name) if id(p) in seen else seen.add(id(p)))
    return shapes, aliases


def check_hf_dir(d: Path, what: str) -> None:
    """A Hugging Face model directory (a vLLM judge's, a detector's) against its config.json, before anything loads
    it: every safetensors file complete, and, where transformers has the architecture, the headers (after
    transformers' own renaming of legacy names) exactly the tensors of the model built on the meta device, floats in
    the config's dtype. `what` says in the error which setting named the directory."""
    import transformers
    from transformers import AutoConfig

    d = Path(d)
    if not (d / "config.json").is_file():
        raise ModelDirError(f"{what}: {d}: not a model directory (no config.json)")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ModelDirError(f"{what}: {d}: no *.safetensors (srum never loads pickle weights)")
    for f in files:
        check_safetensors(f)
    try:
        cfg = AutoConfig.from_pretrained(d, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a config transformers cannot read is the user's file
        raise ModelDirError(f"{what}: {d / 'config.json'}: not a config transformers can read: {str(e).splitlines()[0][:200]}") from None
    found: Header = {}
    where: dict[str, Path] = {}
    for f in files:
        h = header(f)
        found.update(h)
        where.update(dict.fromkeys(h, f))
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    cls = getattr(transformers, (cfg.architectures or [""])[0], None)
    if cls is not None:  # an architecture vLLM has and transformers has not: the file checks above only
        from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping
        from transformers.core_model_loading import rename_source_key

        with torch.device("meta"):
            net = cls._from_config(cfg)
        expected, tied = expected_of(net)
        transforms = get_model_conversion_mapping(net)
        renames = [t for t in transforms if isinstance(t, WeightRenaming)]
        converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
        sd = net.state_dict()
        renamed = {}
        for k, v in found.items():
            new = rename_source_key(k, renames, converters, net.base_model_prefix, sd)[0]
            renamed[new] = v
            where[new] = where[k]
        if converters:  # tensors merged or split on load: their shapes differ from the file's by design
            expected = {k: renamed[k][0] if k in renamed else s for k, s in expected.items()}
        problems = differences(expected, renamed, tied)
        if problems:
            names = str(files[0]) if len(files) == 1 else f"{d}: {', '.join(f.name for f in files)}"
            raise ModelDirError(f"{what}: {names}: does not hold the {cfg.architectures[0]} its config.json describes: "
                                f"{' / '.join(problems)}")
    for f in files:
        check_dtype(f, {k: v for k, v in found.items() if where[k] == f}, dtype if isinstance(dtype, torch.dtype) else None)
