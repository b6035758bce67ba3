"""The weights a backend broadcasts, as one flat buffer: what the learner publishes and the rollout workers load;
and the frozen reference the learner's KL term reads.

A backend lists the parameters it syncs in `self.synced` (everything the learner may change: the generation path,
or only LoRA adapters), keeps its peft wrapper in `self.peft` (None without LoRA), and mixes this in."""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import torch

DIGEST_CHUNKS, DIGEST_LEN = 16, 1024  # a weight digest: float64 sums of 16 strided chunks of 1,024 values


def digest_spans(n: int) -> list[tuple[int, int]]:
    """The chunks of a flat buffer of `n` values that a digest sums: 16 spans spread evenly, the first at 0."""
    return [(c * n // DIGEST_CHUNKS, min(c * n // DIGEST_CHUNKS + DIGEST_LEN, n)) for c in range(DIGEST_CHUNKS)]


def flat_digest(flat) -> tuple[float, ...]:
    """A cheap digest of flat weights (a torch tensor or numpy array in the weights' own dtype: a bf16 buffer as
    `wire_tensor` gives it back, not its raw bits): the float64 sum of each of 16 strided chunks
    (16 k values read, whatever the model's size; a bf16 or float32 value is exact in float64). It tells versions apart, a buffer from a stale or wrong one, and
    LoRA adapters from the zeros they start as; a change outside the chunks (one value of billions) it may miss."""
    t = torch.as_tensor(flat).reshape(-1)
    return tuple(float(t[a:b].double().sum()) for a, b in digest_spans(t.numel()))


def digests_match(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for x, y in zip(a, b))


# ---- the flat buffer on the wire: its own dtype, bit for bit. numpy (the object store, the shared-memory ring) has no
# bf16, so a dtype numpy lacks travels as the raw bits of the integer of its width and is viewed back on arrival.
RAW_BITS = {torch.bfloat16: torch.int16}


def dtype_name(dtype: torch.dtype) -> str:
    """'float32', 'bfloat16', ...: how a buffer's dtype is named in a `Published` handle."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"flat weights of dtype {name!r}: not a floating-point torch dtype")
    return dtype


def wire_dtype(name: str) -> np.dtype:
    """The numpy dtype a flat buffer of dtype `name` travels as: its own, or the raw bits of one numpy lacks."""
    t = torch_dtype(name)
    return torch.empty(0, dtype=RAW_BITS.get(t, t)).numpy().dtype


def wire_array(flat: torch.Tensor) -> np.ndarray:
    """The flat weights as a numpy array of the same bytes: float32 as it is, bf16 as its raw int16 bits (no copy on
    the CPU; on a GPU the one device-to-host copy). `wire_tensor(a, dtype_name(flat.dtype))` gives them back."""
    t = flat.detach().reshape(-1).cpu()
    return t.view(RAW_BITS.get(t.dtype, t.dtype)).numpy()


def wire_tensor(array: np.ndarray, dtype: str):
    """Flat weights of dtype `dtype` from the numpy array they travelled as (`wire_array`), without a copy: the array
    itself where numpy has the dtype (float32), else a torch view of its memory in `dtype` (bf16). A read-only array
    (the object store's, the ring's) stays read-only memory: only read the result."""
    if array.dtype != wire_dtype(dtype):
        raise ValueError(f"flat weights published as {dtype} arrived as a numpy {array.dtype} array; "
                         f"expected {wire_dtype(dtype)}")
    t = torch_dtype(dtype)
    if t not in RAW_BITS:
        return array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": it is only ever read
        return torch.from_numpy(array).view(t)


class SyncedWeights:
    synced: list[torch.nn.Parameter]
    policy_version: int
    net: torch.nn.Module
    peft = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def autocast(self):
        """bf16 autocast on a GPU (the matmuls), nothing on the CPU (fp32: the bit-exact reference)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def reference_view(self, reference):
        """The reference as a model: the frozen copy `make_reference` made, or (LoRA, `reference` None) this model
        with its adapters switched off."""
        if reference is None:
            with self.peft.disable_adapter():
                yield self
        else:
            yield reference

    def weights_digest(self) -> tuple[float, ...]:
        """`flat_digest` of the synced weights as the model holds them now (what it samples with), without a flat copy."""
        bounds, at = [], 0
        for p in self.synced:
            bounds.append((at, at + p.numel(), p))
            at += p.numel()
        out = []
        for a, b in digest_spans(at):
            total = 0.0
            for lo, hi, p in bounds:
                if lo < b and hi > a:
                    total += float(p.detach().reshape(-1)[max(a, lo) - lo : min(b, hi) - lo].double().sum())
            out.append(total)
        return tuple(out)

    def flat_weights(self) -> torch.Tensor:
        """A float32 copy of the synced weights, flat."""
        return torch.cat([p.detach().reshape(-1).float() for p in self.synced])

    def flatten_parameters(self) -> torch.Tensor:
        """Make the synced weights views of one contiguous buffer (in their dtype) and return it: the learner
        publishes it without a copy per version."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.synced])
        with torch.no_grad():
            for p, chunk in zip(self.synced, flat.split([p.numel() for p in self.synced])):
                p.data = chunk.view_as(p)
        return flat

    def load_flat_weights(self, flat: torch.Tensor, version: int | None = None, share: bool = False) -> None:
        """Copy a flat buffer into the synced weights, or with `share` use it in place (an inference-only replica's
        parameters become views of the published buffer: no copy at all)."""
        total = sum(p.numel() for p in self.synced)
        if flat.numel() != total:  # checked first: a bad buffer must not leave half-loaded weights
            raise ValueError(f"flat weights have {flat.numel()} values; the model syncs {total}")
        share = share and flat.device == self.synced[0].device and flat.dtype == self.synced[0].dtype
        with torch.no_grad():
            for p, chunk in zip(self.synced, flat.split([p.numel() for p in self.synced])):
                if share:
                    p.data = chunk.view_as(p)
                else:
                    p.copy_(chunk.view_as(p))
        if version is not None:
            self.policy_version = version
