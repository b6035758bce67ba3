"""The weights a backend broadcasts, as one flat buffer: what the learner publishes and the rollout workers load;
and the frozen reference the learner's KL term reads.

A backend lists the parameters it syncs in `self.synced` (everything the learner may change: the generation path,
or only LoRA adapters), keeps its peft wrapper in `self.peft` (None without LoRA), and mixes this in."""

from __future__ import annotations

import contextlib

import torch


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
